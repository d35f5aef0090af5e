// Admin API of the proxy: HTTP/1.1 (parsed with llhttp) on a Unix socket
// and optionally on 127.0.0.1:<port>, served by its own thread so that a
// slow admin client never touches a data-plane thread.
//
//   GET /healthz/ready  200 once a snapshot is applied and listeners are open
//   GET /config_dump    JSON: generation, pods + listeners, services + LB state
//   GET /connections    JSON array of live connections
//   GET /metrics        Prometheus text
//
// One request per connection (responses carry "Connection: close");
// requests are bounded in size and time.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::proxy {

class ProxyCore;

struct HttpRequest {
  std::string method;
  std::string path;  // without the query string
  std::string query;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Routes one request; pure apart from reading `core`. Exposed for tests.
HttpResponse HandleAdminRequest(ProxyCore& core, const HttpRequest& request);

// Parses one HTTP/1.x request from `data` with llhttp. Returns the request
// when complete, nullopt while more bytes are needed, or an error status
// for malformed input.
class HttpRequestParser {
 public:
  HttpRequestParser();
  ~HttpRequestParser();
  HttpRequestParser(const HttpRequestParser&) = delete;
  HttpRequestParser& operator=(const HttpRequestParser&) = delete;

  absl::StatusOr<bool> Feed(const char* data, size_t len);  // true when complete
  const HttpRequest& request() const { return request_; }

  struct Impl;  // llhttp state; public only so llhttp's C callbacks can name it

 private:
  std::unique_ptr<Impl> impl_;
  HttpRequest request_;
};

struct AdminOptions {
  // Empty: no Unix socket. Created mode 0600 whatever the umask (the admin
  // API shows every connection and pod), or 0660 owned by `unix_group`. A
  // stale socket at the path is replaced; anything else there is an error.
  std::string unix_path;
  std::string unix_group;  // group name (or numeric gid) allowed to connect; empty: owner only
  int tcp_port = 0;        // 0: off; -1: pick a free port (tests)
  size_t max_request_bytes = 8 * 1024;
  absl::Duration client_timeout = absl::Seconds(5);
  int max_clients = 64;
};

class AdminServer {
 public:
  static absl::StatusOr<std::unique_ptr<AdminServer>> Start(const AdminOptions& options, ProxyCore* core);
  ~AdminServer();
  void Stop();
  // Bound TCP port, 0 when off.
  uint16_t tcp_port() const { return tcp_port_; }

 private:
  AdminServer(const AdminOptions& options, ProxyCore* core) : options_(options), core_(core) {}
  void Run();

  AdminOptions options_;
  ProxyCore* core_;
  UniqueFd unix_fd_;
  bool owns_unix_path_ = false;  // bound it: Stop() removes it
  UniqueFd tcp_fd_;
  UniqueFd stop_fd_;
  uint16_t tcp_port_ = 0;
  std::thread thread_;
};

}  // namespace ringmesh::proxy
