// Admin API over its Unix socket and TCP port, against a live proxy, for
// both event-loop backends; plus the request parser on its own.
#include "userspace/proxy/admin.h"

#include <grp.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "nlohmann/json.hpp"
#include "tests/proxy/test_util.h"
#include "userspace/proxy/proxy_core.h"
#include "userspace/proxy/stats.h"

namespace ringmesh::proxy {
namespace {

using namespace ::ringmesh::proxy::testing;  // NOLINT
using std::chrono::milliseconds;

struct Reply {
  int status = 0;
  std::string body;
  std::string error;  // why there is no status: which step failed, with errno
};

// One request, the whole reply. EINTR is retried: with SO_RCVTIMEO set, a
// blocking recv() fails with EINTR instead of restarting when the thread is
// merely notified (io_uring task work: a ring torn down on this thread, as
// ResolveBackend's probe once was, did that to the first exchange of the
// process about one run in ten under ASan, the "no reply" this test used to
// retry). That is no lost reply; EAGAIN, the 5 s timeout, is.
Reply Exchange(UniqueFd fd, const std::string& raw) {
  Reply r;
  if (!fd) {
    r.error = std::string("connect: ") + std::strerror(errno);
    return r;
  }
  SetTimeouts(fd.get(), 5);
  for (size_t off = 0; off < raw.size();) {
    ssize_t n = send(fd.get(), raw.data() + off, raw.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      r.error = std::string("send: ") + std::strerror(errno);
      return r;
    }
    off += static_cast<size_t>(n);
  }
  std::string all;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) r.error = std::string("recv: ") + std::strerror(errno);
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
  }
  if (all.rfind("HTTP/1.1 ", 0) != 0 || all.size() < 12) {
    r.error += " after " + std::to_string(all.size()) + " bytes: " + all.substr(0, 64);
    return r;
  }
  r.status = std::stoi(all.substr(9, 3));
  auto sep = all.find("\r\n\r\n");
  if (sep != std::string::npos) r.body = all.substr(sep + 4);
  return r;
}

UniqueFd ConnectUnix(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path.c_str());
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) != 0) return UniqueFd();
  return fd;
}

std::string Get(const std::string& path) { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"; }

TEST(HttpRequestParser, ParsesAcrossFragments) {
  HttpRequestParser p;
  std::string req = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
  for (size_t i = 0; i + 1 < req.size(); ++i) {
    auto r = p.Feed(&req[i], 1);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(*r);
  }
  auto r = p.Feed(&req.back(), 1);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
  EXPECT_EQ(p.request().method, "GET");
  EXPECT_EQ(p.request().path, "/metrics");
  EXPECT_EQ(p.request().query, "x=1");
}

TEST(HttpRequestParser, RejectsGarbage) {
  HttpRequestParser p;
  std::string bad = "\x01\x02 nonsense\r\n\r\n";
  EXPECT_FALSE(p.Feed(bad.data(), bad.size()).ok());
}

// --- the Unix socket file ---------------------------------------------------

class AdminSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ringmesh-admin-sock-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/admin.sock";
    auto core = ProxyCore::Create(ProxyOptions{.workers = 1, .backend = IoBackend::kEpoll},
                                  std::make_shared<StaticOrigDstResolver>(Loopback(ClosedPort())));
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
  }
  void TearDown() override {
    core_.reset();
    unlink(path_.c_str());
    if (!dir_.empty()) rmdir(dir_.c_str());
  }
  absl::StatusOr<std::unique_ptr<AdminServer>> Start(const std::string& group = "") {
    return AdminServer::Start({.unix_path = path_, .unix_group = group}, core_.get());
  }

  std::string dir_;
  std::string path_;
  std::unique_ptr<ProxyCore> core_;
};

