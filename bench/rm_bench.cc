// rm-bench: the load generators of scripts/bench that rm-tcp does not have.
// Every mode is single-threaded, bounded in time (--deadline-ms, default
// 60 s) and prints one JSON object on stdout. Servers are `rm-tcp serve
// --mode echo`.
//
//   rm-bench openloop --to IP:PORT --conns 16 --rate 20000 --duration-ms 2000
//                     [--warmup-ms 300] [--size 64] [--closed]
//     Open loop (S3): request k is due at t0 + k/rate and goes out on
//     connection k mod conns at that time whether or not earlier answers
//     came back (requests pipeline on a connection; the echo server answers
//     in order). Latency runs from the request's *scheduled* time to the
//     last byte of its answer, so a stalled server or proxy is charged for
//     every request it delayed (no coordinated omission). `send_lag_*` is
//     how late this client itself sent; large values mean the client, not
//     the system under test, was the bottleneck. --closed: every connection
//     sends its next request when the answer arrives (capacity probe).
//
//   rm-bench cps --to IP:PORT --parallel 16 --duration-ms 1500 [--size 64]
//     Connection rate (S4): connect, send SIZE bytes, read the echo, close;
//     PARALLEL of these at a time, for the duration.
//
//   rm-bench hold --to IP:PORT --count 10000 --parallel 256 --ready-file F
//                 [--hold-ms 30000] [--size 64]
//     Idle connections (S6): opens COUNT connections (PARALLEL at a time),
//     does one SIZE-byte echo on each so the whole path is established,
//     keeps them open and idle, writes F ({"ok":N,...}) and waits for
//     SIGTERM/SIGINT or --hold-ms, then closes them all.
//
// Exit codes: 0 done (failures are reported in the JSON), 2 usage, 124 the
// deadline was hit.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <vector>

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitDeadline = 124;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

struct Options {
  std::string mode;
  sockaddr_in to{};
  bool have_to = false;
  int conns = 16;
  double rate = 0;
  int64_t duration_ms = 2000;
  int64_t warmup_ms = 300;
  int64_t tick_us = 0;  // openloop: send on a tick of this many µs (0: at each due time)
  size_t size = 64;
  bool closed = false;
  int parallel = 16;
  int count = 10000;
  int64_t hold_ms = 30000;
  std::string ready_file;
  int64_t deadline_ms = 60000;
  int64_t timeout_ms = 10000;
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "rm-bench: %s\n"
               "usage: rm-bench openloop --to IP:PORT [--conns N] (--rate R | --closed) [--duration-ms D]"
               " [--warmup-ms W] [--size B] [--tick-us T]\n"
               "       rm-bench cps --to IP:PORT [--parallel P] [--duration-ms D] [--size B]\n"
               "       rm-bench hold --to IP:PORT --count N [--parallel P] --ready-file F [--hold-ms H]"
               " [--size B]\n"
               "       common: [--deadline-ms MS] [--timeout-ms MS]\n",
               why);
  std::exit(kExitUsage);
}

int64_t ParseInt(const char* s, const char* what) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 0) Usage(what);
  return v;
}

