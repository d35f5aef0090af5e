// rm-tcp: the TCP client/server used by the namespace tests and benchmarks.
//
// One binary, five modes, every one bounded in time (--deadline-ms, default
// 30 s) and printing machine-readable JSON on stdout (logs go to stderr):
//
//   rm-tcp serve   --listen 198.18.1.10:8080 --tag b1 [--mode tag|echo|sink-source]
//   rm-tcp connect --to 198.18.1.10:8080 --count 1000 --parallel 100 [--hold-ms 500]
//   rm-tcp bulk    --to 198.18.1.10:8080 --bytes 64MiB      (against sink-source)
//   rm-tcp probe   --to 198.18.1.10:8080 --timeout-ms 500 [--expect ECONNREFUSED]
//   rm-tcp rr      --to 198.18.1.10:8080 --size 64 --count 10000   (against echo)
//
// Wire format of sink-source: the client sends an 8-byte big-endian reply
// size N, then its payload, then half-closes; the server hashes the payload
// up to EOF, logs {"event":"sink",...}, writes N bytes of the reply pattern
// and closes. Both payloads come from PatternStream (position-addressable,
// different seeds per direction so a path that loops data back is caught).
//
// Exit codes: 0 success, 1 a check failed (or a connection failed without
// --allow-fail), 2 usage error, 124 the global deadline was hit.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdarg>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr uint64_t kClientToServerSeed = 0x72696e676d657368ULL;  // "ringmesh"
constexpr uint64_t kServerToClientSeed = 0x6873656d676e6972ULL;
constexpr size_t kChunk = 256 * 1024;
constexpr int kExitCheckFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitDeadline = 124;

Clock::time_point g_deadline;
std::mutex g_out_mu;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double Round3(double v) { return static_cast<double>(static_cast<int64_t>(v * 1000.0 + 0.5)) / 1000.0; }

int MsUntil(Clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
  return ms < 0 ? 0 : static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

// One JSON document per line on stdout; several server threads may log.
void EmitJson(const Json& j) {
  std::lock_guard<std::mutex> lock(g_out_mu);
  std::string s = j.dump();
  std::fprintf(stdout, "%s\n", s.c_str());
  std::fflush(stdout);
}

void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Log(const char* fmt, ...) {
  std::lock_guard<std::mutex> lock(g_out_mu);
  std::fputs("rm-tcp: ", stderr);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

std::string ErrName(int err) {
  if (err == 0) return "ok";
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "E" + std::to_string(err);
}

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.Release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) Reset(o.Release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

template <typename T, auto fn>
struct Deleter {
  void operator()(T* p) const { fn(p); }
};
using EvpMdCtx = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) {
      std::fprintf(stderr, "rm-tcp: EVP sha256 init failed\n");
      std::abort();
    }
  }
  void Update(const void* data, size_t n) {
    if (n > 0) EVP_DigestUpdate(ctx_.get(), data, n);
  }
  std::string HexDigest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_.get(), md, &len);
    static const char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
      out.push_back(kHex[md[i] >> 4]);
      out.push_back(kHex[md[i] & 15]);
    }
    return out;
  }

 private:
  EvpMdCtx ctx_;
};

// Deterministic pseudo-random bytes; byte i depends only on (seed, i), so a
// sender can regenerate any window without keeping state.
class PatternStream {
 public:
  explicit PatternStream(uint64_t seed) : seed_(seed) {}
  void Fill(uint64_t pos, uint8_t* out, size_t n) const {
    while (n > 0) {
      uint64_t word = Word(pos / 8);
      size_t skip = pos % 8;
      size_t take = std::min<size_t>(8 - skip, n);
      std::memcpy(out, reinterpret_cast<const uint8_t*>(&word) + skip, take);
      out += take;
      pos += take;
      n -= take;
    }
  }
  std::string Sha256Of(uint64_t n) const {
    Sha256 sha;
    std::vector<uint8_t> buf(kChunk);
    for (uint64_t pos = 0; pos < n;) {
      size_t take = static_cast<size_t>(std::min<uint64_t>(kChunk, n - pos));
      Fill(pos, buf.data(), take);
      sha.Update(buf.data(), take);
      pos += take;
    }
    return sha.HexDigest();
  }

 private:
  uint64_t Word(uint64_t index) const {  // splitmix64 of (seed + index)
    uint64_t z = seed_ + index * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t seed_;
};

struct Endpoint {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;
};

// "1.2.3.4:80" or "[::1]:80".
std::optional<Endpoint> ParseEndpoint(const std::string& s) {
  std::string host, port;
  if (!s.empty() && s[0] == '[') {
    auto close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') return std::nullopt;
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) return std::nullopt;
  Endpoint ep;
  std::memcpy(&ep.addr, res->ai_addr, res->ai_addrlen);
  ep.len = res->ai_addrlen;
  ep.text = s;
  freeaddrinfo(res);
  return ep;
}

std::string SockName(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                : getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
  inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
  port = ntohs(in6->sin6_port);
  return "[" + std::string(host) + "]:" + std::to_string(port);
}

// "64MiB", "1M", "100k", "1500": binary multiples; "KB/MB/GB" are decimal.
std::optional<uint64_t> ParseBytes(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0) return std::nullopt;
  uint64_t v = std::stoull(s.substr(0, i));
  std::string suffix = s.substr(i);
  static const std::map<std::string, uint64_t> kMult = {
      {"", 1},           {"B", 1},         {"k", 1024},         {"K", 1024},
      {"KiB", 1024},     {"M", 1 << 20},   {"MiB", 1 << 20},    {"G", 1ULL << 30},
      {"GiB", 1ULL << 30}, {"KB", 1000},   {"MB", 1000 * 1000}, {"GB", 1000ULL * 1000 * 1000}};
  auto it = kMult.find(suffix);
  if (it == kMult.end()) return std::nullopt;
  return v * it->second;
}

void RaiseFdLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// Backstop for the deadline: every mode checks it in its own loop and
// reports; this only fires if a loop is stuck somewhere unexpected.
void StartWatchdog() {
  std::thread([] {
    std::this_thread::sleep_until(g_deadline + std::chrono::seconds(2));
    const char kMsg[] = "{\"error\":\"deadline\",\"detail\":\"watchdog fired\"}\n";
    ssize_t ignored = write(STDOUT_FILENO, kMsg, sizeof kMsg - 1);
    (void)ignored;
    _exit(kExitDeadline);
  }).detach();
}

// Starts a non-blocking connect. Returns the socket and 0, EINPROGRESS, or
// the immediate error (EACCES/EPERM from a cgroup hook arrive here).
std::pair<Fd, int> StartConnect(const Endpoint& ep) {
  Fd fd(socket(ep.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return {Fd(), errno};
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&ep.addr), ep.len) == 0) return {std::move(fd), 0};
  int err = errno;
  return {std::move(fd), err};
}

int SocketError(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

// Blocking-style connect bounded by timeout_ms (and the global deadline).
// Returns 0 on success or an errno; ETIMEDOUT when our bound expired.
int ConnectWithTimeout(const Endpoint& ep, int timeout_ms, Fd* out) {
  auto [fd, err] = StartConnect(ep);
  if (err != 0 && err != EINPROGRESS) return err;
  if (err == EINPROGRESS) {
    auto until = std::min(g_deadline, Clock::now() + std::chrono::milliseconds(timeout_ms));
    for (;;) {
      pollfd p{fd.get(), POLLOUT, 0};
      int n = poll(&p, 1, MsUntil(until));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno;
      if (n == 0) return ETIMEDOUT;
      int so = SocketError(fd.get());
      if (so != 0) return so;
      break;
    }
  }
  *out = std::move(fd);
  return 0;
}

// ---------------------------------------------------------------- serve ---

enum class ServeMode { kTag, kEcho, kSinkSource, kReset };

struct ServeOptions {
  Endpoint listen;
  std::string tag;
  ServeMode mode = ServeMode::kTag;
  int threads = 1;
  int max_conns = 10000;
  int idle_ms = 30000;
  int backlog = 4096;
  bool verbose = false;
  // sink-source: a slow reader (a pause after every read) and/or one that
  // stops reading for a while once it has received stall_at bytes.
  int read_pause_us = 0;
  int stall_ms = 0;
  uint64_t stall_at = 0;
};

struct ServerConn {
  enum class State { kWriteTag, kDrain, kEcho, kHeader, kSink, kSource };
  Fd fd;
  State state = State::kDrain;
  std::vector<uint8_t> buf;  // pending output (tag, echo)
  size_t buf_off = 0;
  bool peer_eof = false;
  uint8_t header[8] = {};
  size_t header_got = 0;
  uint64_t received = 0;
  bool stalled = false;
  uint64_t reply_total = 0;
  uint64_t reply_sent = 0;
  std::unique_ptr<Sha256> sha;
  std::string peer;
  Clock::time_point last_activity = Clock::now();
  uint32_t events = 0;
};

struct ServerStats {
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> closed{0};
  std::atomic<uint64_t> idle_closed{0};
  std::atomic<int64_t> open{0};
  std::atomic<int64_t> peak_open{0};
};

class ServerWorker {
 public:
  ServerWorker(const ServeOptions& opts, Fd listener, int stop_fd, ServerStats* stats)
      : opts_(opts), listener_(std::move(listener)), stop_fd_(stop_fd), stats_(stats), pattern_(kServerToClientSeed) {}

  void Run() {
    epoll_.Reset(epoll_create1(EPOLL_CLOEXEC));
    Add(listener_.get(), EPOLLIN);
    Add(stop_fd_, EPOLLIN);
    std::vector<epoll_event> events(256);
    std::vector<uint8_t> scratch(kChunk);
    auto last_sweep = Clock::now();
    for (;;) {
      int n = epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), 100);
      if (n < 0 && errno != EINTR) {
        Log("epoll_wait: %s", strerror(errno));
        return;
      }
      for (int i = 0; i < n; ++i) {
        int fd = events[i].data.fd;
        if (fd == stop_fd_) return;
        if (fd == listener_.get()) {
          AcceptSome();
          continue;
        }
        auto it = conns_.find(fd);
        if (it == conns_.end()) continue;
        ServerConn* c = it->second.get();
        c->last_activity = Clock::now();
        if (!Handle(c, events[i].events, scratch)) Close(fd);
      }
      if (Clock::now() - last_sweep > std::chrono::milliseconds(100)) {
        last_sweep = Clock::now();
        SweepIdle();
        if (listener_paused_ && static_cast<int>(conns_.size()) < MaxPerWorker()) {
          Add(listener_.get(), EPOLLIN);
          listener_paused_ = false;
        }
      }
    }
  }

 private:
  int MaxPerWorker() const { return std::max(1, opts_.max_conns / std::max(1, opts_.threads)); }

  void Add(int fd, uint32_t ev) {
    epoll_event e{};
    e.events = ev;
    e.data.fd = fd;
    epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &e);
  }

  void SetEvents(ServerConn* c, uint32_t ev) {
    if (c->events == ev) return;
    epoll_event e{};
    e.events = ev;
    e.data.fd = c->fd.get();
    epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c->fd.get(), &e);
    c->events = ev;
  }

  void AcceptSome() {
    for (int i = 0; i < 64; ++i) {
      if (static_cast<int>(conns_.size()) >= MaxPerWorker()) {
        // Leave further connections in the backlog rather than accepting
        // and dropping them: the bound shows up as latency, not as resets.
        epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_.get(), nullptr);
        listener_paused_ = true;
        return;
      }
      int fd = accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
          Log("accept: %s", strerror(errno));
        return;
      }
      auto c = std::make_unique<ServerConn>();
      c->fd.Reset(fd);
      c->peer = SockName(fd, true);
      stats_->accepted++;
      int64_t open = ++stats_->open;
      int64_t peak = stats_->peak_open.load();
      while (open > peak && !stats_->peak_open.compare_exchange_weak(peak, open)) {
      }
      if (opts_.verbose) Log("accepted %s", c->peer.c_str());
      if (opts_.mode == ServeMode::kReset) {
        // Abortive close: the peer gets a RST instead of a FIN.
        linger lg{1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        --stats_->open;
        continue;  // c goes out of scope and closes the fd
      }
      ServerConn* raw = c.get();
      conns_.emplace(fd, std::move(c));
      uint32_t ev = EPOLLIN | EPOLLRDHUP;
      switch (opts_.mode) {
        case ServeMode::kTag: {
          std::string line = opts_.tag + "\n";
          raw->buf.assign(line.begin(), line.end());
          raw->state = ServerConn::State::kWriteTag;
          ev = EPOLLOUT;
          break;
        }
        case ServeMode::kEcho:
          raw->state = ServerConn::State::kEcho;
          break;
        case ServeMode::kSinkSource:
          raw->state = ServerConn::State::kHeader;
          raw->sha = std::make_unique<Sha256>();
          break;
        case ServeMode::kReset:
          break;  // handled above
      }
      raw->events = ev;
      Add(fd, ev);
    }
  }

  // Writes pending buf; returns false on a fatal error.
  bool FlushBuf(ServerConn* c) {
    while (c->buf_off < c->buf.size()) {
      ssize_t w = send(c->fd.get(), c->buf.data() + c->buf_off, c->buf.size() - c->buf_off, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) return true;
        return false;
      }
      c->buf_off += static_cast<size_t>(w);
    }
    c->buf.clear();
    c->buf_off = 0;
    return true;
  }

  // Returns false when the connection is finished or broken.
  bool Handle(ServerConn* c, uint32_t ev, std::vector<uint8_t>& scratch) {
    using S = ServerConn::State;
    switch (c->state) {
      case S::kWriteTag:
        if (!FlushBuf(c)) return false;
        if (!c->buf.empty()) return true;
        // Tag sent: half-close and wait for the client to close, so the
        // server side never resets a connection the client still reads.
        shutdown(c->fd.get(), SHUT_WR);
        c->state = S::kDrain;
        SetEvents(c, EPOLLIN | EPOLLRDHUP);
        return true;
      case S::kDrain: {
        for (;;) {
          ssize_t r = recv(c->fd.get(), scratch.data(), scratch.size(), 0);
          if (r > 0) continue;
          if (r == 0) return false;
          return errno == EAGAIN || errno == EINTR;
        }
      }
      case S::kEcho:
        return HandleEcho(c, scratch);
      case S::kHeader:
      case S::kSink:
        return HandleSink(c, scratch);
      case S::kSource:
        return HandleSource(c, scratch);
    }
    (void)ev;
    return false;
  }

  bool HandleEcho(ServerConn* c, std::vector<uint8_t>& scratch) {
    if (!FlushBuf(c)) return false;
    // Bounded buffering: read only when everything read before is written.
    while (c->buf.empty() && !c->peer_eof) {
      ssize_t r = recv(c->fd.get(), scratch.data(), 64 * 1024, 0);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        return false;
      }
      if (r == 0) {
        c->peer_eof = true;
        break;
      }
      c->buf.assign(scratch.data(), scratch.data() + r);
      c->buf_off = 0;
      if (!FlushBuf(c)) return false;
    }
    if (c->peer_eof && c->buf.empty()) {
      shutdown(c->fd.get(), SHUT_WR);
      return false;
    }
    SetEvents(c, c->buf.empty() ? (EPOLLIN | EPOLLRDHUP) : EPOLLOUT);
    return true;
  }

  bool HandleSink(ServerConn* c, std::vector<uint8_t>& scratch) {
    using S = ServerConn::State;
    for (;;) {
      ssize_t r = recv(c->fd.get(), scratch.data(), scratch.size(), 0);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return true;
        Log("sink %s: recv: %s", c->peer.c_str(), strerror(errno));
        return false;
      }
      if (r == 0) break;
      size_t off = 0;
      if (c->state == S::kHeader) {
        size_t take = std::min<size_t>(8 - c->header_got, static_cast<size_t>(r));
        std::memcpy(c->header + c->header_got, scratch.data(), take);
        c->header_got += take;
        off = take;
        if (c->header_got == 8) {
          uint64_t n = 0;
          for (uint8_t b : c->header) n = (n << 8) | b;
          c->reply_total = n;
          c->state = S::kSink;
        }
      }
      c->sha->Update(scratch.data() + off, static_cast<size_t>(r) - off);
      c->received += static_cast<size_t>(r) - off;
      if (opts_.read_pause_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(opts_.read_pause_us));
      if (opts_.stall_ms > 0 && !c->stalled && c->received >= opts_.stall_at) {
        c->stalled = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(opts_.stall_ms));
      }
    }
    if (c->state == S::kHeader) {
      Log("sink %s: EOF after %zu header bytes", c->peer.c_str(), c->header_got);
      EmitJson({{"event", "sink"}, {"tag", opts_.tag}, {"peer", c->peer}, {"error", "short header"}});
      return false;
    }
    EmitJson({{"event", "sink"},
              {"tag", opts_.tag},
              {"peer", c->peer},
              {"received", c->received},
              {"sha256", c->sha->HexDigest()},
              {"reply_bytes", c->reply_total}});
    c->state = S::kSource;
    SetEvents(c, EPOLLOUT);
    return HandleSource(c, scratch);
  }

  bool HandleSource(ServerConn* c, std::vector<uint8_t>& scratch) {
    while (c->reply_sent < c->reply_total) {
      size_t take = static_cast<size_t>(std::min<uint64_t>(scratch.size(), c->reply_total - c->reply_sent));
      pattern_.Fill(c->reply_sent, scratch.data(), take);
      ssize_t w = send(c->fd.get(), scratch.data(), take, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) return true;
        Log("source %s: send: %s", c->peer.c_str(), strerror(errno));
        return false;
      }
      c->reply_sent += static_cast<uint64_t>(w);
    }
    // The peer already half-closed and we read to EOF, so close() sends a
    // plain FIN after the data, never a reset.
    return false;
  }

  void Close(int fd) {
    epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    conns_.erase(fd);
    stats_->closed++;
    stats_->open--;
  }

  void SweepIdle() {
    auto limit = Clock::now() - std::chrono::milliseconds(opts_.idle_ms);
    std::vector<int> idle;
    for (auto& [fd, c] : conns_)
      if (c->last_activity < limit) idle.push_back(fd);
    for (int fd : idle) {
      if (opts_.verbose) Log("idle timeout %s", conns_[fd]->peer.c_str());
      stats_->idle_closed++;
      Close(fd);
    }
  }

  const ServeOptions& opts_;
  Fd listener_;
  int stop_fd_;
  ServerStats* stats_;
  PatternStream pattern_;
  Fd epoll_;
  bool listener_paused_ = false;
  std::unordered_map<int, std::unique_ptr<ServerConn>> conns_;
};

