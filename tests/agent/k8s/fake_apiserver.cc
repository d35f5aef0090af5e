#include "tests/agent/k8s/fake_apiserver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ringmesh::agent::k8s::testing {
namespace {

using Clock = std::chrono::steady_clock;

struct Kind {
  const char* path;
  const char* kind;
  const char* api_version;
};

const std::map<std::string, Kind>& Kinds() {
  static const std::map<std::string, Kind> kKinds = {
      {"services", {"/api/v1/services", "Service", "v1"}},
      {"endpointslices",
       {"/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice", "discovery.k8s.io/v1"}},
      {"namespaces", {"/api/v1/namespaces", "Namespace", "v1"}},
      {"pods", {"/api/v1/pods", "Pod", "v1"}},
      // Istio's CRD; a test that wants it absent injects a 404.
      {"authorizationpolicies",
       {"/apis/security.istio.io/v1/authorizationpolicies", "AuthorizationPolicy", "security.istio.io/v1"}},
  };
  return kKinds;
}

// How many bytes of `data` the kernel took (all of them unless the peer
// went away).
size_t SendCount(int fd, std::string_view data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  return sent;
}

bool SendAll(int fd, std::string_view data) { return SendCount(fd, data) == data.size(); }

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int v = 0;
      if (std::sscanf(std::string(s.substr(i + 1, 2)).c_str(), "%2x", &v) == 1) {
        out.push_back(static_cast<char>(v));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}

std::string StatusJson(int code, const std::string& reason, const std::string& message) {
  return Json{{"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", Json::object()},
              {"status", "Failure"}, {"message", message}, {"reason", reason},
              {"code", code}}
      .dump();
}

// Returns how many bytes of the response the kernel took.
size_t SendResponseCounted(int fd, int code, const std::string& reason, const std::string& body,
                           const std::string& content_type = "application/json") {
  return SendCount(fd,
                   absl::StrCat("HTTP/1.1 ", code, " ", reason, "\r\nContent-Type: ", content_type,
                                "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body));
}

void SendResponse(int fd, int code, const std::string& reason, const std::string& body,
                  const std::string& content_type = "application/json") {
  SendResponseCounted(fd, code, reason, body, content_type);
}

std::string Chunk(const std::string& data) {
  char len[32];
  std::snprintf(len, sizeof(len), "%zx\r\n", data.size());
  return absl::StrCat(len, data, "\r\n");
}

std::string NodeOf(const Json& pod) {
  auto spec = pod.find("spec");
  if (spec == pod.end() || !spec->is_object()) return "";
  auto n = spec->find("nodeName");
  return n != spec->end() && n->is_string() ? n->get<std::string>() : "";
}

std::string KeyOf(const Json& o) {
  const Json& md = o.at("metadata");
  std::string ns = md.contains("namespace") ? md["namespace"].get<std::string>() : "";
  return ns.empty() ? md["name"].get<std::string>() : absl::StrCat(ns, "/", md["name"].get<std::string>());
}

// The node a fieldSelector asks for ("" when none).
std::string SelectedNode(const std::map<std::string, std::string>& query) {
  auto it = query.find("fieldSelector");
  if (it == query.end()) return "";
  constexpr std::string_view kPrefix = "spec.nodeName=";
  return it->second.rfind(kPrefix, 0) == 0 ? it->second.substr(kPrefix.size()) : "";
}

}  // namespace

FakeApiServer::FakeApiServer() {
  for (const auto& [name, kind] : Kinds()) resources_[name];
}

FakeApiServer::~FakeApiServer() { Stop(); }

std::string FakeApiServer::url() const { return absl::StrCat("http://127.0.0.1:", port_.load()); }

absl::Status FakeApiServer::Start() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(port_.load());
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(fd, 64) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("bind 127.0.0.1:", port_.load(), ": ", std::strerror(err)));
  }
  socklen_t len = sizeof(sa);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  port_.store(ntohs(sa.sin_port));
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
    listen_fd_ = fd;
  }
  accept_thread_ = std::thread([this, fd] { AcceptLoop(fd); });
  return absl::OkStatus();
}

