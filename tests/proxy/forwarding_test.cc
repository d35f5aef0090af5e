// L4 forwarding through ProxyCore in plain-proxy mode (StaticOrigDstResolver)
// on loopback, for both event-loop backends.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "tests/proxy/test_util.h"
#include "userspace/proxy/connection.h"
#include "userspace/proxy/proxy_core.h"

namespace ringmesh::proxy {
namespace {

using namespace ::ringmesh::proxy::testing;  // NOLINT
using std::chrono::milliseconds;

constexpr size_t kMiB = 1024 * 1024;

class ForwardingTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override { RINGMESH_SKIP_OR_FAIL_WITHOUT_BACKEND(GetParam()); }

  // Starts a proxy (two workers unless told otherwise) forwarding to `dest`.
  void StartProxy(SocketAddress dest, ProxyOptions opts = {}) {
    opts.backend = GetParam();
    if (opts.workers == 1 && !keep_one_worker_) opts.workers = 2;
    auto core = ProxyCore::Create(opts, std::make_shared<StaticOrigDstResolver>(dest));
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
    auto bound = core_->AddListener(Loopback(0));
    ASSERT_TRUE(bound.ok()) << bound.status();
    listen_ = *bound;
    ASSERT_TRUE(WaitFor([&] { return core_->listener_sockets() == static_cast<size_t>(opts.workers); },
                        milliseconds(2000)));
  }

  std::optional<ConnectionInfo> OnlyConnection() {
    auto conns = core_->Connections();
    if (conns.size() != 1) return std::nullopt;
    return conns[0];
  }

  bool keep_one_worker_ = false;
  std::unique_ptr<ProxyCore> core_;
  SocketAddress listen_;
};

// Client side of a two-way exchange: sends `n` bytes of its payload while
// reading the server's, then half-closes, and checks what it got (the
// server handlers check their side).
void ExchangeBothWays(const SocketAddress& proxy, size_t n, uint64_t client_seed, uint64_t server_seed) {
  UniqueFd c = ConnectTo(proxy);
  ASSERT_TRUE(c.valid());
  std::thread sender([&] {
    EXPECT_TRUE(SendPayload(c.get(), client_seed, n));
    shutdown(c.get(), SHUT_WR);
  });
  ReadResult r = ReadAll(c.get());
  sender.join();
  EXPECT_EQ(r.error, 0) << std::strerror(r.error);
  EXPECT_EQ(r.sum.bytes(), n);
  EXPECT_EQ(r.sum.value(), ExpectedChecksum(server_seed, n));
}

TEST_P(ForwardingTest, SixteenMiBEachWayWithEqualChecksums) {
  constexpr size_t kBytes = 16 * kMiB;
  std::atomic<int> server_ok{0};
  ScriptedServer server([&](UniqueFd fd) {
    std::thread sender([&] {
      EXPECT_TRUE(SendPayload(fd.get(), 2, kBytes));
      shutdown(fd.get(), SHUT_WR);
    });
    ReadResult r = ReadAll(fd.get());
    sender.join();
    if (r.error == 0 && r.sum.bytes() == kBytes && r.sum.value() == ExpectedChecksum(1, kBytes)) ++server_ok;
  });
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(server.port())));
  ExchangeBothWays(listen_, kBytes, 1, 2);
  ASSERT_TRUE(WaitFor([&] { return server_ok.load() == 1; }, milliseconds(5000)));
  ASSERT_TRUE(WaitFor([&] { return core_->active_connections() == 0; }, milliseconds(5000)));
  EXPECT_EQ(core_->stats().closed(CloseReason::kNormal), 1u);
  EXPECT_EQ(core_->stats().bytes_upstream.load(), kBytes);
  EXPECT_EQ(core_->stats().bytes_downstream.load(), kBytes);
}

