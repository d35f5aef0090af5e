// Interop with an implementation not written here: the `openssl` command's
// s_server and s_client (TLS 1.3, ALPN h2, mutual certificates), each
// against a TlsSession pumped over a real loopback TCP socket.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "tests/proxy/child_process.h"
#include "tests/proxy/tls/tls_test_util.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::proxy::tls {
namespace {

using ::ringmesh::proxy::testing::ChildClock;
using ::ringmesh::proxy::testing::ChildOptions;
using ::ringmesh::proxy::testing::ChildProcess;
using ::ringmesh::proxy::testing::MillisLeft;
using testing::Id;

constexpr std::chrono::seconds kTimeout(8);

// Runs a TlsSession over a connected non-blocking socket: sends `to_send`
// once the handshake allows and collects plaintext, until `done` holds and
// everything is sent, or failure, or the deadline.
bool PumpSocket(int fd, TlsSession& s, std::string to_send, std::string& received,
                const std::function<bool()>& done, ChildClock::time_point deadline) {
  std::vector<uint8_t> buf(64 * 1024), out;
  size_t sent = 0;
  auto finished = [&] { return done() && sent == to_send.size() && out.empty() && s.PendingWire() == 0; };
  while (!finished() && !s.failed()) {
    if (sent < to_send.size()) {
      sent += s.Write({reinterpret_cast<const uint8_t*>(to_send.data()) + sent, to_send.size() - sent});
    }
    if (out.empty()) {
      out.resize(s.PendingWire());
      out.resize(s.TakeWire(out));
    }
    const int ms = MillisLeft(deadline);
    if (ms <= 0) return false;
    pollfd p{fd, static_cast<short>(POLLIN | (out.empty() ? 0 : POLLOUT)), 0};
    if (poll(&p, 1, std::min(ms, 100)) < 0) return false;
    if (!out.empty() && (p.revents & POLLOUT)) {
      ssize_t n = send(fd, out.data(), out.size(), MSG_NOSIGNAL);
      if (n > 0) out.erase(out.begin(), out.begin() + n);
    }
    if (p.revents & (POLLIN | POLLHUP)) {
      ssize_t n = recv(fd, buf.data(), buf.size(), 0);
      if (n == 0) s.FeedEof();
      if (n > 0) {
        EXPECT_EQ(s.Feed({buf.data(), static_cast<size_t>(n)}), static_cast<size_t>(n));
      }
      while (size_t m = s.Read(buf)) received.append(reinterpret_cast<const char*>(buf.data()), m);
      if (n == 0) break;
    }
  }
  return finished();
}

// Starts `openssl s_server -rev` on an ephemeral loopback port and
// connects a non-blocking socket to it.
struct OpensslServer {
  std::unique_ptr<ChildProcess> child;
  UniqueFd fd;
};

class OpensslInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (system("openssl version >/dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl command";
    dir_ = std::filesystem::temp_directory_path() / ("ringmesh_interop_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    mesh_ = testing::MakeCa("interop");
    ours_ = testing::Issue(*mesh_.ca, our_id_);
    theirs_ = testing::Issue(*mesh_.ca, their_id_);
    roots_ = testing::Roots({mesh_.pem.root_pem});
    Write("root.pem", mesh_.pem.root_pem);
    Write("chain.pem", ToPem(theirs_.cert.chain.at(0).get()));
    Write("cert.pem", ToPem(theirs_.cert.leaf.get()));
    Write("key.pem", PrivateKeyToPem(theirs_.key.get()));
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return Path(name);
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  std::string Stderr() const {
    std::ifstream f(dir_ / "stderr.txt");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  std::vector<std::string> CommonArgs() const {
    return {"-tls1_3",       "-alpn",          "h2",
            "-cert",         Path("cert.pem"), "-key",
            Path("key.pem"), "-cert_chain",    Path("chain.pem"),
            "-CAfile",       Path("root.pem"), "-verify_return_error"};
  }

  void StartServer(OpensslServer& server, ChildClock::time_point deadline) {
    std::vector<std::string> args = {"openssl", "s_server", "-accept", "127.0.0.1:0", "-naccept", "1",
                                     "-rev",    "-Verify",  "2"};
    for (auto& a : CommonArgs()) args.push_back(a);
    server.child = std::make_unique<ChildProcess>(
        args, ChildOptions{.pipe_stdin = true, .stderr_path = Path("stderr.txt")});
    ASSERT_TRUE(server.child && server.child->running());
    std::string banner;
    ASSERT_TRUE(server.child->ReadUntil(
        banner, [](const std::string& s) { return s.find('\n', s.find("ACCEPT")) != s.npos; }, deadline))
        << banner << Stderr();
    const int port = std::atoi(banner.c_str() + banner.rfind(':') + 1);
    ASSERT_GT(port, 0) << banner;
    server.fd = proxy::testing::ConnectToLoopback(static_cast<uint16_t>(port), /*nonblocking=*/true);
    ASSERT_TRUE(server.fd.valid()) << strerror(errno);
  }

  // Starts `openssl s_client` against a listener on an ephemeral loopback
  // port and accepts its connection (non-blocking).
  void StartClient(std::unique_ptr<ChildProcess>& client, UniqueFd& fd, bool with_cert) {
    auto listener = proxy::testing::ListenOnLoopback(1);
    ASSERT_TRUE(listener.fd.valid());
    std::vector<std::string> args = {
        "openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(listener.port),
        "-quiet",  "-verify",  "2"};
    for (auto& a : CommonArgs()) args.push_back(a);
    if (!with_cert) {
      std::vector<std::string> kept;
      for (size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "-cert" || args[i] == "-key" || args[i] == "-cert_chain") {
          ++i;
        } else {
          kept.push_back(args[i]);
        }
      }
      args = kept;
    }
    client = std::make_unique<ChildProcess>(
        args, ChildOptions{.pipe_stdin = true, .stderr_path = Path("stderr.txt")});
    ASSERT_TRUE(client && client->running());
    fd = proxy::testing::AcceptBefore(listener, ChildClock::now() + kTimeout);
    ASSERT_TRUE(fd.valid()) << Stderr();
  }

  std::filesystem::path dir_;
  const SpiffeId our_id_ = Id("spiffe://cluster.local/ns/mesh/sa/ringmesh");
  const SpiffeId their_id_ = Id("spiffe://cluster.local/ns/mesh/sa/openssl");
  testing::TestCa mesh_;
  testing::Identity ours_, theirs_;
  TrustBundle::StorePtr roots_;
};

TEST_F(OpensslInteropTest, ClientAgainstOpensslServer) {
  const auto deadline = ChildClock::now() + kTimeout;
  OpensslServer server;
  ASSERT_NO_FATAL_FAILURE(StartServer(server, deadline));
  auto client = TlsSession::Client(testing::Ctx(TlsRole::kClient, ours_, roots_), their_id_);
  ASSERT_TRUE(client.ok());
  std::string received;
  const bool ok = PumpSocket(
      server.fd.get(), **client, "hello interop\n", received,
      [&] { return received.find('\n') != std::string::npos; }, deadline);
  EXPECT_TRUE(ok) << TlsErrorName((*client)->error()) << " " << (*client)->error_detail() << "\n" << Stderr();
  EXPECT_EQ(received, "poretni olleh\n");  // -rev echoes each line reversed
  ASSERT_TRUE((*client)->peer_id().has_value());
  EXPECT_EQ(*(*client)->peer_id(), their_id_);
}

TEST_F(OpensslInteropTest, ClientRefusesOpensslServerWithOtherIdentity) {
  const auto deadline = ChildClock::now() + kTimeout;
  OpensslServer server;
  ASSERT_NO_FATAL_FAILURE(StartServer(server, deadline));
  auto client = TlsSession::Client(testing::Ctx(TlsRole::kClient, ours_, roots_),
                                   Id("spiffe://cluster.local/ns/mesh/sa/someone-else"));
  ASSERT_TRUE(client.ok());
  std::string received;
  EXPECT_FALSE(PumpSocket(
      server.fd.get(), **client, "hello\n", received, [] { return false; }, deadline));
  EXPECT_EQ((*client)->error(), TlsError::kSanMismatch) << TlsErrorName((*client)->error());
  EXPECT_TRUE(received.empty());
}

TEST_F(OpensslInteropTest, ServerAgainstOpensslClient) {
  const auto deadline = ChildClock::now() + kTimeout;
  std::unique_ptr<ChildProcess> client;
  UniqueFd fd;
  ASSERT_NO_FATAL_FAILURE(StartClient(client, fd, /*with_cert=*/true));
  auto server = TlsSession::Server(testing::Ctx(TlsRole::kServer, ours_, roots_), "cluster.local");
  ASSERT_TRUE(server.ok());
  const std::string line = "ping from s_client\n";
  ASSERT_EQ(write(client->stdin_fd(), line.data(), line.size()), static_cast<ssize_t>(line.size()));
  std::string received;
  bool ok = PumpSocket(
      fd.get(), **server, "", received, [&] { return received == line; }, deadline);
  ASSERT_TRUE(ok) << TlsErrorName((*server)->error()) << " " << (*server)->error_detail() << "\n" << Stderr();
  ASSERT_TRUE((*server)->peer_id().has_value());
  EXPECT_EQ(*(*server)->peer_id(), their_id_);

  // Echo it back; s_client prints what it receives.
  std::string echoed;
  std::string ignored;
  const std::string reply = "pong from ringmesh\n";
  EXPECT_TRUE(PumpSocket(
      fd.get(), **server, reply, ignored, [] { return true; }, deadline));
  EXPECT_TRUE(client->ReadUntil(
      echoed, [&](const std::string& s) { return s.find(reply) != s.npos; }, deadline))
      << echoed << Stderr();
}

TEST_F(OpensslInteropTest, ServerRefusesOpensslClientWithoutCertificate) {
  const auto deadline = ChildClock::now() + kTimeout;
  std::unique_ptr<ChildProcess> client;
  UniqueFd fd;
  ASSERT_NO_FATAL_FAILURE(StartClient(client, fd, /*with_cert=*/false));
  auto server = TlsSession::Server(testing::Ctx(TlsRole::kServer, ours_, roots_), "cluster.local");
  ASSERT_TRUE(server.ok());
  const std::string line = "ping\n";
  ASSERT_EQ(write(client->stdin_fd(), line.data(), line.size()), static_cast<ssize_t>(line.size()));
  std::string received;
  EXPECT_FALSE(PumpSocket(
      fd.get(), **server, "", received, [] { return false; }, deadline));
  EXPECT_EQ((*server)->error(), TlsError::kNoPeerCertificate) << TlsErrorName((*server)->error());
  EXPECT_TRUE(received.empty());
  EXPECT_FALSE((*server)->peer_id().has_value());
}

}  // namespace
}  // namespace ringmesh::proxy::tls