void FakeApiServer::Stop() {
  {
    std::lock_guard lock(mu_);
    if (listen_fd_ < 0) return;
    stopping_ = true;
    for (int fd : conn_fds_) shutdown(fd, SHUT_RDWR);
  }
  cv_.notify_all();
  if (accept_thread_.joinable()) accept_thread_.join();
  for (auto& t : conn_threads_) t.join();
  conn_threads_.clear();
  std::lock_guard lock(mu_);
  close(listen_fd_);
  listen_fd_ = -1;
}

void FakeApiServer::AcceptLoop(int listen_fd) {
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    pollfd p{listen_fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    timeval tv{5, 0};  // a client that stops reading cannot wedge the server
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    std::lock_guard lock(mu_);
    if (stopping_) {
      close(fd);
      return;
    }
    conn_fds_.push_back(fd);
    conn_threads_.emplace_back([this, fd] {
      Serve(fd);
      std::lock_guard l(mu_);
      std::erase(conn_fds_, fd);
      close(fd);
    });
  }
}

void FakeApiServer::Serve(int fd) {
  std::string head;
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (head.find("\r\n\r\n") == std::string::npos) {
    if (head.size() > 64 * 1024 || Clock::now() > deadline) return;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      continue;
    }
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return;
    head.append(buf, static_cast<size_t>(n));
  }
  Request req;
  std::vector<std::string> lines = absl::StrSplit(head.substr(0, head.find("\r\n\r\n")), "\r\n");
  std::vector<std::string> first = absl::StrSplit(lines[0], ' ');
  if (first.size() < 2)
    return SendResponse(fd, 400, "Bad Request", StatusJson(400, "BadRequest", "bad request"));
  req.method = first[0];
  std::string target = first[1];
  auto q = target.find('?');
  req.path = target.substr(0, q);
  if (q != std::string::npos) {
    for (absl::string_view kv : absl::StrSplit(target.substr(q + 1), '&', absl::SkipEmpty())) {
      auto eq = kv.find('=');
      std::string k = PercentDecode(std::string_view(kv.data(), kv.size()).substr(0, eq));
      std::string v = eq == absl::string_view::npos
                          ? ""
                          : PercentDecode(std::string_view(kv.data() + eq + 1, kv.size() - eq - 1));
      req.query[k] = v;
    }
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    auto colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    req.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  bool authorized = true;
  {
    std::lock_guard lock(mu_);
    if (requests_.size() < 100'000) requests_.push_back(target);
    if (!token_.empty() && req.headers["authorization"] != absl::StrCat("Bearer ", token_)) {
      ++unauthorized_;
      authorized = false;
    }
  }
  if (!authorized)
    return SendResponse(fd, 401, "Unauthorized", StatusJson(401, "Unauthorized", "Unauthorized"));
  if (req.method != "GET") {
    return SendResponse(fd, 405, "Method Not Allowed", StatusJson(405, "MethodNotAllowed", "GET only"));
  }
  for (const auto& [name, kind] : Kinds()) {
    if (req.path == kind.path) {
      auto w = req.query.find("watch");
      bool watch = w != req.query.end() && (w->second == "1" || w->second == "true");
      std::unique_lock lock(mu_);
      if (auto e = errors_.find({name, watch}); e != errors_.end()) {
        InjectedError err = e->second;
        ++injected_errors_;
        lock.unlock();
        SendResponse(fd, err.code, "Injected", err.body, err.content_type);
        return;
      }
      lock.unlock();
      if (watch) return ServeWatch(fd, name, req);
      return ServeList(fd, name, req);
    }
  }
  SendResponse(fd, 404, "Not Found", StatusJson(404, "NotFound", absl::StrCat("no resource at ", req.path)));
}

void FakeApiServer::ServeList(int fd, const std::string& resource, const Request& req) {
  const Kind& kind = Kinds().at(resource);
  std::string node = SelectedNode(req.query);
  std::string body;
  Resource* res = nullptr;
  {
    std::lock_guard lock(mu_);
    Resource& r = resources_[resource];
    res = &r;
    ++r.lists;
    uint64_t rv = rv_;
    size_t offset = 0;
    if (auto c = req.query.find("continue"); c != req.query.end() && !c->second.empty()) {
      // Our continue token: "<rv>:<offset>"; expired once compacted past rv.
      std::vector<std::string> parts = absl::StrSplit(c->second, ':');
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &rv) || !absl::SimpleAtoi(parts[1], &offset)) {
        return SendResponse(fd, 400, "Bad Request", StatusJson(400, "BadRequest", "bad continue token"));
      }
      if (rv < r.compacted_rv) {
        return SendResponse(fd, 410, "Gone",
                            StatusJson(410, "Expired", "The provided continue parameter is too old"));
      }
    }
    size_t limit = 0;
    if (auto l = req.query.find("limit"); l != req.query.end()) (void)absl::SimpleAtoi(l->second, &limit);
    Json items = Json::array();
    size_t index = 0;
    bool more = false;
    for (const auto& [key, obj] : r.objects) {
      if (!node.empty() && NodeOf(obj) != node) continue;
      if (index++ < offset) continue;
      if (limit && items.size() == limit) {
        more = true;
        break;
      }
      items.push_back(obj);
    }
    Json md{{"resourceVersion", std::to_string(rv)}};
    if (more) md["continue"] = absl::StrCat(rv, ":", offset + items.size());
    body = Json{{"kind", absl::StrCat(kind.kind, "List")},
                {"apiVersion", kind.api_version},
                {"metadata", md},
                {"items", std::move(items)}}
               .dump();
    r.list_bytes_offered += body.size();
  }
  size_t sent = SendResponseCounted(fd, 200, "OK", body);
  std::lock_guard lock(mu_);
  res->list_bytes_sent += sent;
}

