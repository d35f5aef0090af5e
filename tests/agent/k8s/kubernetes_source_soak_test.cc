// The two long KubernetesSource runs (about 30 s each): endpoint churn at
// 100 updates/s, and the API server down for 30 s. Kept apart from
// kubernetes_source_test.cc so the fast tests stay fast.
#include <chrono>
#include <map>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "tests/agent/k8s/source_test_util.h"

namespace ringmesh::agent::k8s::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kServices = 10;

TEST_F(SourceTest, EndpointChurnAt100PerSecondEndsInTheExactFinalState) {
  api_.Upsert("namespaces", MakeNamespace("churn"));
  for (int i = 0; i < kServices; ++i) {
    api_.Upsert("services", MakeService("churn", "svc-" + std::to_string(i),
                                        "10.96.3." + std::to_string(i + 1), {{"http", 80, 8080}}));
  }
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return s.services.size() == kServices; }));

  std::mt19937 rng(12345);
  // The model: per slice, IP -> ready. Two slices per service.
  std::map<std::string, std::map<std::string, bool>> slices;
  auto slice_service = [](const std::string& slice) { return slice.substr(0, slice.rfind('-')); };
  auto expected_ready = [&](const std::string& svc) {
    std::map<std::string, bool> merged;
    for (const auto& [name, eps] : slices) {
      if (slice_service(name) != svc) continue;
      for (const auto& [ip, ready] : eps) merged[ip] = merged[ip] || ready;
    }
    std::set<std::string> out;
    for (const auto& [ip, ready] : merged) {
      if (ready) out.insert(ip);
    }
    return std::make_pair(out, merged.size());
  };

  const auto duration = std::chrono::seconds(30);
  const auto start = Clock::now();
  int updates = 0, snapshots_during = 0, kills = 0;
  bool compacted = false;
  while (Clock::now() - start < duration) {
    auto elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    int due = static_cast<int>(elapsed.count() / 10);  // 100 per second
    for (; updates < due; ++updates) {
      int s = static_cast<int>(rng() % kServices);
      std::string slice = absl::StrCat("svc-", s, "-", rng() % 2);
      if (rng() % 20 == 0 && slices.count(slice)) {
        api_.Delete("endpointslices", "churn", slice);
        slices.erase(slice);
        continue;
      }
      std::vector<EndpointSpec> eps;
      std::map<std::string, bool> model;
      int n = 1 + static_cast<int>(rng() % 5);
      for (int e = 0; e < n; ++e) {
        std::string ip = absl::StrCat("10.50.", s, ".", 1 + rng() % 30);
        bool ready = rng() % 4 != 0;
        if (model.count(ip)) continue;
        model[ip] = ready;
        eps.push_back({.ip = ip, .ready = ready});
      }
      api_.Upsert("endpointslices",
                  MakeEndpointSlice("churn", slice, absl::StrCat("svc-", s), {{"http", 8080}}, eps));
      slices[slice] = model;
    }
    // Disturbances on the way: dropped watches, and one compaction that
    // forces a relist in the middle of the churn.
    if (elapsed > std::chrono::seconds(5 * (kills + 1))) {
      ++kills;
      if (!compacted && elapsed > std::chrono::seconds(15)) {
        api_.BumpVersion();
        api_.Compact();
        compacted = true;
      }
      api_.KillWatches();
    }
    if (PollOnce()) {
      ++snapshots_during;
      // Every snapshot is whole: all services are always there.
      ASSERT_EQ(last_->services.size(), static_cast<size_t>(kServices));
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  auto churn_end = Clock::now();
  ASSERT_GE(updates, 2900);

  auto matches = [&](const Snapshot& snap) {
    for (int i = 0; i < kServices; ++i) {
      std::string name = "svc-" + std::to_string(i);
      const Service* svc = FindService(snap, "churn", name);
      auto [ready, total] = expected_ready(name);
      if (!svc || ReadyIps(svc) != ready || svc->endpoints.size() != total) return false;
    }
    return true;
  };
  ASSERT_TRUE(WaitFor(matches, std::chrono::seconds(15)));
  auto settle = std::chrono::duration_cast<milliseconds>(Clock::now() - churn_end);
  // Settled means settled: no further snapshot.
  for (int i = 0; i < 20; ++i) {
    EXPECT_FALSE(PollOnce());
    std::this_thread::sleep_for(milliseconds(10));
  }
  auto states = source_->reflector_states();
  std::printf(
      "churn: %d updates, %d snapshots, %d watch drops, EndpointSlice events seen %llu, relists after 410 "
      "%llu, settled %lld ms after the last update\n",
      updates, snapshots_during, kills, static_cast<unsigned long long>(states["EndpointSlice"].events),
      static_cast<unsigned long long>(states["EndpointSlice"].relists_after_gone),
      static_cast<long long>(settle.count()));
  EXPECT_GE(states["EndpointSlice"].relists_after_gone, 1u);
  EXPECT_EQ(source_->Health(), "synced");
}

TEST_F(SourceTest, ApiServerDownFor30SecondsKeepsServingThenResyncs) {
  SeedBasicWorld();
  auto opts = Options();
  opts.reflector.backoff_initial = milliseconds(100);
  opts.reflector.backoff_max = milliseconds(2000);
  StartSource(opts);
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  const Snapshot before = *last_;

  api_.Stop();
  // Meanwhile the cluster moves on, and etcd compacts past our version.
  api_.Delete("services", "shop", "cart");
  api_.Upsert("services", MakeService("shop", "checkout", "10.96.0.21", {{"http", 80, 8080}}));
  api_.Upsert("pods", MakePod("shop", "web-9", TestUid("web-9"), "node-a", "10.244.1.9"));
  api_.Compact();

  const auto start = Clock::now();
  int polls = 0;
  std::string health;
  while (Clock::now() - start < std::chrono::seconds(30)) {
    EXPECT_FALSE(PollOnce()) << "the last state keeps serving while the API server is away";
    ++polls;
    health = source_->Health();
    if (Clock::now() - start > std::chrono::seconds(1)) {
      EXPECT_NE(health.find("serving the last state"), std::string::npos) << health;
    }
    // The advertised retry never exceeds the backoff bound.
    auto pos = health.find("retry in ");
    if (pos != std::string::npos) {
      EXPECT_LE(std::stod(health.substr(pos + 9)), 2.05) << health;
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_EQ(*last_, before);
  std::printf("down 30 s: %d polls, last health: %s\n", polls, health.c_str());

  ASSERT_TRUE(api_.Start().ok());
  auto back = Clock::now();
  ASSERT_TRUE(WaitFor(
      [](const Snapshot& s) {
        return FindService(s, "shop", "cart") == nullptr && FindService(s, "shop", "checkout") != nullptr &&
               FindPod(s, "shop", "web-9") != nullptr;
      },
      std::chrono::seconds(10)));
  auto resync = std::chrono::duration_cast<milliseconds>(Clock::now() - back);
  EXPECT_LT(resync, milliseconds(4000)) << "bounded backoff: back within max backoff + a relist";
  ASSERT_TRUE(WaitUntil([&] { return source_->Health() == "synced"; }));
  std::printf("resynced %lld ms after the API server came back\n", static_cast<long long>(resync.count()));
}

}  // namespace
}  // namespace ringmesh::agent::k8s::testing
