// Loopback HTTP/1.1 peers for the L7 proxy tests: a backend bound to one
// loopback address (thread per connection) that says who answered and can
// hash request bodies, stream big chunked responses or reset, and a
// blocking keep-alive client. Both read messages with the proxy's own
// Http1Parser; the interop test (curl, python3 http.server) covers peers
// not written here.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/proxy/test_util.h"
#include "userspace/common/unique_fd.h"
#include "userspace/proxy/http/http1_encoder.h"
#include "userspace/proxy/http/http1_parser.h"

namespace ringmesh::proxy::testing {

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(Sha256&& o) noexcept {
    std::swap(ctx_, o.ctx_);
    return *this;
  }
  void Update(std::string_view d) { EVP_DigestUpdate(ctx_, d.data(), d.size()); }
  std::string Hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
    std::string out;
    char b[3];
    for (unsigned int i = 0; i < len; ++i) {
      std::snprintf(b, sizeof(b), "%02x", md[i]);
      out += b;
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// Deterministic bytes of Payload(seed), n of them, hashed.
inline std::string PayloadSha(uint64_t seed, size_t n) {
  Payload p(seed);
  Sha256 sha;
  std::string buf(64 * 1024, '\0');
  while (n > 0) {
    const size_t k = std::min(n, buf.size());
    p.Fill(buf.data(), k);
    sha.Update(std::string_view(buf.data(), k));
    n -= k;
  }
  return sha.Hex();
}

inline bool SendAll(int fd, std::string_view d) {
  while (!d.empty()) {
    const ssize_t w = send(fd, d.data(), d.size(), MSG_NOSIGNAL);
    if (w <= 0) return false;
    d.remove_prefix(static_cast<size_t>(w));
  }
  return true;
}

// Collects one message at a time from a parser; pauses after each.
class MessageCollector : public http::Http1Handler {
 public:
  Action OnHead(const http::Http1Head& h) override {
    if (h.interim) {
      ++interim;
      return Action::kContinue;
    }
    head = h;
    return Action::kContinue;
  }
  Action OnBody(std::string_view d) override {
    body_bytes += d.size();
    sha.Update(d);
    if (keep_body) body.append(d);
    return Action::kContinue;
  }
  void OnTrailers(const http::HeaderList& t) override { trailers = t; }
  Action OnMessageComplete() override {
    if (head.interim) return Action::kContinue;
    complete = true;
    body_sha = sha.Hex();
    return Action::kPause;
  }
  void Reset() {
    head = {};
    trailers.Clear();
    body.clear();
    body_bytes = 0;
    sha = Sha256();
    complete = false;
    interim = 0;
  }

  http::Http1Head head;
  http::HeaderList trailers;
  std::string body;
  bool keep_body = true;
  size_t body_bytes = 0;
  Sha256 sha;
  std::string body_sha;
  bool complete = false;
  int interim = 0;
};

// Reads one message from `fd` with `parser`; `pending` holds bytes read
// past the previous message. False on EOF, timeout or a parse error.
inline bool ReadMessage(int fd, http::Http1Parser& parser, MessageCollector& m, std::string& pending) {
  m.Reset();
  parser.Resume();
  char buf[64 * 1024];
  for (;;) {
    const http::Http1FeedResult r = parser.Feed(pending);
    pending.erase(0, r.consumed);
    if (r.status == http::Http1FeedStatus::kError) return false;
    if (m.complete) return true;
    if (r.status == http::Http1FeedStatus::kClosed) return m.complete;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      if (n == 0 && parser.Finish() == http::Http1FeedStatus::kOk && m.complete) return true;
      return false;
    }
    pending.append(buf, static_cast<size_t>(n));
  }
}

inline UniqueFd ListenOn(const std::string& ip, uint16_t* port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(*port);
  inet_pton(AF_INET, ip.c_str(), &sin.sin_addr);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0 || listen(fd.get(), 1024) != 0) {
    return UniqueFd();
  }
  socklen_t len = sizeof(sin);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sin), &len);
  *port = ntohs(sin.sin_port);
  return fd;
}

// An HTTP/1.1 server on ip:port, answering by path:
//   /big?<n>   reads the body (its SHA-256 in header x-request-sha256) and
//              answers n bytes of Payload(7), chunked, with trailer x-done
//   /reset     resets the connection without an answer
//   /close     answers, then closes without saying so
//   otherwise  "<name>" with Content-Length
// Every answer carries x-backend: <name>. set_mode() makes it fail every
// request whatever its path: reset, or answer 503.
class HttpBackend {
 public:
  enum class Mode { kServe, kReset, kAnswer503 };