Options Parse(int argc, char** argv) {
  Options o;
  if (argc < 2) Usage("no mode");
  o.mode = argv[1];
  if (o.mode != "openloop" && o.mode != "cps" && o.mode != "hold") Usage("unknown mode");
  for (int i = 2; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--closed") {
      o.closed = true;
      continue;
    }
    if (i + 1 >= argc) Usage(("missing value for " + k).c_str());
    const char* v = argv[++i];
    if (k == "--to") {
      std::string s = v;
      auto colon = s.rfind(':');
      if (colon == std::string::npos) Usage("--to wants IP:PORT");
      o.to.sin_family = AF_INET;
      o.to.sin_port = htons(static_cast<uint16_t>(ParseInt(s.substr(colon + 1).c_str(), "bad port")));
      if (inet_pton(AF_INET, s.substr(0, colon).c_str(), &o.to.sin_addr) != 1) Usage("bad IPv4 address");
      o.have_to = true;
    } else if (k == "--conns") {
      o.conns = static_cast<int>(ParseInt(v, "bad --conns"));
    } else if (k == "--rate") {
      o.rate = std::strtod(v, nullptr);
    } else if (k == "--duration-ms") {
      o.duration_ms = ParseInt(v, "bad --duration-ms");
    } else if (k == "--warmup-ms") {
      o.warmup_ms = ParseInt(v, "bad --warmup-ms");
    } else if (k == "--tick-us") {
      o.tick_us = ParseInt(v, "bad --tick-us");
    } else if (k == "--size") {
      o.size = static_cast<size_t>(ParseInt(v, "bad --size"));
    } else if (k == "--parallel") {
      o.parallel = static_cast<int>(ParseInt(v, "bad --parallel"));
    } else if (k == "--count") {
      o.count = static_cast<int>(ParseInt(v, "bad --count"));
    } else if (k == "--hold-ms") {
      o.hold_ms = ParseInt(v, "bad --hold-ms");
    } else if (k == "--ready-file") {
      o.ready_file = v;
    } else if (k == "--deadline-ms") {
      o.deadline_ms = ParseInt(v, "bad --deadline-ms");
    } else if (k == "--timeout-ms") {
      o.timeout_ms = ParseInt(v, "bad --timeout-ms");
    } else {
      Usage(("unknown option " + k).c_str());
    }
  }
  if (!o.have_to) Usage("--to is required");
  if (o.size < 1 || o.size > (1 << 20)) Usage("--size must be 1..1MiB");
  if (o.tick_us < 0 || o.tick_us > 1000000) Usage("--tick-us must be 0..1000000");
  if (o.conns < 1 || o.parallel < 1 || o.count < 1) Usage("counts must be positive");
  if (o.mode == "openloop" && !o.closed && !(o.rate > 0)) Usage("--rate R or --closed");
  if (o.mode == "hold" && o.ready_file.empty()) Usage("hold needs --ready-file");
  return o;
}

std::string ErrName(int err) {
  const char* n = strerrorname_np(err);
  return n != nullptr ? n : "E" + std::to_string(err);
}

// Starts a non-blocking connect; returns fd (>= 0) or -errno.
int StartConnect(const sockaddr_in& to, bool* done) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) {
    *done = true;
    return fd;
  }
  if (errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    return -e;
  }
  *done = false;
  return fd;
}

int SocketError(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

void RaiseNofile(rlim_t want) {
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_max < want) {
    rlimit nr{want, want};
    if (setrlimit(RLIMIT_NOFILE, &nr) == 0) return;
  }
  r.rlim_cur = std::min<rlim_t>(std::max<rlim_t>(r.rlim_cur, want), r.rlim_max);
  setrlimit(RLIMIT_NOFILE, &r);
}

// Percentile of an unsorted sample (nearest rank on the sorted copy).
struct Summary {
  std::vector<double> v;
  void Sort() { std::sort(v.begin(), v.end()); }
  double At(double p) const {
    if (v.empty()) return 0;
    size_t idx = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(idx, v.size() - 1)];
  }
  double Max() const { return v.empty() ? 0 : v.back(); }
};

std::string ErrorsJson(const std::map<std::string, int>& errors) {
  std::string s = "{";
  for (auto& [k, n] : errors) {
    if (s.size() > 1) s += ",";
    s += "\"" + k + "\":" + std::to_string(n);
  }
  return s + "}";
}

double R3(double v) { return std::round(v * 1000.0) / 1000.0; }

bool WaitEvents(int ep, epoll_event* ev, int n, int64_t timeout_ns, int* got) {
  if (timeout_ns < 0) timeout_ns = 0;
  timespec ts{static_cast<time_t>(timeout_ns / 1000000000), static_cast<long>(timeout_ns % 1000000000)};
  int k = epoll_pwait2(ep, ev, n, &ts, nullptr);
  if (k < 0) {
    *got = 0;
    return errno == EINTR;
  }
  *got = k;
  return true;
}

// ------------------------------------------------------------ openloop ---

struct LoopConn {
  int fd = -1;
  std::deque<int64_t> due;  // scheduled send time of every outstanding request
  size_t unsent = 0;        // request bytes still to write
  size_t partial = 0;       // bytes of the head answer already read
  bool want_out = false;
  bool dead = false;
};

