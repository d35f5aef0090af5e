#include "userspace/proxy/admin.h"

#include <grp.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <list>
#include <optional>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "userspace/proxy/proxy_core.h"
#include "userspace/proxy/stats.h"

namespace ringmesh::proxy {

// --- request parsing --------------------------------------------------------

struct HttpRequestParser::Impl {
  llhttp_t parser;
  llhttp_settings_t settings;
  HttpRequest* request = nullptr;
  std::string url;
  bool complete = false;
};

namespace {

constexpr size_t kMaxUrlBytes = 2048;

int OnUrl(llhttp_t* p, const char* at, size_t len) {
  auto* impl = static_cast<HttpRequestParser::Impl*>(p->data);
  if (impl->url.size() + len > kMaxUrlBytes) return -1;
  impl->url.append(at, len);
  return 0;
}

int OnMessageComplete(llhttp_t* p) {
  auto* impl = static_cast<HttpRequestParser::Impl*>(p->data);
  impl->complete = true;
  // Pause so that pipelined bytes after the first request are not parsed:
  // one request per connection.
  return HPE_PAUSED;
}

}  // namespace

HttpRequestParser::HttpRequestParser() : impl_(std::make_unique<Impl>()) {
  llhttp_settings_init(&impl_->settings);
  impl_->settings.on_url = OnUrl;
  impl_->settings.on_message_complete = OnMessageComplete;
  llhttp_init(&impl_->parser, HTTP_REQUEST, &impl_->settings);
  impl_->parser.data = impl_.get();
  impl_->request = &request_;
}

HttpRequestParser::~HttpRequestParser() = default;

absl::StatusOr<bool> HttpRequestParser::Feed(const char* data, size_t len) {
  if (impl_->complete) return true;
  llhttp_errno_t err = llhttp_execute(&impl_->parser, data, len);
  if (err != HPE_OK && err != HPE_PAUSED) {
    return absl::InvalidArgumentError(
        absl::StrCat(llhttp_errno_name(err), ": ", llhttp_get_error_reason(&impl_->parser)));
  }
  if (!impl_->complete) return false;
  request_.method = llhttp_method_name(static_cast<llhttp_method_t>(impl_->parser.method));
  const std::string& url = impl_->url;
  auto q = url.find('?');
  request_.path = url.substr(0, q);
  request_.query = q == std::string::npos ? "" : url.substr(q + 1);
  return true;
}

// --- routing ----------------------------------------------------------------

namespace {

HttpResponse Json(const nlohmann::json& j) {
  return {.status = 200, .content_type = "application/json", .body = j.dump(2) + "\n"};
}

nlohmann::json ConnectionsJson(const std::vector<ConnectionInfo>& conns) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& c : conns) {
    arr.push_back({{"id", c.id},
                   {"worker", c.worker},
                   {"source_pod", c.pod_ns.empty() ? c.pod_name : c.pod_ns + "/" + c.pod_name},
                   {"pod_id", c.pod_id},
                   {"downstream_peer", c.downstream_peer},
                   {"original_destination", c.original_destination},
                   {"service", c.service},
                   {"endpoint", c.endpoint},
                   {"bytes_up", c.bytes_up},
                   {"spliced", c.spliced},
                   {"bytes_down", c.bytes_down},
                   {"age_ms", c.age_ms},
                   {"state", c.state},
                   {"buffered_up", c.buffered_up},
                   {"buffered_down", c.buffered_down},
                   {"peak_buffered", c.peak_buffered},
                   {"buffer_cap", c.buffer_cap},
                   {"protocol", c.protocol},
                   {"requests", c.requests}});
  }
  return arr;
}

// The workload certificates this proxy holds (ringmeshctl certs).
nlohmann::json CertsJson(const tls::WorkloadIdentities* identities) {
  if (identities == nullptr) return {{"enabled", false}, {"identities", nlohmann::json::array()}};
  auto time = [](absl::Time t) {
    return t == absl::InfinitePast() ? std::string() : absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone());
  };
  nlohmann::json arr = nlohmann::json::array();
  for (const tls::IdentityView& v : identities->Views()) {
    arr.push_back({{"identity", v.id},
                   {"pods", v.pods},
                   {"state", v.state},
                   {"serial", v.serial},
                   {"not_before", time(v.not_before)},
                   {"not_after", time(v.not_after)},
                   {"renew_at", time(v.renew_at)},
                   {"issuer", v.issuer},
                   {"renewals", v.renewals},
                   {"last_error", v.last_error}});
  }
  return {{"enabled", true}, {"trust_domain", identities->trust_domain()}, {"identities", std::move(arr)}};
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

std::string Serialize(const HttpResponse& r, bool head) {
  return absl::StrCat("HTTP/1.1 ", r.status, " ", ReasonPhrase(r.status), "\r\nContent-Type: ", r.content_type,
                      "\r\nContent-Length: ", r.body.size(), "\r\nConnection: close\r\n\r\n", head ? "" : r.body);
}

}  // namespace