Json FakeApiServer::EventObject(const std::string& resource, const Json& object) const {
  Json o = object;
  o["kind"] = Kinds().at(resource).kind;
  o["apiVersion"] = Kinds().at(resource).api_version;
  return o;
}

void FakeApiServer::ServeWatch(int fd, const std::string& resource, const Request& req) {
  std::string node = SelectedNode(req.query);
  int64_t timeout_s = 1800;
  if (auto t = req.query.find("timeoutSeconds"); t != req.query.end())
    (void)absl::SimpleAtoi(t->second, &timeout_s);
  auto deadline = Clock::now() + std::chrono::seconds(std::clamp<int64_t>(timeout_s, 1, 1800));
  uint64_t from = 0;
  auto rv_param = req.query.find("resourceVersion");
  bool from_now = rv_param == req.query.end() || rv_param->second.empty() || rv_param->second == "0";
  if (!from_now && !absl::SimpleAtoi(rv_param->second, &from)) {
    return SendResponse(fd, 400, "Bad Request", StatusJson(400, "BadRequest", "bad resourceVersion"));
  }

  std::unique_lock lock(mu_);
  Resource& r = resources_[resource];
  ++r.watches;
  if (!from_now && from < r.compacted_rv) {
    std::string msg = absl::StrCat("too old resource version: ", from, " (", r.compacted_rv, ")");
    lock.unlock();
    if (gone_as_http_.load()) return SendResponse(fd, 410, "Gone", StatusJson(410, "Expired", msg));
    std::string ev =
        Json{{"type", "ERROR"}, {"object", Json::parse(StatusJson(410, "Expired", msg))}}.dump() + "\n";
    SendAll(fd,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: "
            "close\r\n\r\n");
    SendAll(fd, Chunk(ev));
    SendAll(fd, "0\r\n\r\n");
    return;
  }
  // Where this watch starts in the log: after every entry it has seen.
  uint64_t cursor = 0;
  std::vector<std::string> initial;
  if (from_now) {
    // Like the API server: synthetic ADDED events for what exists now.
    for (const auto& [key, obj] : r.objects) {
      if (!node.empty() && NodeOf(obj) != node) continue;
      initial.push_back(Json{{"type", "ADDED"}, {"object", EventObject(resource, obj)}}.dump() + "\n");
    }
    cursor = seq_;
  } else {
    for (const auto& e : r.log) {
      if (!e.live_only && e.rv > from) break;
      cursor = e.seq;
    }
  }
  const uint64_t start_seq = seq_;
  const uint64_t my_kill_gen = kill_gen_;
  ++open_watches_;
  lock.unlock();

  bool ok = SendAll(fd,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                    "Connection: close\r\n\r\n");
  for (const auto& ev : initial) ok = ok && SendAll(fd, Chunk(ev));
  bool clean = false;
  while (ok) {
    std::vector<Entry> batch;
    lock.lock();
    cv_.wait_for(lock, std::chrono::milliseconds(50), [&] {
      return stopping_ || kill_gen_ != my_kill_gen || (!r.log.empty() && r.log.back().seq > cursor);
    });
    if (stopping_ || kill_gen_ != my_kill_gen) {
      lock.unlock();
      break;
    }
    if (stalled_) {
      lock.unlock();
      continue;
    }
    if (Clock::now() >= deadline) {
      lock.unlock();
      clean = true;
      break;
    }
    auto it = std::upper_bound(r.log.begin(), r.log.end(), cursor,
                               [](uint64_t c, const Entry& e) { return c < e.seq; });
    for (; it != r.log.end(); ++it) batch.push_back(*it);
    lock.unlock();
    for (const auto& e : batch) {
      cursor = e.seq;
      if (e.live_only && e.seq <= start_seq) continue;
      if (!node.empty() && !e.node.empty() && e.node != node) continue;
      if (auto d = event_delay_ms_.load(); d > 0) std::this_thread::sleep_for(std::chrono::milliseconds(d));
      ok = SendAll(fd, Chunk(e.line));
      if (!ok) break;
      if (e.ends_watch) {
        clean = true;
        ok = false;
        break;
      }
    }
  }
  if (clean) SendAll(fd, "0\r\n\r\n");
  lock.lock();
  --open_watches_;
  // A dropped stream ends without the terminating chunk: the client sees a
  // broken transfer, as when a load balancer or the API server dies.
  if (!clean) {
    linger l{1, 0};  // RST
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
}

void FakeApiServer::Append(Resource& r, Entry e) {
  e.seq = ++seq_;
  r.log.push_back(std::move(e));
  cv_.notify_all();
}

void FakeApiServer::Upsert(const std::string& resource, Json object) {
  std::lock_guard lock(mu_);
  Resource& r = resources_.at(resource);
  object["metadata"]["resourceVersion"] = std::to_string(++rv_);
  std::string key = KeyOf(object);
  bool existed = r.objects.count(key) > 0;
  Entry e;
  e.rv = rv_;
  e.node = resource == "pods" ? NodeOf(object) : "";
  e.line =
      Json{{"type", existed ? "MODIFIED" : "ADDED"}, {"object", EventObject(resource, object)}}.dump() + "\n";
  r.objects[key] = std::move(object);
  Append(r, std::move(e));
}

bool FakeApiServer::Delete(const std::string& resource, const std::string& ns, const std::string& name) {
  std::lock_guard lock(mu_);
  Resource& r = resources_.at(resource);
  std::string key = ns.empty() ? name : absl::StrCat(ns, "/", name);
  auto it = r.objects.find(key);
  if (it == r.objects.end()) return false;
  Json obj = std::move(it->second);
  r.objects.erase(it);
  obj["metadata"]["resourceVersion"] = std::to_string(++rv_);
  Entry e;
  e.rv = rv_;
  e.node = resource == "pods" ? NodeOf(obj) : "";
  e.line = Json{{"type", "DELETED"}, {"object", EventObject(resource, obj)}}.dump() + "\n";
  Append(r, std::move(e));
  return true;
}

void FakeApiServer::EmitRaw(const std::string& resource, const std::string& line) {
  std::lock_guard lock(mu_);
  Entry e;
  e.rv = ++rv_;
  e.line = line + "\n";
  Append(resources_.at(resource), std::move(e));
}

void FakeApiServer::EmitBookmark(const std::string& resource) {
  std::lock_guard lock(mu_);
  const Kind& kind = Kinds().at(resource);
  Entry e;
  e.live_only = true;
  e.line = Json{{"type", "BOOKMARK"},
                {"object",
                 {{"kind", kind.kind},
                  {"apiVersion", kind.api_version},
                  {"metadata", {{"resourceVersion", std::to_string(rv_)}}}}}}
               .dump() +
           "\n";
  Append(resources_.at(resource), std::move(e));
}

void FakeApiServer::EmitError(const std::string& resource, int code) {
  std::lock_guard lock(mu_);
  Entry e;
  e.live_only = true;
  e.ends_watch = true;
  std::string reason = code == 410 ? "Expired" : "InternalError";
  e.line =
      Json{{"type", "ERROR"}, {"object", Json::parse(StatusJson(code, reason, absl::StrCat("error ", code)))}}
          .dump() +
      "\n";
  Append(resources_.at(resource), std::move(e));
}

void FakeApiServer::BumpVersion(uint64_t n) {
  std::lock_guard lock(mu_);
  rv_ += n;
}

void FakeApiServer::Compact() {
  std::lock_guard lock(mu_);
  // Like etcd compaction: open watches keep streaming, new ones from older
  // versions are refused. (The log itself is kept; nothing replays it.)
  for (auto& [name, r] : resources_) r.compacted_rv = rv_;
}

void FakeApiServer::KillWatches() {
  std::lock_guard lock(mu_);
  ++kill_gen_;
  cv_.notify_all();
}

void FakeApiServer::set_stalled(bool v) {
  std::lock_guard lock(mu_);
  stalled_ = v;
  cv_.notify_all();
}

void FakeApiServer::RequireToken(const std::string& token) {
  std::lock_guard lock(mu_);
  token_ = token;
}

uint64_t FakeApiServer::resource_version() const {
  std::lock_guard lock(mu_);
  return rv_;
}

int FakeApiServer::lists(const std::string& resource) const {
  std::lock_guard lock(mu_);
  return resources_.at(resource).lists;
}

int FakeApiServer::watches(const std::string& resource) const {
  std::lock_guard lock(mu_);
  return resources_.at(resource).watches;
}

int FakeApiServer::open_watches() const {
  std::lock_guard lock(mu_);
  return open_watches_;
}

int FakeApiServer::unauthorized() const {
  std::lock_guard lock(mu_);
  return unauthorized_;
}

void FakeApiServer::InjectError(const std::string& resource, bool watch, int code,
                                const std::string& content_type, const std::string& body) {
  std::lock_guard lock(mu_);
  errors_[{resource, watch}] = InjectedError{code, content_type, body};
  if (watch) {
    // Open watches end, so the next one meets the error.
    ++kill_gen_;
    cv_.notify_all();
  }
}

void FakeApiServer::ClearErrors() {
  std::lock_guard lock(mu_);
  errors_.clear();
}

int FakeApiServer::injected_errors() const {
  std::lock_guard lock(mu_);
  return injected_errors_;
}

uint64_t FakeApiServer::list_bytes_offered(const std::string& resource) const {
  std::lock_guard lock(mu_);
  return resources_.at(resource).list_bytes_offered;
}

uint64_t FakeApiServer::list_bytes_sent(const std::string& resource) const {
  std::lock_guard lock(mu_);
  return resources_.at(resource).list_bytes_sent;
}

std::vector<std::string> FakeApiServer::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

// --- builders ---------------------------------------------------------------

namespace {
Json StringMap(const std::map<std::string, std::string>& m) {
  Json j = Json::object();
  for (const auto& [k, v] : m) j[k] = v;
  return j;
}
}  // namespace

std::string TestUid(const std::string& tag) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : tag) h = (h ^ c) * 1099511628211ull;
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-4%03x-8%03x-%012llx", static_cast<unsigned>(h >> 32),
                static_cast<unsigned>((h >> 16) & 0xffff), static_cast<unsigned>(h & 0xfff),
                static_cast<unsigned>((h >> 44) & 0xfff),
                static_cast<unsigned long long>(h & 0xffffffffffffull));
  return buf;
}

