// Loopback helpers for the proxy tests: listening and connecting sockets
// with timeouts (so no test can hang), deterministic payloads with
// checksums, a poll-based echo server that scales to thousands of
// connections, a thread-per-connection server for scripted peers, and the
// one way to skip a test that cannot run here (RINGMESH_SKIP_OR_FAIL).
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "userspace/common/ip.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::proxy::testing {

// RINGMESH_REQUIRE_ROOT_TESTS=1 (scripts/test sets it as root, hence CI):
// every test must really run, so a skip for a missing privilege or kernel
// feature is a failure instead of a silent gap in the suite.
inline bool SkipsAreFailures() {
  const char* require = std::getenv("RINGMESH_REQUIRE_ROOT_TESTS");
  return require != nullptr && std::string(require) == "1";
}

}  // namespace ringmesh::proxy::testing

// Skips the current test (from its body or SetUp) because `why` (a
// streamable reason) keeps it from running here, or fails it when
// SkipsAreFailures(). A macro because GTEST_SKIP and FAIL return from the
// calling function; the caller includes gtest.
#define RINGMESH_SKIP_OR_FAIL(why)                                                            \
  do {                                                                                        \
    if (::ringmesh::proxy::testing::SkipsAreFailures()) {                                     \
      FAIL() << "cannot run: " << why << " (RINGMESH_REQUIRE_ROOT_TESTS=1 forbids skipping)"; \
    }                                                                                         \
    GTEST_SKIP() << why;                                                                      \
  } while (0)

// For tests parameterised over the event-loop backend: the io_uring half
// when io_uring is unavailable here (old kernel, seccomp, io_uring_disabled
// sysctl) goes through RINGMESH_SKIP_OR_FAIL. Needs
// userspace/proxy/event_loop.h.
#define RINGMESH_SKIP_OR_FAIL_WITHOUT_BACKEND(backend)                            \
  do {                                                                            \
    if ((backend) == ::ringmesh::proxy::IoBackend::kIoUring &&                    \
        ::ringmesh::proxy::ResolveBackend(::ringmesh::proxy::IoBackend::kAuto) != \
            ::ringmesh::proxy::IoBackend::kIoUring) {                             \
      RINGMESH_SKIP_OR_FAIL("io_uring unavailable on this kernel");               \
    }                                                                             \
  } while (0)

namespace ringmesh::proxy::testing {

inline constexpr int kIoTimeoutSec = 20;

inline void SetTimeouts(int fd, int seconds = kIoTimeoutSec) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

inline SocketAddress Loopback(uint16_t port) { return SocketAddress{*IpAddress::Parse("127.0.0.1"), port}; }

// Listening socket on 127.0.0.1:*port (0: any); *port receives the port.
inline UniqueFd ListenLoopback(uint16_t* port, int backlog = 4096) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(*port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0 || listen(fd.get(), backlog) != 0) {
    return UniqueFd();
  }
  socklen_t len = sizeof(sin);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sin), &len);
  *port = ntohs(sin.sin_port);
  return fd;
}

// A loopback port with nothing listening on it (connects are refused).
inline uint16_t ClosedPort() {
  uint16_t port = 0;  // NOLINT: set by ListenLoopback
  UniqueFd fd = ListenLoopback(&port);
  return port;  // closed when fd goes out of scope
}

