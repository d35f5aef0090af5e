#include "userspace/agent/k8s/api_client.h"

#include <curl/curl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace ringmesh::agent::k8s {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxTokenBytes = 64 << 10;
constexpr size_t kMaxErrorBody = 4 << 10;

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  std::string out(max + 1, '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  out.resize(static_cast<size_t>(in.gcount()));
  if (out.size() > max)
    return absl::InvalidArgumentError(absl::StrCat(path, ": larger than ", max, " bytes"));
  return out;
}

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Transfer {
  CURL* easy = nullptr;
  const std::function<bool(std::string_view)>* on_body = nullptr;
  const std::function<void(int)>* on_headers = nullptr;
  long status = 0;
  std::string error_body;
  bool aborted = false;
  Clock::time_point last_byte;
};

size_t OnHeader(char* data, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  size_t len = size * n;
  t->last_byte = Clock::now();
  // The blank line ends a header block (there may be several: 100 Continue).
  if (len == 2 && data[0] == '\r' && data[1] == '\n' && t->on_headers && *t->on_headers) {
    long code = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200) (*t->on_headers)(static_cast<int>(code));
  }
  return len;
}

size_t OnWrite(char* data, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  size_t len = size * n;
  t->last_byte = Clock::now();
  if (!t->status) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
  if (t->status >= 200 && t->status < 300) {
    if (!(*t->on_body)(std::string_view(data, len))) {
      t->aborted = true;
      return 0;  // anything but len makes curl fail the transfer
    }
  } else if (t->error_body.size() < kMaxErrorBody) {
    t->error_body.append(data, std::min(len, kMaxErrorBody - t->error_body.size()));
  }
  return len;
}

std::string JoinPath(const std::string& base_dir, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  return (std::filesystem::path(base_dir) / p).string();
}

// The named entry of a kubeconfig list (clusters, users, contexts).
YAML::Node FindNamed(const YAML::Node& list, const std::string& name, const char* field) {
  if (!list || !list.IsSequence()) return YAML::Node();
  for (const auto& item : list) {
    if (item["name"] && item["name"].as<std::string>("") == name) return item[field];
  }
  return YAML::Node();
}

absl::Status DecodeData(const YAML::Node& n, const std::string& what, std::string* out) {
  if (!n) return absl::OkStatus();
  if (!absl::Base64Unescape(n.as<std::string>(""), out)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not base64"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string UrlEncode(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::StatusOr<ApiConfig> InClusterConfig(const std::string& token_file, const std::string& ca_file) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !*host || !port || !*port) {
    return absl::FailedPreconditionError(
        "not in a cluster: KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are unset (use --kubeconfig "
        "or --api-server)");
  }
  std::string h = host;
  if (h.find(':') != std::string::npos) h = absl::StrCat("[", h, "]");
  ApiConfig cfg;
  cfg.server = absl::StrCat("https://", h, ":", port);
  cfg.token_file = token_file.empty() ? absl::StrCat(kServiceAccountDir, "/token") : token_file;
  cfg.tls.ca_file = ca_file.empty() ? absl::StrCat(kServiceAccountDir, "/ca.crt") : ca_file;
  if (access(cfg.tls.ca_file.c_str(), R_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("service-account CA ", cfg.tls.ca_file, ": ", std::strerror(errno)));
  }
  return cfg;
}

