// Http2Session against python3-h2 (Debian package python3-h2), over loopback TCP, both roles. The
// peer is tests/proxy/http/http2_peer.py; every wait has a deadline and the child is killed on every
// exit path. Skips only when python3-h2 is not installed.
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <optional>
#include <set>
#include <string>

#include "tests/proxy/child_process.h"
#include "tests/proxy/http/http2_test_util.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::proxy::http {
namespace {

using testing::RecordingHandler;
using Clock = std::chrono::steady_clock;
using ::ringmesh::proxy::testing::ChildProcess;

constexpr const char* kPython = "/usr/bin/python3";  // Debian's, where python3-h2 lives

bool HaveH2() {
  std::string cmd = std::string(kPython) + " -c 'import h2' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 4096) & 0xff);
  return s;
}

// Moves bytes between the socket and the session until `done`, EOF, or the deadline.
void Drive(int fd, Http2Session& session, const std::function<void()>& step,
           const std::function<bool()>& done, Clock::time_point deadline) {
  while (!done() && Clock::now() < deadline) {
    step();
    auto out = session.PendingOutput();
    pollfd p{fd, static_cast<short>(POLLIN | (out.empty() ? 0 : POLLOUT)), 0};
    if (poll(&p, 1, 50) <= 0) continue;
    if (p.revents & POLLOUT) {
      ssize_t n = send(fd, out.data(), out.size(), MSG_NOSIGNAL);
      if (n > 0) session.ConsumeOutput(static_cast<size_t>(n));
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[16384];
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return;
      ASSERT_TRUE(session.Feed(std::string_view(buf, static_cast<size_t>(n))).ok());
    }
  }
}

// Answers the python client: /hello, and an echo of body and trailers for anything else.
class InteropServer : public RecordingHandler {
 public:
  Http2Session* session = nullptr;
  std::set<int32_t> done;
  void OnHeaders(int32_t id, const Http2Headers& h, bool end) override {
    RecordingHandler::OnHeaders(id, h, end);
    Http2Headers resp;
    resp.status = 200;
    EXPECT_TRUE(session->SubmitResponse(id, resp, false).ok());
  }
  void Step() {
    for (auto& [id, s] : streams) {
      if (s.closed || done.count(id) || s.head.path.empty()) continue;
      if (s.head.path == "/hello") {
        if (s.ended) {
          EXPECT_TRUE(session->SubmitData(id, std::string_view("hello from h2"), true).ok());
          done.insert(id);
        }
        continue;
      }
      auto n = session->SubmitData(id, s.unconsumed, false);
      ASSERT_TRUE(n.ok());
      s.unconsumed.erase(0, *n);
      unconsumed_total -= *n;
      session->Consume(id, *n);
      if (s.unconsumed.empty() && s.ended) {
        if (s.has_trailers)
          EXPECT_TRUE(session->SubmitTrailers(id, s.trailers).ok());
        else
          EXPECT_TRUE(session->SubmitData(id, std::string_view(), true).ok());
        done.insert(id);
      }
    }
  }
};

class Http2Interop : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveH2()) GTEST_SKIP() << "python3-h2 is not installed (Debian package python3-h2)";
  }
  const std::string script_ = RINGMESH_HTTP2_PEER_SCRIPT;
};

TEST_F(Http2Interop, OurServerPythonClient) {
  auto listener = proxy::testing::ListenOnLoopback(1);
  ASSERT_TRUE(listener.fd.valid());
  ChildProcess child({kPython, script_, "client", std::to_string(listener.port)});
  const auto deadline = Clock::now() + std::chrono::seconds(30);

  UniqueFd conn =
      proxy::testing::AcceptBefore(listener, Clock::now() + std::chrono::seconds(10), SOCK_CLOEXEC);
  ASSERT_TRUE(conn.valid()) << "python client did not connect";

  InteropServer handler;
  Http2Session server(Http2Role::kServer, {}, &handler);
  handler.session = &server;
  ASSERT_TRUE(server.Start().ok());
  Drive(
      conn.get(), server, [&] { handler.Step(); }, [&] { return server.Finished(); }, deadline);

  EXPECT_EQ(child.ReadLine(deadline), "OK");
  EXPECT_EQ(child.Wait(deadline), 0);
  ASSERT_EQ(handler.heads.size(), 2u);
  EXPECT_EQ(handler.streams[handler.heads[0]].head.path, "/hello");
  EXPECT_EQ(handler.streams[handler.heads[1]].head.method, "POST");
  EXPECT_EQ(handler.streams[handler.heads[1]].trailers.fields.at(0).first, "x-checksum");
  EXPECT_EQ(server.stats().goaway_received, 1u);  // the client closed politely
  EXPECT_EQ(server.stats().protocol_errors, 0u);
}

TEST_F(Http2Interop, OurClientPythonServer) {
  ChildProcess child({kPython, script_, "server"});
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  auto port = child.ReadLine(deadline);
  ASSERT_TRUE(port.has_value()) << "python server did not start";
  UniqueFd fd =
      proxy::testing::ConnectToLoopback(static_cast<uint16_t>(std::stoi(*port)), /*nonblocking=*/false);
  ASSERT_TRUE(fd.valid());

  RecordingHandler handler;
  Http2Session client(Http2Role::kClient, {}, &handler);
  ASSERT_TRUE(client.Start().ok());
  Http2Headers get{.method = "GET", .scheme = "http", .authority = "ringmesh.test", .path = "/hello"};
  Http2Headers post = get;
  post.method = "POST";
  post.path = "/echo";
  auto hello = client.SubmitRequest(get, true);
  auto echo = client.SubmitRequest(post, false);
  ASSERT_TRUE(hello.ok() && echo.ok());
  const std::string body = Pattern(300 * 1024);
  size_t sent = 0;
  bool trailers_sent = false;
  auto step = [&] {
    if (sent < body.size()) {
      auto n = client.SubmitData(*echo, std::string_view(body).substr(sent), false);
      ASSERT_TRUE(n.ok());
      sent += *n;
    } else if (!trailers_sent) {
      ASSERT_TRUE(client.SubmitTrailers(*echo, Http2Headers{.fields = {{"x-sum", "42"}}}).ok());
      trailers_sent = true;
    }
    handler.Drain(client);
  };
  auto done = [&] { return handler.streams[*hello].closed && handler.streams[*echo].closed; };
  Drive(fd.get(), client, step, done, deadline);
  handler.Drain(client);

  EXPECT_EQ(handler.streams[*hello].head.status, 200);
  EXPECT_EQ(handler.streams[*hello].body, "hello from h2");
  EXPECT_EQ(handler.streams[*echo].head.status, 200);
  EXPECT_TRUE(handler.streams[*echo].body == body) << handler.streams[*echo].body.size();
  ASSERT_TRUE(handler.streams[*echo].has_trailers);
  EXPECT_EQ(handler.streams[*echo].trailers.fields.at(0).first, "x-sum");
  ASSERT_TRUE(client.Goaway(NGHTTP2_NO_ERROR).ok());
  Drive(
      fd.get(), client, [] {}, [&] { return client.PendingOutput().empty(); }, deadline);
  shutdown(fd.get(), SHUT_WR);
  EXPECT_EQ(child.Wait(deadline), 0);
}

}  // namespace
}  // namespace ringmesh::proxy::http