  HttpBackend(std::string name, const std::string& ip, uint16_t port) : name_(std::move(name)) {
    listen_ = ListenOn(ip, &port);
    port_ = port;
    if (listen_) thread_ = std::thread([this] { Run(); });
  }
  ~HttpBackend() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& t : workers_) t.join();
  }
  bool ok() const { return listen_.valid(); }
  uint16_t port() const { return port_; }
  size_t requests() const { return requests_.load(); }
  size_t accepted() const { return accepted_.load(); }
  void set_mode(Mode m) { mode_ = m; }

 private:
  void Run() {
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      const int fd = accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      SetTimeouts(fd, 2);
      ++accepted_;
      std::lock_guard<std::mutex> lock(mu_);
      workers_.emplace_back([this, fd] { Serve(UniqueFd(fd)); });
    }
  }

  void Serve(UniqueFd fd) {
    MessageCollector m;
    m.keep_body = false;
    http::Http1Parser parser(http::Http1Parser::Type::kRequest, &m);
    std::string pending;
    while (!stop_ && ReadMessage(fd.get(), parser, m, pending)) {
      ++requests_;
      const std::string& target = m.head.target;
      http::HeaderList h;
      h.Add("x-backend", name_);
      if (mode_ == Mode::kAnswer503) {
        auto head =
            http::EncodeResponseHead(503, "Service Unavailable", h,
                                     {.framing = http::Http1Framing::kContentLength, .content_length = 4});
        if (!SendAll(fd.get(), *head + "busy")) return;
        continue;
      }
      if (target == "/reset" || mode_ == Mode::kReset) {
        linger lg{1, 0};
        setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        return;
      }
      if (target.rfind("/big?", 0) == 0) {
        const size_t n = std::stoul(target.substr(5));
        h.Add("x-request-sha256", m.body_sha);
        auto head = http::EncodeResponseHead(200, "OK", h, {.framing = http::Http1Framing::kChunked});
        if (!SendAll(fd.get(), *head)) return;
        Payload p(7);
        std::string buf;
        size_t left = n, step = 1000;
        while (left > 0) {
          const size_t k = std::min(left, step);
          std::string data(k, '\0');
          p.Fill(data.data(), k);
          buf.clear();
          http::AppendChunk(data, &buf);
          if (!SendAll(fd.get(), buf)) return;
          left -= k;
          step = step * 3 % 70000 + 1;  // chunk sizes all over the place
        }
        http::HeaderList trailers;
        trailers.Add("x-done", "yes");
        buf.clear();
        (void)http::AppendLastChunk(trailers, &buf);
        if (!SendAll(fd.get(), buf)) return;
        continue;
      }
      const std::string body = name_;
      auto head = http::EncodeResponseHead(
          200, "OK", h, {.framing = http::Http1Framing::kContentLength, .content_length = body.size()});
      if (!SendAll(fd.get(), *head + (m.head.method == "HEAD" ? "" : body))) return;
      if (target == "/close") return;
    }
  }

  std::string name_;
  UniqueFd listen_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<Mode> mode_{Mode::kServe};
  std::atomic<size_t> requests_{0};
  std::atomic<size_t> accepted_{0};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::thread> workers_;
};

// A blocking keep-alive client.
class HttpClient {
 public:
  explicit HttpClient(const SocketAddress& proxy) : fd_(ConnectTo(proxy, 10)) {}
  bool connected() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }

  // Sends `raw` and reads one response to `method`; nullopt on failure.
  std::optional<MessageCollector*> Exchange(std::string_view raw, std::string_view method = "GET") {
    if (!SendAll(fd_.get(), raw)) return std::nullopt;
    return Read(method);
  }
  std::optional<MessageCollector*> Read(std::string_view method = "GET") {
    parser_.ExpectResponseTo(method);
    if (!ReadMessage(fd_.get(), parser_, m_, pending_)) return std::nullopt;
    return &m_;
  }
  // True when the proxy closed the connection (EOF or reset) within 5 s;
  // false when it is still open then, or sent more.
  bool Closed() {
    SetTimeouts(fd_.get(), 5);
    char b;
    ssize_t n = recv(fd_.get(), &b, 1, 0);
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    return n == 0;
  }

 private:
  UniqueFd fd_;
  MessageCollector m_;
  http::Http1Parser parser_{http::Http1Parser::Type::kResponse, &m_};
  std::string pending_;
};

inline std::string Get(std::string_view path) {
  return std::string("GET ") + std::string(path) + " HTTP/1.1\r\nHost: web\r\n\r\n";
}

}  // namespace ringmesh::proxy::testing
