// Listeners inside pod network namespaces (ProxyCore::ApplySnapshot). Needs
// root for unshare(CLONE_NEWNET)/setns; each pod is a fresh namespace with
// only loopback, made and removed by the test.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "tests/proxy/test_util.h"
#include "userspace/common/netns.h"
#include "userspace/proxy/proxy_core.h"

namespace ringmesh::proxy {
namespace {

using namespace ::ringmesh::proxy::testing;  // NOLINT
using std::chrono::milliseconds;

constexpr uint16_t kOutboundPort = 15001;

// A new network namespace with lo up; the returned fd keeps it alive.
UniqueFd NewNetns() {
  UniqueFd out;
  std::thread t([&] {
    if (unshare(CLONE_NEWNET) != 0) return;
    UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq ifr{};
    std::snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return;
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) return;
    out.Reset(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  });
  t.join();
  return out;
}

UniqueFd Dup(const UniqueFd& fd) { return UniqueFd(fcntl(fd.get(), F_DUPFD_CLOEXEC, 0)); }

UniqueFd ConnectIn(const UniqueFd& netns, const SocketAddress& addr) {
  UniqueFd c;
  auto s = RunInNetns(netns.get(), [&] {
    c = ConnectTo(addr, 5);
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
  return c;
}

// Success, or what went wrong (so a failure says whether the connection was
// closed, reset or left unanswered).
::testing::AssertionResult Echoes(const UniqueFd& c) {
  if (!c) return ::testing::AssertionFailure() << "no connection";
  if (send(c.get(), "e", 1, MSG_NOSIGNAL) != 1) return ::testing::AssertionFailure() << "send: " << strerror(errno);
  char b = 0;
  const auto start = std::chrono::steady_clock::now();
  const ssize_t n = recv(c.get(), &b, 1, 0);
  const int err = errno;
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  if (n == 1 && b == 'e') return ::testing::AssertionSuccess();
  if (n == 0) return ::testing::AssertionFailure() << "closed by the proxy after " << ms << " ms";
  if (n < 0) return ::testing::AssertionFailure() << "recv: " << strerror(err) << " after " << ms << " ms";
  return ::testing::AssertionFailure() << "wrong byte " << static_cast<int>(b);
}

Pod MakePod(const std::string& name, uint32_t id) {
  Pod p;
  p.ns = "team";
  p.name = name;
  p.uid = name + "-uid";
  p.service_account = name + "-sa";
  p.labels = {{"app", name + "-app"}};
  p.pod_id = id;
  return p;
}

class PodListenersTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) RINGMESH_SKIP_OR_FAIL("needs root (network namespaces)");
    RINGMESH_SKIP_OR_FAIL_WITHOUT_BACKEND(GetParam());
    ns_a_ = NewNetns();
    ns_b_ = NewNetns();
    ASSERT_TRUE(ns_a_ && ns_b_) << "could not create network namespaces";
    // An echo server on the same port inside each pod; the proxy's upstream
    // sockets are created in the pod's namespace, so each pod reaches its own.
    ASSERT_TRUE(RunInNetns(ns_a_.get(), [&] {
                  echo_a_ = std::make_unique<EchoServer>();
                  return absl::OkStatus();
                }).ok());
    echo_port_ = echo_a_->port();
    ASSERT_TRUE(RunInNetns(ns_b_.get(), [&] {
                  echo_b_ = std::make_unique<EchoServer>(echo_port_);
                  return absl::OkStatus();
                }).ok());
    ASSERT_EQ(echo_b_->port(), echo_port_);
    auto core = ProxyCore::Create(ProxyOptions{.workers = 2, .backend = GetParam()},
                                  std::make_shared<StaticOrigDstResolver>(Loopback(echo_port_)));
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
  }
  void TearDown() override {
    core_.reset();
    echo_a_.reset();
    echo_b_.reset();
  }

  // Replaces the fixture's proxy with one worker and the given spare-socket
  // settings.
  void RestartCore(int batch, absl::Duration idle) {
    core_.reset();
    auto core = ProxyCore::Create(
        ProxyOptions{.workers = 1, .backend = GetParam(), .upstream_socket_batch = batch, .spare_socket_idle = idle},
        std::make_shared<StaticOrigDstResolver>(Loopback(echo_port_)));
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
  }

  // Applies a generation with pod-a (ns_a_) and, if asked, pod-b (ns_b_).
  void ApplyPods(uint64_t generation, bool with_a, bool with_b) {
    Snapshot snap;
    snap.generation = generation;
    snap.outbound_port = kOutboundPort;
    std::vector<UniqueFd> fds;
    if (with_a) {
      snap.pods.push_back(MakePod("pod-a", 11));
      fds.push_back(Dup(ns_a_));
    }
    if (with_b) {
      snap.pods.push_back(MakePod("pod-b", 12));
      fds.push_back(Dup(ns_b_));
    }
    ASSERT_TRUE(core_->ApplySnapshot(snap, std::move(fds)).ok());
    ASSERT_TRUE(WaitFor([&] { return core_->ready(); }, milliseconds(2000)));
  }

