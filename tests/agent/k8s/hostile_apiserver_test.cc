// KubernetesSource against an API server (or whatever sits in front of it)
// that answers badly: error pages that are neither JSON nor UTF-8, lists
// larger than the agent may hold, pods whose UID is not a UUID. Each must be
// reported, survived and retried, and the source must recover once the
// server answers normally again.
#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/agent/k8s/source_test_util.h"

namespace ringmesh::agent::k8s::testing {
namespace {

using std::chrono::milliseconds;

// What a load balancer or an old proxy in front of the API server sends on
// a 503: an HTML page in ISO-8859-1. The accented letters (0xE9, 0xE0, ...)
// are single bytes that are not valid UTF-8, and they sit well inside the
// first 200 bytes, which is what ends up in the error message.
std::string Latin1ErrorPage(int code) {
  std::string page =
      absl::StrCat("<html><head><title>", code,
                   " Service indisponible</title></head><body><h1>Erreur</h1><p>Le serveur est "
                   "temporairement indisponible. R\xE9"
                   "essayez plus tard. \xAB d\xE9j\xE0 vu \xBB</p>");
  while (page.size() < 600) page += "<p>D\xE9tails: aucun.</p>";
  return page + "</body></html>";
}

// The agent writes the source's Health() into its JSON status file;
// nlohmann throws on a string that is not UTF-8, which (uncaught) ended the
// agent. This is that exact operation.
bool FitsInStatusJson(const std::string& s) {
  try {
    (void)nlohmann::json{{"source_health", s}}.dump();
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

bool Has(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST_F(SourceTest, NonUtf8ErrorPageOnListIsReportedAndRetried) {
  SeedBasicWorld();
  api_.InjectError("services", /*watch=*/false, 503, "text/html; charset=iso-8859-1", Latin1ErrorPage(503));
  LogCapture log;
  StartSource();
  ASSERT_TRUE(WaitUntil([&] { return api_.injected_errors() >= 3; })) << "the list is retried";
  ASSERT_TRUE(WaitUntil([&] { return Has(source_->Health(), "HTTP 503"); }));
  std::string health = source_->Health();
  EXPECT_TRUE(FitsInStatusJson(health)) << health;
  EXPECT_TRUE(Has(health, "list Service: HTTP 503: <html>")) << health;
  // The bytes that are not UTF-8 are shown, not dropped.
  EXPECT_TRUE(Has(health, "R\\xE9essayez")) << health;
  EXPECT_TRUE(log.Contains("list Service: HTTP 503"));
  EXPECT_FALSE(source_->synced());
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(PollOnce());

  // With backoff: the next attempt is scheduled in the future.
  ASSERT_TRUE(WaitUntil([&] { return Has(source_->Health(), "retry in"); }));

  api_.ClearErrors();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  ASSERT_TRUE(WaitUntil([&] { return source_->Health() == "synced"; })) << source_->Health();
}

TEST_F(SourceTest, NonUtf8ErrorPageOnWatchIsReportedAndRetried) {
  SeedBasicWorld();
  LogCapture log;
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  api_.InjectError("services", /*watch=*/true, 500, "text/html", Latin1ErrorPage(500));
  ASSERT_TRUE(WaitUntil([&] { return api_.injected_errors() >= 3; })) << "the watch is retried";
  ASSERT_TRUE(WaitUntil([&] { return Has(source_->Health(), "watch Service: HTTP 500"); }));
  std::string health = source_->Health();
  EXPECT_TRUE(FitsInStatusJson(health)) << health;
  EXPECT_TRUE(Has(health, "serving the last state")) << health;
  EXPECT_TRUE(log.Contains("watch Service: HTTP 500"));
  // The last good state keeps serving meanwhile.
  ASSERT_TRUE(last_.has_value());
  EXPECT_NE(FindService(*last_, "shop", "cart"), nullptr);

  api_.ClearErrors();
  api_.Upsert("services", MakeService("shop", "after", "10.96.0.40", {{"http", 80, 80}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "after") != nullptr; }));
  ASSERT_TRUE(WaitUntil([&] { return source_->Health() == "synced"; })) << source_->Health();
}

// A Service carrying `bytes` of annotation, to make lists big.
Json BigService(const std::string& name, int index, size_t bytes) {
  Json svc = MakeService("shop", name, absl::StrCat("10.96.3.", index + 1), {{"http", 80, 80}});
  svc["metadata"]["annotations"]["example.com/blob"] = std::string(bytes, 'x');
  return svc;
}

TEST_F(SourceTest, ListLargerThanMaxListBytesIsRefusedAndRetried) {
  SeedBasicWorld();
  // 40 Services of ~2.3 KiB in pages of 4: ~95 KiB over 10 pages, each page
  // well under the bound; only the list as a whole is over it.
  for (int i = 0; i < 40; ++i) api_.Upsert("services", BigService(absl::StrCat("big-", i), i, 2048));
  auto opts = Options();
  opts.reflector.page_size = 4;
  opts.reflector.max_list_bytes = 32 << 10;
  LogCapture log;
  StartSource(opts);
  ASSERT_TRUE(WaitUntil([&] { return Has(source_->Health(), "max_list_bytes"); })) << source_->Health();
  std::string health = source_->Health();
  EXPECT_TRUE(Has(health, "list Service:")) << health;
  EXPECT_TRUE(Has(health, "32768")) << health;
  EXPECT_TRUE(log.Contains("max_list_bytes"));
  // Retried (each attempt is several page requests).
  int lists = api_.lists("services");
  ASSERT_TRUE(WaitUntil([&] { return api_.lists("services") > lists + 3; }));
  EXPECT_FALSE(source_->synced());

  // The cluster shrinks below the bound: the next attempt succeeds.
  for (int i = 0; i < 40; ++i) api_.Delete("services", "shop", absl::StrCat("big-", i));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return s.services.size() == 1; }));
  ASSERT_TRUE(WaitUntil([&] { return source_->Health() == "synced"; })) << source_->Health();
}

TEST_F(SourceTest, OversizedListResponseIsNotReadToTheEnd) {
  SeedBasicWorld();
  // One page of ~24 MiB: far more than the kernel buffers of a loopback
  // connection hold, so the server can only send it all if the client reads.
  constexpr size_t kBlob = 24 << 20;
  api_.Upsert("services", BigService("huge", 0, kBlob));
  auto opts = Options();
  opts.reflector.max_list_bytes = 256 << 10;
  StartSource(opts);
  ASSERT_TRUE(WaitUntil([&] { return api_.lists("services") >= 3; }));
  ASSERT_TRUE(WaitUntil([&] { return Has(source_->Health(), "max_list_bytes"); })) << source_->Health();
  EXPECT_TRUE(Has(source_->Health(), "262144")) << source_->Health();
  // The reader stopped at the bound and hung up: most of each response was
  // never taken by the kernel.
  std::this_thread::sleep_for(milliseconds(200));  // the server's last send has failed by now
  uint64_t offered = api_.list_bytes_offered("services"), sent = api_.list_bytes_sent("services");
  EXPECT_GE(offered, 2 * kBlob);
  EXPECT_LT(sent, offered / 2) << "sent " << sent << " of " << offered;

  ASSERT_TRUE(api_.Delete("services", "shop", "huge"));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  ASSERT_TRUE(WaitUntil([&] { return source_->Health() == "synced"; })) << source_->Health();
}

TEST_F(SourceTest, PodsWithBadUidsAreSkipped) {
  SeedBasicWorld();
  const std::string upper = "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D";
  api_.Upsert("pods", MakePod("shop", "upper", upper, "node-a", "10.244.1.20"));
  api_.Upsert("pods", MakePod("shop", "dots", "../../x", "node-a", "10.244.1.21"));
  api_.Upsert("pods", MakePod("shop", "empty", "", "node-a", "10.244.1.22"));
  api_.Upsert("pods", MakePod("shop", "long", TestUid("long") + "0", "node-a", "10.244.1.23"));
  LogCapture log;
  StartSource();
  ASSERT_TRUE(WaitFor([&](const Snapshot& s) { return Enrolled(s, "shop", "upper"); }));
  EXPECT_TRUE(Enrolled(*last_, "shop", "web-1"));
  EXPECT_EQ(FindPod(*last_, "shop", "web-1")->cgroup_path, "/sys/fs/cgroup/kubepods/pod" + TestUid("web-1"));
  for (const char* name : {"dots", "empty", "long"}) {
    EXPECT_EQ(FindPod(*last_, "shop", name), nullptr) << name;
  }
  EXPECT_TRUE(log.Contains("skipping malformed Pod shop/dots: metadata.uid: \"../../x\" is not a UUID"));
  EXPECT_TRUE(log.Contains("skipping malformed Pod shop/empty: metadata.uid: missing"));
  EXPECT_TRUE(log.Contains("skipping malformed Pod shop/long: metadata.uid:"));
  EXPECT_EQ(source_->skipped_objects()["Pod"], 3u);
  // No path was ever formed from a bad UID.
  for (const auto& uid : locator_->uids()) EXPECT_EQ(uid.size(), 36u) << uid;

  // The same by watch: the bad pod is skipped, the next good one arrives.
  api_.Upsert("pods", MakePod("shop", "etc", "/etc", "node-a", "10.244.1.24"));
  api_.Upsert("pods", MakePod("shop", "web-3", TestUid("web-3"), "node-a", "10.244.1.6"));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return Enrolled(s, "shop", "web-3"); }));
  EXPECT_EQ(FindPod(*last_, "shop", "etc"), nullptr);
  EXPECT_TRUE(log.Contains("skipping malformed Pod shop/etc: metadata.uid: \"/etc\" is not a UUID"));
  EXPECT_EQ(source_->skipped_objects()["Pod"], 4u);
  EXPECT_TRUE(Enrolled(*last_, "shop", "web-1"));
}

}  // namespace
}  // namespace ringmesh::agent::k8s::testing
