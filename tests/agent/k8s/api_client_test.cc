// Reaching the API server: kubeconfig and in-cluster configuration, the
// rotating token file, and the interruptible HTTP client.
#include "userspace/agent/k8s/api_client.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "tests/agent/k8s/fake_apiserver.h"

namespace ringmesh::agent::k8s {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ringmesh-k8s-cfg-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string Write(const std::string& name, const std::string& content) const {
    std::string p = path_ + "/" + name;
    std::ofstream(p) << content;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(Kubeconfig, CurrentContextTokenAndInlineCa) {
  TempDir dir;
  std::string kubeconfig = dir.Write("config", R"(apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: prod
  cluster: {server: "https://prod.example:6443"}
- name: dev
  cluster:
    server: https://127.0.0.1:6443/
    certificate-authority-data: )" + absl::Base64Escape("CA PEM") +
                                                   R"(
contexts:
- name: dev
  context: {cluster: dev, user: dev-user}
- name: prod
  context: {cluster: prod, user: cert-user}
users:
- name: dev-user
  user: {token: abc123}
- name: cert-user
  user: {client-certificate: certs/client.crt, client-key: /abs/client.key}
)");
  auto cfg = LoadKubeconfig(kubeconfig);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->server, "https://127.0.0.1:6443");
  EXPECT_EQ(cfg->tls.ca_pem, "CA PEM");
  EXPECT_EQ(cfg->token, "abc123");

  auto prod = LoadKubeconfig(kubeconfig, "prod");
  ASSERT_TRUE(prod.ok()) << prod.status();
  EXPECT_EQ(prod->server, "https://prod.example:6443");
  EXPECT_EQ(prod->tls.cert_file, dir.path() + "/certs/client.crt") << "relative to the kubeconfig";
  EXPECT_EQ(prod->tls.key_file, "/abs/client.key");