  UniqueFd ns_a_, ns_b_;
  uint16_t echo_port_ = 0;
  std::unique_ptr<EchoServer> echo_a_, echo_b_;
  std::unique_ptr<ProxyCore> core_;
};

TEST_P(PodListenersTest, ListenersFollowSnapshots) {
  Snapshot snap;
  snap.generation = 1;
  snap.outbound_port = kOutboundPort;
  snap.pods = {MakePod("pod-a", 11), MakePod("pod-b", 12), MakePod("not-enrolled", 13)};
  snap.pods[2].enrolled = false;
  std::vector<UniqueFd> fds;
  fds.push_back(Dup(ns_a_));
  fds.push_back(Dup(ns_b_));
  fds.emplace_back();
  ASSERT_TRUE(core_->ApplySnapshot(snap, std::move(fds)).ok());
  EXPECT_TRUE(core_->ready());

  auto dump = core_->ConfigDump();
  ASSERT_EQ(dump["pods"].size(), 2u) << dump.dump(2);
  uint64_t cookie_b = 0;
  for (const auto& p : dump["pods"]) {
    EXPECT_EQ(p["state"], "listening");
    EXPECT_NE(p["netns_cookie"], 0);
    EXPECT_EQ(p["listeners"][0], "127.0.0.1:15001");
    if (p["name"] == "pod-b") cookie_b = p["netns_cookie"];
  }
  const size_t per_pod = dump["pods"][0]["listener_sockets"];
  EXPECT_TRUE(per_pod == 2 || per_pod == 4) << per_pod;  // v4 (+ v6) per worker
  ASSERT_TRUE(WaitFor([&] { return core_->listener_sockets() == 2 * per_pod; }, milliseconds(2000)));

  // A connection from inside pod A is attributed to pod A.
  UniqueFd a = ConnectIn(ns_a_, Loopback(kOutboundPort));
  ASSERT_TRUE(Echoes(a));
  auto conns = core_->Connections();
  ASSERT_EQ(conns.size(), 1u);
  EXPECT_EQ(conns[0].pod_ns, "team");
  EXPECT_EQ(conns[0].pod_name, "pod-a");
  EXPECT_EQ(conns[0].pod_id, 11u);
  EXPECT_EQ(echo_a_->accepted(), 1u);
  EXPECT_EQ(echo_b_->accepted(), 0u);  // upstream left from pod A's namespace

  if (per_pod == 4) {
    UniqueFd v6 = ConnectIn(ns_b_, *SocketAddress::Parse("[::1]:15001"));
    EXPECT_TRUE(Echoes(v6));
  }

  // Generation 2 drops pod A: its listeners close, its open connection
  // drains normally, pod B is untouched.
  snap.generation = 2;
  snap.pods = {MakePod("pod-b", 12)};
  fds.clear();
  fds.push_back(Dup(ns_b_));
  ASSERT_TRUE(core_->ApplySnapshot(snap, std::move(fds)).ok());
  ASSERT_TRUE(WaitFor([&] { return core_->listener_sockets() == per_pod; }, milliseconds(2000)));
  EXPECT_FALSE(ConnectIn(ns_a_, Loopback(kOutboundPort)).valid());
  EXPECT_TRUE(Echoes(a));
  dump = core_->ConfigDump();
  ASSERT_EQ(dump["pods"].size(), 1u);
  EXPECT_EQ(dump["pods"][0]["netns_cookie"], cookie_b);
  UniqueFd b = ConnectIn(ns_b_, Loopback(kOutboundPort));
  EXPECT_TRUE(Echoes(b));
  EXPECT_EQ(echo_b_->accepted(), per_pod == 4 ? 2u : 1u);
}

// Upstream sockets come in batches made inside the pod's namespace; the
// spares serve the next connections from that pod (and only that pod), and
// are closed when the pod goes away or they sit unused.
TEST_P(PodListenersTest, SpareUpstreamSocketsAreThePodsAndAreFreed) {
  ASSERT_NO_FATAL_FAILURE(RestartCore(4, absl::Seconds(60)));
  auto spares = [&] { return core_->stats().upstream_spare_sockets.load(); };
  ASSERT_NO_FATAL_FAILURE(ApplyPods(1, true, true));

  std::vector<UniqueFd> held;
  for (int i = 0; i < 5; ++i) {
    held.push_back(ConnectIn(ns_a_, Loopback(kOutboundPort)));
    ASSERT_TRUE(Echoes(held.back())) << i;
    // One worker, one at a time: a batch of 4 at the 1st and the 5th.
    EXPECT_EQ(spares(), i == 0 || i == 4 ? 3 : 3 - i) << i;
  }
  EXPECT_EQ(echo_a_->accepted(), 5u);
  EXPECT_EQ(echo_b_->accepted(), 0u);  // every spare was made in pod A's namespace
  UniqueFd b = ConnectIn(ns_b_, Loopback(kOutboundPort));
  ASSERT_TRUE(Echoes(b));
  EXPECT_EQ(echo_b_->accepted(), 1u);
  EXPECT_EQ(spares(), 6);  // 3 for each pod

  // Pod A leaves the snapshot and its connections end: its spares close.
  ASSERT_NO_FATAL_FAILURE(ApplyPods(2, false, true));
  held.clear();
  EXPECT_TRUE(WaitFor([&] { return spares() == 3; }, milliseconds(5000))) << spares();
  b.Reset();
  core_.reset();  // and shutdown closes the rest
}

TEST_P(PodListenersTest, IdleSpareUpstreamSocketsAreClosed) {
  ASSERT_NO_FATAL_FAILURE(RestartCore(8, absl::Milliseconds(300)));
  ASSERT_NO_FATAL_FAILURE(ApplyPods(1, true, false));
  const size_t fds_before = CountOpenFds();
  UniqueFd a = ConnectIn(ns_a_, Loopback(kOutboundPort));
  ASSERT_TRUE(Echoes(a));
  EXPECT_EQ(core_->stats().upstream_spare_sockets.load(), 7);
  EXPECT_TRUE(WaitFor([&] { return core_->stats().upstream_spare_sockets.load() == 0; }, milliseconds(3000)));
  // The connection stays up; only the spares went. Left: the client, the
  // proxy's two ends and the (in-process) echo server's end.
  EXPECT_TRUE(Echoes(a));
  EXPECT_EQ(CountOpenFds(), fds_before + 4);
}

TEST_P(PodListenersTest, PodWhosePortIsTakenIsReportedNotReady) {
  // Something in the pod already holds the outbound port (without
  // SO_REUSEPORT), so the proxy cannot bind it there.
  UniqueFd bare = NewNetns();
  ASSERT_TRUE(bare);
  UniqueFd squatter;
  ASSERT_TRUE(RunInNetns(bare.get(), [&] {
                uint16_t port = kOutboundPort;
                squatter = ListenLoopback(&port);
                return absl::OkStatus();
              }).ok());
  ASSERT_TRUE(squatter);
  Snapshot snap;
  snap.generation = 1;
  snap.outbound_port = kOutboundPort;
  snap.pods = {MakePod("broken", 21), MakePod("pod-a", 11)};
  std::vector<UniqueFd> fds;
  fds.push_back(Dup(bare));
  fds.push_back(Dup(ns_a_));
  EXPECT_FALSE(core_->ApplySnapshot(snap, std::move(fds)).ok());
  EXPECT_FALSE(core_->ready());
  auto dump = core_->ConfigDump();
  ASSERT_EQ(dump["pods"].size(), 2u);
  int errors = 0;
  for (const auto& p : dump["pods"]) errors += p["state"] == "error";
  EXPECT_EQ(errors, 1);
  EXPECT_TRUE(Echoes(ConnectIn(ns_a_, Loopback(kOutboundPort))));
}

// What the handover does to the old proxy: Drain() then Stop(). Connections
// the kernel queued on a listener before the worker got round to closing it
// are served to the end, not reset: Drain waits until every listener is
// closed, not only for "no connections" (which held while the worker was
// busy, so Stop() reset what it accepted next; the handover flake).
TEST_P(PodListenersTest, DrainServesConnectionsQueuedWhenItStarts) {
  ASSERT_NO_FATAL_FAILURE(RestartCore(1, absl::Seconds(60)));
  ASSERT_NO_FATAL_FAILURE(ApplyPods(1, true, false));
  ASSERT_TRUE(WaitFor([&] { return core_->listener_sockets() > 0; }, milliseconds(2000)));
  // Hold the one worker: the clients below wait in the listen backlog.
  std::atomic<bool> held{false}, release{false};
  core_->RunOnWorkers([&] {
    held = true;
    while (!release) std::this_thread::sleep_for(milliseconds(1));
  });
  ASSERT_TRUE(WaitFor([&] { return held.load(); }, milliseconds(2000)));
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(ConnectIn(ns_a_, Loopback(kOutboundPort)));
  std::atomic<bool> clean{false};
  std::thread stopper([&] {
    clean = core_->Drain(absl::Seconds(10));
    core_->Stop();
  });
  std::this_thread::sleep_for(milliseconds(100));  // Drain and Stop get going first
  release = true;
  for (size_t i = 0; i < clients.size(); ++i) {
    EXPECT_TRUE(Echoes(clients[i])) << "client " << i;
    clients[i].Reset();
  }
  stopper.join();
  EXPECT_TRUE(clean.load());
  EXPECT_EQ(echo_a_->accepted(), 4u);
}

INSTANTIATE_TEST_SUITE_P(Backends, PodListenersTest, ::testing::Values(IoBackend::kIoUring, IoBackend::kEpoll),
                         [](const auto& p) { return std::string(ToString(p.param)); });

}  // namespace
}  // namespace ringmesh::proxy
