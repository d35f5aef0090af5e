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
