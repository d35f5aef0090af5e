// HBONE against an implementation not written here: Node.js's http2 and TLS
// (/usr/bin/node) over real loopback TCP, driven by a small poll() loop.
// (a) a Node HBONE client tunnels through our HboneServerConn to an echo
// (and gets 400 for a GET and for an address the server does not serve, also
// while its request side is still open);
// (b) our HboneClientConn tunnels through a Node http2 secure server that
// echoes. The scripts sit next to this file. Every wait has a deadline, and
// the child is killed and reaped on every exit path.
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>

#include "tests/proxy/child_process.h"
#include "tests/proxy/hbone/hbone_test_util.h"
#include "userspace/common/unique_fd.h"
#include "userspace/proxy/tls/x509_util.h"

namespace ringmesh::proxy::hbone {
namespace {

using Clock = std::chrono::steady_clock;
using ::ringmesh::proxy::testing::ChildProcess;
using testing::Mesh;

constexpr const char* kNode = "/usr/bin/node";
constexpr size_t kPayload = 1 << 20;  // more than the windows: flow control must work

// A temp dir removed on every exit path.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/hbone-node-XXXXXX";
    path = mkdtemp(tmpl) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(path + "/" + name) << text;
  }
  std::string path;
};

std::string CertPem(const tls::testing::Identity& who) {
  std::string pem = tls::ToPem(who.cert.leaf.get());
  for (const auto& c : who.cert.chain) pem += tls::ToPem(c.get());
  return pem;
}

// Moves bytes between `fd` and `conn` until `step()` says done, the peer
// closed and everything was processed, or the deadline passed.
bool Drive(int fd, HboneConn& conn, const std::function<bool()>& step, Clock::time_point deadline) {
  std::vector<uint8_t> in, out, buf(64 * 1024);
  size_t out_pos = 0;
  bool eof = false;
  while (Clock::now() < deadline) {
    if (step()) return true;
    if (out_pos == out.size()) {
      out.resize(buf.size());
      out.resize(conn.TakeWire(out));
      out_pos = 0;
    }
    if (eof && out_pos == out.size() && in.empty()) return step() || conn.Finished();
    short events = (!eof && in.size() < buf.size() ? POLLIN : 0) | (out_pos < out.size() ? POLLOUT : 0);
    pollfd p{fd, events, 0};
    if (events != 0 && poll(&p, 1, 50) < 0) return false;
    if (p.revents & POLLOUT) {
      ssize_t n = send(fd, out.data() + out_pos, out.size() - out_pos, MSG_NOSIGNAL);
      if (n > 0) out_pos += static_cast<size_t>(n);
      if (n < 0 && errno != EAGAIN) out_pos = out.size();  // peer gone: drop
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(fd, buf.data(), buf.size() - in.size(), 0);
      if (n > 0) {
        in.insert(in.end(), buf.begin(), buf.begin() + n);
      } else if (n == 0 || errno != EAGAIN) {
        eof = true;
      }
    }
    if (!in.empty()) in.erase(in.begin(), in.begin() + static_cast<long>(conn.FeedWire(in)));
    if (eof && in.empty()) conn.FeedEof();
  }
  return false;
}

// Server events: echo every accepted stream, honouring Write's backpressure.
struct EchoServer : testing::Recorder {
  HboneServerConn* server = nullptr;
  std::map<StreamId, std::string> pending;
  std::map<StreamId, bool> peer_done;
  size_t echoed = 0;

  void Flush(StreamId id) {
    std::string& p = pending[id];
    for (;;) {
      if (!p.empty()) {
        size_t n = server->Write(id, std::span(reinterpret_cast<const uint8_t*>(p.data()), p.size()));
        echoed += n;
        p.erase(0, n);
        if (!p.empty()) return;  // OnWritable continues
      }
      uint8_t buf[16384];
      size_t n = server->Read(id, buf);
      if (n == 0) break;
      p.assign(reinterpret_cast<char*>(buf), n);
    }
    if (peer_done[id] && p.empty()) server->CloseWrite(id);
  }
  void OnData(StreamId id) override { Flush(id); }
  void OnWritable(StreamId id) override { Flush(id); }
  void OnPeerHalfClosed(StreamId id) override {
    half_closed.insert(id);
    peer_done[id] = true;
    Flush(id);
  }
};

class HboneNodeInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(kNode, X_OK) != 0) GTEST_SKIP() << "node is not installed (Debian package nodejs)";
    dir_.Write("root.pem", mesh_.ca.pem.root_pem);
    dir_.Write("client.pem", CertPem(mesh_.client));
    dir_.Write("client.key", tls::PrivateKeyToPem(mesh_.client.key.get()));
    dir_.Write("server.pem", CertPem(mesh_.server));
    dir_.Write("server.key", tls::PrivateKeyToPem(mesh_.server.key.get()));
  }
  static std::string Script(const char* name) {
    return std::string(RINGMESH_HBONE_NODE_SCRIPTS) + "/" + name;
  }

  Mesh mesh_;
  TempDir dir_;
};