TEST_F(AdminSocketTest, OwnerOnlyWhateverTheUmask) {
  const mode_t old_umask = umask(0);
  auto admin = Start();
  umask(old_umask);
  ASSERT_TRUE(admin.ok()) << admin.status();
  struct stat st {};
  ASSERT_EQ(lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << (st.st_mode & 07777);
  EXPECT_TRUE(ConnectUnix(path_));
  (*admin)->Stop();
  EXPECT_NE(lstat(path_.c_str(), &st), 0) << "Stop removes the socket";
}

TEST_F(AdminSocketTest, GroupGetsReadWrite) {
  const group* gr = getgrgid(getegid());  // a group this process may chown to
  ASSERT_NE(gr, nullptr);
  const mode_t old_umask = umask(0);
  auto admin = Start(gr->gr_name);
  umask(old_umask);
  ASSERT_TRUE(admin.ok()) << admin.status();
  struct stat st {};
  ASSERT_EQ(lstat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u) << std::oct << (st.st_mode & 07777);
  EXPECT_EQ(st.st_gid, getegid());
}

TEST_F(AdminSocketTest, UnknownGroupFailsAndLeavesNothing) {
  auto admin = Start("ringmesh-no-such-group");
  ASSERT_FALSE(admin.ok());
  EXPECT_NE(admin.status().message().find("ringmesh-no-such-group"), std::string::npos) << admin.status();
  struct stat st {};
  EXPECT_NE(lstat(path_.c_str(), &st), 0);
}

TEST_F(AdminSocketTest, RefusesToReplaceARegularFile) {
  { std::ofstream(path_) << "precious"; }
  auto admin = Start();
  ASSERT_FALSE(admin.ok());
  EXPECT_NE(admin.status().message().find(path_), std::string::npos) << admin.status();
  EXPECT_NE(admin.status().message().find("not a socket"), std::string::npos) << admin.status();
  std::stringstream content;
  content << std::ifstream(path_).rdbuf();
  EXPECT_EQ(content.str(), "precious");
}

TEST_F(AdminSocketTest, ReplacesAStaleSocket) {
  {
    UniqueFd old(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path_.c_str());
    ASSERT_EQ(bind(old.get(), reinterpret_cast<sockaddr*>(&sun), sizeof(sun)), 0);
  }  // closed: what a crashed proxy leaves behind
  auto admin = Start();
  ASSERT_TRUE(admin.ok()) << admin.status();
  EXPECT_TRUE(ConnectUnix(path_));
}

// --- RINGMESH_SKIP_OR_FAIL (tests/proxy/test_util.h) -------------------------

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

void SkipBecauseOfTheKernel() {
  RINGMESH_SKIP_OR_FAIL("kernel lacks "
                        << "io_uring");
}

TEST(SkipOrFail, FailsWhenSkipsAreForbidden) {
  ScopedEnv env("RINGMESH_REQUIRE_ROOT_TESTS", "1");
  EXPECT_FATAL_FAILURE(SkipBecauseOfTheKernel(), "cannot run: kernel lacks io_uring");
}

TEST(SkipOrFail, SkipsOtherwise) {
  ScopedEnv env("RINGMESH_REQUIRE_ROOT_TESTS", "0");
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    SkipBecauseOfTheKernel();
  }
  ASSERT_EQ(results.size(), 1);
  EXPECT_TRUE(results.GetTestPartResult(0).skipped());
  EXPECT_NE(std::string(results.GetTestPartResult(0).message()).find("kernel lacks io_uring"),
            std::string::npos);
}

// --- the API against a live proxy --------------------------------------------

class AdminTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override {
    RINGMESH_SKIP_OR_FAIL_WITHOUT_BACKEND(GetParam());
    char tmpl[] = "/tmp/ringmesh-admin-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto core = ProxyCore::Create(ProxyOptions{.workers = 2, .backend = GetParam()},
                                  std::make_shared<StaticOrigDstResolver>(Loopback(echo_.port())));
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
    auto admin = AdminServer::Start({.unix_path = dir_ + "/admin.sock", .tcp_port = -1}, core_.get());
    ASSERT_TRUE(admin.ok()) << admin.status();
    admin_ = std::move(*admin);
  }
  void TearDown() override {
    admin_.reset();
    core_.reset();
    if (!dir_.empty()) rmdir(dir_.c_str());
  }
  Reply Unix(const std::string& raw) {
    Reply r = Exchange(ConnectUnix(dir_ + "/admin.sock"), raw);
    if (r.status == 0) ADD_FAILURE() << "no reply on the Unix socket: " << r.error;
    return r;
  }
  Reply Tcp(const std::string& raw) {
    Reply r = Exchange(ConnectTo(Loopback(admin_->tcp_port()), 5), raw);
    if (r.status == 0) ADD_FAILURE() << "no reply on the TCP port: " << r.error;
    return r;
  }

  EchoServer echo_;
  std::string dir_;
  std::unique_ptr<ProxyCore> core_;
  std::unique_ptr<AdminServer> admin_;
};