Fd MakeListener(const Endpoint& ep, bool reuseport, int backlog, std::string* err) {
  Fd fd(socket(ep.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    *err = std::string("socket: ") + strerror(errno);
    return Fd();
  }
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport) setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&ep.addr), ep.len) != 0) {
    *err = "bind " + ep.text + ": " + strerror(errno);
    return Fd();
  }
  if (listen(fd.get(), backlog) != 0) {
    *err = std::string("listen: ") + strerror(errno);
    return Fd();
  }
  return fd;
}

// Signals are taken synchronously by the main thread (sigtimedwait); they
// are blocked before any thread starts so no other thread receives them.
sigset_t ServeSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

int RunServe(ServeOptions opts, const std::string& ready_file) {
  sigset_t set = ServeSignals();

  std::vector<Fd> listeners;
  std::string err;
  Endpoint ep = opts.listen;
  for (int i = 0; i < opts.threads; ++i) {
    Fd l = MakeListener(ep, opts.threads > 1, opts.backlog, &err);
    if (!l.valid()) {
      EmitJson({{"event", "error"}, {"error", err}});
      return kExitCheckFailed;
    }
    if (i == 0) {  // port 0: the other threads join the port the kernel picked
      socklen_t len = sizeof ep.addr;
      getsockname(l.get(), reinterpret_cast<sockaddr*>(&ep.addr), &len);
    }
    listeners.push_back(std::move(l));
  }
  std::string bound = SockName(listeners[0].get(), false);

  Fd stop_fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ServerStats stats;
  std::vector<std::unique_ptr<ServerWorker>> workers;
  std::vector<std::thread> threads;
  for (auto& l : listeners) workers.push_back(std::make_unique<ServerWorker>(opts, std::move(l), stop_fd.get(), &stats));
  for (auto& w : workers) threads.emplace_back([&w] { w->Run(); });

  const char* mode_name[] = {"tag", "echo", "sink-source", "reset"};
  EmitJson({{"event", "listening"}, {"listen", bound}, {"tag", opts.tag},
            {"mode", mode_name[static_cast<int>(opts.mode)]}, {"threads", opts.threads}});
  if (!ready_file.empty()) {
    std::string tmp = ready_file + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr || std::fprintf(f, "%s\n", bound.c_str()) < 0 || std::fclose(f) != 0 ||
        std::rename(tmp.c_str(), ready_file.c_str()) != 0) {
      Log("cannot write ready file %s: %s", ready_file.c_str(), strerror(errno));
    }
  }

  std::string reason = "deadline";
  for (;;) {
    int ms = MsUntil(g_deadline);
    if (ms <= 0) break;
    timespec ts{ms / 1000, (ms % 1000) * 1000000L};
    int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      reason = sig == SIGTERM ? "SIGTERM" : "SIGINT";
      break;
    }
  }
  uint64_t one = 1;
  ssize_t ignored = write(stop_fd.get(), &one, sizeof one);
  (void)ignored;
  for (auto& t : threads) t.join();
  EmitJson({{"event", "exit"},
            {"reason", reason},
            {"accepted", stats.accepted.load()},
            {"closed", stats.closed.load()},
            {"idle_closed", stats.idle_closed.load()},
            {"peak_open", stats.peak_open.load()}});
  return 0;
}

