// How ringmesh reaches the Kubernetes API server: where it is and how to
// authenticate (in-cluster service account, a kubeconfig, or a plain URL for
// tests), the bearer token that rotates underneath us, and a small libcurl
// GET that streams the body and can be interrupted from another thread, so
// watch threads stop at once on shutdown.
//
//   ASSIGN_OR_RETURN(ApiConfig cfg, InClusterConfig());
//   TokenSource token(cfg.token, cfg.token_file, std::chrono::seconds(60));
//   HttpClient http(cfg.tls);
//   auto res = http.Get({.url = cfg.server + "/api/v1/pods", .headers = {...}},
//                       [&](std::string_view chunk) { body.append(chunk); return true; });
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ringmesh::agent::k8s {

struct TlsConfig {
  std::string ca_file;              // PEM bundle to verify the server with
  std::string ca_pem;               // or inline (kubeconfig certificate-authority-data)
  std::string cert_file, key_file;  // client certificate
  std::string cert_pem, key_pem;
  bool insecure = false;  // kubeconfig insecure-skip-tls-verify
};

struct ApiConfig {
  std::string server;  // "https://10.96.0.1:443", no trailing slash
  TlsConfig tls;
  std::string token;       // static bearer token
  std::string token_file;  // re-read periodically (service-account tokens rotate)
};

inline constexpr char kServiceAccountDir[] = "/var/run/secrets/kubernetes.io/serviceaccount";

// From KUBERNETES_SERVICE_HOST/_PORT and the service-account files (paths
// overridable; empty means the standard location).
[[nodiscard]] absl::StatusOr<ApiConfig> InClusterConfig(const std::string& token_file = "",
                                                        const std::string& ca_file = "");
// From a kubeconfig file; `context` empty means current-context. Relative
// file paths are relative to the kubeconfig's directory, as kubectl does.
// exec and auth-provider plugins are not supported (Unimplemented).
[[nodiscard]] absl::StatusOr<ApiConfig> LoadKubeconfig(const std::string& path,
                                                       const std::string& context = "");

// The bearer token, re-read from its file every `refresh` and whenever the
// server said 401 (Invalidate), because the kubelet rotates projected
// service-account tokens in place. Thread-safe.
class TokenSource {
 public:
  TokenSource(std::string static_token, std::string file, std::chrono::milliseconds refresh)
      : token_(std::move(static_token)), file_(std::move(file)), refresh_(refresh) {}
  // "" when there is no token at all (plain test servers).
  absl::StatusOr<std::string> Get();
  void Invalidate();
  const std::string& file() const { return file_; }

 private:
  std::mutex mu_;
  std::string token_;
  const std::string file_;
  const std::chrono::milliseconds refresh_;
  std::chrono::steady_clock::time_point read_at_{};
  bool have_read_ = false;
};

struct HttpRequest {
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::chrono::milliseconds connect_timeout{10'000};
  // No byte (header or body) for this long: the request fails. This is what
  // notices a watch whose connection silently died.
  std::chrono::milliseconds stall_timeout{90'000};
  std::chrono::milliseconds total_timeout{0};  // 0 = unbounded (watches)
  // Called once the response headers are in, with the status code; lets a
  // watcher know the stream is open before the first event arrives.
  std::function<void(int)> on_headers;
};

struct HttpResult {
  int status = 0;
  std::string error_body;  // first 4 KiB of a non-2xx body
};

// One request at a time (each reflector thread owns one); connections are
// kept and reused between requests.
class HttpClient {
 public:
  explicit HttpClient(TlsConfig tls);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Blocks until the response is complete. `on_body` sees the 2xx body as it
  // arrives; returning false ends the request (result: Aborted). Transport
  // failures, timeouts and Interrupt() are errors; HTTP errors are results.
  absl::StatusOr<HttpResult> Get(const HttpRequest& req,
                                 const std::function<bool(std::string_view)>& on_body);
  // Thread-safe; makes the current and every later Get return Cancelled.
  void Interrupt();

 private:
  TlsConfig tls_;
  void* multi_ = nullptr;  // CURLM*
  std::atomic<bool> interrupted_{false};
};

// Percent-encodes a query parameter value.
std::string UrlEncode(std::string_view s);

}  // namespace ringmesh::agent::k8s