int RunOpenLoop(const Options& o, int64_t deadline) {
  // A tick's sleep must end on time, not up to the default 50 µs later.
  if (o.tick_us > 0) prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<LoopConn> conns(static_cast<size_t>(o.conns));
  std::map<std::string, int> errors;
  for (size_t i = 0; i < conns.size(); ++i) {
    bool done = false;
    int fd = StartConnect(o.to, &done);
    if (fd < 0) {
      std::printf("{\"error\":\"connect: %s\"}\n", ErrName(-fd).c_str());
      return 1;
    }
    if (!done) {
      epoll_event e{};
      e.events = EPOLLOUT;
      int k = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
      epoll_event out;
      int got = 0;
      WaitEvents(ep, &out, 1, o.timeout_ms * 1000000, &got);
      epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
      int err = got == 1 ? SocketError(fd) : ETIMEDOUT;
      (void)k;
      if (err != 0) {
        std::printf("{\"error\":\"connect: %s\"}\n", ErrName(err).c_str());
        return 1;
      }
    }
    conns[i].fd = fd;
    epoll_event e{};
    e.events = EPOLLIN | EPOLLRDHUP;
    e.data.u64 = i;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
  }

  std::vector<char> wbuf(64 * 1024, 'r'), rbuf(256 * 1024);
  Summary lat, lag;
  const int64_t t0 = NowNs() + 20 * 1000000;
  const int64_t measure_from = t0 + o.warmup_ms * 1000000;
  const int64_t send_until = measure_from + o.duration_ms * 1000000;
  const int64_t drain_until = send_until + 1000 * 1000000LL;
  const double interval_ns = o.closed ? 0 : 1e9 / o.rate;
  uint64_t next_k = 0, sent = 0, completed = 0, measured_sent = 0;
  uint64_t outstanding = 0;
  int64_t measured_completed = 0;
  bool deadline_hit = false;

  auto flush = [&](size_t i) {
    LoopConn& c = conns[i];
    while (c.unsent > 0) {
      ssize_t w = send(c.fd, wbuf.data(), std::min(c.unsent, wbuf.size()), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        ++errors["send: " + ErrName(errno)];
        c.dead = true;
        return;
      }
      c.unsent -= static_cast<size_t>(w);
    }
    bool want = c.unsent > 0;
    if (want != c.want_out) {
      epoll_event e{};
      e.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u);
      e.data.u64 = i;
      epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &e);
      c.want_out = want;
    }
  };
  auto issue = [&](size_t i, int64_t due, int64_t now) {
    LoopConn& c = conns[i];
    if (c.dead) return;
    c.due.push_back(due);
    c.unsent += o.size;
    ++sent;
    ++outstanding;
    if (due >= measure_from && due < send_until) {
      ++measured_sent;
      lag.v.push_back(static_cast<double>(now - due) / 1000.0);
    }
    flush(i);
  };

  if (o.closed) {
    int64_t now = NowNs();
    for (size_t i = 0; i < conns.size(); ++i) issue(i, now, now);
  }
  std::vector<epoll_event> events(256);
  for (;;) {
    int64_t now = NowNs();
    if (now >= deadline) {
      deadline_hit = true;
      break;
    }
    if (!o.closed) {
      for (;;) {
        int64_t due = t0 + static_cast<int64_t>(static_cast<double>(next_k) * interval_ns);
        if (due > now || due >= send_until) break;
        issue(next_k % conns.size(), due, now);
        ++next_k;
      }
    }
    bool sending_done = o.closed ? now >= send_until
                                 : t0 + static_cast<int64_t>(static_cast<double>(next_k) * interval_ns) >= send_until;
    if (sending_done && (outstanding == 0 || now >= drain_until)) break;
    int64_t wait_ns;
    if (sending_done || o.closed) {
      wait_ns = std::min<int64_t>(sending_done ? drain_until - now : send_until - now, 10 * 1000000);
    } else {
      wait_ns = t0 + static_cast<int64_t>(static_cast<double>(next_k) * interval_ns) - now;
    }
    int n = 0;
    if (o.tick_us > 0 && !o.closed && !sending_done) {
      // Tick mode: the timer wakes us only on a tick boundary, where every
      // request due by then is sent; answers still wake us as they come,
      // so they are timed exactly. Latency is measured from each request's
      // scheduled time, so the send lag (under one tick) counts in it.
      const int64_t tick = o.tick_us * 1000;
      const int64_t next_tick = t0 + ((now - t0) / tick + 1) * tick;
      wait_ns = std::max(wait_ns, next_tick - now);
    }
    WaitEvents(ep, events.data(), static_cast<int>(events.size()), wait_ns, &n);
    if (n == 0) continue;
    now = NowNs();
    for (int e = 0; e < n; ++e) {
      size_t i = events[e].data.u64;
      LoopConn& c = conns[i];
      if (c.dead) continue;
      if (events[e].events & EPOLLOUT) flush(i);
      if (events[e].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
        for (;;) {
          ssize_t r = recv(c.fd, rbuf.data(), rbuf.size(), MSG_DONTWAIT);
          if (r < 0) {
            if (errno != EAGAIN && errno != EINTR) {
              ++errors["recv: " + ErrName(errno)];
              c.dead = true;
            }
            break;
          }
          if (r == 0) {
            ++errors["EOF"];
            c.dead = true;
            break;
          }
          c.partial += static_cast<size_t>(r);
          while (c.partial >= o.size && !c.due.empty()) {
            c.partial -= o.size;
            int64_t due = c.due.front();
            c.due.pop_front();
            --outstanding;
            ++completed;
            if (due >= measure_from && due < send_until) {
              lat.v.push_back(static_cast<double>(now - due) / 1000.0);
              ++measured_completed;
            }
            if (o.closed && now < send_until) issue(i, now, now);
          }
          if (static_cast<size_t>(r) < rbuf.size()) break;
        }
      }
      if (c.dead) {
        outstanding -= c.due.size();
        c.due.clear();
      }
    }
  }
  // Requests never answered within the drain second are charged as lasting
  // until the end of the drain (they are also counted in "incomplete").
  int64_t end = NowNs();
  uint64_t incomplete = 0;
  for (auto& c : conns) {
    for (int64_t due : c.due) {
      if (due >= measure_from && due < send_until) {
        lat.v.push_back(static_cast<double>(end - due) / 1000.0);
        ++incomplete;
      }
    }
    close(c.fd);
  }
  close(ep);
  lat.Sort();
  lag.Sort();
  double secs = static_cast<double>(o.duration_ms) / 1000.0;
  std::printf(
      "{\"mode\":\"%s\",\"conns\":%d,\"size\":%zu,\"rate_target\":%.1f,\"rate_sent\":%.1f,"
      "\"rate_completed\":%.1f,\"sent\":%llu,\"completed\":%llu,\"measured\":%zu,\"incomplete\":%llu,"
      "\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,\"p999_us\":%.3f,\"max_us\":%.3f,"
      "\"send_lag_p50_us\":%.3f,\"send_lag_p99_us\":%.3f,\"send_lag_max_us\":%.3f,\"errors\":%s%s}\n",
      o.closed ? "closed" : "open", o.conns, o.size, o.rate, R3(static_cast<double>(measured_sent) / secs),
      R3(static_cast<double>(measured_completed) / secs), static_cast<unsigned long long>(sent),
      static_cast<unsigned long long>(completed), lat.v.size(), static_cast<unsigned long long>(incomplete),
      lat.At(0.5), lat.At(0.9), lat.At(0.99), lat.At(0.999), lat.Max(), lag.At(0.5), lag.At(0.99), lag.Max(),
      ErrorsJson(errors).c_str(), deadline_hit ? ",\"deadline_exceeded\":true" : "");
  return deadline_hit ? kExitDeadline : 0;
}