TEST_P(ForwardingTest, TinyBufferStillCarriesEverything) {
  constexpr size_t kBytes = 2 * kMiB;
  std::atomic<int> server_ok{0};
  ScriptedServer server([&](UniqueFd fd) {
    std::thread sender([&] {
      EXPECT_TRUE(SendPayload(fd.get(), 8, kBytes));
      shutdown(fd.get(), SHUT_WR);
    });
    ReadResult r = ReadAll(fd.get());
    sender.join();
    if (r.sum.bytes() == kBytes && r.sum.value() == ExpectedChecksum(7, kBytes)) ++server_ok;
  });
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(server.port()), ProxyOptions{.buffer_bytes = 1000}));
  ExchangeBothWays(listen_, kBytes, 7, 8);
  EXPECT_TRUE(WaitFor([&] { return server_ok.load() == 1; }, milliseconds(5000)));
}

TEST_P(ForwardingTest, SingleShotRecvPathCarriesEverything) {
  // Older kernels without a multishot recv limit take this path; on epoll
  // the option changes nothing.
  constexpr size_t kBytes = 4 * kMiB;
  std::atomic<int> server_ok{0};
  ScriptedServer server([&](UniqueFd fd) {
    std::thread sender([&] {
      EXPECT_TRUE(SendPayload(fd.get(), 10, kBytes));
      shutdown(fd.get(), SHUT_WR);
    });
    ReadResult r = ReadAll(fd.get());
    sender.join();
    if (r.sum.bytes() == kBytes && r.sum.value() == ExpectedChecksum(9, kBytes)) ++server_ok;
  });
  ProxyOptions opts;
  opts.loop.multishot_recv = false;
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(server.port()), opts));
  ExchangeBothWays(listen_, kBytes, 9, 10);
  EXPECT_TRUE(WaitFor([&] { return server_ok.load() == 1; }, milliseconds(5000)));
}

TEST_P(ForwardingTest, ManyConcurrentConnections) {
  EchoServer echo;
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(echo.port())));
  constexpr int kConns = 48;
  constexpr size_t kBytes = 512 * 1024;
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < kConns; ++i) {
    clients.emplace_back([&, i] {
      UniqueFd c = ConnectTo(listen_);
      if (!c) return;
      std::thread sender([&] {
        SendPayload(c.get(), 100 + static_cast<uint64_t>(i), kBytes);
        shutdown(c.get(), SHUT_WR);
      });
      ReadResult r = ReadAll(c.get());
      sender.join();
      if (r.error == 0 && r.sum.bytes() == kBytes &&
          r.sum.value() == ExpectedChecksum(100 + static_cast<uint64_t>(i), kBytes)) {
        ++ok;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kConns);
  EXPECT_TRUE(WaitFor([&] { return core_->active_connections() == 0; }, milliseconds(5000)));
  EXPECT_EQ(core_->stats().closed(CloseReason::kNormal), static_cast<uint64_t>(kConns));
}

TEST_P(ForwardingTest, HalfCloseStillDeliversTheWholeReply) {
  constexpr size_t kReply = 3 * kMiB;
  std::atomic<int> request_ok{0};
  ScriptedServer server([&](UniqueFd fd) {
    // Reads the request to EOF first: the client's half-close must arrive
    // as EOF while the reply direction stays open.
    ReadResult r = ReadAll(fd.get());
    if (r.error == 0 && r.sum.bytes() == 5) ++request_ok;
    SendPayload(fd.get(), 3, kReply);
  });
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(server.port())));
  UniqueFd c = ConnectTo(listen_);
  ASSERT_TRUE(c);
  ASSERT_EQ(send(c.get(), "hello", 5, 0), 5);
  ASSERT_EQ(shutdown(c.get(), SHUT_WR), 0);
  ReadResult r = ReadAll(c.get());
  EXPECT_EQ(r.error, 0);
  EXPECT_EQ(r.sum.bytes(), kReply);
  EXPECT_EQ(r.sum.value(), ExpectedChecksum(3, kReply));
  EXPECT_EQ(request_ok.load(), 1);
}