// -------------------------------------------------------------- connect ---

struct ConnectOptions {
  Endpoint to;
  int count = 1;
  int parallel = 1;
  int timeout_ms = 5000;
  int hold_ms = 0;
  bool allow_fail = false;
  bool connect_only = false;
};

struct ClientConn {
  Fd fd;
  Clock::time_point start;
  bool connected = false;
  std::string line;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

int RunConnect(const ConnectOptions& o) {
  Fd ep(epoll_create1(EPOLL_CLOEXEC));
  std::unordered_map<int, ClientConn> inflight;
  std::vector<Fd> held;  // --hold-ms: established connections of this wave
  std::map<std::string, int> errors, tags;
  std::vector<double> ok_ms;
  int ok = 0, failed = 0, started = 0, wave_left = 0;
  size_t peak_open = 0;
  bool deadline_hit = false;
  auto t0 = Clock::now();

  auto fail = [&](const std::string& why) {
    ++failed;
    ++errors[why];
  };
  auto finish = [&](int fd, bool success) {
    auto it = inflight.find(fd);
    epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr);
    if (success) {
      ++ok;
      ok_ms.push_back(MsSince(it->second.start));
      if (o.hold_ms > 0) held.push_back(std::move(it->second.fd));
    }
    inflight.erase(it);
    --wave_left;
  };
  auto on_ready = [&](int fd, ClientConn& c) {  // returns true when done
    if (!c.connected) {
      int err = SocketError(fd);
      if (err != 0) {
        fail(ErrName(err));
        finish(fd, false);
        return;
      }
      c.connected = true;
      if (o.connect_only) {
        finish(fd, true);
        return;
      }
      epoll_event e{};
      e.events = EPOLLIN | EPOLLRDHUP;
      e.data.fd = fd;
      epoll_ctl(ep.get(), EPOLL_CTL_MOD, fd, &e);
      return;
    }
    char buf[512];
    for (;;) {
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        fail(ErrName(errno));
        finish(fd, false);
        return;
      }
      if (r == 0) {
        fail("EOF");  // closed before a full tag line arrived
        finish(fd, false);
        return;
      }
      c.line.append(buf, static_cast<size_t>(r));
      auto nl = c.line.find('\n');
      if (nl != std::string::npos) {
        ++tags[c.line.substr(0, nl)];
        finish(fd, true);
        return;
      }
      if (c.line.size() > 4096) {
        fail("TAG_TOO_LONG");
        finish(fd, false);
        return;
      }
    }
  };
  auto start_one = [&]() {
    ++started;
    ++wave_left;
    ClientConn c;
    c.start = Clock::now();
    auto [fd, err] = StartConnect(o.to);
    if (err != 0 && err != EINPROGRESS) {
      fail(ErrName(err));
      --wave_left;
      return;
    }
    int raw = fd.get();
    c.fd = std::move(fd);
    epoll_event e{};
    e.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
    e.data.fd = raw;
    epoll_ctl(ep.get(), EPOLL_CTL_ADD, raw, &e);
    auto& ref = inflight.emplace(raw, std::move(c)).first->second;
    if (err == 0) on_ready(raw, ref);
  };

  std::vector<epoll_event> events(1024);
  while (ok + failed < o.count) {
    if (Clock::now() >= g_deadline) {
      deadline_hit = true;
      break;
    }
    if (o.hold_ms > 0) {
      // Waves: open `parallel` connections, wait until every one is
      // established (or failed), hold them all open together, then close.
      if (inflight.empty() && wave_left <= 0) {
        if (!held.empty()) {
          peak_open = std::max(peak_open, held.size());
          auto until = std::min(g_deadline, Clock::now() + std::chrono::milliseconds(o.hold_ms));
          std::this_thread::sleep_until(until);
          held.clear();
        }
        wave_left = 0;
        int n = std::min(o.parallel, o.count - started);
        for (int i = 0; i < n; ++i) start_one();
        continue;
      }
    } else {
      while (static_cast<int>(inflight.size()) < o.parallel && started < o.count) start_one();
      peak_open = std::max(peak_open, inflight.size());
    }
    if (inflight.empty()) continue;
    int n = epoll_wait(ep.get(), events.data(), static_cast<int>(events.size()), std::min(10, MsUntil(g_deadline)));
    for (int i = 0; i < n; ++i) {
      auto it = inflight.find(events[i].data.fd);
      if (it != inflight.end()) on_ready(it->first, it->second);
    }
    auto now = Clock::now();
    std::vector<int> expired;
    for (auto& [fd, c] : inflight)
      if (now - c.start > std::chrono::milliseconds(o.timeout_ms)) expired.push_back(fd);
    for (int fd : expired) {
      fail("ETIMEDOUT");
      finish(fd, false);
    }
  }
  if (!held.empty()) {
    peak_open = std::max(peak_open, held.size());
    auto until = std::min(g_deadline, Clock::now() + std::chrono::milliseconds(o.hold_ms));
    std::this_thread::sleep_until(until);
    held.clear();
  }
  if (deadline_hit) {
    int missing = o.count - ok - failed;
    failed += missing;
    errors["DEADLINE"] += missing;
  }
  double max_ms = ok_ms.empty() ? 0 : *std::max_element(ok_ms.begin(), ok_ms.end());
  Json out = {{"ok", ok},
              {"failed", failed},
              {"errors", errors},
              {"tags", tags},
              {"max_ms", Round3(max_ms)},
              {"p50_ms", Round3(Percentile(ok_ms, 0.5))},
              {"p99_ms", Round3(Percentile(ok_ms, 0.99))},
              {"elapsed_ms", Round3(MsSince(t0))},
              {"peak_open", peak_open}};
  if (deadline_hit) out["deadline_exceeded"] = true;
  EmitJson(out);
  if (deadline_hit) return kExitDeadline;
  return (failed == 0 || o.allow_fail) ? 0 : kExitCheckFailed;
}