TEST_P(AdminTest, ReadinessFollowsListeners) {
  EXPECT_EQ(Unix(Get("/healthz/ready")).status, 503);
  EXPECT_EQ(Tcp(Get("/healthz/ready")).status, 503);
  ASSERT_TRUE(core_->AddListener(Loopback(0)).ok());
  EXPECT_EQ(Unix(Get("/healthz/ready")).status, 200);
  EXPECT_EQ(Tcp(Get("/healthz/ready")).status, 200);
  core_->StopAccepting();
  EXPECT_EQ(Unix(Get("/healthz/ready")).status, 503);
}

TEST_P(AdminTest, SnapshotMakesReady) {
  Snapshot snap;
  snap.generation = 42;
  ASSERT_TRUE(core_->ApplySnapshot(snap, {}).ok());
  EXPECT_EQ(Unix(Get("/healthz/ready")).status, 200);
  Reply r = Unix(Get("/config_dump"));
  ASSERT_EQ(r.status, 200);
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["generation"], 42);
  EXPECT_TRUE(j["pods"].is_array());
  EXPECT_TRUE(j["services"].is_array());
  EXPECT_EQ(j["io_backend"], ToString(GetParam()));
}

TEST_P(AdminTest, EndpointsServeJsonAndMetrics) {
  auto bound = core_->AddListener(
      Loopback(0), ListenerInfo{.pod_ns = "shop", .pod_name = "cart-1", .workload = "cart", .pod_id = 9});
  ASSERT_TRUE(bound.ok());
  UniqueFd c = ConnectTo(*bound, 5);
  ASSERT_EQ(send(c.get(), "m", 1, 0), 1);
  char b;
  ASSERT_EQ(recv(c.get(), &b, 1, 0), 1);

  Reply conns = Unix(Get("/connections"));
  ASSERT_EQ(conns.status, 200);
  auto arr = nlohmann::json::parse(conns.body);
  ASSERT_TRUE(arr.is_array());
  ASSERT_EQ(arr.size(), 1u);
  EXPECT_EQ(arr[0]["source_pod"], "shop/cart-1");
  EXPECT_EQ(arr[0]["pod_id"], 9);
  EXPECT_EQ(arr[0]["original_destination"], Loopback(echo_.port()).ToString());
  EXPECT_EQ(arr[0]["endpoint"], Loopback(echo_.port()).ToString());
  EXPECT_EQ(arr[0]["service"], "");
  EXPECT_EQ(arr[0]["bytes_up"], 1);
  EXPECT_EQ(arr[0]["bytes_down"], 1);
  EXPECT_EQ(arr[0]["state"], "established");
  for (const char* key : {"id", "worker", "downstream_peer", "age_ms"})
    EXPECT_TRUE(arr[0].contains(key)) << key;

  Reply dump = Tcp(Get("/config_dump"));
  ASSERT_EQ(dump.status, 200);
  EXPECT_TRUE(nlohmann::json::accept(dump.body));

  c.Reset();
  ASSERT_TRUE(WaitFor([&] { return core_->active_connections() == 0; }, milliseconds(3000)));
  Reply m = Unix(Get("/metrics"));
  ASSERT_EQ(m.status, 200);
  for (const char* needle : {
           "ringmesh_proxy_connections_active 0",
           "ringmesh_proxy_connections_total 1",
           "ringmesh_proxy_connections_closed_total{reason=\"normal\"} 1",
           "ringmesh_proxy_bytes_total{direction=\"upstream\"} 1",
           "ringmesh_proxy_bytes_total{direction=\"downstream\"} 1",
           "ringmesh_proxy_orig_dst_miss_total 0",
           "ringmesh_proxy_upstream_connect_failures_total 0",
           "istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"cart\","
           "source_workload_namespace=\"shop\",destination_service=\"unknown\"} 1",
           "istio_tcp_connections_closed_total{",
           "istio_tcp_sent_bytes_total{",
           "istio_tcp_received_bytes_total{",
           "ringmesh_proxy_rss_bytes ",
       }) {
    EXPECT_NE(m.body.find(needle), std::string::npos) << needle << "\n" << m.body;
  }
}