TEST_P(ForwardingTest, UpstreamRefusedResetsClientAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(ClosedPort())));
  auto start = std::chrono::steady_clock::now();
  UniqueFd c = ConnectTo(listen_, 5);
  ASSERT_TRUE(c);
  char b;
  ssize_t n = recv(c.get(), &b, 1, 0);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LE(n, 0);
  if (n < 0) {
    EXPECT_EQ(errno, ECONNRESET);
  }
  EXPECT_LT(elapsed, milliseconds(1000));
  ASSERT_TRUE(WaitFor([&] { return core_->stats().closed(CloseReason::kConnectFailed) == 1; }, milliseconds(2000)));
  EXPECT_GE(core_->stats().upstream_connect_failures.load(), 1u);
}

TEST_P(ForwardingTest, UpstreamResetPropagatesToClient) {
  ScriptedServer server([](UniqueFd fd) {
    char buf[5];
    if (recv(fd.get(), buf, sizeof(buf), MSG_WAITALL) != 5) return;
    linger lg{1, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  });  // fd closes with RST
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(server.port())));
  UniqueFd c = ConnectTo(listen_, 5);
  ASSERT_TRUE(c);
  ASSERT_EQ(send(c.get(), "hello", 5, 0), 5);
  char b;
  ssize_t n = recv(c.get(), &b, 1, 0);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(errno, ECONNRESET);
  ASSERT_TRUE(WaitFor([&] { return core_->stats().closed(CloseReason::kUpstreamReset) == 1; }, milliseconds(2000)));
}

TEST_P(ForwardingTest, ClientResetPropagatesToUpstream) {
  std::atomic<int> server_error{-1};
  ScriptedServer server([&](UniqueFd fd) {
    ReadResult r = ReadAll(fd.get());
    server_error = r.error;
  });
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(server.port())));
  UniqueFd c = ConnectTo(listen_, 5);
  ASSERT_TRUE(c);
  ASSERT_EQ(send(c.get(), "hi", 2, 0), 2);
  ASSERT_TRUE(WaitFor([&] { return server.accepted() == 1; }, milliseconds(2000)));
  ASSERT_TRUE(WaitFor(
      [&] {
        auto i = OnlyConnection();
        return i && i->bytes_up == 2;
      },
      milliseconds(2000)));
  linger lg{1, 0};
  setsockopt(c.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  c.Reset();
  ASSERT_TRUE(WaitFor([&] { return server_error.load() != -1; }, milliseconds(3000)));
  EXPECT_EQ(server_error.load(), ECONNRESET);
  EXPECT_TRUE(WaitFor([&] { return core_->stats().closed(CloseReason::kDownstreamReset) == 1; }, milliseconds(2000)));
}

TEST_P(ForwardingTest, SlowReaderDoesNotGrowProxyBuffers) {
  constexpr size_t kCap = 64 * 1024;
  // More than the kernel's socket buffers on the way can absorb (client
  // receive + proxy send buffers are a few MiB each at most).
  constexpr size_t kBytes = 40 * kMiB;
  std::atomic<bool> server_done{false};
  ScriptedServer server([&](UniqueFd fd) {
    SendPayload(fd.get(), 5, kBytes);
    server_done = true;
  });
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(server.port()), ProxyOptions{.buffer_bytes = kCap}));
  UniqueFd c = ConnectTo(listen_);
  ASSERT_TRUE(c);
  // Not reading: wait until the proxy's queue toward the client is full.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto i = OnlyConnection();
        return i && i->buffered_down == kCap;
      },
      milliseconds(5000)));
  std::this_thread::sleep_for(milliseconds(100));  // and stays so
  auto info = OnlyConnection();
  ASSERT_TRUE(info);
  EXPECT_LE(info->buffered_down, kCap);
  EXPECT_LE(info->peak_buffered, kCap);
  EXPECT_EQ(info->buffer_cap, kCap);
  // The upstream is held back instead of the proxy absorbing everything.
  EXPECT_LT(info->bytes_down, kBytes / 2);
  EXPECT_FALSE(server_done.load());
  // Proxy-wide buffer memory: at most the cap per direction, in chunks.
  EXPECT_LE(core_->buffer_chunks_outstanding(), 2 * (kCap / kChunkSize + 1));

  // Now read slowly, sampling the connection as it goes.
  Checksum sum;
  std::vector<char> buf(256 * 1024);
  size_t next_sample = 0;
  while (sum.bytes() < kBytes) {
    ssize_t n = recv(c.get(), buf.data(), buf.size(), 0);
    ASSERT_GT(n, 0) << std::strerror(errno);
    sum.Update(buf.data(), static_cast<size_t>(n));
    if (sum.bytes() >= next_sample) {
      next_sample += 4 * kMiB;
      if (auto i = OnlyConnection()) {
        EXPECT_LE(i->peak_buffered, kCap);
      }
    }
  }
  EXPECT_EQ(sum.value(), ExpectedChecksum(5, kBytes));
}