HttpResponse HandleAdminRequest(ProxyCore& core, const HttpRequest& req) {
  if (req.method != "GET" && req.method != "HEAD") return {.status = 405, .body = "method not allowed\n"};
  if (req.path == "/healthz/ready") {
    if (core.ready()) return {.status = 200, .body = "ready\n"};
    return {.status = 503, .body = "not ready\n"};
  }
  if (req.path == "/config_dump") return Json(core.ConfigDump());
  if (req.path == "/connections") return Json(ConnectionsJson(core.Connections()));
  if (req.path == "/certs") return Json(CertsJson(core.workload_identities().get()));
  if (req.path == "/metrics") {
    core.SyncDirectMetrics();
    std::string body = RenderMetrics(core.stats());
    absl::StrAppend(&body,
                    "# HELP ringmesh_proxy_buffer_chunks Per-connection buffer chunks held (16 KiB each).\n"
                    "# TYPE ringmesh_proxy_buffer_chunks gauge\nringmesh_proxy_buffer_chunks ",
                    core.buffer_chunks_outstanding(), "\n");
    absl::StrAppend(&body,
                    "# HELP ringmesh_proxy_direct_connections_total Connections of short routes between pods of this "
                    "node that connect() sent straight to the endpoint (socket LB, --direct-connects), by endpoint.\n"
                    "# TYPE ringmesh_proxy_direct_connections_total counter\n");
    const auto direct = core.DirectConnections();
    for (const auto& d : direct) {
      absl::StrAppend(&body, "ringmesh_proxy_direct_connections_total{destination_service=\"", d.destination_service,
                      "\",endpoint=\"", d.endpoint, "\"} ", d.connections, "\n");
    }
    absl::StrAppend(&body,
                    "# HELP ringmesh_proxy_direct_connect_failures_total Of those, connects that never established "
                    "(each one ends socket LB for the route until the proxy renews it without that endpoint).\n"
                    "# TYPE ringmesh_proxy_direct_connect_failures_total counter\n");
    for (const auto& d : direct) {
      absl::StrAppend(&body, "ringmesh_proxy_direct_connect_failures_total{destination_service=\"",
                      d.destination_service, "\",endpoint=\"", d.endpoint, "\"} ", d.failed, "\n");
    }
    return {.status = 200, .content_type = "text/plain; version=0.0.4", .body = std::move(body)};
  }
  return {.status = 404, .body = "not found\n"};
}

// --- server -----------------------------------------------------------------

namespace {

absl::StatusOr<gid_t> LookUpGroup(const std::string& name) {
  group gr{};
  group* found = nullptr;
  std::vector<char> buf(16 * 1024);
  int err = getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
  if (err == 0 && found != nullptr) return found->gr_gid;
  uint32_t gid = 0;
  if (absl::SimpleAtoi(name, &gid)) return static_cast<gid_t>(gid);
  if (err != 0) return absl::ErrnoToStatus(err, absl::StrCat("admin socket group ", name));
  return absl::NotFoundError(absl::StrCat("admin socket group ", name, ": no such group"));
}

// Makes room for the admin socket at `path`: removes a socket a previous
// run left behind, never anything else (a mistyped --admin-socket must not
// delete a file).
absl::Status RemoveStaleSocket(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::ErrnoToStatus(errno, absl::StrCat("admin socket path ", path));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("admin socket path ", path, " exists and is not a socket; refusing to remove it"));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, absl::StrCat("removing stale admin socket ", path));
  }
  return absl::OkStatus();
}

// Binds and listens on the admin Unix socket, mode 0600, or 0660 and owned
// by `group_name`, independent of the umask.
absl::StatusOr<UniqueFd> ListenUnix(const std::string& path, const std::string& group_name) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sun.sun_path)) return absl::InvalidArgumentError("admin socket path too long");
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  std::optional<gid_t> gid;
  if (!group_name.empty()) {
    auto g = LookUpGroup(group_name);
    if (!g.ok()) return g.status();
    gid = *g;
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return absl::ErrnoToStatus(errno, "socket(AF_UNIX)");
  // bind() creates the file with the socket inode's mode minus the umask:
  // narrowed first, it is never more open than 0600, even for a moment.
  if (fchmod(fd.get(), 0600) != 0) return absl::ErrnoToStatus(errno, "fchmod(admin socket)");
  if (absl::Status s = RemoveStaleSocket(path); !s.ok()) return s;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("bind ", path));
  }
  // Exact mode and owner before listen(): until then nobody can connect.
  absl::Status status;
  if (gid.has_value() && chown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("chown admin socket ", path, " to group ", group_name));
  } else if (chmod(path.c_str(), gid.has_value() ? 0660 : 0600) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("chmod admin socket ", path));
  } else if (listen(fd.get(), 64) != 0) {
    status = absl::ErrnoToStatus(errno, "listen(admin unix)");
  }
  if (!status.ok()) {
    ::unlink(path.c_str());  // ours: just bound
    return status;
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(const AdminOptions& options, ProxyCore* core) {
  std::unique_ptr<AdminServer> s(new AdminServer(options, core));
  if (!options.unix_path.empty()) {
    auto fd = ListenUnix(options.unix_path, options.unix_group);
    if (!fd.ok()) return fd.status();
    s->unix_fd_ = std::move(*fd);
    s->owns_unix_path_ = true;
  }
  if (options.tcp_port != 0) {
    s->tcp_fd_.Reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s->tcp_fd_) return absl::ErrnoToStatus(errno, "socket(admin tcp)");
    int one = 1;
    setsockopt(s->tcp_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(options.tcp_port < 0 ? 0 : static_cast<uint16_t>(options.tcp_port));
    if (bind(s->tcp_fd_.get(), reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
      return absl::ErrnoToStatus(errno, "bind admin port");
    }
    if (listen(s->tcp_fd_.get(), 64) != 0) return absl::ErrnoToStatus(errno, "listen(admin tcp)");
    socklen_t len = sizeof(sin);
    getsockname(s->tcp_fd_.get(), reinterpret_cast<sockaddr*>(&sin), &len);
    s->tcp_port_ = ntohs(sin.sin_port);
  }
  s->stop_fd_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->stop_fd_) return absl::ErrnoToStatus(errno, "eventfd");
  s->thread_ = std::thread([p = s.get()] { p->Run(); });
  return s;
}

AdminServer::~AdminServer() { Stop(); }

void AdminServer::Stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_fd_.get(), &one, sizeof(one));
    thread_.join();
  }
  // Also when Start failed after binding it.
  if (owns_unix_path_) ::unlink(options_.unix_path.c_str());
  owns_unix_path_ = false;
}