TEST_F(HboneNodeInterop, NodeClientThroughOurServer) {
  const auto deadline = Clock::now() + std::chrono::seconds(12);
  auto listener = proxy::testing::ListenOnLoopback(4);
  ASSERT_TRUE(listener.fd.valid());

  ChildProcess node({kNode, Script("node_hbone_client.js"), std::to_string(listener.port), dir_.path,
                     std::to_string(kPayload), mesh_.server_id.ToString()});
  UniqueFd fd = proxy::testing::AcceptBefore(listener, Clock::now() + std::chrono::seconds(8));
  ASSERT_TRUE(fd.valid()) << "node did not connect";

  EchoServer ev;
  HboneServerPolicy policy;
  const SocketAddress target = *SocketAddress::Parse("198.18.0.5:8080");
  policy.serves = [&](const SocketAddress& a) { return a == target; };
  auto server = HboneServerConn::Create(mesh_.server_ctx, "cluster.local", policy, &ev);
  ASSERT_TRUE(server.ok()) << server.status();
  ev.server = server->get();
  ev.conn = server->get();
  ev.on_connect = [&](StreamId id, const HboneInboundConnect&) { EXPECT_TRUE((*server)->Accept(id).ok()); };

  // Until Node closed the connection (after checking the echo).
  Drive(
      fd.get(), **server, [] { return false; }, deadline);
  auto line = node.ReadLine(deadline);
  ASSERT_TRUE(line.has_value()) << "no result from node";
  EXPECT_EQ(*line, "ECHO_OK " + std::to_string(kPayload) + " GET=400 OTHER=400 OPEN=400");
  EXPECT_EQ(node.Wait(deadline), 0);
  ASSERT_EQ(ev.connects.size(), 1u);
  EXPECT_EQ(ev.connects[0].second.request.target, target);
  EXPECT_EQ(ev.connects[0].second.peer, mesh_.client_id);
  EXPECT_EQ(ev.echoed, kPayload);
  EXPECT_EQ((*server)->counters().bad_request, 3u);  // GET, unserved, unserved with the request open
  EXPECT_EQ(ev.half_closed.size(), 1u);
  EXPECT_TRUE(ev.resets.empty());
  EXPECT_FALSE((*server)->failed()) << HboneConnErrorName((*server)->error());
}

TEST_F(HboneNodeInterop, OurClientThroughNodeServer) {
  const auto deadline = Clock::now() + std::chrono::seconds(12);
  ChildProcess node({kNode, Script("node_hbone_server.js"), dir_.path, mesh_.client_id.ToString()});
  auto line = node.ReadLine(deadline);
  ASSERT_TRUE(line.has_value() && line->rfind("PORT ", 0) == 0) << "node server did not start";
  int port = std::stoi(line->substr(5));

  UniqueFd fd = proxy::testing::ConnectToLoopback(static_cast<uint16_t>(port), /*nonblocking=*/true);
  ASSERT_TRUE(fd.valid());

  testing::Recorder ev;
  auto client = HboneClientConn::Create(mesh_.client_ctx, mesh_.server_id, &ev);
  ASSERT_TRUE(client.ok()) << client.status();
  ev.conn = client->get();
  HboneConnectOptions opts;
  opts.source_ip = IpAddress::Parse("10.0.0.7");
  auto id = (*client)->OpenStream("198.18.0.5:8080", opts);
  ASSERT_TRUE(id.ok()) << id.status();
  auto refused = (*client)->OpenStream("198.18.0.6:8080", opts);
  ASSERT_TRUE(refused.ok());

  std::string payload(kPayload, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>((i * 7 + i / 1000) & 0xff);
  size_t sent = 0;
  bool closed_write = false;
  auto step = [&] {
    if (ev.established.contains(*id)) {
      if (sent < payload.size()) {
        sent += (*client)->Write(
            *id, std::span(reinterpret_cast<const uint8_t*>(payload.data()) + sent, payload.size() - sent));
      } else if (!closed_write) {
        closed_write = (*client)->CloseWrite(*id);
      }
    }
    return ev.closed.contains(*id) && ev.refused.contains(*refused);
  };
  ASSERT_TRUE(Drive(fd.get(), **client, step, deadline))
      << "established=" << ev.established.size() << " received=" << ev.received[*id].size()
      << " error=" << HboneConnErrorName((*client)->error());
  EXPECT_EQ(ev.received[*id].size(), payload.size());
  EXPECT_TRUE(ev.received[*id] == payload);
  EXPECT_TRUE(ev.half_closed.contains(*id));
  EXPECT_EQ(ev.refused[*refused], 503);
  EXPECT_EQ(*(*client)->peer_id(), mesh_.server_id);
  EXPECT_FALSE((*client)->failed());
}

}  // namespace
}  // namespace ringmesh::proxy::hbone
