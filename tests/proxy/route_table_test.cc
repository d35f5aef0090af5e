// RouteTable's view of the mesh pods of other nodes (MeshPeerOf): which
// endpoint IPs a ringmesh proxy serves elsewhere, and with which identity.
#include "userspace/proxy/route_table.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace ringmesh::proxy {
namespace {

IpAddress Ip(const char* s) { return *IpAddress::Parse(s); }

RemotePod Remote(const char* ns, const char* name, const char* sa, const char* node,
                 std::vector<IpAddress> ips, bool enrolled = true) {
  return RemotePod{ns, name, sa, node, std::move(ips), enrolled};
}

Pod Local(const char* name, const char* ip, bool enrolled = true) {
  Pod p;
  p.ns = "shop";
  p.name = name;
  p.netns_path = absl::StrCat("/run/netns/", name);
  p.ips = {Ip(ip)};
  p.enrolled = enrolled;
  if (!enrolled) p.netns_path.clear();
  return p;
}

TEST(RouteTableMeshPeers, FindsEnrolledRemotePodsByAnyOfTheirIps) {
  Snapshot snap;
  snap.generation = 4;
  snap.pods = {Local("web-0", "198.18.1.2")};
  snap.remote_pods = {Remote("shop", "api-0", "api", "node-b", {Ip("198.18.2.7"), Ip("2001:db8::2:7")}),
                      Remote("shop", "api-1", "default", "node-c", {Ip("198.18.3.7")}),
                      Remote("legacy", "batch-0", "default", "node-c", {Ip("198.18.3.9")}, false)};
  auto table = RouteTable::Build(snap, nullptr);

  const MeshPeer* v4 = table->MeshPeerOf(Ip("198.18.2.7"));
  ASSERT_NE(v4, nullptr);
  EXPECT_EQ(*v4, (MeshPeer{"shop", "api-0", "api", "node-b"}));
  // Both addresses of the pod lead to the same peer.
  EXPECT_EQ(table->MeshPeerOf(Ip("2001:db8::2:7")), v4);
  const MeshPeer* other = table->MeshPeerOf(Ip("198.18.3.7"));
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->service_account, "default");
  EXPECT_EQ(other->node, "node-c");
  EXPECT_EQ(table->mesh_peer_ips(), 3u);

  // Not enrolled there: plain TCP, no peer.
  EXPECT_EQ(table->MeshPeerOf(Ip("198.18.3.9")), nullptr);
  // Unknown IPs, and pods of this node, are no mesh peers.
  EXPECT_EQ(table->MeshPeerOf(Ip("198.18.9.9")), nullptr);
  EXPECT_EQ(table->MeshPeerOf(Ip("198.18.1.2")), nullptr);
  // The local view is unchanged: remote pods are never local.
  EXPECT_TRUE(table->IsLocalEnrolledPod(Ip("198.18.1.2")));
  EXPECT_FALSE(table->IsLocalEnrolledPod(Ip("198.18.2.7")));
}

TEST(RouteTableMeshPeers, LocalPodsWinAndTheFirstRemoteClaimWins) {
  Snapshot snap;
  snap.pods = {Local("web-0", "198.18.1.2"), Local("exporter", "198.18.1.4", /*enrolled=*/false)};
  snap.remote_pods = {
      // Claims the IP of a pod of this node (enrolled or not): ignored.
      Remote("shop", "ghost", "x", "node-b", {Ip("198.18.1.2")}),
      Remote("shop", "ghost-2", "x", "node-b", {Ip("198.18.1.4")}),
      Remote("shop", "api-0", "api", "node-b", {Ip("198.18.2.7")}),
      // A second claim on one IP (a pod moving between nodes): the first stays.
      Remote("shop", "api-0-moved", "api", "node-c", {Ip("198.18.2.7")}),
  };
  auto table = RouteTable::Build(snap, nullptr);
  EXPECT_EQ(table->MeshPeerOf(Ip("198.18.1.2")), nullptr);
  EXPECT_EQ(table->MeshPeerOf(Ip("198.18.1.4")), nullptr);
  ASSERT_NE(table->MeshPeerOf(Ip("198.18.2.7")), nullptr);
  EXPECT_EQ(table->MeshPeerOf(Ip("198.18.2.7"))->node, "node-b");
  EXPECT_EQ(table->mesh_peer_ips(), 1u);
}

TEST(RouteTableMeshPeers, RebuiltFromEachSnapshot) {
  Snapshot snap;
  snap.remote_pods = {Remote("shop", "api-0", "api", "node-b", {Ip("198.18.2.7")})};
  auto first = RouteTable::Build(snap, nullptr);
  snap.remote_pods = {Remote("shop", "api-0", "api-v2", "node-c", {Ip("198.18.2.7")})};
  auto second = RouteTable::Build(snap, first.get());
  // Each table answers for its own snapshot; a connection holding the old
  // table keeps a valid peer.
  EXPECT_EQ(first->MeshPeerOf(Ip("198.18.2.7"))->service_account, "api");
  EXPECT_EQ(second->MeshPeerOf(Ip("198.18.2.7"))->service_account, "api-v2");
  snap.remote_pods.clear();
  auto third = RouteTable::Build(snap, second.get());
  EXPECT_EQ(third->MeshPeerOf(Ip("198.18.2.7")), nullptr);
}

// Many peers: every IP is found, and the lookup does not depend on order.
TEST(RouteTableMeshPeers, ManyPeers) {
  Snapshot snap;
  constexpr uint32_t kPods = 5000;
  for (uint32_t i = 0; i < kPods; ++i) {
    snap.remote_pods.push_back(RemotePod{"ns",
                                         absl::StrCat("p", i),
                                         absl::StrCat("sa", i % 7),
                                         absl::StrCat("node-", i % 50),
                                         {IpAddress::FromV4(htonl(0x0a000000u + i))}});
  }
  auto table = RouteTable::Build(snap, nullptr);
  EXPECT_EQ(table->mesh_peer_ips(), kPods);
  for (uint32_t i = 0; i < kPods; ++i) {
    const MeshPeer* p = table->MeshPeerOf(IpAddress::FromV4(htonl(0x0a000000u + i)));
    ASSERT_NE(p, nullptr) << i;
    ASSERT_EQ(p->name, absl::StrCat("p", i));
  }
  EXPECT_EQ(table->MeshPeerOf(IpAddress::FromV4(htonl(0x0a000000u + kPods))), nullptr);
}

}  // namespace
}  // namespace ringmesh::proxy
