// Kernel test of the BPF datapath without the proxy: a real cgroup, a real
// network namespace, the real hooks. The test plays both the app (a child
// process in the pod's cgroup and netns) and the proxy (a listener in the
// pod netns, created from this process, which is outside the pod cgroup).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/bpf/root_guard.h"
#include "userspace/bpf/datapath.h"
#include "userspace/bpf/inspect.h"
#include "userspace/common/netns.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::bpf {
namespace {

namespace fs = std::filesystem;

std::string CgroupRoot() {
  for (const char* p : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    if (fs::exists(fs::path(p) / "cgroup.procs") && fs::exists(fs::path(p) / "cgroup.subtree_control")) return p;
  }
  return "";
}

// Result of one connect made by the "app" child.
struct AppResult {
  int connect_errno = -1;  // 0 = connected
  char reply[32] = {};
};

class DatapathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RINGMESH_REQUIRE_ROOT();
    std::string cg_root = CgroupRoot();
    ASSERT_FALSE(cg_root.empty()) << "no cgroup v2 hierarchy";
    std::string id = std::to_string(getpid());
    cg_root_ = cg_root;
    run_cg_ = cg_root + "/ringmesh-test-dp-" + id;
    pods_cg_ = run_cg_ + "/pods";
    pod_cg_ = pods_cg_ + "/pod";
    system_cg_ = run_cg_ + "/system";
    pin_dir_ = "/sys/fs/bpf/ringmesh-test-dp-" + id;
    StartWatchdog();
    ASSERT_TRUE(fs::create_directories(pod_cg_));
    ASSERT_TRUE(fs::create_directories(system_cg_));
    // This process plays the proxy: it lives in the node's system cgroup,
    // as ringmesh-proxy does, so sockops sees its accepted sockets.
    std::ifstream self_cg("/proc/self/cgroup");
    for (std::string line; std::getline(self_cg, line);) {
      if (line.rfind("0::", 0) == 0) orig_cg_ = cg_root + line.substr(3);
    }
    std::ofstream(system_cg_ + "/cgroup.procs") << getpid() << std::flush;
    // The pod's netns: a thread unshares and hands back its namespace fd.
    std::thread t([&] {
      if (unshare(CLONE_NEWNET) == 0) {
        netns_ = UniqueFd(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
        // lo up, so 127.0.0.1 works (the proxy listener lives there).
        system("ip link set lo up");
      }
    });
    t.join();
    ASSERT_TRUE(netns_.valid());
    auto cookie = NetnsCookie(netns_.get());
    ASSERT_TRUE(cookie.ok()) << cookie.status();
    cookie_ = *cookie;

    DatapathOptions o;
    o.pin_dir = pin_dir_;
    o.cgroup_path = run_cg_;
    auto dp = Datapath::LoadOrAdopt(o);
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = std::move(*dp);
  }

  void TearDown() override {
    dp_.reset();
    listener_.Reset();
    if (!pin_dir_.empty()) {
      EXPECT_TRUE(Datapath::Uninstall(pin_dir_).ok());
      EXPECT_FALSE(fs::exists(pin_dir_));
    }
    if (!orig_cg_.empty()) std::ofstream(orig_cg_ + "/cgroup.procs") << getpid() << std::flush;
    for (const auto& d : {pod_cg_, pods_cg_, system_cg_, run_cg_}) {
      if (!d.empty()) rmdir(d.c_str());
    }
    if (!run_cg_.empty()) {
      EXPECT_FALSE(fs::exists(run_cg_));
    }
    StopWatchdog();
  }

  // If this process dies before TearDown (a crash, a signal, ctest's
  // timeout), a child forked here outlives it and removes the pins (which
  // detaches the programs) and the cgroups this test made. TearDown tells
  // it that everything is already clean.
  void StartWatchdog() {
    int wd[2];
    ASSERT_EQ(pipe2(wd, O_CLOEXEC), 0);
    watchdog_ = fork();
    ASSERT_GE(watchdog_, 0);
    if (watchdog_ == 0) {
      close(wd[1]);
      char b;
      ssize_t n;
      do {
        n = read(wd[0], &b, 1);
      } while (n < 0 && errno == EINTR);
      if (n == 1) _exit(0);  // TearDown cleaned up
      // EOF: the test process is gone (app children it forked too, once
      // they have closed their copy of the pipe).
      std::ofstream(run_cg_ + "/cgroup.kill") << "1" << std::flush;
      std::error_code ec;
      fs::remove_all(pin_dir_, ec);
      for (int i = 0; i < 50; ++i) {
        for (const auto& d : {pod_cg_, pods_cg_, system_cg_, run_cg_}) rmdir(d.c_str());
        if (!fs::exists(run_cg_)) break;
        usleep(20000);
      }
      _exit(0);
    }
    close(wd[0]);
    watchdog_fd_.Reset(wd[1]);
  }

  void StopWatchdog() {
    if (watchdog_ <= 0) return;
    (void)!write(watchdog_fd_.get(), "d", 1);
    watchdog_fd_.Reset();
    waitpid(watchdog_, nullptr, 0);
    watchdog_ = -1;
  }

