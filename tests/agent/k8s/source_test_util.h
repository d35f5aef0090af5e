// Shared set-up for the KubernetesSource tests: a fake API server, a token
// file, a fake PodLocator, and a bounded wait for a snapshot predicate.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "tests/agent/k8s/fake_apiserver.h"
#include "userspace/agent/k8s/kubernetes_source.h"

namespace ringmesh::agent::k8s::testing {

// Every pod is "found" at a made-up path unless marked missing.
class FakeLocator : public PodLocator {
 public:
  absl::StatusOr<PodLocation> Locate(const PodRef& pod) override {
    std::lock_guard lock(mu_);
    ++calls_;
    uids_.insert(pod.uid);
    if (missing_.count(pod.uid)) return absl::NotFoundError("no cgroup yet");
    return PodLocation{absl::StrCat("/sys/fs/cgroup/kubepods/pod", pod.uid),
                       absl::StrCat("/run/netns/", pod.uid)};
  }
  void SetMissing(const std::string& uid, bool missing) {
    std::lock_guard lock(mu_);
    if (missing) {
      missing_.insert(uid);
    } else {
      missing_.erase(uid);
    }
  }
  int calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  // Every UID it was asked to locate.
  std::set<std::string> uids() {
    std::lock_guard lock(mu_);
    return uids_;
  }

 private:
  std::mutex mu_;
  std::set<std::string> missing_;
  std::set<std::string> uids_;
  int calls_ = 0;
};

// Captures log lines for assertions; restores the default logger after.
//
// spdlog's free functions log through a raw pointer to the default logger,
// so a logger replaced while another thread (a reflector of a source the
// fixture stops only later) is inside a log call must stay alive: retired
// capture loggers are kept for the life of the test process (ASan found
// the use-after-free).
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10000)) {
    previous_ = spdlog::default_logger();
    logger_ = std::make_shared<spdlog::logger>("capture", spdlog::sinks_init_list{sink_});
    for (auto& s : previous_->sinks()) logger_->sinks().push_back(s);
    logger_->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger_);
  }
  ~LogCapture() {
    spdlog::set_default_logger(previous_);
    static auto* retired = new std::vector<std::shared_ptr<spdlog::logger>>();
    retired->push_back(std::move(logger_));
  }
  bool Contains(const std::string& needle) const { return Count(needle) > 0; }
  // Lines that contain every one of `needles`.
  int Count(const std::string& needle, const std::string& and_needle = "") const {
    int n = 0;
    for (const auto& line : sink_->last_formatted()) {
      n += line.find(needle) != std::string::npos && line.find(and_needle) != std::string::npos;
    }
    return n;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> previous_;
  std::shared_ptr<spdlog::logger> logger_;
};

inline const Pod* FindPod(const Snapshot& s, const std::string& ns, const std::string& name) {
  for (const auto& p : s.pods) {
    if (p.ns == ns && p.name == name) return &p;
  }
  return nullptr;
}

inline const Service* FindService(const Snapshot& s, const std::string& ns, const std::string& name) {
  for (const auto& svc : s.services) {
    if (svc.ns == ns && svc.name == name) return &svc;
  }
  return nullptr;
}

inline bool Enrolled(const Snapshot& s, const std::string& ns, const std::string& name) {
  const Pod* p = FindPod(s, ns, name);
  return p && p->enrolled;
}

inline std::set<std::string> ReadyIps(const Service* svc) {
  std::set<std::string> out;
  if (!svc) return out;
  for (const auto& e : svc->endpoints) {
    if (e.ready) out.insert(e.ip.ToString());
  }
  return out;
}

class SourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ringmesh-k8s-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    token_file_ = dir_ + "/token";
    WriteToken("token-1");
    next_locator_ = std::make_unique<FakeLocator>();
    locator_ = next_locator_.get();
    ASSERT_TRUE(api_.Start().ok());
  }
  void TearDown() override {
    source_.reset();
    api_.Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void WriteToken(const std::string& token) {
    // Like the kubelet: write aside, then rename over the old file.
    std::string tmp = token_file_ + ".tmp";
    std::ofstream(tmp) << token << "\n";
    std::filesystem::rename(tmp, token_file_);
  }

  KubernetesOptions Options() {
    KubernetesOptions o;
    o.api_server = api_.url();
    o.token_file = token_file_;
    o.node_name = "node-a";
    o.reflector.backoff_initial = std::chrono::milliseconds(20);
    o.reflector.backoff_max = std::chrono::milliseconds(300);
    o.reflector.connect_timeout = std::chrono::milliseconds(1000);
    o.reflector.list_timeout = std::chrono::milliseconds(5000);
    o.reflector.stall_timeout = std::chrono::milliseconds(5000);
    o.relocate_interval = std::chrono::milliseconds(50);
    return o;
  }

  void StartSource(KubernetesOptions opts) {
    if (!next_locator_) next_locator_ = std::make_unique<FakeLocator>();
    locator_ = next_locator_.get();
    auto src = KubernetesSource::Create(std::move(opts), std::move(next_locator_));
    ASSERT_TRUE(src.ok()) << src.status();
    source_ = std::move(*src);
  }
  void StartSource() { StartSource(Options()); }

  // Polls like the agent does until `pred` holds for the latest snapshot.
  bool WaitFor(const std::function<bool(const Snapshot&)>& pred,
               std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      PollOnce();
      if (last_ && pred(*last_)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  // One Poll; true when it produced a new snapshot.
  bool PollOnce() {
    auto polled = source_->Poll();
    EXPECT_TRUE(polled.ok()) << polled.status();
    if (polled.ok() && polled->has_value()) {
      last_ = std::move(**polled);
      ++snapshots_;
      return true;
    }
    return false;
  }
  bool WaitUntil(const std::function<bool()>& cond,
                 std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (cond()) return true;
      PollOnce();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return cond();
  }

  // A small world: an enrolled namespace, one pod on this node, one Service
  // with two ready endpoints.
  void SeedBasicWorld() {
    api_.Upsert("namespaces", MakeNamespace("shop", {{"ringmesh.io/mode", "enabled"}}));
    api_.Upsert("namespaces", MakeNamespace("kube-system"));
    api_.Upsert("pods", MakePod("shop", "web-1", TestUid("web-1"), "node-a", "10.244.1.5"));
    api_.Upsert("pods", MakePod("shop", "web-2", TestUid("web-2"), "node-b", "10.244.2.5"));
    api_.Upsert("services", MakeService("shop", "cart", "10.96.0.20", {{"http", 80, 8080}}));
    api_.Upsert("endpointslices", MakeEndpointSlice("shop", "cart-abc", "cart", {{"http", 8080}},
                                                    {{.ip = "10.244.1.7", .pod = "cart-1"},
                                                     {.ip = "10.244.2.7", .pod = "cart-2"}}));
  }

  FakeApiServer api_;
  std::string dir_;
  std::string token_file_;
  std::unique_ptr<FakeLocator> next_locator_;  // for the next StartSource
  FakeLocator* locator_ = nullptr;             // the current source's
  std::unique_ptr<KubernetesSource> source_;
  std::optional<Snapshot> last_;
  int snapshots_ = 0;
};

}  // namespace ringmesh::agent::k8s::testing