TEST_P(ForwardingTest, ThousandConnectionsLeaveNoRecordsOrFds) {
  EchoServer echo;
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(echo.port())));
  // Let lazily created per-thread state settle before the baseline.
  {
    UniqueFd c = ConnectTo(listen_);
    ASSERT_EQ(send(c.get(), "x", 1, 0), 1);
    char b;
    ASSERT_EQ(recv(c.get(), &b, 1, 0), 1);
  }
  ASSERT_TRUE(WaitFor([&] { return core_->active_connections() == 0 && echo.open_connections() == 0; },
                      milliseconds(3000)));
  const size_t baseline = CountOpenFds();

  constexpr int kConns = 1000;
  std::vector<UniqueFd> clients;
  clients.reserve(kConns);
  for (int i = 0; i < kConns; ++i) {
    UniqueFd c = ConnectTo(listen_, 10);
    ASSERT_TRUE(c) << i;
    ASSERT_EQ(send(c.get(), "y", 1, 0), 1);
    char b;
    ASSERT_EQ(recv(c.get(), &b, 1, 0), 1) << i;
    clients.push_back(std::move(c));
  }
  EXPECT_EQ(core_->active_connections(), static_cast<size_t>(kConns));
  EXPECT_EQ(core_->Connections().size(), static_cast<size_t>(kConns));
  EXPECT_GE(CountOpenFds(), baseline + 3 * kConns);  // client + 2 proxy (+ echo)
  clients.clear();
  EXPECT_TRUE(WaitFor([&] { return core_->active_connections() == 0; }, milliseconds(10000)));
  EXPECT_TRUE(core_->Connections().empty());
  EXPECT_TRUE(WaitFor([&] { return echo.open_connections() == 0 && CountOpenFds() == baseline; },
                      milliseconds(5000)))
      << CountOpenFds() << " fds vs baseline " << baseline;
  EXPECT_EQ(core_->buffer_chunks_outstanding(), 0u);
  EXPECT_EQ(core_->stats().connections_active.load(), 0);
}

TEST_P(ForwardingTest, IdleTimeoutClosesQuietConnections) {
  EchoServer echo;
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(echo.port()), ProxyOptions{.idle_timeout = absl::Milliseconds(200)}));
  UniqueFd c = ConnectTo(listen_, 5);
  ASSERT_EQ(send(c.get(), "z", 1, 0), 1);
  char b;
  ASSERT_EQ(recv(c.get(), &b, 1, 0), 1);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(recv(c.get(), &b, 1, 0), 0);  // closed by the proxy
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, milliseconds(150));
  EXPECT_LT(elapsed, milliseconds(2000));
  EXPECT_TRUE(WaitFor([&] { return core_->stats().closed(CloseReason::kIdleTimeout) == 1; }, milliseconds(2000)));
}

TEST_P(ForwardingTest, ConnectTimeoutResetsClient) {
  // A listener whose accept queue is full drops further SYNs, so a connect
  // to it hangs: the proxy's connect timeout must end it.
  uint16_t port = 0;
  UniqueFd blackhole = ListenLoopback(&port, 0);
  std::vector<UniqueFd> fillers;
  for (int i = 0; i < 4; ++i) {
    UniqueFd f(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_storage ss;
    socklen_t len = Loopback(port).ToSockaddr(&ss);
    connect(f.get(), reinterpret_cast<sockaddr*>(&ss), len);
    fillers.push_back(std::move(f));
  }
  std::this_thread::sleep_for(milliseconds(50));
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(port), ProxyOptions{.connect_timeout = absl::Milliseconds(200)}));
  UniqueFd c = ConnectTo(listen_, 5);
  auto start = std::chrono::steady_clock::now();
  char b;
  EXPECT_LE(recv(c.get(), &b, 1, 0), 0);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, milliseconds(3000));
  EXPECT_TRUE(WaitFor([&] { return core_->stats().closed(CloseReason::kConnectTimeout) == 1; }, milliseconds(2000)));
}