  void Enroll(uint32_t flags) {
    PodEntry e;
    e.netns_cookie = cookie_;
    e.info.pod_id = 1;
    e.info.flags = flags;
    e.info.proxy_port = htons(15001);
    e.info.opt_out_ports[0] = htons(22);
    e.info.n_opt_out_ports = 1;
    e.opt_out_cidrs.push_back(*Cidr::Parse("198.18.99.0/24"));
    auto r = dp_->SyncPods({e});
    ASSERT_TRUE(r.errors.empty()) << r.errors.front();
  }

  void Listen() {
    auto st = RunInNetns(netns_.get(), [&]() -> absl::Status {
      listener_ = UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      int one = 1;
      setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(15001);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(listener_.get(), 16) != 0) {
        return absl::InternalError(std::strerror(errno));
      }
      return absl::OkStatus();
    });
    ASSERT_TRUE(st.ok()) << st;
  }

  // In a forked child (the app): joins the pod's cgroup and netns and
  // connects to dst:port, with send/receive timeouts when timeout_s > 0.
  // Returns the socket, with *connect_errno 0, or its connect errno; exits
  // the child (2) when it cannot enter the pod.
  int ChildTryConnect(const char* dst, uint16_t port, int timeout_s, int* connect_errno) {
    std::ofstream(pod_cg_ + "/cgroup.procs") << getpid() << std::flush;
    if (setns(netns_.get(), CLONE_NEWNET) != 0) _exit(2);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (timeout_s > 0) {
      timeval tv{timeout_s, 0};
      setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, dst, &a.sin_addr);
    *connect_errno = connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 ? 0 : errno;
    return s;
  }
  // The same, exiting the child (3) when the connect fails.
  int ChildConnect(const char* dst, uint16_t port, int timeout_s = 0) {
    int err = 0;
    int s = ChildTryConnect(dst, port, timeout_s, &err);
    if (err != 0) _exit(3);
    return s;
  }

  // Forks the app: joins the pod cgroup and netns, connects to dst:port,
  // sends "ping", reads a reply. Returns after the child exits.
  AppResult RunApp(const char* dst, uint16_t port, const std::function<void()>& proxy_side = nullptr) {
    int p[2];
    EXPECT_EQ(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
      AppResult r;
      int s = ChildTryConnect(dst, port, 2, &r.connect_errno);
      if (r.connect_errno == 0) {
        (void)!write(s, "ping", 4);
        ssize_t n = read(s, r.reply, sizeof(r.reply) - 1);
        if (n < 0) r.reply[0] = 0;
      }
      (void)!write(p[1], &r, sizeof(r));
      _exit(0);
    }
    close(p[1]);
    if (proxy_side) proxy_side();
    AppResult r;
    EXPECT_EQ(read(p[0], &r, sizeof(r)), static_cast<ssize_t>(sizeof(r)));
    close(p[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return r;
  }

  // An accepted socket's own (local, peer) addresses.
  static std::pair<SocketAddress, SocketAddress> Ends(int fd) {
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof(local), pl = sizeof(peer);
    getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll);
    getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl);
    return {SocketAddress::FromSockaddr(local), SocketAddress::FromSockaddr(peer)};
  }

  uint64_t Counter(rm_counter c) {
    auto v = dp_->maps().ReadCounters();
    EXPECT_TRUE(v.ok());
    return v.ok() ? (*v)[c] : 0;
  }

  std::string cg_root_, orig_cg_, run_cg_, pods_cg_, pod_cg_, system_cg_, pin_dir_;
  pid_t watchdog_ = -1;
  UniqueFd watchdog_fd_;
  UniqueFd netns_, listener_;
  uint64_t cookie_ = 0;
  std::unique_ptr<Datapath> dp_;
};