Json MakeNamespace(const std::string& name, const std::map<std::string, std::string>& labels) {
  Json md{{"name", name}, {"uid", absl::StrCat("ns-", name)}};
  if (!labels.empty()) md["labels"] = StringMap(labels);
  return Json{
      {"metadata", md}, {"spec", {{"finalizers", {"kubernetes"}}}}, {"status", {{"phase", "Active"}}}};
}

Json MakePod(const std::string& ns, const std::string& name, const std::string& uid, const std::string& node,
             const std::string& ip, const std::map<std::string, std::string>& labels,
             const std::map<std::string, std::string>& annotations, const std::string& qos) {
  Json md{{"name", name}, {"namespace", ns}, {"uid", uid}};
  if (!labels.empty()) md["labels"] = StringMap(labels);
  if (!annotations.empty()) md["annotations"] = StringMap(annotations);
  Json status{{"phase", "Running"}, {"qosClass", qos}};
  if (!ip.empty()) {
    status["podIP"] = ip;
    status["podIPs"] = Json::array({{{"ip", ip}}});
  }
  return Json{{"metadata", md},
              {"spec",
               {{"nodeName", node},
                {"serviceAccountName", "app"},
                {"containers", Json::array({{{"name", "app"}, {"image", "app:1"}}})}}},
              {"status", status}};
}