// ----------------------------------------------------------------- cps ---

struct CpsSlot {
  int fd = -1;
  int state = 0;  // 1 connecting, 2 sending, 3 reading
  size_t done = 0;
  int64_t start = 0;
};

// Advances one connect -> send `size` bytes -> read `size` bytes slot after
// an epoll event; calls finish(i, error) ("" on success) when it ends.
template <typename Finish>
void StepSlot(CpsSlot& s, size_t i, uint32_t ev, size_t size, const std::vector<char>& wbuf,
              std::vector<char>& rbuf, int ep, Finish&& finish) {
  if (s.state == 1) {
    if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = SocketError(s.fd);
    if (err != 0) return finish(i, "connect: " + ErrName(err));
    s.state = 2;
    s.done = 0;
  }
  if (s.state == 2) {
    while (s.done < size) {
      ssize_t w = send(s.fd, wbuf.data() + s.done, size - s.done, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        return finish(i, "send: " + ErrName(errno));
      }
      s.done += static_cast<size_t>(w);
    }
    s.state = 3;
    s.done = 0;
    epoll_event e{};
    e.events = EPOLLIN | EPOLLRDHUP;
    e.data.u64 = i;
    epoll_ctl(ep, EPOLL_CTL_MOD, s.fd, &e);
  }
  if (s.state == 3) {
    for (;;) {
      ssize_t r = recv(s.fd, rbuf.data(), rbuf.size(), MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        return finish(i, "recv: " + ErrName(errno));
      }
      if (r == 0) return finish(i, "EOF");
      s.done += static_cast<size_t>(r);
      if (s.done >= size) return finish(i, "");
    }
  }
}