TEST_F(DatapathTest, RedirectsRecordsOrigDstAndFastPathCarriesBytes) {
  Enroll(RM_POD_ENROLLED);
  Listen();
  std::optional<rm_orig_dst> od;
  auto in_sockhash = PinnedMaps::SockhashAdd::kFailed;
  auto r = RunApp("198.18.0.10", 80, [&] {
    UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(c.valid());
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof(local), pl = sizeof(peer);
    getsockname(c.get(), reinterpret_cast<sockaddr*>(&local), &ll);
    getpeername(c.get(), reinterpret_cast<sockaddr*>(&peer), &pl);
    auto cookie = SocketNetnsCookie(c.get());
    ASSERT_TRUE(cookie.ok());
    EXPECT_EQ(*cookie, cookie_);
    od = dp_->maps().TakeOrigDst(*cookie, SocketAddress::FromSockaddr(peer));
    // sockops already inserted the accepted socket at PASSIVE_ESTABLISHED,
    // so the proxy's own insertion finds it there.
    in_sockhash = dp_->maps().AddToSockhash(c.get(), *cookie, SocketAddress::FromSockaddr(local),
                                            SocketAddress::FromSockaddr(peer));
    char buf[8] = {};
    ASSERT_EQ(read(c.get(), buf, 4), 4);
    EXPECT_STREQ(buf, "ping");
    ASSERT_EQ(write(c.get(), "pong", 4), 4);
  });
  EXPECT_EQ(r.connect_errno, 0) << std::strerror(r.connect_errno);
  EXPECT_STREQ(r.reply, "pong");
  ASSERT_TRUE(od.has_value()) << "sockops did not re-key the original destination";
  EXPECT_EQ(SocketAddress::FromSockaddr([&] {
              sockaddr_storage ss{};
              auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
              sin->sin_family = AF_INET;
              std::memcpy(&sin->sin_addr, od->addr + 12, 4);
              sin->sin_port = od->port;
              return ss;
            }())
                .ToString(),
            "198.18.0.10:80");
  EXPECT_EQ(od->pod_id, 1u);
  EXPECT_EQ(od->netns_cookie, cookie_);
  EXPECT_EQ(in_sockhash, PinnedMaps::SockhashAdd::kAlreadyPresent);
  EXPECT_EQ(Counter(RM_CTR_REDIRECTED), 1u);
  EXPECT_EQ(Counter(RM_CTR_ESTABLISHED_REKEYED), 1u);
  EXPECT_EQ(Counter(RM_CTR_SOCKHASH_ADDED), 1u);
  EXPECT_EQ(Counter(RM_CTR_PROXY_SOCKHASH_ADDED), 1u);
  EXPECT_EQ(Counter(RM_CTR_MSG_REDIRECTED), 2u) << "ping and pong both through sk_msg";
  EXPECT_EQ(Counter(RM_CTR_MSG_PASS_MISS), 0u);
  // Taken by the proxy: nothing left in the orig-dst map; sockets closed:
  // nothing left in the sockhash.
  EXPECT_EQ(*dp_->maps().CountEntries(RM_MAP_ORIG_DST), 0u);
  for (int i = 0; i < 100 && *dp_->maps().CountEntries(RM_MAP_SOCKHASH) != 0; ++i) usleep(10000);
  EXPECT_EQ(*dp_->maps().CountEntries(RM_MAP_SOCKHASH), 0u);
  // Both ends' kernel addresses were recorded and go with their sockets.
  EXPECT_GE(Counter(RM_CTR_MSG_PEER_QUEUE_READ), 2u) << "the kernel's unread count was not used";
  for (int i = 0; i < 100 && *dp_->maps().CountEntries(RM_MAP_SOCK_ADDR) != 0; ++i) usleep(10000);
  EXPECT_EQ(*dp_->maps().CountEntries(RM_MAP_SOCK_ADDR), 0u);
  EXPECT_EQ(Counter(RM_CTR_SOCK_ADDR_CLOSED), 2u);
}

TEST_F(DatapathTest, FastPathOffStillRedirectsOverTcp) {
  Enroll(RM_POD_ENROLLED);
  ASSERT_TRUE(dp_->maps().SetFastpath(false).ok());
  Listen();
  auto r = RunApp("198.18.0.10", 80, [&] {
    UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    char buf[8] = {};
    ASSERT_EQ(read(c.get(), buf, 4), 4);
    ASSERT_EQ(write(c.get(), "pong", 4), 4);
  });
  EXPECT_STREQ(r.reply, "pong");
  EXPECT_EQ(Counter(RM_CTR_REDIRECTED), 1u);
  EXPECT_EQ(Counter(RM_CTR_SOCKHASH_ADDED), 0u);
  EXPECT_EQ(Counter(RM_CTR_SOCKHASH_SKIPPED_FASTPATH_OFF), 1u);
  EXPECT_EQ(Counter(RM_CTR_MSG_REDIRECTED), 0u);
}

// A destination the proxy found to carry short connections (rm_short_dst)
// keeps both ends of new connections out of the sockhash; the bytes still
// flow over TCP. Clearing it brings the next connection back.
TEST_F(DatapathTest, ShortRouteStaysOffTheFastPath) {
  Enroll(RM_POD_ENROLLED);
  Listen();
  const SocketAddress dst = *SocketAddress::Parse("198.18.0.10:80");
  auto exchange = [&] {
    auto r = RunApp("198.18.0.10", 80, [&] {
      UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      ASSERT_TRUE(c.valid());
      char buf[8] = {};
      ASSERT_EQ(read(c.get(), buf, 4), 4);
      ASSERT_EQ(write(c.get(), "pong", 4), 4);
    });
    EXPECT_EQ(r.connect_errno, 0) << std::strerror(r.connect_errno);
    EXPECT_STREQ(r.reply, "pong");
  };
  ASSERT_TRUE(dp_->maps().SetShortRoute(dst, true));
  ASSERT_TRUE(dp_->maps().SetShortRoute(*SocketAddress::Parse("198.18.0.10:81"), true));
  exchange();
  EXPECT_EQ(Counter(RM_CTR_REDIRECTED), 1u);
  EXPECT_EQ(Counter(RM_CTR_SOCKHASH_SKIPPED_SHORT), 2u) << "the app's end and the proxy's end";
  EXPECT_EQ(Counter(RM_CTR_SOCKHASH_ADDED), 0u);
  EXPECT_EQ(Counter(RM_CTR_PROXY_SOCKHASH_ADDED), 0u);
  EXPECT_EQ(Counter(RM_CTR_MSG_REDIRECTED), 0u);
  ASSERT_TRUE(dp_->maps().SetShortRoute(dst, false));
  ASSERT_TRUE(dp_->maps().SetShortRoute(dst, false)) << "clearing twice is not an error";
  exchange();
  EXPECT_EQ(Counter(RM_CTR_SOCKHASH_SKIPPED_SHORT), 2u);
  EXPECT_EQ(Counter(RM_CTR_SOCKHASH_ADDED), 1u);
  EXPECT_EQ(Counter(RM_CTR_PROXY_SOCKHASH_ADDED), 1u);
  EXPECT_EQ(Counter(RM_CTR_MSG_REDIRECTED), 2u);
  EXPECT_EQ(*dp_->maps().CountEntries(RM_MAP_SHORT_DST), 1u) << "the other port's entry stays";
}

