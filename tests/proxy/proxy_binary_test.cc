// The ringmesh-proxy binary in plain-proxy mode: forwards, logs its backend,
// answers the admin socket, and exits 0 on SIGTERM after draining.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>

#include "tests/proxy/test_util.h"
#include "userspace/proxy/event_loop.h"

extern char** environ;

namespace ringmesh::proxy {
namespace {

using namespace ::ringmesh::proxy::testing;  // NOLINT
using std::chrono::milliseconds;

class ProxyBinaryTest : public ::testing::TestWithParam<IoBackend> {};

TEST_P(ProxyBinaryTest, ForwardsAndExitsCleanlyOnSigterm) {
  RINGMESH_SKIP_OR_FAIL_WITHOUT_BACKEND(GetParam());
  EchoServer echo;
  char tmpl[] = "/tmp/ringmesh-proxy-bin-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string log = dir + "/log";
  const uint16_t port = ClosedPort();
  std::vector<std::string> args = {RINGMESH_PROXY_BINARY,
                                   "--workers=2",
                                   std::string("--io-backend=") + ToString(GetParam()),
                                   "--listen=127.0.0.1:" + std::to_string(port),
                                   "--static-destination=" + Loopback(echo.port()).ToString(),
                                   "--admin-socket=" + dir + "/admin.sock",
                                   "--drain-timeout-ms=2000"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The proxy dies with this test process, however that ends.
  const pid_t parent = getpid();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || dup2(fd, 2) < 0) _exit(1);
    execv(argv[0], argv.data());
    _exit(127);
  }

  UniqueFd c;
  ASSERT_TRUE(WaitFor([&] { return (c = ConnectTo(Loopback(port), 5)).valid(); }, milliseconds(5000)));
  ASSERT_EQ(send(c.get(), "b", 1, 0), 1);
  char b;
  EXPECT_EQ(recv(c.get(), &b, 1, 0), 1);
  c.Reset();

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  bool exited = WaitFor([&] { return waitpid(pid, &status, WNOHANG) == pid; }, milliseconds(10000));
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  ASSERT_TRUE(exited);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::stringstream ss;
  ss << std::ifstream(log).rdbuf();
  EXPECT_NE(ss.str().find(std::string("io backend: ") + ToString(GetParam())), std::string::npos) << ss.str();
  unlink(log.c_str());
  rmdir(dir.c_str());
}

INSTANTIATE_TEST_SUITE_P(Backends, ProxyBinaryTest, ::testing::Values(IoBackend::kIoUring, IoBackend::kEpoll),
                         [](const auto& p) { return std::string(ToString(p.param)); });

}  // namespace
}  // namespace ringmesh::proxy

namespace ringmesh::proxy {
namespace {

using namespace ::ringmesh::proxy::testing;  // NOLINT

// Runs `args` to completion (killed after 10 s) with stderr in a temp file;
// returns the wait status and what it wrote there.
std::pair<int, std::string> RunToExit(std::vector<std::string> args) {
  char path[] = "/tmp/ringmesh-proxy-stderr-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return {-1, "mkstemp failed"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent || dup2(fd, 2) < 0) _exit(126);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fd);
  int status = -1;
  if (pid > 0 && !WaitFor([&] { return waitpid(pid, &status, WNOHANG) == pid; }, std::chrono::seconds(10))) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  std::stringstream ss;
  ss << std::ifstream(path).rdbuf();
  unlink(path);
  return {status, ss.str()};
}

// Issue 17 finding: a mesh-mode proxy that cannot mark its upstream sockets
// would have its own connects redirected back to itself. It must refuse to
// start, saying why, before it touches anything else.
TEST(ProxyBinaryMarkTest, MeshModeWithoutMarkCapabilityRefusesToStart) {
  if (geteuid() != 0) RINGMESH_SKIP_OR_FAIL("needs root (to drop CAP_NET_ADMIN and CAP_NET_RAW from it)");
  // The pin directory does not exist: before the probe, that was the
  // (only) complaint.
  auto [status, err] =
      RunToExit({"/usr/bin/setpriv", "--bounding-set=-net_admin,-net_raw", "--inh-caps=-net_admin,-net_raw",
                 "--", RINGMESH_PROXY_BINARY, "--bpf-pin-dir=/nonexistent/ringmesh-test-pins"});
  ASSERT_TRUE(WIFEXITED(status)) << err;
  EXPECT_EQ(WEXITSTATUS(status), 1) << err;
  EXPECT_NE(err.find("SO_MARK 0x539 needs CAP_NET_ADMIN or CAP_NET_RAW"), std::string::npos) << err;
  EXPECT_EQ(err.find("pinned maps"), std::string::npos) << err;
}

TEST(ProxyBinaryMarkTest, MeshModeWithMarkZeroRefusesToStart) {
  auto [status, err] =
      RunToExit({RINGMESH_PROXY_BINARY, "--proxy-mark=0", "--bpf-pin-dir=/nonexistent/ringmesh-test-pins"});
  ASSERT_TRUE(WIFEXITED(status)) << err;
  EXPECT_EQ(WEXITSTATUS(status), 1) << err;
  EXPECT_NE(err.find("--proxy-mark 0 in mesh mode"), std::string::npos) << err;
}

// With the capability the probe passes and start-up goes on to the maps.
TEST(ProxyBinaryMarkTest, MeshModeWithMarkCapabilityGetsPastTheProbe) {
  if (geteuid() != 0) RINGMESH_SKIP_OR_FAIL("needs root (CAP_NET_ADMIN)");
  auto [status, err] = RunToExit({RINGMESH_PROXY_BINARY, "--bpf-pin-dir=/nonexistent/ringmesh-test-pins"});
  ASSERT_TRUE(WIFEXITED(status)) << err;
  EXPECT_NE(WEXITSTATUS(status), 0) << err;
  EXPECT_EQ(err.find("SO_MARK"), std::string::npos) << err;
}

}  // namespace
}  // namespace ringmesh::proxy