absl::StatusOr<ApiConfig> LoadKubeconfig(const std::string& path, const std::string& context) {
  // yaml-cpp reports errors by throwing; this is the only place it is used,
  // and a broken kubeconfig must be an error value, not a crash.
  try {
    YAML::Node root = YAML::LoadFile(path);
    std::string dir = std::filesystem::path(path).parent_path().string();
    std::string ctx_name = context.empty() ? root["current-context"].as<std::string>("") : context;
    if (ctx_name.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no current-context"));
    YAML::Node ctx = FindNamed(root["contexts"], ctx_name, "context");
    if (!ctx) return absl::InvalidArgumentError(absl::StrCat(path, ": no context \"", ctx_name, "\""));
    std::string cluster_name = ctx["cluster"].as<std::string>("");
    std::string user_name = ctx["user"].as<std::string>("");
    YAML::Node cluster = FindNamed(root["clusters"], cluster_name, "cluster");
    if (!cluster)
      return absl::InvalidArgumentError(absl::StrCat(path, ": no cluster \"", cluster_name, "\""));

    ApiConfig cfg;
    cfg.server = cluster["server"].as<std::string>("");
    while (!cfg.server.empty() && cfg.server.back() == '/') cfg.server.pop_back();
    if (cfg.server.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": cluster has no server"));
    cfg.tls.insecure = cluster["insecure-skip-tls-verify"].as<bool>(false);
    if (cluster["certificate-authority"]) {
      cfg.tls.ca_file = JoinPath(dir, cluster["certificate-authority"].as<std::string>(""));
    }
    if (auto st = DecodeData(cluster["certificate-authority-data"], path + ": certificate-authority-data",
                             &cfg.tls.ca_pem);
        !st.ok()) {
      return st;
    }

    YAML::Node user = FindNamed(root["users"], user_name, "user");
    if (user) {
      if (user["exec"] || user["auth-provider"]) {
        return absl::UnimplementedError(
            absl::StrCat(path, ": user \"", user_name,
                         "\" uses an exec/auth-provider plugin; use a token or client certificate"));
      }
      cfg.token = user["token"].as<std::string>("");
      if (user["tokenFile"]) cfg.token_file = JoinPath(dir, user["tokenFile"].as<std::string>(""));
      if (user["client-certificate"])
        cfg.tls.cert_file = JoinPath(dir, user["client-certificate"].as<std::string>(""));
      if (user["client-key"]) cfg.tls.key_file = JoinPath(dir, user["client-key"].as<std::string>(""));
      if (auto st = DecodeData(user["client-certificate-data"], path + ": client-certificate-data",
                               &cfg.tls.cert_pem);
          !st.ok()) {
        return st;
      }
      if (auto st = DecodeData(user["client-key-data"], path + ": client-key-data", &cfg.tls.key_pem);
          !st.ok()) {
        return st;
      }
    }
    return cfg;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
}

absl::StatusOr<std::string> TokenSource::Get() {
  std::lock_guard lock(mu_);
  if (file_.empty()) return token_;
  auto now = Clock::now();
  if (!have_read_ || now - read_at_ >= refresh_) {
    auto content = ReadSmallFile(file_, kMaxTokenBytes);
    if (!content.ok()) {
      // Keep a token we already have: the kubelet swaps the file atomically,
      // so a failed read is transient; without one there is nothing to send.
      if (token_.empty())
        return absl::UnauthenticatedError(absl::StrCat("token ", content.status().message()));
    } else {
      token_ = std::string(absl::StripAsciiWhitespace(*content));
      have_read_ = true;
      read_at_ = now;
    }
  }
  return token_;
}

void TokenSource::Invalidate() {
  std::lock_guard lock(mu_);
  have_read_ = false;
}

HttpClient::HttpClient(TlsConfig tls) : tls_(std::move(tls)) {
  InitCurlOnce();
  multi_ = curl_multi_init();
}

HttpClient::~HttpClient() {
  if (multi_) curl_multi_cleanup(static_cast<CURLM*>(multi_));
}

void HttpClient::Interrupt() {
  interrupted_.store(true);
  if (multi_) curl_multi_wakeup(static_cast<CURLM*>(multi_));
}

absl::StatusOr<HttpResult> HttpClient::Get(const HttpRequest& req,
                                           const std::function<bool(std::string_view)>& on_body) {
  if (interrupted_.load()) return absl::CancelledError("stopping");
  if (!multi_) return absl::InternalError("curl_multi_init failed");
  auto* multi = static_cast<CURLM*>(multi_);
  CURL* easy = curl_easy_init();
  if (!easy) return absl::InternalError("curl_easy_init failed");
  curl_slist* headers = nullptr;
  for (const auto& h : req.headers) headers = curl_slist_append(headers, h.c_str());

  Transfer t;
  t.easy = easy;
  t.on_body = &on_body;
  t.on_headers = &req.on_headers;
  t.last_byte = Clock::now();
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(easy, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(req.connect_timeout.count()));
  if (req.total_timeout.count() > 0) {
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(req.total_timeout.count()));
  }
  curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");  // lists compress well
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPIDLE, 30L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPINTVL, 10L);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, OnWrite);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
  curl_blob ca_blob{}, cert_blob{}, key_blob{};
  if (!tls_.ca_file.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, tls_.ca_file.c_str());
  if (!tls_.ca_pem.empty()) {
    ca_blob = {tls_.ca_pem.data(), tls_.ca_pem.size(), CURL_BLOB_NOCOPY};
    curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &ca_blob);
  }
  if (!tls_.cert_file.empty()) curl_easy_setopt(easy, CURLOPT_SSLCERT, tls_.cert_file.c_str());
  if (!tls_.key_file.empty()) curl_easy_setopt(easy, CURLOPT_SSLKEY, tls_.key_file.c_str());
  if (!tls_.cert_pem.empty()) {
    cert_blob = {tls_.cert_pem.data(), tls_.cert_pem.size(), CURL_BLOB_NOCOPY};
    curl_easy_setopt(easy, CURLOPT_SSLCERT_BLOB, &cert_blob);
    curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
  }
  if (!tls_.key_pem.empty()) {
    key_blob = {tls_.key_pem.data(), tls_.key_pem.size(), CURL_BLOB_NOCOPY};
    curl_easy_setopt(easy, CURLOPT_SSLKEY_BLOB, &key_blob);
    curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
  }
  if (tls_.insecure) {
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
  }

  curl_multi_add_handle(multi, easy);
  bool done = false, stalled = false;
  CURLcode code = CURLE_OK;
  while (!interrupted_.load()) {
    int running = 0;
    curl_multi_perform(multi, &running);
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy) {
        done = true;
        code = msg->data.result;
      }
    }
    if (done) break;
    if (Clock::now() - t.last_byte > req.stall_timeout) {
      stalled = true;
      break;
    }
    curl_multi_poll(multi, nullptr, 0, 200, nullptr);
  }
  long status = t.status;
  if (done && code == CURLE_OK) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
  curl_multi_remove_handle(multi, easy);
  curl_easy_cleanup(easy);
  curl_slist_free_all(headers);

  if (!done && !stalled) return absl::CancelledError("stopping");
  if (stalled) {
    return absl::DeadlineExceededError(absl::StrCat(
        "no data for ", std::chrono::duration_cast<std::chrono::seconds>(req.stall_timeout).count(),
        "s (stalled connection)"));
  }
  if (t.aborted) return absl::AbortedError("stopped by the reader");
  if (code != CURLE_OK) {
    return absl::UnavailableError(errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(code)));
  }
  return HttpResult{static_cast<int>(status), std::move(t.error_body)};
}

}  // namespace ringmesh::agent::k8s