// Socket LB: a short route armed with endpoints sends connects straight to
// one of them while its allowance lasts, then through the proxy again; the
// kill switch turns it off.
TEST_F(DatapathTest, ShortRouteWithEndpointsConnectsDirect) {
  Enroll(RM_POD_ENROLLED);
  Listen();
  // Two "pods" (listeners in the pod netns; loopback keeps the test to one
  // namespace: the hook rewrites before any route lookup).
  UniqueFd backend[2];
  for (int b = 0; b < 2; ++b) {
    auto st = RunInNetns(netns_.get(), [&]() -> absl::Status {
      backend[b] = UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(9000 + b));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (bind(backend[b].get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
          listen(backend[b].get(), 64) != 0) {
        return absl::InternalError(std::strerror(errno));
      }
      return absl::OkStatus();
    });
    ASSERT_TRUE(st.ok()) << st;
  }
  int landed[3] = {};  // backend 0, backend 1, proxy
  auto exchange = [&] {
    auto r = RunApp("198.18.0.10", 80, [&] {
      pollfd p[3] = {{backend[0].get(), POLLIN, 0}, {backend[1].get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
      ASSERT_EQ(poll(p, 3, 5000), 1) << "exactly one listener has the connection";
      for (int i = 0; i < 3; ++i) {
        if (!(p[i].revents & POLLIN)) continue;
        ++landed[i];
        UniqueFd c(accept4(p[i].fd, nullptr, nullptr, SOCK_CLOEXEC));
        ASSERT_TRUE(c.valid());
        char buf[8] = {};
        ASSERT_EQ(read(c.get(), buf, 4), 4);
        const char* reply[3] = {"b0", "b1", "px"};
        ASSERT_EQ(write(c.get(), reply[i], 2), 2);
      }
    });
    EXPECT_EQ(r.connect_errno, 0) << std::strerror(r.connect_errno);
  };
  const SocketAddress vip = *SocketAddress::Parse("198.18.0.10:80");
  const SocketAddress eps[2] = {*SocketAddress::Parse("127.0.0.1:9000"), *SocketAddress::Parse("127.0.0.1:9001")};
  ASSERT_TRUE(dp_->maps().SetShortRoute(vip, true, eps, 20));
  for (int i = 0; i < 22; ++i) exchange();
  EXPECT_EQ(landed[0] + landed[1], 20) << "the allowance";
  EXPECT_GE(landed[0], 1) << "both endpoints are chosen";
  EXPECT_GE(landed[1], 1);
  EXPECT_EQ(landed[2], 2) << "then the proxy again";
  EXPECT_EQ(Counter(RM_CTR_CONNECT_DIRECT), 20u);
  EXPECT_EQ(Counter(RM_CTR_REDIRECTED), 2u);
  EXPECT_EQ(dp_->maps().DirectStats(eps[0]).connects, static_cast<uint64_t>(landed[0]));
  EXPECT_EQ(dp_->maps().DirectStats(eps[1]).connects, static_cast<uint64_t>(landed[1]));
  EXPECT_EQ(dp_->maps().DirectStats(eps[0]).failed, 0u);
  EXPECT_EQ(dp_->maps().DirectStats(eps[0]).established, static_cast<uint64_t>(landed[0]));
  // Closes are counted as the sockets reach CLOSE (both ends have closed
  // by now; the last ACKs may still be on their way).
  for (int i = 0; i < 200 && dp_->maps().DirectStats(eps[0]).closed + dp_->maps().DirectStats(eps[1]).closed < 20; ++i) {
    usleep(5000);
  }
  EXPECT_EQ(dp_->maps().DirectStats(eps[0]).closed, static_cast<uint64_t>(landed[0]));
  EXPECT_EQ(dp_->maps().DirectStats(eps[1]).closed, static_cast<uint64_t>(landed[1]));
  {
    // Per source pod (the test's pod is pod 1), the sums left out.
    uint64_t by_pod = 0;
    for (const auto& d : dp_->maps().DirectStatsBySource()) {
      EXPECT_EQ(d.pod_id, 1u);
      by_pod += d.counts.established;
    }
    EXPECT_EQ(by_pod, 20u);
  }
  EXPECT_EQ(*dp_->maps().CountEntries(RM_MAP_ORIG_DST), 0u) << "a direct connection leaves nothing for the proxy";

  // Re-armed with one endpoint: only it is used.
  ASSERT_TRUE(dp_->maps().SetShortRoute(vip, true, std::span(eps, 1), 5));
  const int before0 = landed[0];
  for (int i = 0; i < 5; ++i) exchange();
  EXPECT_EQ(landed[0] - before0, 5);
  EXPECT_EQ(landed[1] + landed[0], 25);

  // The kill switch: through the proxy, allowance or not.
  ASSERT_TRUE(dp_->maps().SetShortRoute(vip, true, eps, 5));
  ASSERT_TRUE(dp_->maps().SetFastpath(false).ok());
  exchange();
  EXPECT_EQ(landed[2], 3);
  ASSERT_TRUE(dp_->maps().SetFastpath(true).ok());
  // A short route without endpoints never goes direct; a starting proxy
  // empties the map.
  ASSERT_TRUE(dp_->maps().SetShortRoute(vip, true));
  exchange();
  EXPECT_EQ(landed[2], 4);
  dp_->maps().ClearShortRoutes();
  EXPECT_EQ(*dp_->maps().CountEntries(RM_MAP_SHORT_DST), 0u);
  EXPECT_EQ(Counter(RM_CTR_CONNECT_DIRECT), 25u);

  // An endpoint that refuses: the app's connect fails (as it would without
  // a mesh), the failure is counted, and socket LB ends for the route at
  // once: the next connect goes through the proxy, which can retry.
  const SocketAddress dead = *SocketAddress::Parse("127.0.0.1:9002");  // nothing listens
  ASSERT_TRUE(dp_->maps().SetShortRoute(vip, true, std::span(&dead, 1), 100));
  auto refused = RunApp("198.18.0.10", 80);
  EXPECT_EQ(refused.connect_errno, ECONNREFUSED);
  EXPECT_EQ(Counter(RM_CTR_CONNECT_DIRECT_FAILED), 1u);
  EXPECT_EQ(dp_->maps().DirectStats(dead).connects, 1u);
  EXPECT_EQ(dp_->maps().DirectStats(dead).failed, 1u);
  EXPECT_EQ(dp_->maps().DirectStats(dead).established, 0u);
  EXPECT_EQ(dp_->maps().DirectStats(dead).closed, 0u) << "a failed connect is not a closed connection";
  ASSERT_TRUE(dp_->maps().ShortRoute(vip).has_value());
  EXPECT_EQ(dp_->maps().ShortRoute(vip)->direct_left, 0u) << "socket LB ended for the route";
  exchange();
  EXPECT_EQ(landed[2], 5) << "through the proxy";
  EXPECT_EQ(Counter(RM_CTR_CONNECT_DIRECT_FAILED), 1u) << "a connection that established is not a failure";
  EXPECT_EQ(dp_->maps().DirectStats(eps[0]).failed + dp_->maps().DirectStats(eps[1]).failed, 0u);
}

// Switching the fast path off and on again mid-connection must not reorder
// bytes: a socket that passed once stays on TCP.
TEST_F(DatapathTest, KillSwitchTogglePreservesOrder) {
  Enroll(RM_POD_ENROLLED);
  Listen();
  std::string got;
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  if (pid == 0) {
    int s = ChildConnect("198.18.0.10", 80);
    char go;
    for (char c = 'a'; c <= 'f'; ++c) {
      if (read(p[0], &go, 1) != 1) _exit(4);  // parent toggles between writes
      if (write(s, &c, 1) != 1) _exit(5);
    }
    close(s);
    _exit(0);
  }
  close(p[0]);
  UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(c.valid());
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(dp_->maps().SetFastpath(i % 2 == 0).ok());
    ASSERT_EQ(write(p[1], "g", 1), 1);
    usleep(5000);  // let the byte land; the proxy does not read until the end
  }
  close(p[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  char buf[16];
  for (ssize_t n; (n = read(c.get(), buf, sizeof(buf))) > 0;) got.append(buf, static_cast<size_t>(n));
  EXPECT_EQ(got, "abcdef");
  EXPECT_EQ(Counter(RM_CTR_MSG_REDIRECTED), 1u) << "only 'a' went through sk_msg";
  EXPECT_GE(Counter(RM_CTR_MSG_PASS_TCP_COMMITTED), 4u);
}

// A redirect lands in the proxy socket's queue with no receive-window check:
// without a bound, an app writing to a proxy that does not read queues
// until the kernel's TCP memory limit and then gets ENOMEM. With the budget
// spent the socket goes over TCP, whose flow control makes the writer wait
// (EAGAIN), and every byte still arrives, in order.
TEST_F(DatapathTest, FastPathBudgetBoundsTheQueueOfAReaderThatDoesNotRead) {
  constexpr uint64_t kBudget = 256 << 10;
  constexpr uint64_t kLimit = 64ULL << 20;  // the test's own bound on the writer
  Enroll(RM_POD_ENROLLED);
  Listen();
  ASSERT_TRUE(dp_->maps().SetFastpathBudget(kBudget).ok());
  struct Report {
    uint64_t written = 0;
    int err = 0;
  };
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  if (pid == 0) {
    int s = ChildConnect("198.18.0.10", 80);
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    Report rep;
    std::vector<char> chunk(64 << 10);
    int blocked = 0;
    while (rep.written < kLimit && blocked < 3) {
      for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((rep.written + i) % 251);
      ssize_t n = write(s, chunk.data(), chunk.size());
      if (n > 0) {
        rep.written += static_cast<uint64_t>(n);
        blocked = 0;
      } else if (errno == EAGAIN) {
        pollfd pfd{s, POLLOUT, 0};
        if (poll(&pfd, 1, 100) == 0) ++blocked;  // really waiting for the reader
      } else {
        rep.err = errno;
        break;
      }
    }
    (void)!write(p[1], &rep, sizeof(rep));
    close(s);
    _exit(0);
  }
  close(p[1]);
  UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(c.valid());
  Report rep;
  ASSERT_EQ(read(p[0], &rep, sizeof(rep)), static_cast<ssize_t>(sizeof(rep)));  // the writer is stuck now
  close(p[0]);
  uint64_t got = 0;
  bool in_order = true;
  char buf[65536];
  for (ssize_t n; (n = read(c.get(), buf, sizeof(buf))) > 0;) {
    for (ssize_t i = 0; i < n && in_order; ++i) in_order = buf[i] == static_cast<char>((got + i) % 251);
    got += static_cast<uint64_t>(n);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(rep.err, 0) << std::strerror(rep.err);
  EXPECT_LT(rep.written, kLimit) << "the writer was never held back";
  // The budget plus what TCP itself buffers (send and receive buffers).
  EXPECT_LE(rep.written, kBudget + (16ULL << 20));
  EXPECT_EQ(got, rep.written);
  EXPECT_TRUE(in_order);
  EXPECT_GE(Counter(RM_CTR_MSG_REDIRECTED), 1u);
  EXPECT_EQ(Counter(RM_CTR_MSG_PASS_BUDGET), 1u);
}

// With the proxy crediting what it read (rm_fp_credit), an app may send far
// more than the budget and stay on the fast path throughout; the credit
// entry goes away with the proxy's socket even if the proxy never deletes it.
TEST_F(DatapathTest, FastPathCreditKeepsAReadingProxyOnTheFastPath) {
  constexpr uint64_t kBudget = 2ULL << 20;
  constexpr uint64_t kStep = 1ULL << 20;  // the app waits for the reader every MiB
  constexpr uint64_t kTotal = 8ULL << 20;
  Enroll(RM_POD_ENROLLED);
  Listen();
  ASSERT_TRUE(dp_->maps().SetFastpathBudget(kBudget).ok());
  // The fallback of kernels before 6.12, which cannot count the unread bytes.
  ASSERT_TRUE(dp_->maps().SetFlowControl(RM_FLOW_CONTROL_PROXY_CREDIT).ok());
  int tok[2];
  ASSERT_EQ(pipe(tok), 0);
  // A token to an app that already failed must fail the test, not kill it.
  signal(SIGPIPE, SIG_IGN);
  pid_t pid = fork();
  if (pid == 0) {
    close(tok[1]);
    int s = ChildConnect("198.18.0.10", 80, 10);
    std::vector<char> chunk(16 << 10);
    for (uint64_t sent = 0; sent < kTotal;) {
      if (sent > 0 && sent % kStep == 0) {
        char t;
        if (read(tok[0], &t, 1) != 1) _exit(5);  // the reader has read and credited up to here
      }
      for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((sent + i) % 251);
      ssize_t n = write(s, chunk.data(), chunk.size());
      if (n != static_cast<ssize_t>(chunk.size())) _exit(4);
      sent += static_cast<uint64_t>(n);
    }
    close(s);
    _exit(0);
  }
  close(tok[0]);
  UniqueFd token(tok[1]);
  UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(c.valid());
  const auto [local, peer] = Ends(c.get());
  uint64_t got = 0;
  bool in_order = true;
  char buf[65536];
  for (ssize_t n; (n = read(c.get(), buf, sizeof(buf))) > 0;) {
    for (ssize_t i = 0; i < n && in_order; ++i) in_order = buf[i] == static_cast<char>((got + i) % 251);
    const uint64_t before = got;
    got += static_cast<uint64_t>(n);
    if (got / kStep != before / kStep) {
      ASSERT_TRUE(dp_->maps().Credit(cookie_, local, peer, got));
      // No token after the last MiB: the app has exited.
      if (got < kTotal) {
        ASSERT_EQ(write(token.get(), "t", 1), 1) << "app gone after " << got << " bytes";
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(got, kTotal);
  EXPECT_TRUE(in_order);
  EXPECT_EQ(Counter(RM_CTR_MSG_PASS_BUDGET), 0u) << "the app left the fast path";
  EXPECT_EQ(Counter(RM_CTR_MSG_PASS_TCP_COMMITTED), 0u);
  EXPECT_GE(Counter(RM_CTR_MSG_REDIRECTED), kTotal / (16 << 10));
  ASSERT_EQ(*dp_->maps().CountEntries(RM_MAP_FP_CREDIT), 1u);
  c.Reset();  // the proxy end closes without deleting its credit: sockops does
  for (int i = 0; i < 100 && *dp_->maps().CountEntries(RM_MAP_FP_CREDIT) != 0; ++i) usleep(10000);
  EXPECT_EQ(*dp_->maps().CountEntries(RM_MAP_FP_CREDIT), 0u);
  EXPECT_EQ(Counter(RM_CTR_FP_CREDIT_CLOSED), 1u);
}

// The proxy -> app direction: nobody credits it, but the kernel counts
// what the app has not read yet, so a reply stream far larger than the
// budget stays on the fast path while the app keeps reading, even slowly.
// With proxy credit only (older kernels) the same stream leaves it once the
// budget is spent: the contrast shows what this test measures.
TEST_F(DatapathTest, FastPathFollowsWhatTheAppReads) {
  constexpr uint64_t kBudget = 2ULL << 20;
  constexpr uint64_t kTotal = 12ULL << 20;
  Enroll(RM_POD_ENROLLED);
  Listen();
  ASSERT_TRUE(dp_->maps().SetFastpathBudget(kBudget).ok());
  signal(SIGPIPE, SIG_IGN);
  auto stream = [&](uint32_t mode) {
    ASSERT_TRUE(dp_->maps().SetFlowControl(mode).ok());
    pid_t pid = fork();
    if (pid == 0) {
      int s = ChildConnect("198.18.0.10", 80, 10);
      uint64_t got = 0;
      char buf[65536];
      for (ssize_t n; (n = read(s, buf, sizeof(buf))) > 0;) {
        for (ssize_t i = 0; i < n; ++i) {
          if (buf[i] != static_cast<char>((got + i) % 251)) _exit(6);
        }
        got += static_cast<uint64_t>(n);
        if (got % (1 << 20) < static_cast<uint64_t>(n)) usleep(2000);  // a slow reader
      }
      _exit(got == kTotal ? 0 : 7);
    }
    UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(c.valid());
    // Blocking writes: on the fast path a write never waits, so the proxy end
    // runs ahead of the app by up to the budget, then TCP would hold it.
    std::vector<char> chunk(64 << 10);
    for (uint64_t sent = 0; sent < kTotal;) {
      for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((sent + i) % 251);
      ssize_t n = write(c.get(), chunk.data(), chunk.size());
      ASSERT_GT(n, 0) << std::strerror(errno);
      sent += static_cast<uint64_t>(n);
      // Pauses longer than the reader's, so the app keeps up on average
      // and its unread bytes stay under the budget.
      if (sent % (1 << 20) == 0) usleep(5000);
    }
    c.Reset();
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  };
  stream(RM_FLOW_CONTROL_AUTO);
  EXPECT_EQ(Counter(RM_CTR_MSG_PASS_BUDGET), 0u) << "the reply stream left the fast path";
  EXPECT_GE(Counter(RM_CTR_MSG_REDIRECTED), kTotal / (64 << 10));
  EXPECT_GT(Counter(RM_CTR_MSG_PEER_QUEUE_READ), 0u);
  stream(RM_FLOW_CONTROL_PROXY_CREDIT);
  EXPECT_EQ(Counter(RM_CTR_MSG_PASS_BUDGET), 1u) << "without the kernel's count the budget is a total";
}

// The proxy's view of a reader it writes to (rm_unread, a syscall program
// the agent pins): what the app sent over the fast path and the reader has
// not read yet, exactly, and less as it reads.
TEST_F(DatapathTest, UnreadProgramCountsWhatTheReaderHasNotRead) {
  Enroll(RM_POD_ENROLLED);
  Listen();
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(go[1]);
    int s = ChildConnect("198.18.0.10", 80, 10);
    std::vector<char> chunk(100000, 'u');
    if (write(s, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size())) _exit(4);
    char t;
    if (read(go[0], &t, 1) != 1) _exit(5);  // stays connected until the test has looked
    close(s);
    _exit(0);
  }
  close(go[0]);
  UniqueFd tok(go[1]);
  UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(c.valid());
  bpf::PinnedMaps::SpliceLeg leg;
  leg.netns_cookie = cookie_;
  std::tie(leg.target, leg.target_peer) = Ends(c.get());
  int64_t unread = -1;
  for (int i = 0; i < 200 && unread != 100000; ++i) {
    unread = dp_->maps().TargetUnread(leg);
    if (unread != 100000) usleep(5000);
  }
  EXPECT_EQ(unread, 100000);
  char buf[30000];
  ASSERT_EQ(read(c.get(), buf, sizeof(buf)), static_cast<ssize_t>(sizeof(buf)));
  EXPECT_EQ(dp_->maps().TargetUnread(leg), 70000);
  bpf::PinnedMaps::SpliceLeg nobody = leg;
  nobody.target_peer.port ^= 1;
  EXPECT_EQ(dp_->maps().TargetUnread(nobody), -1) << "a socket the datapath does not know";
  ASSERT_EQ(write(tok.get(), "t", 1), 1);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// What plain TCP does when a peer resets: bytes that had arrived stay
// readable, then the read reports ECONNRESET. The fast path must not lose
// them (bytes redirected into the app's queue are not in its TCP queue).
TEST_F(DatapathTest, ResetAfterRedirectedBytesKeepsThemReadable) {
  Enroll(RM_POD_ENROLLED);
  Listen();
  int go[2], res[2];
  ASSERT_EQ(pipe(go), 0);
  ASSERT_EQ(pipe(res), 0);
  pid_t pid = fork();
  if (pid == 0) {
    int s = ChildConnect("198.18.0.10", 80, 5);
    (void)!write(s, "ping", 4);
    char b;
    if (read(go[0], &b, 1) != 1) _exit(4);  // the proxy end has replied and reset
    char buf[64] = {};
    ssize_t n = read(s, buf, sizeof(buf) - 1);
    int err = n < 0 ? errno : 0;
    ssize_t n2 = read(s, buf + (n > 0 ? n : 0), 8);
    int err2 = n2 < 0 ? errno : 0;
    char line[160];
    int len = snprintf(line, sizeof(line), "%zd %d %s %zd %d", n, err, buf, n2, err2);
    (void)!write(res[1], line, static_cast<size_t>(len));
    _exit(0);
  }
  close(go[0]);
  close(res[1]);
  UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(c.valid());
  char buf[8] = {};
  ASSERT_EQ(read(c.get(), buf, 4), 4);
  ASSERT_EQ(write(c.get(), "reply-before-reset", 18), 18);
  usleep(20000);
  linger lg{1, 0};
  ASSERT_EQ(setsockopt(c.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  c.Reset();
  usleep(20000);
  ASSERT_EQ(write(go[1], "g", 1), 1);
  char line[160] = {};
  ASSERT_GT(read(res[0], line, sizeof(line) - 1), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  close(go[1]);
  close(res[0]);
  EXPECT_GE(Counter(RM_CTR_MSG_REDIRECTED), 2u) << "both writes went over the fast path";
  EXPECT_STREQ(line, "18 0 reply-before-reset -1 104") << "(bytes, errno, data, then bytes, errno of the next read)";
}

TEST_F(DatapathTest, EntryRemovedWhenAppClosesBeforeAccept) {
  Enroll(RM_POD_ENROLLED);
  Listen();
  auto r = RunApp("198.18.0.10", 80);  // nobody accepts; the child times out reading and exits
  EXPECT_EQ(r.connect_errno, 0);
  for (int i = 0; i < 100 && *dp_->maps().CountEntries(RM_MAP_ORIG_DST) != 0; ++i) usleep(10000);
  EXPECT_EQ(*dp_->maps().CountEntries(RM_MAP_ORIG_DST), 0u);
  EXPECT_EQ(Counter(RM_CTR_ORIG_DST_CLOSED), 1u);
}

TEST_F(DatapathTest, ProxyAbsentFailOpenGoesDirect) {
  Enroll(RM_POD_ENROLLED);
  // No listener. The pod netns has only lo: a direct connect to a
  // non-local address fails with ENETUNREACH, proving it was not redirected.
  auto r = RunApp("198.18.0.10", 80);
  EXPECT_EQ(r.connect_errno, ENETUNREACH) << std::strerror(r.connect_errno);
  EXPECT_EQ(Counter(RM_CTR_FAIL_OPEN), 1u);
  EXPECT_EQ(Counter(RM_CTR_REDIRECTED), 0u);
}

TEST_F(DatapathTest, ProxyAbsentFailClosedRefuses) {
  Enroll(RM_POD_ENROLLED | RM_POD_FAIL_CLOSED);
  auto r = RunApp("198.18.0.10", 80);
  EXPECT_EQ(r.connect_errno, ECONNREFUSED) << std::strerror(r.connect_errno);
  EXPECT_EQ(Counter(RM_CTR_FAIL_CLOSED), 1u);
}

TEST_F(DatapathTest, OptOutsAndUnenrolledPass) {
  Enroll(RM_POD_ENROLLED);
  Listen();
  EXPECT_EQ(RunApp("198.18.0.10", 22).connect_errno, ENETUNREACH);
  EXPECT_EQ(Counter(RM_CTR_OPTED_OUT_PORT), 1u);
  EXPECT_EQ(RunApp("198.18.99.7", 80).connect_errno, ENETUNREACH);
  EXPECT_EQ(Counter(RM_CTR_OPTED_OUT_CIDR), 1u);
  auto none = dp_->SyncPods({});
  EXPECT_EQ(none.removed, 1);
  EXPECT_EQ(RunApp("198.18.0.10", 80).connect_errno, ENETUNREACH);
  EXPECT_EQ(Counter(RM_CTR_BYPASS_NOT_ENROLLED), 1u);
  EXPECT_EQ(Counter(RM_CTR_REDIRECTED), 0u);
  EXPECT_EQ(*dp_->maps().CountEntries(RM_MAP_OPT_OUT_CIDRS), 0u) << "stale CIDR entries removed";
}

TEST_F(DatapathTest, AdoptionKeepsMapsAndSwapsPrograms) {
  Enroll(RM_POD_ENROLLED);
  auto links_before = DescribeLinks(pin_dir_);
  ASSERT_TRUE(links_before.ok());
  ASSERT_EQ(links_before->size(), 4u);
  dp_.reset();  // agent exits; pins keep everything attached
  DatapathOptions o;
  o.pin_dir = pin_dir_;
  o.cgroup_path = run_cg_;
  auto dp = Datapath::LoadOrAdopt(o);
  ASSERT_TRUE(dp.ok()) << dp.status();
  dp_ = std::move(*dp);
  EXPECT_TRUE(dp_->adopted());
  EXPECT_EQ(*dp_->maps().CountEntries(RM_MAP_PODS), 1u) << "pods map survived the restart";
  auto links_after = DescribeLinks(pin_dir_);
  ASSERT_TRUE(links_after.ok());
  ASSERT_EQ(links_after->size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ((*links_before)[i].link_id, (*links_after)[i].link_id) << "same link, updated in place";
  }
  Listen();
  auto r = RunApp("198.18.0.10", 80, [&] {
    UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    char buf[8] = {};
    ASSERT_EQ(read(c.get(), buf, 4), 4);
    ASSERT_EQ(write(c.get(), "pong", 4), 4);
  });
  EXPECT_STREQ(r.reply, "pong");
}

TEST_F(DatapathTest, RefusesHierarchyRoot) {
  DatapathOptions o;
  o.pin_dir = pin_dir_ + "-root";
  o.cgroup_path = CgroupRoot();
  auto dp = Datapath::LoadOrAdopt(o);
  EXPECT_FALSE(dp.ok());
  EXPECT_NE(std::string(dp.status().message()).find("root of a cgroup hierarchy"), std::string::npos);
  EXPECT_TRUE(Datapath::Uninstall(o.pin_dir).ok());
}

}  // namespace
}  // namespace ringmesh::bpf