TEST_P(ForwardingTest, ExcessConnectionsAreResetAndCounted) {
  EchoServer echo;
  keep_one_worker_ = true;
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(echo.port()), ProxyOptions{.workers = 1, .max_connections_per_worker = 2}));
  std::vector<UniqueFd> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(ConnectTo(listen_, 5));
    ASSERT_EQ(send(held.back().get(), "a", 1, 0), 1);
    char b;
    ASSERT_EQ(recv(held.back().get(), &b, 1, 0), 1);
  }
  UniqueFd extra = ConnectTo(listen_, 5);
  char b;
  EXPECT_LE(recv(extra.get(), &b, 1, 0), 0);
  EXPECT_TRUE(WaitFor([&] { return core_->stats().closed(CloseReason::kOverloaded) == 1; }, milliseconds(2000)));
  EXPECT_EQ(core_->stats().overloaded.load(), 1u);
  EXPECT_EQ(core_->active_connections(), 2u);
}

TEST_P(ForwardingTest, ServiceVipRoutesToEndpointAndRetriesAnother) {
  EchoServer echo;
  // The original destination is a service VIP that nothing listens on; the
  // proxy must pick an endpoint. 127.0.0.3 refuses (echo is bound to
  // 127.0.0.1 only), so every connection that tries it first has to retry.
  ASSERT_NO_FATAL_FAILURE(StartProxy(*SocketAddress::Parse("127.0.0.2:80"),
             ProxyOptions{.connect_attempts = 2, .lb = LbOptions{.eject_after_failures = 0}}));
  Snapshot snap;
  snap.generation = 3;
  Service svc;
  svc.ns = "default";
  svc.name = "echo";
  svc.vips = {*IpAddress::Parse("127.0.0.2")};
  svc.ports = {ServicePort{.name = "tcp", .port = 80, .target_port = echo.port()}};
  svc.lb = LbPolicy::kRoundRobin;
  svc.endpoints = {Endpoint{.ip = *IpAddress::Parse("127.0.0.3")}, Endpoint{.ip = *IpAddress::Parse("127.0.0.1")},
                   Endpoint{.ip = *IpAddress::Parse("127.0.0.4"), .ready = false}};
  snap.services.push_back(svc);
  ASSERT_TRUE(core_->ApplySnapshot(snap, {}).ok());
  EXPECT_EQ(core_->generation(), 3u);

  for (int i = 0; i < 10; ++i) {
    UniqueFd c = ConnectTo(listen_, 5);
    ASSERT_EQ(send(c.get(), "p", 1, 0), 1);
    char b = 0;
    ASSERT_EQ(recv(c.get(), &b, 1, 0), 1) << i;
    EXPECT_EQ(b, 'p');
    if (i == 0) {
      auto info = OnlyConnection();
      ASSERT_TRUE(info);
      EXPECT_EQ(info->service, "default/echo");
      EXPECT_EQ(info->endpoint, "127.0.0.1:" + std::to_string(echo.port()));
      EXPECT_EQ(info->original_destination, "127.0.0.2:80");
    }
  }
  EXPECT_GE(core_->stats().upstream_connect_failures.load(), 4u);
  auto dump = core_->ConfigDump();
  ASSERT_EQ(dump["services"].size(), 1u);
  ASSERT_EQ(dump["services"][0]["endpoints"].size(), 3u);
  EXPECT_EQ(dump["services"][0]["endpoints"][2]["ready"], false) << "listed, but kept out of the balancer";
  EXPECT_EQ(dump["services"][0]["endpoints"][2].value("picks", 0), 0);

  // Only a refusing endpoint left, one attempt: the client is reset.
  snap.generation = 4;
  snap.services[0].endpoints = {Endpoint{.ip = *IpAddress::Parse("127.0.0.3")}};
  ASSERT_TRUE(core_->ApplySnapshot(snap, {}).ok());
  UniqueFd c = ConnectTo(listen_, 5);
  char b;
  EXPECT_LE(recv(c.get(), &b, 1, 0), 0);
  EXPECT_TRUE(WaitFor([&] { return core_->stats().closed(CloseReason::kConnectFailed) == 1; }, milliseconds(2000)));

  // No ready endpoint at all.
  snap.generation = 5;
  snap.services[0].endpoints = {Endpoint{.ip = *IpAddress::Parse("127.0.0.1"), .ready = false}};
  ASSERT_TRUE(core_->ApplySnapshot(snap, {}).ok());
  UniqueFd d = ConnectTo(listen_, 5);
  EXPECT_LE(recv(d.get(), &b, 1, 0), 0);
  EXPECT_TRUE(WaitFor([&] { return core_->stats().closed(CloseReason::kNoEndpoint) == 1; }, milliseconds(2000)));
}