// ----------------------------------------------------------------- bulk ---

// pause_ms > 0: the writer stops for that long each time it has sent
// another pause_every bytes (a bursty writer).
int RunBulk(const Endpoint& to, uint64_t bytes, uint64_t reply_bytes, int timeout_ms, int idle_ms, int pause_ms,
            uint64_t pause_every) {
  auto t0 = Clock::now();
  Json out = {{"sent", 0}, {"received", 0}};
  Fd fd;
  int err = ConnectWithTimeout(to, timeout_ms, &fd);
  if (err != 0) {
    out["error"] = ErrName(err);
    EmitJson(out);
    return kExitCheckFailed;
  }
  PatternStream c2s(kClientToServerSeed);
  PatternStream s2c(kServerToClientSeed);
  Sha256 sent_sha, recv_sha;
  std::vector<uint8_t> wbuf(kChunk), rbuf(kChunk);
  uint8_t header[8];
  for (int i = 0; i < 8; ++i) header[i] = static_cast<uint8_t>(reply_bytes >> (56 - 8 * i));
  uint64_t header_sent = 0, sent = 0, received = 0;
  size_t wlen = 0, woff = 0;
  bool write_done = false, eof = false;
  std::string error;
  auto last_progress = Clock::now();
  while (!eof) {
    if (Clock::now() >= g_deadline) {
      error = "DEADLINE";
      break;
    }
    if (Clock::now() - last_progress > std::chrono::milliseconds(idle_ms)) {
      error = "ETIMEDOUT";  // no progress in either direction for idle_ms
      break;
    }
    pollfd p{fd.get(), static_cast<short>(POLLIN | (write_done ? 0 : POLLOUT)), 0};
    int n = poll(&p, 1, std::min(100, MsUntil(g_deadline)));
    if (n < 0 && errno != EINTR) {
      error = ErrName(errno);
      break;
    }
    if (n <= 0) continue;
    if (!write_done && (p.revents & (POLLOUT | POLLERR))) {
      for (;;) {
        if (header_sent < 8) {
          ssize_t w = send(fd.get(), header + header_sent, 8 - header_sent, MSG_NOSIGNAL);
          if (w < 0) break;
          header_sent += static_cast<uint64_t>(w);
          last_progress = Clock::now();
          continue;
        }
        if (woff == wlen) {
          if (sent == bytes) {
            shutdown(fd.get(), SHUT_WR);
            write_done = true;
            break;
          }
          wlen = static_cast<size_t>(std::min<uint64_t>(kChunk, bytes - sent));
          c2s.Fill(sent, wbuf.data(), wlen);
          woff = 0;
        }
        size_t len = wlen - woff;
        if (pause_ms > 0 && pause_every > 0) len = std::min<uint64_t>(len, pause_every - sent % pause_every);
        ssize_t w = send(fd.get(), wbuf.data() + woff, len, MSG_NOSIGNAL);
        if (w < 0) break;
        sent_sha.Update(wbuf.data() + woff, static_cast<size_t>(w));
        woff += static_cast<size_t>(w);
        sent += static_cast<uint64_t>(w);
        if (pause_ms > 0 && pause_every > 0 && sent % pause_every == 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
        }
        last_progress = Clock::now();
      }
      if (!write_done && errno != EAGAIN && errno != EINTR) {
        error = "send: " + ErrName(errno);
        break;
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      for (;;) {
        ssize_t r = recv(fd.get(), rbuf.data(), rbuf.size(), 0);
        if (r > 0) {
          recv_sha.Update(rbuf.data(), static_cast<size_t>(r));
          received += static_cast<uint64_t>(r);
          last_progress = Clock::now();
          continue;
        }
        if (r == 0) {
          eof = true;
        } else if (errno != EAGAIN && errno != EINTR) {
          error = "recv: " + ErrName(errno);
        }
        break;
      }
      if (!error.empty()) break;
    }
  }
  double ms = MsSince(t0);
  std::string expected = s2c.Sha256Of(reply_bytes);
  std::string got = recv_sha.HexDigest();
  bool ok = error.empty() && write_done && received == reply_bytes && got == expected;
  out = {{"sent", sent},
         {"sent_sha256", sent_sha.HexDigest()},
         {"received", received},
         {"received_sha256", got},
         {"expected_reply", reply_bytes},
         {"expected_reply_sha256", expected},
         {"ms", Round3(ms)},
         {"mbit_per_s", Round3(ms > 0 ? static_cast<double>(sent + received) * 8 / 1000.0 / ms : 0)},
         {"ok", ok}};
  if (!error.empty()) out["error"] = error;
  EmitJson(out);
  if (error == "DEADLINE") return kExitDeadline;
  return ok ? 0 : kExitCheckFailed;
}

// ---------------------------------------------------------------- probe ---

int RunProbe(const Endpoint& to, int timeout_ms, bool read_tag, const std::string& expect) {
  auto t0 = Clock::now();
  Fd fd;
  int err = ConnectWithTimeout(to, timeout_ms, &fd);
  Json out = {{"result", ErrName(err)}, {"ms", Round3(MsSince(t0))}};
  if (err == 0 && read_tag) {
    auto until = std::min(g_deadline, t0 + std::chrono::milliseconds(timeout_ms));
    std::string line;
    std::string tag_error;
    while (line.find('\n') == std::string::npos) {
      pollfd p{fd.get(), POLLIN, 0};
      int n = poll(&p, 1, MsUntil(until));
      if (n == 0) {
        tag_error = "ETIMEDOUT";
        break;
      }
      char buf[512];
      ssize_t r = recv(fd.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (r == 0) {
        tag_error = "EOF";
        break;
      }
      if (r < 0 && errno != EAGAIN && errno != EINTR) {
        tag_error = ErrName(errno);
        break;
      }
      if (r > 0) line.append(buf, static_cast<size_t>(r));
    }
    if (tag_error.empty()) {
      out["tag"] = line.substr(0, line.find('\n'));
    } else {
      out["tag_error"] = tag_error;
    }
    out["ms"] = Round3(MsSince(t0));
  }
  EmitJson(out);
  std::string result = out["result"];
  bool tag_ok = !read_tag || err != 0 || out.contains("tag");
  return (result == expect && tag_ok) ? 0 : kExitCheckFailed;
}

// ------------------------------------------------------------------- rr ---

// Sends `out` and reads the same number of bytes into `in`, interleaved so
// messages larger than the socket buffers cannot deadlock.
int Exchange(int fd, const uint8_t* out, uint8_t* in, size_t n, Clock::time_point until) {
  size_t w = 0, r = 0;
  while (r < n) {
    pollfd p{fd, static_cast<short>(POLLIN | (w < n ? POLLOUT : 0)), 0};
    int k = poll(&p, 1, MsUntil(until));
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return errno;
    if (k == 0) return ETIMEDOUT;
    if (w < n && (p.revents & POLLOUT)) {
      ssize_t s = send(fd, out + w, n - w, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (s < 0 && errno != EAGAIN && errno != EINTR) return errno;
      if (s > 0) w += static_cast<size_t>(s);
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t s = recv(fd, in + r, n - r, MSG_DONTWAIT);
      if (s == 0) return ECONNRESET;
      if (s < 0 && errno != EAGAIN && errno != EINTR) return errno;
      if (s > 0) r += static_cast<size_t>(s);
    }
  }
  return 0;
}

int RunRr(const Endpoint& to, size_t size, int count, int warmup, int timeout_ms, bool reset) {
  Json out;
  Fd fd;
  int err = ConnectWithTimeout(to, timeout_ms, &fd);
  if (err != 0) {
    EmitJson({{"error", ErrName(err)}});
    return kExitCheckFailed;
  }
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  PatternStream pattern(kClientToServerSeed);
  std::vector<uint8_t> req(size), resp(size);
  std::vector<double> lat_us;
  lat_us.reserve(static_cast<size_t>(count));
  std::string error;
  int mismatches = 0;
  auto t0 = Clock::now();
  for (int i = 0; i < warmup + count; ++i) {
    if (Clock::now() >= g_deadline) {
      error = "DEADLINE";
      break;
    }
    pattern.Fill(static_cast<uint64_t>(i) * size, req.data(), size);
    auto start = Clock::now();
    err = Exchange(fd.get(), req.data(), resp.data(), size,
                   std::min(g_deadline, start + std::chrono::milliseconds(timeout_ms)));
    if (err != 0) {
      error = ErrName(err);
      break;
    }
    if (i >= warmup) lat_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    if (std::memcmp(req.data(), resp.data(), size) != 0) ++mismatches;
  }
  double total_ms = MsSince(t0);
  double sum = 0;
  for (double v : lat_us) sum += v;
  out = {{"count", lat_us.size()},
         {"size", size},
         {"min_us", Round3(lat_us.empty() ? 0 : *std::min_element(lat_us.begin(), lat_us.end()))},
         {"mean_us", Round3(lat_us.empty() ? 0 : sum / static_cast<double>(lat_us.size()))},
         {"p50_us", Round3(Percentile(lat_us, 0.50))},
         {"p90_us", Round3(Percentile(lat_us, 0.90))},
         {"p99_us", Round3(Percentile(lat_us, 0.99))},
         {"p999_us", Round3(Percentile(lat_us, 0.999))},
         {"max_us", Round3(lat_us.empty() ? 0 : *std::max_element(lat_us.begin(), lat_us.end()))},
         {"rps", Round3(total_ms > 0 ? static_cast<double>(lat_us.size()) * 1000.0 / total_ms : 0)},
         {"mismatches", mismatches}};
  if (!error.empty()) out["error"] = error;
  if (reset) {
    // Every reply is read: end with RST instead of FIN.
    linger lg{1, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  EmitJson(out);
  if (error == "DEADLINE") return kExitDeadline;
  return (error.empty() && mismatches == 0) ? 0 : kExitCheckFailed;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  RaiseFdLimit();

  CLI::App app{"rm-tcp: bounded TCP test client/server for ringmesh namespace tests"};
  app.require_subcommand(1);
  app.fallthrough();
  int deadline_ms = 30000;
  app.add_option("--deadline-ms", deadline_ms, "hard bound on the whole run (all modes)")
      ->check(CLI::PositiveNumber);

  std::string listen_s, to_s, tag, mode_s = "tag", ready_file, bytes_s, reply_bytes_s, expect = "ok";
  ServeOptions sopts;
  ConnectOptions copts;
  int timeout_ms = 5000, idle_ms = 10000, count = 1000, warmup = 10;
  std::string size_s = "64";
  bool read_tag = false;

  auto* serve = app.add_subcommand("serve", "listen and answer: tag | echo | sink-source | reset");
  serve->add_option("--listen", listen_s, "IP:PORT (port 0: kernel picks, see --ready-file)")->required();
  serve->add_option("--tag", sopts.tag, "name written by --mode tag and logged")->required();
  serve->add_option("--mode", mode_s, "tag | echo | sink-source | reset (RST on accept)")
      ->check(CLI::IsMember({"tag", "echo", "sink-source", "reset"}));
  serve->add_option("--ready-file", ready_file, "written with the bound IP:PORT once listening");
  serve->add_option("--threads", sopts.threads, "worker threads (SO_REUSEPORT listeners)")->check(CLI::Range(1, 64));
  serve->add_option("--max-conns", sopts.max_conns, "open connections at most; more wait in the backlog")
      ->check(CLI::PositiveNumber);
  serve->add_option("--idle-ms", sopts.idle_ms, "close connections idle this long")->check(CLI::PositiveNumber);
  serve->add_option("--backlog", sopts.backlog, "listen backlog")->check(CLI::PositiveNumber);
  serve->add_flag("--verbose", sopts.verbose, "log every connection on stderr");
  serve->add_option("--read-pause-us", sopts.read_pause_us, "sink-source: pause after every read (a slow reader)")
      ->check(CLI::Range(0, 1000000));
  serve->add_option("--stall-ms", sopts.stall_ms, "sink-source: stop reading this long once, at --stall-at")
      ->check(CLI::Range(0, 60000));
  std::string stall_at_s = "0";
  serve->add_option("--stall-at", stall_at_s, "sink-source: bytes received before the stall, e.g. 8MiB");

  auto* conn = app.add_subcommand("connect", "open N connections K at a time, read the tag line of each");
  conn->add_option("--to", to_s, "IP:PORT")->required();
  conn->add_option("--count", copts.count, "connections in total")->check(CLI::PositiveNumber);
  conn->add_option("--parallel", copts.parallel, "connections at a time")->check(CLI::PositiveNumber);
  conn->add_option("--timeout-ms", copts.timeout_ms, "per connection: connect + tag line")->check(CLI::PositiveNumber);
  conn->add_option("--hold-ms", copts.hold_ms,
                   "waves of --parallel: all established, then held open together this long, then closed");
  conn->add_flag("--allow-fail", copts.allow_fail, "exit 0 even if some connections failed");
  conn->add_flag("--connect-only", copts.connect_only, "success at establishment, do not read a tag");

  auto* bulk = app.add_subcommand("bulk", "send B bytes to sink-source, check the reply");
  bulk->add_option("--to", to_s, "IP:PORT")->required();
  bulk->add_option("--bytes", bytes_s, "payload size, e.g. 64MiB")->required();
  bulk->add_option("--reply-bytes", reply_bytes_s, "reply size asked for (default: same as --bytes)");
  bulk->add_option("--timeout-ms", timeout_ms, "connect timeout")->check(CLI::PositiveNumber);
  bulk->add_option("--idle-ms", idle_ms, "fail if no byte moves for this long")->check(CLI::PositiveNumber);
  int pause_ms = 0;
  std::string pause_every_s = "0";
  bulk->add_option("--pause-ms", pause_ms, "stop writing this long after every --pause-every bytes")
      ->check(CLI::Range(0, 60000));
  bulk->add_option("--pause-every", pause_every_s, "bytes between the writer's pauses, e.g. 8MiB");

  auto* probe = app.add_subcommand("probe", "one bounded connect; prints the result name");
  probe->add_option("--to", to_s, "IP:PORT")->required();
  probe->add_option("--timeout-ms", timeout_ms, "bound on connect (and tag read)")->check(CLI::PositiveNumber);
  probe->add_option("--expect", expect, "exit 0 iff the result equals this (default ok)");
  probe->add_flag("--read-tag", read_tag, "also read the tag line");

  auto* rr = app.add_subcommand("rr", "request/response latency against serve --mode echo");
  rr->add_option("--to", to_s, "IP:PORT")->required();
  rr->add_option("--size", size_s, "bytes per request, e.g. 64, 16KiB (at most 64MiB)");
  rr->add_option("--count", count, "measured round trips")->check(CLI::PositiveNumber);
  rr->add_option("--warmup", warmup, "unmeasured round trips first")->check(CLI::NonNegativeNumber);
  rr->add_option("--timeout-ms", timeout_ms, "connect and per round trip bound")->check(CLI::PositiveNumber);
  bool rr_reset = false;
  rr->add_flag("--reset", rr_reset, "close with RST (SO_LINGER 0) once every reply is read");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }

  if (serve->parsed()) {
    sigset_t set = ServeSignals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }
  g_deadline = Clock::now() + std::chrono::milliseconds(deadline_ms);
  StartWatchdog();

  auto endpoint = [&](const std::string& s) -> std::optional<Endpoint> {
    auto ep = ParseEndpoint(s);
    if (!ep) std::fprintf(stderr, "rm-tcp: bad address '%s' (want IP:PORT or [IPv6]:PORT)\n", s.c_str());
    return ep;
  };

  if (serve->parsed()) {
    auto ep = endpoint(listen_s);
    if (!ep) return kExitUsage;
    sopts.listen = *ep;
    sopts.mode = mode_s == "echo"          ? ServeMode::kEcho
                 : mode_s == "sink-source" ? ServeMode::kSinkSource
                 : mode_s == "reset"       ? ServeMode::kReset
                                           : ServeMode::kTag;
    auto stall_at = ParseBytes(stall_at_s);
    if (!stall_at) {
      std::fprintf(stderr, "rm-tcp: bad --stall-at '%s'\n", stall_at_s.c_str());
      return kExitUsage;
    }
    sopts.stall_at = *stall_at;
    return RunServe(sopts, ready_file);
  }
  auto ep = endpoint(to_s);
  if (!ep) return kExitUsage;
  if (conn->parsed()) {
    copts.to = *ep;
    return RunConnect(copts);
  }
  if (bulk->parsed()) {
    auto b = ParseBytes(bytes_s);
    auto rb = reply_bytes_s.empty() ? b : ParseBytes(reply_bytes_s);
    if (!b || !rb) {
      std::fprintf(stderr, "rm-tcp: bad byte count (e.g. 1500, 64KiB, 64MiB, 1GB)\n");
      return kExitUsage;
    }
    auto pe = ParseBytes(pause_every_s);
    if (!pe) {
      std::fprintf(stderr, "rm-tcp: bad --pause-every '%s'\n", pause_every_s.c_str());
      return kExitUsage;
    }
    return RunBulk(*ep, *b, *rb, timeout_ms, idle_ms, pause_ms, *pe);
  }
  if (probe->parsed()) return RunProbe(*ep, timeout_ms, read_tag, expect);
  if (rr->parsed()) {
    auto size = ParseBytes(size_s);
    if (!size || *size == 0 || *size > (64u << 20)) {
      std::fprintf(stderr, "rm-tcp: bad --size (1 byte .. 64MiB)\n");
      return kExitUsage;
    }
    return RunRr(*ep, static_cast<size_t>(*size), count, warmup, timeout_ms, rr_reset);
  }
  return kExitUsage;
}