Json MakeService(const std::string& ns, const std::string& name, const std::string& cluster_ip,
                 const std::vector<PortSpec>& ports, const std::map<std::string, std::string>& labels) {
  Json md{{"name", name}, {"namespace", ns}, {"uid", absl::StrCat("svc-", ns, "-", name)}};
  if (!labels.empty()) md["labels"] = StringMap(labels);
  Json ps = Json::array();
  for (const auto& p : ports) {
    Json j{{"name", p.name}, {"port", p.port}, {"protocol", "TCP"}};
    j["targetPort"] = p.target_port.is_null() ? Json(p.port) : p.target_port;
    ps.push_back(j);
  }
  Json spec{{"type", "ClusterIP"}, {"clusterIP", cluster_ip}, {"ports", ps}};
  if (cluster_ip != "None") spec["clusterIPs"] = Json::array({cluster_ip});
  return Json{{"metadata", md}, {"spec", spec}, {"status", {{"loadBalancer", Json::object()}}}};
}

Json MakeEndpointSlice(const std::string& ns, const std::string& name, const std::string& service,
                       const std::vector<std::pair<std::string, int>>& ports,
                       const std::vector<EndpointSpec>& endpoints) {
  Json md{
      {"name", name},
      {"namespace", ns},
      {"labels", {{"kubernetes.io/service-name", service}, {"endpointslice.kubernetes.io/managed-by", "x"}}}};
  Json ps = Json::array();
  for (const auto& [pname, port] : ports)
    ps.push_back({{"name", pname}, {"port", port}, {"protocol", "TCP"}});
  Json eps = Json::array();
  for (const auto& e : endpoints) {
    Json cond = Json::object();
    if (!e.ready.is_null()) cond["ready"] = e.ready;
    if (!e.serving.is_null()) cond["serving"] = e.serving;
    if (!e.terminating.is_null()) cond["terminating"] = e.terminating;
    Json j{{"addresses", {e.ip}}, {"conditions", cond}};
    if (!e.pod.empty()) j["targetRef"] = {{"kind", "Pod"}, {"namespace", ns}, {"name", e.pod}};
    eps.push_back(j);
  }
  bool v6 = !endpoints.empty() && endpoints[0].ip.find(':') != std::string::npos;
  return Json{{"metadata", md}, {"addressType", v6 ? "IPv6" : "IPv4"}, {"ports", ps}, {"endpoints", eps}};
}

}  // namespace ringmesh::agent::k8s::testing
