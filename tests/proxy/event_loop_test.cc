// The same behavioural tests for both EventLoop backends.
#include "userspace/proxy/event_loop.h"

#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "tests/proxy/test_util.h"
#include "userspace/proxy/epoll_loop.h"
#include "userspace/proxy/io_uring_loop.h"
#include "userspace/proxy/proxy_core.h"

namespace ringmesh::proxy {
namespace {

using testing::ConnectTo;
using testing::Loopback;

struct Event {
  IoOp* op;
  int res;
  bool more;
  std::string data;
};

class Recorder final : public IoHandler {
 public:
  void OnCompletion(IoOp* op, const Completion& c) override {
    events.push_back({op, c.res, c.more, c.data && c.res > 0 ? std::string(c.data, static_cast<size_t>(c.res)) : ""});
  }
  std::vector<Event> events;
};

class EventLoopTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override {
    auto loop = CreateEventLoop(GetParam(), {});
    if (!loop.ok() && GetParam() == IoBackend::kIoUring) {
      RINGMESH_SKIP_OR_FAIL("io_uring unavailable: " << loop.status());
    }
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
    ASSERT_EQ(loop_->backend(), GetParam());
  }

  // Runs the loop until pred() or the deadline.
  bool RunUntil(const std::function<bool()>& pred, absl::Duration timeout = absl::Seconds(5)) {
    absl::Time end = absl::Now() + timeout;
    while (!pred()) {
      if (absl::Now() > end) return false;
      loop_->RunOnce(absl::Milliseconds(10));
    }
    return true;
  }

  std::unique_ptr<EventLoop> loop_;
};

TEST_P(EventLoopTest, TimerFiresAfterItsDelay) {
  Recorder r;
  IoOp timer(&r, OpType::kTimer);
  auto start = std::chrono::steady_clock::now();
  loop_->StartTimer(&timer, absl::Milliseconds(30));
  ASSERT_TRUE(RunUntil([&] { return !r.events.empty(); }));
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.events[0].res, 0);
  EXPECT_FALSE(timer.in_flight());
  EXPECT_GE(elapsed, std::chrono::milliseconds(29));
  EXPECT_LT(elapsed, std::chrono::seconds(2));
}

TEST_P(EventLoopTest, CancelledTimerCompletesWithEcanceled) {
  Recorder r;
  IoOp timer(&r, OpType::kTimer);
  loop_->StartTimer(&timer, absl::Seconds(60));
  loop_->RunOnce(absl::ZeroDuration());
  EXPECT_TRUE(timer.in_flight());
  loop_->Cancel(&timer);
  ASSERT_TRUE(RunUntil([&] { return !r.events.empty(); }, absl::Seconds(2)));
  EXPECT_EQ(r.events[0].res, -ECANCELED);
  EXPECT_FALSE(timer.in_flight());
}

TEST_P(EventLoopTest, PostFromAnotherThreadWakesTheLoop) {
  std::atomic<int> ran{0};
  std::thread t([&] {
    for (int i = 0; i < 100; ++i) loop_->Post([&] { ran.fetch_add(1); });
  });
  t.join();
  ASSERT_TRUE(RunUntil([&] { return ran.load() == 100; }));

  // Run() returns after Stop() posted from elsewhere.
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    loop_->Stop();
  });
  loop_->Run();
  stopper.join();
}