inline UniqueFd ConnectTo(const SocketAddress& addr, int timeout_sec = kIoTimeoutSec) {
  UniqueFd fd(socket(addr.ip.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  SetTimeouts(fd.get(), timeout_sec);
  sockaddr_storage ss;
  socklen_t len = addr.ToSockaddr(&ss);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return UniqueFd();
  return fd;
}

// Deterministic bytes: a xorshift stream per seed.
class Payload {
 public:
  explicit Payload(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  void Fill(char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (avail_ == 0) {
        state_ ^= state_ << 13;
        state_ ^= state_ >> 7;
        state_ ^= state_ << 17;
        word_ = state_;
        avail_ = 8;
      }
      p[i] = static_cast<char>(word_ & 0xff);
      word_ >>= 8;
      --avail_;
    }
  }

 private:
  uint64_t state_;
  uint64_t word_ = 0;
  int avail_ = 0;
};

// Order-sensitive 64-bit FNV-1a.
class Checksum {
 public:
  void Update(const char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      h_ ^= static_cast<uint8_t>(p[i]);
      h_ *= 0x100000001b3ull;
    }
    bytes_ += n;
  }
  uint64_t value() const { return h_; }
  uint64_t bytes() const { return bytes_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ull;
  uint64_t bytes_ = 0;
};

inline uint64_t ExpectedChecksum(uint64_t seed, size_t n) {
  Payload p(seed);
  Checksum c;
  std::vector<char> buf(64 * 1024);
  while (n > 0) {
    size_t k = std::min(n, buf.size());
    p.Fill(buf.data(), k);
    c.Update(buf.data(), k);
    n -= k;
  }
  return c.value();
}

// Sends n bytes of Payload(seed); false on error/timeout.
inline bool SendPayload(int fd, uint64_t seed, size_t n) {
  Payload p(seed);
  std::vector<char> buf(64 * 1024);
  while (n > 0) {
    size_t k = std::min(n, buf.size());
    p.Fill(buf.data(), k);
    size_t off = 0;
    while (off < k) {
      ssize_t w = send(fd, buf.data() + off, k - off, MSG_NOSIGNAL);
      if (w <= 0) return false;
      off += static_cast<size_t>(w);
    }
    n -= k;
  }
  return true;
}

struct ReadResult {
  Checksum sum;
  int error = 0;  // errno of the read that ended it, 0 for EOF
};

// Reads until EOF or error (timeouts count as errors: EAGAIN).
inline ReadResult ReadAll(int fd, size_t limit = SIZE_MAX) {
  ReadResult r;
  std::vector<char> buf(64 * 1024);
  while (r.sum.bytes() < limit) {
    ssize_t n = recv(fd, buf.data(), std::min(buf.size(), limit - r.sum.bytes()), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      r.error = errno;
      break;
    }
    r.sum.Update(buf.data(), static_cast<size_t>(n));
  }
  return r;
}

inline size_t CountOpenFds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;  // the DIR's own fd
}

// Polls `pred` every 5 ms until true or `timeout`.
inline bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

// Single-threaded poll() echo server: echoes what it reads, half-closes
// after EOF once everything is echoed, closes when done. Scales to
// thousands of connections without a thread each.
class EchoServer {
 public:
  explicit EchoServer(uint16_t port = 0) : port_(port) {
    listen_ = ListenLoopback(&port_);
    thread_ = std::thread([this] { Run(); });
  }
  ~EchoServer() {
    stop_ = true;
    thread_.join();
  }
  uint16_t port() const { return port_; }
  size_t open_connections() const { return open_.load(); }
  size_t accepted() const { return accepted_.load(); }

 private:
  struct Conn {
    UniqueFd fd;
    std::string pending;
    bool eof = false;
  };
  void Run() {
    fcntl(listen_.get(), F_SETFL, O_NONBLOCK);
    std::vector<Conn> conns;
    while (!stop_) {
      std::vector<pollfd> pfds;
      pfds.push_back({listen_.get(), POLLIN, 0});
      for (auto& c : conns) {
        short ev = c.pending.empty() ? (c.eof ? 0 : POLLIN) : POLLOUT;
        pfds.push_back({c.fd.get(), ev, 0});
      }
      poll(pfds.data(), pfds.size(), 20);
      if (pfds[0].revents & POLLIN) {
        for (int i = 0; i < 256; ++i) {
          int fd = accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          conns.push_back(Conn{UniqueFd(fd), {}, false});
          ++accepted_;
        }
      }
      char buf[16384];
      for (size_t i = 0; i + 1 < pfds.size() && i < conns.size(); ++i) {
        Conn& c = conns[i];
        short rev = pfds[i + 1].revents;
        if ((rev & (POLLIN | POLLHUP | POLLERR)) && c.pending.empty() && !c.eof) {
          ssize_t n = recv(c.fd.get(), buf, sizeof(buf), 0);
          if (n > 0) {
            c.pending.assign(buf, static_cast<size_t>(n));
          } else if (n == 0) {
            c.eof = true;
          } else if (errno != EAGAIN) {
            c.fd.Reset();
          }
        }
        if (c.fd && !c.pending.empty()) {
          ssize_t n = send(c.fd.get(), c.pending.data(), c.pending.size(), MSG_NOSIGNAL);
          if (n > 0) {
            c.pending.erase(0, static_cast<size_t>(n));
          } else if (n < 0 && errno != EAGAIN) {
            c.fd.Reset();
          }
        }
        if (c.fd && c.eof && c.pending.empty()) c.fd.Reset();
      }
      std::erase_if(conns, [](const Conn& c) { return !c.fd; });
      open_ = conns.size();
    }
  }

  uint16_t port_;
  UniqueFd listen_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> open_{0};
  std::atomic<size_t> accepted_{0};
  std::thread thread_;
};

// Accepts connections and runs `handler` on a thread per connection.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<void(UniqueFd)> handler) : handler_(std::move(handler)) {
    listen_ = ListenLoopback(&port_);
    thread_ = std::thread([this] { Run(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
    for (auto& t : workers_) t.join();
  }
  uint16_t port() const { return port_; }
  size_t accepted() const { return accepted_.load(); }

 private:
  void Run() {
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      int fd = accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      SetTimeouts(fd);
      ++accepted_;
      workers_.emplace_back([this, fd] { handler_(UniqueFd(fd)); });
    }
  }
  std::function<void(UniqueFd)> handler_;
  uint16_t port_ = 0;
  UniqueFd listen_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> accepted_{0};
  std::thread thread_;
  std::vector<std::thread> workers_;
};

}  // namespace ringmesh::proxy::testing