  EXPECT_EQ(LoadKubeconfig(kubeconfig, "staging").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Kubeconfig, UnsupportedAndBroken) {
  TempDir dir;
  std::string exec = dir.Write("exec", R"(current-context: c
clusters: [{name: k, cluster: {server: "https://x"}}]
contexts: [{name: c, context: {cluster: k, user: u}}]
users: [{name: u, user: {exec: {command: aws}}}]
)");
  EXPECT_EQ(LoadKubeconfig(exec).status().code(), absl::StatusCode::kUnimplemented);
  std::string broken = dir.Write("broken", "current-context: [unclosed\n");
  EXPECT_EQ(LoadKubeconfig(broken).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(LoadKubeconfig(dir.path() + "/missing").ok());
  std::string bad_b64 = dir.Write("b64", R"(current-context: c
clusters: [{name: k, cluster: {server: "https://x", certificate-authority-data: "!!!"}}]
contexts: [{name: c, context: {cluster: k, user: u}}]
)");
  EXPECT_FALSE(LoadKubeconfig(bad_b64).ok());
}

TEST(InCluster, FromEnvironment) {
  TempDir dir;
  std::string ca = dir.Write("ca.crt", "CA");
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  EXPECT_EQ(InClusterConfig("", ca).status().code(), absl::StatusCode::kFailedPrecondition);
  setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto cfg = InClusterConfig(dir.path() + "/token", ca);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->server, "https://[fd00::1]:443");
  EXPECT_EQ(cfg->token_file, dir.path() + "/token");
  EXPECT_EQ(cfg->tls.ca_file, ca);
  EXPECT_FALSE(InClusterConfig("", dir.path() + "/no-ca").ok());
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
}

TEST(TokenSource, RereadsPeriodicallyAndOnInvalidate) {
  TempDir dir;
  std::string file = dir.path() + "/token";
  TokenSource missing("", file, std::chrono::hours(1));
  EXPECT_EQ(missing.Get().status().code(), absl::StatusCode::kUnauthenticated);

  dir.Write("token", "one\n");
  TokenSource slow("", file, std::chrono::hours(1));
  EXPECT_EQ(*slow.Get(), "one");
  dir.Write("token", "two\n");
  EXPECT_EQ(*slow.Get(), "one") << "not re-read before the refresh period";
  slow.Invalidate();
  EXPECT_EQ(*slow.Get(), "two");

  TokenSource fast("", file, std::chrono::milliseconds(1));
  EXPECT_EQ(*fast.Get(), "two");
  dir.Write("token", "three");
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(*fast.Get(), "three");
  // A missing file during a swap keeps the token we have.
  std::filesystem::remove(file);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(*fast.Get(), "three");

  TokenSource fixed("static", "", std::chrono::milliseconds(1));
  EXPECT_EQ(*fixed.Get(), "static");
}

TEST(UrlEncode, Selectors) {
  EXPECT_EQ(UrlEncode("spec.nodeName=node-1"), "spec.nodeName%3Dnode-1");
  EXPECT_EQ(UrlEncode("a b/c"), "a%20b%2Fc");
}

TEST(HttpClient, InterruptEndsAWatchAtOnce) {
  testing::FakeApiServer api;
  ASSERT_TRUE(api.Start().ok());
  HttpClient http(TlsConfig{});
  std::thread stopper([&] {
    for (int i = 0; i < 200 && api.open_watches() == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    http.Interrupt();
  });
  auto t0 = std::chrono::steady_clock::now();
  HttpRequest req;
  req.url = api.url() + "/api/v1/services?watch=1&resourceVersion=1000&timeoutSeconds=30";
  auto res = http.Get(req, [](std::string_view) { return true; });
  stopper.join();
  EXPECT_EQ(res.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  // And stays interrupted.
  EXPECT_EQ(http.Get(req, [](std::string_view) { return true; }).status().code(),
            absl::StatusCode::kCancelled);
}

TEST(HttpClient, ConnectionRefusedAndHttpErrors) {
  testing::FakeApiServer api;
  ASSERT_TRUE(api.Start().ok());
  std::string url = api.url();
  HttpClient http(TlsConfig{});
  HttpRequest req;
  req.url = url + "/nope";
  auto res = http.Get(req, [](std::string_view) { return true; });
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 404);
  EXPECT_NE(res->error_body.find("NotFound"), std::string::npos);
  api.Stop();
  req.url = url + "/api/v1/services";
  req.connect_timeout = std::chrono::milliseconds(500);
  EXPECT_EQ(http.Get(req, [](std::string_view) { return true; }).status().code(),
            absl::StatusCode::kUnavailable);
}

// TLS as a real API server does it, with `openssl s_server -www` standing in
// (it answers any GET with 200 and a status page): server verification by a
// CA file or inline CA data, and a client certificate as files or inline.
class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl CLI not installed";
    auto gen = [&](const std::string& name, const std::string& san) {
      std::string cmd =
          "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=" +
          name + " -keyout " + dir_.path() + "/" + name + ".key -out " + dir_.path() + "/" + name + ".crt" +
          (san.empty() ? "" : " -addext subjectAltName=" + san) + " >/dev/null 2>&1";
      return system(cmd.c_str()) == 0;
    };
    ASSERT_TRUE(gen("server", "IP:127.0.0.1"));
    ASSERT_TRUE(gen("client", ""));
    ASSERT_TRUE(gen("other", "IP:127.0.0.1"));
  }
  void TearDown() override {
    if (child_ > 0) {
      kill(child_, SIGKILL);
      waitpid(child_, nullptr, 0);
    }
  }
  // Starts s_server on 127.0.0.1:0 and returns its URL.
  std::string Serve(bool require_client_cert) {
    int out[2];
    if (pipe(out) != 0) return "";
    std::string d = dir_.path();
    const pid_t parent = getpid();
    child_ = fork();
    if (child_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // s_server dies with the test process
      if (getppid() != parent) _exit(1);
      dup2(out[1], 1);
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 2);  // its handshake errors are expected in these tests
      close(out[0]);
      std::vector<std::string> args = {"openssl", "s_server",        "-www", "-accept",        "127.0.0.1:0",
                                       "-cert",   d + "/server.crt", "-key", d + "/server.key"};
      if (require_client_cert) {
        for (const char* a : {"-Verify", "1", "-verify_return_error"}) args.push_back(a);
        args.push_back("-CAfile");
        args.push_back(d + "/client.crt");
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execvp("openssl", argv.data());
      _exit(127);
    }
    close(out[1]);
    FILE* f = fdopen(out[0], "r");
    char line[256];
    std::string url;
    // s_server prints "ACCEPT 127.0.0.1:<port>" once listening.
    for (int i = 0; i < 20 && fgets(line, sizeof(line), f); ++i) {
      std::string l = line;
      if (l.rfind("ACCEPT ", 0) == 0) {
        url = "https://" + l.substr(7, l.find_last_not_of("\r\n") - 6);
        break;
      }
    }
    fclose(f);
    return url;
  }
  std::string Read(const std::string& name) {
    std::ifstream in(dir_.path() + "/" + name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  absl::StatusOr<HttpResult> Fetch(const std::string& url, TlsConfig tls) {
    HttpClient http(std::move(tls));
    HttpRequest req;
    req.url = url + "/api/v1/services";
    req.connect_timeout = std::chrono::milliseconds(2000);
    req.stall_timeout = std::chrono::milliseconds(5000);
    return http.Get(req, [](std::string_view) { return true; });
  }

  TempDir dir_;
  pid_t child_ = -1;
};

TEST_F(TlsTest, ServerVerifiedByCaFileOrInlineData) {
  std::string url = Serve(false);
  ASSERT_FALSE(url.empty());
  auto by_file = Fetch(url, {.ca_file = dir_.path() + "/server.crt"});
  ASSERT_TRUE(by_file.ok()) << by_file.status();
  EXPECT_EQ(by_file->status, 200);
  auto by_data = Fetch(url, {.ca_pem = Read("server.crt")});
  ASSERT_TRUE(by_data.ok()) << by_data.status();
  EXPECT_EQ(by_data->status, 200);
  EXPECT_FALSE(Fetch(url, {.ca_file = dir_.path() + "/other.crt"}).ok()) << "wrong CA must fail";
  auto insecure = Fetch(url, {.insecure = true});
  ASSERT_TRUE(insecure.ok()) << insecure.status();
}

TEST_F(TlsTest, ClientCertificateAsFilesOrInline) {
  std::string url = Serve(true);
  ASSERT_FALSE(url.empty());
  std::string ca = dir_.path() + "/server.crt";
  auto files = Fetch(
      url,
      {.ca_file = ca, .cert_file = dir_.path() + "/client.crt", .key_file = dir_.path() + "/client.key"});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->status, 200);
  auto inline_pem =
      Fetch(url, {.ca_file = ca, .cert_pem = Read("client.crt"), .key_pem = Read("client.key")});
  ASSERT_TRUE(inline_pem.ok()) << inline_pem.status();
  EXPECT_EQ(inline_pem->status, 200);
  EXPECT_FALSE(Fetch(url, {.ca_file = ca}).ok()) << "no client certificate must fail";
}

}  // namespace
}  // namespace ringmesh::agent::k8s