TEST_P(EventLoopTest, AcceptConnectSendRecvShutdown) {
  Recorder r;
  auto listener = OpenListenSocket(Loopback(0), loop_->socket_flags(), 16);
  ASSERT_TRUE(listener.ok()) << listener.status();
  auto addr = LocalAddress(listener->get());
  ASSERT_TRUE(addr);

  IoOp accept(&r, OpType::kAccept);
  loop_->Accept(&accept, listener->get());

  UniqueFd client(socket(AF_INET, SOCK_STREAM | loop_->socket_flags(), 0));
  sockaddr_storage ss;
  socklen_t len = addr->ToSockaddr(&ss);
  IoOp connect(&r, OpType::kConnect);
  loop_->Connect(&connect, client.get(), reinterpret_cast<sockaddr*>(&ss), len);

  int server_fd = -1;
  bool connected = false;
  ASSERT_TRUE(RunUntil([&] {
    for (auto& e : r.events) {
      if (e.op == &accept && e.res >= 0) {
        server_fd = e.res;
        EXPECT_TRUE(e.more);  // multishot
      }
      if (e.op == &connect) {
        EXPECT_EQ(e.res, 0);
        connected = true;
      }
    }
    r.events.clear();
    return server_fd >= 0 && connected;
  }));
  UniqueFd server(server_fd);
  EXPECT_TRUE(accept.in_flight());

  static const char kMsg[] = "hello, ringmesh";
  IoOp send(&r, OpType::kSend);
  loop_->Send(&send, client.get(), kMsg, sizeof(kMsg) - 1);
  IoOp recv(&r, OpType::kRecv);
  std::string got;
  bool sent = false;
  ASSERT_TRUE(RunUntil([&] {
    for (auto& e : r.events) {
      if (e.op == &send) {
        EXPECT_EQ(e.res, static_cast<int>(sizeof(kMsg) - 1));
        sent = true;
      }
      if (e.op == &recv) {
        EXPECT_GT(e.res, 0);
        got += e.data;
      }
    }
    r.events.clear();
    if (!recv.in_flight() && got.size() < sizeof(kMsg) - 1) loop_->Recv(&recv, server.get(), 4096);
    return sent && got.size() == sizeof(kMsg) - 1;
  }));
  EXPECT_EQ(got, kMsg);

  IoOp shut(&r, OpType::kShutdown);
  loop_->ShutdownWrite(&shut, client.get());
  int eof = -1;
  ASSERT_TRUE(RunUntil([&] {
    for (auto& e : r.events) {
      if (e.op == &shut) {
        EXPECT_EQ(e.res, 0);
      }
      if (e.op == &recv) eof = e.res;
    }
    r.events.clear();
    if (!recv.in_flight() && eof != 0) loop_->Recv(&recv, server.get(), 4096);
    return eof == 0;
  }));

  loop_->Cancel(&accept);
  ASSERT_TRUE(RunUntil([&] { return !accept.in_flight(); }));
  EXPECT_FALSE(r.events.empty());
  EXPECT_EQ(r.events.back().res, -ECANCELED);
  EXPECT_FALSE(r.events.back().more);
}

TEST_P(EventLoopTest, MultishotAcceptDeliversEveryConnection) {
  Recorder r;
  auto listener = OpenListenSocket(Loopback(0), loop_->socket_flags(), 64);
  ASSERT_TRUE(listener.ok());
  auto addr = LocalAddress(listener->get());
  IoOp accept(&r, OpType::kAccept);
  loop_->Accept(&accept, listener->get());
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 20; ++i) clients.push_back(ConnectTo(*addr));
  std::vector<UniqueFd> accepted;
  ASSERT_TRUE(RunUntil([&] {
    for (auto& e : r.events) {
      EXPECT_GE(e.res, 0);
      if (e.res >= 0) accepted.emplace_back(e.res);
    }
    r.events.clear();
    return accepted.size() == 20;
  }));
  loop_->Cancel(&accept);
  ASSERT_TRUE(RunUntil([&] { return !accept.in_flight(); }));
}

TEST_P(EventLoopTest, RecvNeverExceedsItsBudget) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (loop_->socket_flags() & SOCK_NONBLOCK), 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  std::string data(100000, 'x');
  ASSERT_EQ(::send(b.get(), data.data(), data.size(), MSG_DONTWAIT), static_cast<ssize_t>(data.size()));
  Recorder r;
  IoOp recv(&r, OpType::kRecv);
  loop_->Recv(&recv, a.get(), 1000);
  ASSERT_TRUE(RunUntil([&] { return !recv.in_flight(); }));
  size_t total = 0;
  for (auto& e : r.events) {
    ASSERT_GT(e.res, 0);
    total += static_cast<size_t>(e.res);
  }
  EXPECT_GT(total, 0u);
  EXPECT_LE(total, 1000u);
  EXPECT_FALSE(r.events.back().more);
}

TEST_P(EventLoopTest, CancelThenDrainOfPendingRecv) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (loop_->socket_flags() & SOCK_NONBLOCK), 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  Recorder r;
  IoOp recv(&r, OpType::kRecv);
  loop_->Recv(&recv, a.get(), 4096);
  loop_->RunOnce(absl::Milliseconds(5));
  EXPECT_TRUE(recv.in_flight());
  loop_->Cancel(&recv);
  EXPECT_TRUE(recv.in_flight());  // until the final completion arrives
  ASSERT_TRUE(RunUntil([&] { return !recv.in_flight(); }));
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].res, -ECANCELED);
}