TEST_P(AdminTest, ErrorsAreReported) {
  EXPECT_EQ(Unix(Get("/no/such/thing")).status, 404);
  EXPECT_EQ(Unix("GARBAGE\x01 / HTTP/1.1\r\n\r\n").status, 400);
  EXPECT_EQ(Unix("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").status, 405);
  std::string huge = "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(20000, 'a') + "\r\n\r\n";
  int status = Unix(huge).status;
  EXPECT_TRUE(status == 413 || status == 400) << status;
  // The server is still fine afterwards.
  EXPECT_EQ(Tcp(Get("/healthz/ready")).status, 503);
}

INSTANTIATE_TEST_SUITE_P(Backends, AdminTest, ::testing::Values(IoBackend::kIoUring, IoBackend::kEpoll),
                         [](const auto& p) { return std::string(ToString(p.param)); });

// Metric cells: bounded label sets, freed when their workload left.
TEST(ProxyStats, CellsFoldPastTheCapIntoOverflow) {
  ProxyStats stats;
  for (size_t i = 0; i < ProxyStats::kMaxTcpCells; ++i) {
    stats.Release(stats.Cell("w", "ns", "svc-" + std::to_string(i)));
  }
  TcpMetricCell* over = stats.Cell("w", "ns", "one-too-many");
  EXPECT_EQ(over->destination_service, "overflow");
  EXPECT_EQ(stats.Cell("w", "ns", "another"), over);
  EXPECT_EQ(stats.Cells().size(), ProxyStats::kMaxTcpCells + 1);
  // An existing label set still gets its own cell.
  EXPECT_EQ(stats.Cell("w", "ns", "svc-7")->destination_service, "svc-7");
}

TEST(ProxyStats, PruneFreesCellsOfWorkloadsGoneAndHeldByNone) {
  ProxyStats stats;
  TcpMetricCell* stays = stats.Cell("web", "shop", "a.shop.svc.cluster.local");
  TcpMetricCell* held = stats.Cell("batch-1", "jobs", "a.shop.svc.cluster.local");
  stats.Release(stats.Cell("batch-2", "jobs", "a.shop.svc.cluster.local"));
  stats.Release(stats.HttpCell("batch-2", "jobs", "a.shop.svc.cluster.local", 200, "-"));
  HttpMetricCell* http_held = stats.HttpCell("batch-1", "jobs", "a.shop.svc.cluster.local", 503, "UF");
  stats.Release(stays);  // not held, but its workload is live
  const std::set<std::pair<std::string, std::string>> live = {{"web", "shop"}};
  // A render in progress keeps what it listed.
  const auto listed = stats.Cells();
  EXPECT_EQ(stats.PruneSources(live), 2u);  // batch-2's TCP and HTTP cells
  EXPECT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[1]->source_workload, "batch-2");  // still readable
  EXPECT_EQ(stats.Cells().size(), 2u);
  EXPECT_EQ(stats.HttpCells().size(), 1u);
  // Held cells go once let go of.
  held->opened.fetch_add(1);
  stats.Release(held);
  stats.Release(http_held);
  EXPECT_EQ(stats.PruneSources(live), 2u);
  ASSERT_EQ(stats.Cells().size(), 1u);
  EXPECT_EQ(stats.Cells()[0]->source_workload, "web");
  const std::string text = RenderMetrics(stats);
  EXPECT_EQ(text.find("batch-"), std::string::npos) << text;
}

}  // namespace
}  // namespace ringmesh::proxy