int RunCps(const Options& o, int64_t deadline) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<CpsSlot> slots(static_cast<size_t>(o.parallel));
  std::vector<char> wbuf(o.size, 'c'), rbuf(std::max<size_t>(o.size, 4096));
  std::map<std::string, int> errors;
  Summary lat;
  const int64_t t0 = NowNs();
  const int64_t measure_from = t0 + o.warmup_ms * 1000000;
  const int64_t end = measure_from + o.duration_ms * 1000000;
  uint64_t ok = 0, failed = 0, measured = 0;
  bool deadline_hit = false;

  auto finish = [&](size_t i, const std::string& err) {
    CpsSlot& s = slots[i];
    if (s.fd >= 0) {
      epoll_ctl(ep, EPOLL_CTL_DEL, s.fd, nullptr);
      close(s.fd);
    }
    s.fd = -1;
    s.state = 0;
    int64_t now = NowNs();
    if (err.empty()) {
      ++ok;
      if (s.start >= measure_from && now <= end) {
        ++measured;
        lat.v.push_back(static_cast<double>(now - s.start) / 1000.0);
      }
    } else {
      ++failed;
      ++errors[err];
    }
  };
  auto step = [&](size_t i, uint32_t ev) { StepSlot(slots[i], i, ev, o.size, wbuf, rbuf, ep, finish); };
  auto start = [&](size_t i) {
    CpsSlot& s = slots[i];
    s.start = NowNs();
    bool done = false;
    int fd = StartConnect(o.to, &done);
    if (fd < 0) {
      ++failed;
      ++errors["connect: " + ErrName(-fd)];
      return false;
    }
    s.fd = fd;
    s.state = 1;
    epoll_event e{};
    e.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
    e.data.u64 = i;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
    if (done) step(i, EPOLLOUT);
    return true;
  };

  std::vector<epoll_event> events(256);
  int64_t last_sweep = t0;
  for (;;) {
    int64_t now = NowNs();
    if (now >= deadline) {
      deadline_hit = true;
      break;
    }
    if (now >= end) break;
    for (size_t i = 0; i < slots.size(); ++i) {
      // A failed start (e.g. EADDRNOTAVAIL) is retried on the next pass.
      if (slots[i].fd < 0 && !start(i)) break;
    }
    int n = 0;
    WaitEvents(ep, events.data(), static_cast<int>(events.size()), std::min<int64_t>(end - now, 5 * 1000000), &n);
    for (int e = 0; e < n; ++e) {
      size_t i = events[e].data.u64;
      if (slots[i].fd >= 0) step(i, events[e].events);
    }
    now = NowNs();
    if (now - last_sweep > 100 * 1000000) {
      last_sweep = now;
      for (size_t i = 0; i < slots.size(); ++i)
        if (slots[i].fd >= 0 && now - slots[i].start > o.timeout_ms * 1000000) finish(i, "ETIMEDOUT");
    }
  }
  for (auto& s : slots)
    if (s.fd >= 0) close(s.fd);
  close(ep);
  lat.Sort();
  double secs = static_cast<double>(o.duration_ms) / 1000.0;
  std::printf(
      "{\"parallel\":%d,\"size\":%zu,\"ok\":%llu,\"failed\":%llu,\"measured\":%llu,\"conns_per_s\":%.1f,"
      "\"p50_us\":%.3f,\"p99_us\":%.3f,\"max_us\":%.3f,\"errors\":%s%s}\n",
      o.parallel, o.size, static_cast<unsigned long long>(ok), static_cast<unsigned long long>(failed),
      static_cast<unsigned long long>(measured), R3(static_cast<double>(measured) / secs), lat.At(0.5),
      lat.At(0.99), lat.Max(), ErrorsJson(errors).c_str(), deadline_hit ? ",\"deadline_exceeded\":true" : "");
  return deadline_hit ? kExitDeadline : 0;
}