TEST_P(EventLoopTest, ConnectRefusedReportsError) {
  Recorder r;
  UniqueFd s(socket(AF_INET, SOCK_STREAM | loop_->socket_flags(), 0));
  sockaddr_storage ss;
  socklen_t len = Loopback(testing::ClosedPort()).ToSockaddr(&ss);
  IoOp connect(&r, OpType::kConnect);
  loop_->Connect(&connect, s.get(), reinterpret_cast<sockaddr*>(&ss), len);
  ASSERT_TRUE(RunUntil([&] { return !connect.in_flight(); }));
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].res, -ECONNREFUSED);
}

TEST_P(EventLoopTest, DeferRunsAfterTheBatch) {
  int ran = 0;
  loop_->Defer([&] { ++ran; });
  EXPECT_EQ(ran, 0);
  loop_->RunOnce(absl::Milliseconds(1));
  EXPECT_EQ(ran, 1);
}

TEST(IoUringLoop, ReportsBoundedMultishotRecvSupport) {
  auto loop = IoUringLoop::Create({});
  if (!loop.ok()) RINGMESH_SKIP_OR_FAIL("io_uring unavailable: " << loop.status());
  // Informational: both answers are valid, the recv budget test above holds
  // either way.
  std::cout << "bounded multishot recv: " << ((*loop)->bounded_multishot_recv() ? "yes" : "no") << "\n";
}

// Makes epoll_pwait2 fail with ENOSYS for this process, as on kernels
// before 5.11 or under a seccomp profile that does not list it.
bool RefuseEpollPwait2() {
#if defined(__x86_64__)
  constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
  return false;
#endif
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_epoll_pwait2, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

// Runs in a forked child (the filter must not outlive it); exit code 0 when
// the loop works on epoll_wait: it noticed the refusal, a 30 ms timer fires
// on time without the loop spinning, and readiness still wakes it.
[[noreturn]] void EpollLoopOnEpollWait() {
  auto fail = [](const char* what) {
    std::fprintf(stderr, "FAIL: %s\n", what);
    std::_Exit(1);
  };
  if (!RefuseEpollPwait2()) fail("cannot install the seccomp filter");
  if (syscall(__NR_epoll_pwait2, -1, nullptr, 0, nullptr, nullptr, 0) != -1 || errno != ENOSYS) {
    fail("the filter does not refuse epoll_pwait2");
  }
  auto loop = EpollLoop::Create({});
  if (!loop.ok()) fail("EpollLoop::Create failed");
  if ((*loop)->uses_epoll_pwait2()) fail("the loop did not notice that epoll_pwait2 is refused");

  Recorder r;
  IoOp timer(&r, OpType::kTimer);
  auto start = std::chrono::steady_clock::now();
  (*loop)->StartTimer(&timer, absl::Milliseconds(30));
  int rounds = 0;
  while (r.events.empty() && rounds < 1000) {
    (*loop)->RunOnce(absl::InfiniteDuration());
    ++rounds;
  }
  auto elapsed = std::chrono::steady_clock::now() - start;
  if (r.events.empty()) fail("timer never fired");
  if (elapsed < std::chrono::milliseconds(29)) fail("timer fired early");
  if (rounds > 5) fail("the loop spun instead of sleeping until the timer");

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) fail("socketpair");
  UniqueFd a(sv[0]), b(sv[1]);
  IoOp recv(&r, OpType::kRecv);
  (*loop)->Recv(&recv, a.get(), 1024);
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    [[maybe_unused]] ssize_t n = ::write(b.get(), "ping", 4);
  });
  rounds = 0;
  while (r.events.size() < 2 && rounds < 100) {
    (*loop)->RunOnce(absl::Seconds(5));
    ++rounds;
  }
  writer.join();
  if (r.events.size() < 2 || r.events[1].data != "ping") fail("readiness did not deliver the bytes");
  std::_Exit(0);
}

TEST(EpollLoop, FallsBackToEpollWaitWhenEpollPwait2IsRefused) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(EpollLoopOnEpollWait(), ::testing::ExitedWithCode(0), "");
}

INSTANTIATE_TEST_SUITE_P(Backends, EventLoopTest, ::testing::Values(IoBackend::kIoUring, IoBackend::kEpoll),
                         [](const auto& p) { return std::string(ToString(p.param)); });

}  // namespace
}  // namespace ringmesh::proxy