namespace {

struct Client {
  UniqueFd fd;
  HttpRequestParser parser;
  size_t received = 0;
  std::string out;
  size_t out_off = 0;
  bool responding = false;
  absl::Time deadline;
};

}  // namespace

void AdminServer::Run() {
  std::list<Client> clients;
  auto respond = [](Client& c, const HttpResponse& r, bool head) {
    c.out = Serialize(r, head);
    c.out_off = 0;
    c.responding = true;
    shutdown(c.fd.get(), SHUT_RD);
  };
  for (;;) {
    std::vector<pollfd> pfds;
    pfds.push_back({stop_fd_.get(), POLLIN, 0});
    const bool room = clients.size() < static_cast<size_t>(options_.max_clients);
    pfds.push_back({room ? unix_fd_.get() : -1, POLLIN, 0});
    pfds.push_back({room ? tcp_fd_.get() : -1, POLLIN, 0});
    for (auto& c : clients) pfds.push_back({c.fd.get(), static_cast<short>(c.responding ? POLLOUT : POLLIN), 0});
    int timeout_ms = 1000;
    if (poll(pfds.data(), pfds.size(), timeout_ms) < 0 && errno != EINTR) {
      spdlog::error("admin poll: {}", std::strerror(errno));
      return;
    }
    if (pfds[0].revents & POLLIN) return;
    for (int i = 1; i <= 2; ++i) {
      if (!(pfds[static_cast<size_t>(i)].revents & POLLIN)) continue;
      for (int k = 0; k < 16; ++k) {
        int fd = accept4(pfds[static_cast<size_t>(i)].fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) break;
        clients.emplace_back();
        clients.back().fd.Reset(fd);
        clients.back().deadline = absl::Now() + options_.client_timeout;
      }
    }
    size_t idx = 3;
    const absl::Time now = absl::Now();
    for (auto it = clients.begin(); it != clients.end();) {
      Client& c = *it;
      short rev = idx < pfds.size() && pfds[idx].fd == c.fd.get() ? pfds[idx].revents : 0;
      ++idx;
      bool done = false;
      if (!c.responding && (rev & (POLLIN | POLLHUP | POLLERR))) {
        char buf[4096];
        ssize_t n = recv(c.fd.get(), buf, sizeof(buf), 0);
        if (n <= 0) {
          done = n == 0 || (errno != EAGAIN && errno != EINTR);
        } else {
          c.received += static_cast<size_t>(n);
          auto complete = c.parser.Feed(buf, static_cast<size_t>(n));
          if (c.received > options_.max_request_bytes) {
            respond(c, {.status = 413, .body = "request too large\n"}, false);
          } else if (!complete.ok()) {
            respond(c, {.status = 400, .body = "bad request: " + std::string(complete.status().message()) + "\n"},
                    false);
          } else if (*complete) {
            respond(c, HandleAdminRequest(*core_, c.parser.request()), c.parser.request().method == "HEAD");
          }
        }
      } else if (c.responding && (rev & (POLLOUT | POLLHUP | POLLERR))) {
        ssize_t n = send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
        if (n > 0) c.out_off += static_cast<size_t>(n);
        done = (n < 0 && errno != EAGAIN && errno != EINTR) || c.out_off == c.out.size();
      }
      if (!done && now > c.deadline) {
        if (!c.responding && c.received > 0) {
          respond(c, {.status = 408, .body = "request timeout\n"}, false);
          c.deadline = now + absl::Seconds(1);
        } else {
          done = true;
        }
      }
      it = done ? clients.erase(it) : std::next(it);
    }
  }
}

}  // namespace ringmesh::proxy