// ---------------------------------------------------------------- hold ---

int RunHold(const Options& o, int64_t deadline) {
  RaiseNofile(static_cast<rlim_t>(o.count) + 256);
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigprocmask(SIG_BLOCK, &sigs, nullptr);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<CpsSlot> slots(static_cast<size_t>(o.parallel));
  std::vector<int> held;
  held.reserve(static_cast<size_t>(o.count));
  std::vector<char> wbuf(o.size, 'h'), rbuf(std::max<size_t>(o.size, 4096));
  std::map<std::string, int> errors;
  int started = 0, ok = 0, failed = 0;
  const int64_t t0 = NowNs();
  bool deadline_hit = false;

  auto finish = [&](size_t i, const std::string& err) {
    CpsSlot& s = slots[i];
    epoll_ctl(ep, EPOLL_CTL_DEL, s.fd, nullptr);
    if (err.empty()) {
      ++ok;
      held.push_back(s.fd);
    } else {
      ++failed;
      ++errors[err];
      close(s.fd);
    }
    s.fd = -1;
    s.state = 0;
  };
  auto step = [&](size_t i, uint32_t ev) { StepSlot(slots[i], i, ev, o.size, wbuf, rbuf, ep, finish); };

  std::vector<epoll_event> events(256);
  while (ok + failed < o.count) {
    int64_t now = NowNs();
    if (now >= deadline) {
      deadline_hit = true;
      break;
    }
    for (size_t i = 0; i < slots.size() && started < o.count; ++i) {
      if (slots[i].fd >= 0) continue;
      CpsSlot& s = slots[i];
      s.start = now;
      ++started;
      bool done = false;
      int fd = StartConnect(o.to, &done);
      if (fd < 0) {
        ++failed;
        ++errors["connect: " + ErrName(-fd)];
        continue;
      }
      s.fd = fd;
      s.state = 1;
      epoll_event e{};
      e.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
      e.data.u64 = i;
      epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
      if (done) step(i, EPOLLOUT);
    }
    int n = 0;
    WaitEvents(ep, events.data(), static_cast<int>(events.size()), 5 * 1000000, &n);
    for (int e = 0; e < n; ++e) {
      size_t i = events[e].data.u64;
      if (slots[i].fd >= 0) step(i, events[e].events);
    }
    now = NowNs();
    for (size_t i = 0; i < slots.size(); ++i)
      if (slots[i].fd >= 0 && now - slots[i].start > o.timeout_ms * 1000000) finish(i, "ETIMEDOUT");
  }
  double open_ms = static_cast<double>(NowNs() - t0) / 1e6;
  char line[512];
  std::snprintf(line, sizeof line, "{\"ok\":%d,\"failed\":%d,\"open_ms\":%.1f,\"errors\":%s}", ok, failed, open_ms,
                ErrorsJson(errors).c_str());
  std::string tmp = o.ready_file + ".tmp";
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    std::fprintf(f, "%s\n", line);
    std::fclose(f);
    std::rename(tmp.c_str(), o.ready_file.c_str());
  }
  std::string reason = deadline_hit ? "deadline" : "hold-ms";
  if (!deadline_hit) {
    int64_t until = std::min(deadline, NowNs() + o.hold_ms * 1000000);
    for (;;) {
      int64_t left = until - NowNs();
      if (left <= 0) break;
      timespec ts{static_cast<time_t>(left / 1000000000), static_cast<long>(left % 1000000000)};
      int sig = sigtimedwait(&sigs, nullptr, &ts);
      if (sig == SIGTERM || sig == SIGINT) {
        reason = "signal";
        break;
      }
    }
  }
  for (auto& s : slots)
    if (s.fd >= 0) close(s.fd);
  for (int fd : held) close(fd);
  close(ep);
  std::printf("{\"ok\":%d,\"failed\":%d,\"open_ms\":%.1f,\"end\":\"%s\",\"errors\":%s}\n", ok, failed, open_ms,
              reason.c_str(), ErrorsJson(errors).c_str());
  return deadline_hit ? kExitDeadline : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = Parse(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake-ups on time, to the microsecond
  int64_t deadline = NowNs() + o.deadline_ms * 1000000;
  if (o.mode == "openloop") return RunOpenLoop(o, deadline);
  if (o.mode == "cps") return RunCps(o, deadline);
  return RunHold(o, deadline);
}