TEST_P(ForwardingTest, ForwardDelayAddsLatency) {
  EchoServer echo;
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(echo.port()), ProxyOptions{.forward_delay = absl::Milliseconds(20)}));
  UniqueFd c = ConnectTo(listen_, 5);
  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(send(c.get(), "d", 1, 0), 1);
  char b;
  ASSERT_EQ(recv(c.get(), &b, 1, 0), 1);
  // Two forwards (there and back), each delayed.
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(39));
}

TEST_P(ForwardingTest, DrainWaitsForConnectionsThenStopResetsThem) {
  EchoServer echo;
  ASSERT_NO_FATAL_FAILURE(StartProxy(Loopback(echo.port())));
  UniqueFd c = ConnectTo(listen_, 5);
  ASSERT_EQ(send(c.get(), "q", 1, 0), 1);
  char b;
  ASSERT_EQ(recv(c.get(), &b, 1, 0), 1);
  EXPECT_FALSE(core_->Drain(absl::Milliseconds(100)));
  EXPECT_FALSE(core_->ready());
  // New connections are refused once listeners are closed.
  EXPECT_FALSE(ConnectTo(listen_, 2).valid());
  // The existing one still works during the drain.
  ASSERT_EQ(send(c.get(), "r", 1, 0), 1);
  ASSERT_EQ(recv(c.get(), &b, 1, 0), 1);
  core_->Stop();
  ssize_t n = recv(c.get(), &b, 1, 0);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(errno, ECONNRESET);
  EXPECT_EQ(core_->stats().closed(CloseReason::kDrain), 1u);
}

// The balancer's connect-latency sample is the kernel's handshake RTT (no
// event-loop scheduling in it), never more than the wall time, and the wall
// time when the socket has no RTT sample.
TEST(ConnectLatencySampleTest, KernelHandshakeRttBoundedByWallTime) {
  uint16_t port = 0;
  UniqueFd listener = ListenLoopback(&port);
  ASSERT_TRUE(listener.valid());
  UniqueFd c = ConnectTo(Loopback(port));
  ASSERT_TRUE(c.valid());
  const absl::Duration wall = absl::Seconds(5);
  absl::Duration sample = ConnectLatencySample(c.get(), wall);
  EXPECT_GT(sample, absl::ZeroDuration());
  EXPECT_LT(sample, wall) << "a loopback handshake RTT sample exists";
  EXPECT_EQ(ConnectLatencySample(c.get(), absl::Microseconds(1)), absl::Microseconds(1));

  UniqueFd unconnected(socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_TRUE(unconnected.valid());
  EXPECT_EQ(ConnectLatencySample(unconnected.get(), wall), wall);
  EXPECT_EQ(ConnectLatencySample(-1, wall), wall);
}

INSTANTIATE_TEST_SUITE_P(Backends, ForwardingTest, ::testing::Values(IoBackend::kIoUring, IoBackend::kEpoll),
                         [](const auto& p) { return std::string(ToString(p.param)); });

}  // namespace
}  // namespace ringmesh::proxy
