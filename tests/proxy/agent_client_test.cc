// Snapshot intake against a real agent-side socket (snapshot_protocol.h):
// applies and acknowledges snapshots, and reconnects after the agent
// restarts, keeping the last snapshot meanwhile.
#include "userspace/proxy/agent_client.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>

#include "tests/proxy/test_util.h"
#include "userspace/common/snapshot_protocol.h"
#include "userspace/proxy/proxy_core.h"

namespace ringmesh::proxy {
namespace {

using std::chrono::milliseconds;

absl::StatusOr<UniqueFd> AcceptWithin(proto::AgentServer& server, int timeout_ms) {
  pollfd p{server.fd(), POLLIN, 0};
  if (poll(&p, 1, timeout_ms) != 1) return absl::DeadlineExceededError("no proxy connected");
  return server.Accept();
}

Snapshot ServiceSnapshot(uint64_t generation) {
  Snapshot snap;
  snap.generation = generation;
  Service svc;
  svc.ns = "default";
  svc.name = "db";
  svc.vips = {*IpAddress::Parse("10.96.0.5")};
  svc.ports = {ServicePort{.name = "pg", .port = 5432, .target_port = 5432}};
  svc.endpoints = {Endpoint{.ip = *IpAddress::Parse("198.18.3.3")}};
  snap.services.push_back(svc);
  return snap;
}

TEST(AgentClient, AppliesSnapshotsAndReconnects) {
  char tmpl[] = "/tmp/ringmesh-agent-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/agent.sock";
  auto core = ProxyCore::Create(ProxyOptions{.workers = 1, .backend = IoBackend::kEpoll},
                                std::make_shared<StaticOrigDstResolver>(testing::Loopback(1)));
  ASSERT_TRUE(core.ok());

  // The proxy starts before the agent: it must keep retrying.
  AgentClient client({.socket_path = path, .initial_backoff = absl::Milliseconds(10),
                      .max_backoff = absl::Milliseconds(50)},
                     core->get());
  client.Start();
  std::this_thread::sleep_for(milliseconds(60));
  EXPECT_FALSE(client.connected());

  {
    auto server = proto::AgentServer::Listen(path);
    ASSERT_TRUE(server.ok()) << server.status();
    auto conn = AcceptWithin(*server, 3000);
    ASSERT_TRUE(conn.ok()) << conn.status();
    ASSERT_TRUE(proto::SendSnapshot(conn->get(), ServiceSnapshot(1), {}).ok());
    auto ack = proto::ReceiveAck(conn->get(), 3000);
    ASSERT_TRUE(ack.ok()) << ack.status();
    EXPECT_EQ(*ack, 1u);
    EXPECT_EQ((*core)->generation(), 1u);
    EXPECT_TRUE((*core)->ready());
    EXPECT_EQ((*core)->ConfigDump()["services"][0]["name"], "db");
  }  // agent goes away

  ASSERT_TRUE(testing::WaitFor([&] { return !client.connected(); }, milliseconds(3000)));
  EXPECT_EQ((*core)->generation(), 1u);  // last snapshot kept
  EXPECT_TRUE((*core)->ready());

  {
    auto server = proto::AgentServer::Listen(path);
    ASSERT_TRUE(server.ok()) << server.status();
    auto conn = AcceptWithin(*server, 3000);
    ASSERT_TRUE(conn.ok()) << conn.status();
    ASSERT_TRUE(proto::SendSnapshot(conn->get(), ServiceSnapshot(2), {}).ok());
    auto ack = proto::ReceiveAck(conn->get(), 3000);
    ASSERT_TRUE(ack.ok()) << ack.status();
    EXPECT_EQ(*ack, 2u);
    EXPECT_EQ((*core)->generation(), 2u);
    // Stop() interrupts the blocking receive.
    client.Stop();
  }
  EXPECT_EQ(client.snapshots_applied(), 2u);
  unlink(path.c_str());
  rmdir(tmpl);
}

}  // namespace
}  // namespace ringmesh::proxy
