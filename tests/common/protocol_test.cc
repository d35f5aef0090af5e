// Tests of the snapshot JSON codec and the agent<->proxy protocol, over real
// SOCK_SEQPACKET socketpairs with real file descriptors.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "userspace/common/snapshot_json.h"
#include "userspace/common/snapshot_protocol.h"

namespace ringmesh {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Msg(const absl::Status& st) { return std::string(st.message()); }

IpAddress Ip(const char* s) { return *IpAddress::Parse(s); }

Snapshot RichSnapshot() {
  Snapshot s;
  s.generation = std::numeric_limits<uint64_t>::max();
  s.outbound_port = 15006;
  Pod a;
  a.ns = "shop";
  a.name = "web-0";
  a.uid = "6f1c2a4e";
  a.service_account = "web";
  a.netns_path = "/run/netns/web-0";
  a.cgroup_path = "/kubepods/pod6f1c2a4e";
  a.ips = {Ip("198.18.1.2"), Ip("2001:db8::1:2")};
  a.labels = {{"app", "web"}, {"app.kubernetes.io/version", "1.4"}, {"note", "caf\xc3\xa9 \"quoted\""}};
  a.enrolled = true;
  a.fail_mode = FailMode::kClosed;
  a.opt_out_ports = {22, 9100};
  a.opt_out_cidrs = {*Cidr::Parse("198.18.250.0/24"), *Cidr::Parse("2001:db8:ff::/48")};
  a.pod_id = 4000000000u;
  Pod b;
  b.ns = "monitoring";
  b.name = "exporter";
  b.enrolled = false;
  b.ips = {Ip("198.18.1.4")};
  s.pods = {a, b};
  Service svc;
  svc.ns = "shop";
  svc.name = "web";
  svc.vips = {Ip("198.19.0.10"), Ip("2001:db8:1::a")};
  svc.ports = {{"http", 80, 8080, AppProtocol::kHttp},
               {"", 443, 443, AppProtocol::kTcp},
               {"h2", 81, 81, AppProtocol::kHttp2},
               {"grpc", 9090, 9090, AppProtocol::kGrpc}};
  svc.lb = LbPolicy::kLeastConnections;
  svc.endpoints = {{Ip("198.18.1.2"), true, "shop/web-0"}, {Ip("198.18.2.7"), false, ""}};
  Service other;
  other.ns = "shop";
  other.name = "cart";
  other.lb = LbPolicy::kRandom;
  other.ports = {{"", 1, 65535, AppProtocol::kTcp}};
  Service rr = other;
  rr.name = "rr";
  rr.lb = LbPolicy::kRoundRobin;
  s.services = {svc, other, rr};
  RemotePod api;
  api.ns = "shop";
  api.name = "api-7d9f8b6c5d-x2x4k";
  api.service_account = "api";
  api.node = "node-b";
  api.ips = {Ip("198.18.2.7"), Ip("2001:db8::2:7")};
  RemotePod legacy;
  legacy.ns = "legacy";
  legacy.name = "batch-0";
  legacy.service_account = "default";
  legacy.node = "node-c";
  legacy.ips = {Ip("198.18.3.9")};
  legacy.enrolled = false;
  s.remote_pods = {api, legacy};
  return s;
}

// --- snapshot JSON --------------------------------------------------------------

TEST(SnapshotJson, RoundTripsLosslessly) {
  Snapshot s = RichSnapshot();
  for (int indent : {-1, 2}) {
    auto text = EncodeSnapshotJson(s, indent);
    ASSERT_TRUE(text.ok()) << text.status();
    auto back = DecodeSnapshotJson(*text);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, s);
  }
  EXPECT_EQ(*DecodeSnapshotJson(*EncodeSnapshotJson(Snapshot{})), Snapshot{});
}

TEST(SnapshotJson, UsesTheNodeFileFieldNames) {
  nlohmann::json j = SnapshotToJson(RichSnapshot());
  EXPECT_EQ(j["outboundPort"], 15006);
  EXPECT_EQ(j["pods"][0]["serviceAccount"], "web");
  EXPECT_EQ(j["pods"][0]["failMode"], "closed");
  EXPECT_EQ(j["pods"][1]["mode"], "disabled");
  EXPECT_EQ(j["pods"][0]["podId"], 4000000000u);
  EXPECT_EQ(j["services"][0]["lb"], "least_connections");
  EXPECT_EQ(j["services"][0]["ports"][0]["targetPort"], 8080);
  EXPECT_EQ(j["services"][0]["ports"][0]["protocol"], "http");
}

TEST(SnapshotJson, RemotePods) {
  nlohmann::json j = SnapshotToJson(RichSnapshot());
  ASSERT_EQ(j["remotePods"].size(), 2u);
  EXPECT_EQ(
      j["remotePods"][0],
      nlohmann::json::parse(R"({"namespace": "shop", "name": "api-7d9f8b6c5d-x2x4k", "serviceAccount": "api",
                                      "node": "node-b", "ips": ["198.18.2.7", "2001:db8::2:7"],
                                      "mode": "enabled"})"));
  EXPECT_EQ(j["remotePods"][1]["mode"], "disabled");

  // Without remote pods the JSON is that of protocol version 1, byte for
  // byte: the field is left out, not written empty.
  Snapshot none = RichSnapshot();
  none.remote_pods.clear();
  EXPECT_FALSE(SnapshotToJson(none).contains("remotePods"));
  EXPECT_EQ(*EncodeSnapshotJson(RichSnapshot(), -1, 1), *EncodeSnapshotJson(none));

  // Only the identifying fields are required.
  auto minimal = DecodeSnapshotJson(R"({"remotePods": [{"namespace": "a", "name": "b", "node": "c"}]})");
  ASSERT_TRUE(minimal.ok()) << minimal.status();
  ASSERT_EQ(minimal->remote_pods.size(), 1u);
  EXPECT_EQ(minimal->remote_pods[0], (RemotePod{"a", "b", "", "c", {}, true}));
  EXPECT_TRUE(minimal->pods.empty());
}

// Decodes RichSnapshot's JSON after `edit`, returning the error text.
std::string DecodeError(const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = SnapshotToJson(RichSnapshot());
  edit(j);
  auto s = DecodeSnapshotJson(j.dump());
  return s.ok() ? "<decoded fine>" : Msg(s.status());
}

TEST(SnapshotJson, RejectsWithJsonPath) {
  using J = nlohmann::json;
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][0]["ips"] = "198.18.1.2"; }),
            "$.pods[0].ips: expected a list, got a string");
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][0]["ips"][1] = "1.2.3.400"; }),
            "$.pods[0].ips[1]: \"1.2.3.400\" is not an IP address");
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][0]["ips"][1] = 7; }),
            "$.pods[0].ips[1]: expected an IP address string, got an integer");
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][0]["optOutCidrs"][0] = "10.0.0.0/40"; }),
            "$.pods[0].optOutCidrs[0]: \"10.0.0.0/40\" is not a CIDR");
  EXPECT_EQ(DecodeError([](J& j) { j["services"][0]["lb"] = "ring_hash"; }),
            "$.services[0].lb: unknown value \"ring_hash\" (expected one of p2c, round_robin, random, "
            "least_connections)");
  EXPECT_EQ(DecodeError([](J& j) { j["services"][0]["lb"] = "p2c_peak_ewma"; }),
            "$.services[0].lb: unknown value \"p2c_peak_ewma\" (expected one of p2c, round_robin, random, "
            "least_connections)");
  EXPECT_EQ(
      DecodeError([](J& j) { j["services"][0]["ports"][1]["protocol"] = "udp"; }),
      "$.services[0].ports[1].protocol: unknown value \"udp\" (expected one of tcp, http, http2, grpc)");
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][1]["mode"] = "on"; }),
            "$.pods[1].mode: unknown value \"on\" (expected one of enabled, disabled)");
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][0]["failMode"] = true; }),
            "$.pods[0].failMode: expected a string, got a boolean");
  EXPECT_EQ(DecodeError([](J& j) { j["outboundPort"] = 70000; }),
            "$.outboundPort: 70000 is not a port (1-65535)");
  EXPECT_EQ(DecodeError([](J& j) { j["outboundPort"] = 0; }), "$.outboundPort: 0 is not a port (1-65535)");
  EXPECT_EQ(DecodeError([](J& j) { j["services"][0]["ports"][0]["targetPort"] = -80; }),
            "$.services[0].ports[0].targetPort: -80 is not a port (1-65535)");
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][0]["optOutPorts"][0] = 22.5; }),
            "$.pods[0].optOutPorts[0]: expected a port number, got a fractional number");
  EXPECT_EQ(DecodeError([](J& j) { j["generation"] = -1; }), "$.generation: -1 is negative");
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][0]["podId"] = 4294967296u; }),
            "$.pods[0].podId: 4294967296 is out of range (at most 4294967295)");
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][0]["netnss"] = "/x"; }), "$.pods[0]: unknown field \"netnss\"");
  EXPECT_EQ(DecodeError([](J& j) { j["extra"] = 1; }), "$: unknown field \"extra\"");
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][0].erase("name"); }), "$.pods[0].name: required field missing");
  EXPECT_EQ(DecodeError([](J& j) { j["services"][0]["endpoints"][0].erase("ip"); }),
            "$.services[0].endpoints[0].ip: required field missing");
  EXPECT_EQ(DecodeError([](J& j) { j["services"][0]["endpoints"][1]["ready"] = "no"; }),
            "$.services[0].endpoints[1].ready: expected a boolean, got a string");
  EXPECT_EQ(DecodeError([](J& j) { j["pods"][0]["labels"]["app"] = 1; }),
            "$.pods[0].labels.app: expected a string, got an integer");
  EXPECT_EQ(DecodeError([](J& j) { j = J::array(); }), "$: expected a mapping, got a list");
}

TEST(SnapshotJson, RejectsBadRemotePodsWithJsonPath) {
  using J = nlohmann::json;
  EXPECT_EQ(DecodeError([](J& j) { j["remotePods"][1].erase("node"); }),
            "$.remotePods[1].node: required field missing");
  EXPECT_EQ(DecodeError([](J& j) { j["remotePods"][0]["netns"] = "/run/netns/x"; }),
            "$.remotePods[0]: unknown field \"netns\"");
  EXPECT_EQ(DecodeError([](J& j) { j["remotePods"][0]["ips"][1] = "2001:db8::g"; }),
            "$.remotePods[0].ips[1]: \"2001:db8::g\" is not an IP address");
  EXPECT_EQ(DecodeError([](J& j) { j["remotePods"][0]["mode"] = "on"; }),
            "$.remotePods[0].mode: unknown value \"on\" (expected one of enabled, disabled)");
  EXPECT_EQ(DecodeError([](J& j) { j["remotePods"][0]["serviceAccount"] = 7; }),
            "$.remotePods[0].serviceAccount: expected a string, got an integer");
  EXPECT_EQ(DecodeError([](J& j) { j["remotePods"] = J::object(); }),
            "$.remotePods: expected a list, got a mapping");
}

TEST(SnapshotJson, RejectsBadText) {
  EXPECT_THAT(Msg(DecodeSnapshotJson("{\"pods\": [").status()), StartsWith("snapshot JSON: "));
  EXPECT_THAT(Msg(DecodeSnapshotJson("").status()), StartsWith("snapshot JSON: "));
  EXPECT_THAT(Msg(DecodeSnapshotJson("{\"pods\": [\"\xff\"]}").status()), StartsWith("snapshot JSON: "));
  std::string deep(100000, '[');
  EXPECT_EQ(Msg(DecodeSnapshotJson(deep).status()), "snapshot JSON is nested deeper than 16 levels");
  // Brackets inside strings do not count.
  EXPECT_EQ(Msg(DecodeSnapshotJson("{\"x\": \"" + deep + "\\\"\"}").status()), "$: unknown field \"x\"");
}

TEST(SnapshotJson, EncodingFailsOnInvalidUtf8) {
  Snapshot s = RichSnapshot();
  s.pods[0].labels["bad"] = "\xff";
  EXPECT_THAT(Msg(EncodeSnapshotJson(s).status()), StartsWith("snapshot cannot be encoded as JSON"));
}

// --- pure codec -----------------------------------------------------------------

using namespace proto;  // NOLINT: test of that namespace

TEST(ProtocolCodec, HeaderRoundTripsAndIsLittleEndian) {
  Header h{1, MessageType::kNetnsFds, 0x0304, 0x00c8};
  std::string bytes = EncodeHeader(h);
  ASSERT_EQ(bytes.size(), kHeaderSize);
  EXPECT_EQ(bytes.substr(0, 4), "RMSP");
  EXPECT_EQ(bytes[8], '\x04');
  EXPECT_EQ(bytes[9], '\x03');
  EXPECT_EQ(bytes[12], '\xc8');
  auto parsed = ParseHeader(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, h);
}

TEST(ProtocolCodec, HeaderRejects) {
  EXPECT_EQ(Msg(ParseHeader("RMSP").status()), "message of 4 bytes is shorter than the 16-byte header");
  std::string good = EncodeHeader({1, MessageType::kAck, 12, 0});
  std::string bad = good;
  bad[0] = 'X';
  EXPECT_THAT(Msg(ParseHeader(bad).status()), HasSubstr("does not speak the ringmesh snapshot protocol"));
  bad = good;
  bad[6] = 9;
  EXPECT_EQ(Msg(ParseHeader(bad).status()), "unknown message type 9");
  EXPECT_THAT(
      Msg(ParseHeader(EncodeHeader({1, MessageType::kSnapshotEnd, kMaxPayloadBytes + 1, 0})).status()),
      HasSubstr("exceeds the limit"));
  EXPECT_EQ(Msg(ParseHeader(EncodeHeader({1, MessageType::kHello, 8, 2})).status()),
            "HELLO message claims 2 file descriptors; only NETNS_FDS carries any");
  EXPECT_EQ(Msg(ParseHeader(EncodeHeader({1, MessageType::kNetnsFds, 8, 201})).status()),
            "NETNS_FDS claims 201 file descriptors, more than 200");
  EXPECT_EQ(Msg(ParseMessage(EncodeHeader({1, MessageType::kAck, 12, 0}) + "short").status()),
            "ACK header announces 12 payload bytes but 5 arrived");
  EXPECT_THAT(Msg(CheckMessageVersion({7, MessageType::kAck, 0, 0})), HasSubstr("protocol version 7"));
  EXPECT_TRUE(CheckMessageVersion({7, MessageType::kHello, 0, 0}).ok());
}

TEST(ProtocolCodec, PayloadsRoundTrip) {
  Hello hello{Role::kProxy, 1, 3, "0.9.1"};
  EXPECT_EQ(*ParseHello(EncodeHello(hello)), hello);
  SnapshotBegin begin{1ull << 40, 300, 123456};
  EXPECT_EQ(*ParseSnapshotBegin(EncodeSnapshotBegin(begin)), begin);
  NetnsFds chunk{200, {true, false, true}};
  EXPECT_EQ(*ParseNetnsFds(EncodeNetnsFds(chunk), 2), chunk);
  const std::string encoded = EncodeSnapshotFragment(65536, "{}");  // frag->data points into it
  auto frag = ParseSnapshotFragment(encoded);
  ASSERT_TRUE(frag.ok());
  EXPECT_EQ(frag->offset, 65536u);
  EXPECT_EQ(frag->data, "{}");
  Ack ack{9, "bad things"};
  EXPECT_EQ(*ParseAck(EncodeAck(ack)), ack);
}

TEST(ProtocolCodec, PayloadsReject) {
  EXPECT_EQ(Msg(ParseHello("").status()), "malformed HELLO message: shorter than 8 bytes");
  EXPECT_EQ(Msg(ParseHello(EncodeHello({Role::kAgent, 3, 2, ""})).status()),
            "malformed HELLO message: bad version range 3..2");
  EXPECT_EQ(Msg(ParseHello(EncodeHello({Role::kAgent, 1, 1, "x"}) + "y").status()),
            "malformed HELLO message: release length 1 but 2 bytes follow");
  EXPECT_EQ(Msg(ParseHello(EncodeHello({Role::kAgent, 1, 1, "a\nb"})).status()),
            "malformed HELLO message: release string is not printable ASCII");
  EXPECT_EQ(Msg(ParseSnapshotBegin(EncodeSnapshotBegin({1, 1, 0})).status()),
            "malformed SNAPSHOT_BEGIN message: empty snapshot JSON");
  EXPECT_EQ(Msg(ParseNetnsFds(EncodeNetnsFds({0, {true, true}}), 1).status()),
            "malformed NETNS_FDS message: 2 pods have a netns but 1 fds are attached");
  EXPECT_EQ(Msg(ParseNetnsFds(EncodeNetnsFds({0, std::vector<bool>(201, false)}), 0).status()),
            "malformed NETNS_FDS message: covers 201 pods, must be 1..200");
  EXPECT_EQ(Msg(ParseSnapshotFragment(EncodeSnapshotFragment(0, "")).status()),
            "malformed SNAPSHOT_END message: no JSON bytes");
  EXPECT_EQ(Msg(ParseAck(EncodeAck({1, "abc"}).substr(0, 14)).status()),
            "malformed ACK message: error length 3 but 2 bytes follow");
}

TEST(ProtocolCodec, NegotiatesVersions) {
  Hello agent{Role::kAgent, 1, 3, "0.3.0"};
  Hello proxy{Role::kProxy, 2, 5, "0.5.0"};
  EXPECT_EQ(*NegotiateVersion(agent, proxy), 3);
  EXPECT_EQ(*NegotiateVersion(proxy, agent), 3);

  Hello new_agent{Role::kAgent, 2, 3, "0.3.0"};
  Hello old_proxy{Role::kProxy, 1, 1, "0.1.0"};
  const char* kUpgradeProxy =
      "agent speaks protocol 2..3 (release 0.3.0), proxy speaks 1..1 (release 0.1.0): upgrade the proxy";
  EXPECT_EQ(Msg(NegotiateVersion(new_agent, old_proxy).status()), kUpgradeProxy);
  EXPECT_EQ(Msg(NegotiateVersion(old_proxy, new_agent).status()), kUpgradeProxy);

  // This build still speaks versions 1 and 2 with the previous releases.
  EXPECT_EQ(kMaxProtocolVersion, kAuthorizationPoliciesVersion);
  EXPECT_EQ(*NegotiateVersion(LocalHello(Role::kAgent), Hello{Role::kProxy, 1, 2, "0.2.0"}), 2);
  EXPECT_EQ(*NegotiateVersion(LocalHello(Role::kProxy), Hello{Role::kAgent, 1, 2, "0.2.0"}), 2);
  EXPECT_EQ(*NegotiateVersion(LocalHello(Role::kAgent), Hello{Role::kProxy, 1, 1, "0.1.0"}), 1);
  EXPECT_EQ(*NegotiateVersion(LocalHello(Role::kProxy), Hello{Role::kAgent, 1, 1, "0.1.0"}), 1);

  Hello old_agent{Role::kAgent, 1, 1, "0.1.0"};
  Hello new_proxy{Role::kProxy, 2, 2, "0.2.0"};
  EXPECT_THAT(Msg(NegotiateVersion(new_proxy, old_agent).status()), HasSubstr(": upgrade the agent"));
  EXPECT_THAT(Msg(NegotiateVersion(old_agent, Hello{Role::kAgent, 1, 1, "x"}).status()),
              HasSubstr("the peer is also a agent"));
}

// --- over sockets -----------------------------------------------------------------

int CountOpenFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

struct SocketPair {
  SocketPair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
    agent.Reset(fds[0]);
    proxy.Reset(fds[1]);
  }
  UniqueFd agent;
  UniqueFd proxy;
};

TEST(ProtocolSocket, HandshakeAgrees) {
  SocketPair sp;
  absl::StatusOr<uint16_t> proxy_side;
  std::thread t([&] { proxy_side = Handshake(sp.proxy.get(), LocalHello(Role::kProxy)); });
  auto agent_side = Handshake(sp.agent.get(), LocalHello(Role::kAgent));
  t.join();
  ASSERT_TRUE(agent_side.ok()) << agent_side.status();
  ASSERT_TRUE(proxy_side.ok()) << proxy_side.status();
  EXPECT_EQ(*agent_side, kMaxProtocolVersion);
  EXPECT_EQ(*proxy_side, kMaxProtocolVersion);
}

TEST(ProtocolSocket, HandshakeVersionMismatchIsExplainedOnBothSides) {
  SocketPair sp;
  absl::StatusOr<uint16_t> proxy_side;
  std::thread t([&] { proxy_side = Handshake(sp.proxy.get(), Hello{Role::kProxy, 1, 1, "0.1.0"}); });
  auto agent_side = Handshake(sp.agent.get(), Hello{Role::kAgent, 2, 3, "0.3.0"});
  t.join();
  const char* kWant =
      "agent speaks protocol 2..3 (release 0.3.0), proxy speaks 1..1 (release 0.1.0): upgrade the proxy";
  EXPECT_EQ(Msg(agent_side.status()), kWant);
  EXPECT_EQ(Msg(proxy_side.status()), kWant);
  EXPECT_EQ(agent_side.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ProtocolSocket, HandshakeTimesOutAndSeesClose) {
  SocketPair sp;
  auto st = Handshake(sp.agent.get(), LocalHello(Role::kAgent), 50);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kDeadlineExceeded);
  sp.proxy.Reset();
  st = Handshake(sp.agent.get(), LocalHello(Role::kAgent), 1000);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kUnavailable);
}

// A snapshot of `pods` pods whose JSON spans several SNAPSHOT_END fragments.
Snapshot BigSnapshot(size_t pods) {
  Snapshot s;
  s.generation = 77;
  for (size_t i = 0; i < pods; ++i) {
    Pod p;
    p.ns = "ns";
    p.name = absl::StrCat("pod-", i);
    p.netns_path = absl::StrCat("/run/netns/pod-", i);
    p.ips = {IpAddress::FromV4(htonl(0xc6120000u + static_cast<uint32_t>(i)))};
    p.labels["payload"] = std::string(400, 'x');
    s.pods.push_back(std::move(p));
  }
  return s;
}

std::pair<dev_t, ino_t> Identity(int fd) {
  struct stat st {};
  EXPECT_EQ(fstat(fd, &st), 0);
  return {st.st_dev, st.st_ino};
}

TEST(ProtocolSocket, SnapshotWith300PodsAndFdsArrivesInOrder) {
  constexpr size_t kPods = 300;  // crosses the 200-fd chunk boundary
  Snapshot s = BigSnapshot(kPods);
  ASSERT_GT(EncodeSnapshotJson(s)->size(), 2 * kMaxFragmentBytes);
  // Distinct inodes so that order is checkable: real netns fds for some
  // pods, memfds for most, none for every seventh.
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (size_t i = 0; i < kPods; ++i) {
    if (i % 7 == 3) {
      fds.push_back(-1);
      continue;
    }
    int fd = i % 50 == 0 ? open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)
                         : memfd_create(absl::StrCat("pod-", i).c_str(), MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    owned.emplace_back(fd);
    fds.push_back(fd);
  }
  SocketPair sp;
  const int before = CountOpenFds();
  absl::Status sent;
  std::thread t([&] { sent = SendSnapshot(sp.agent.get(), s, fds); });
  auto got = ReceiveSnapshot(sp.proxy.get());
  t.join();
  ASSERT_TRUE(sent.ok()) << sent;
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->snapshot, s);
  ASSERT_EQ(got->netns_fds.size(), kPods);
  for (size_t i = 0; i < kPods; ++i) {
    if (fds[i] < 0) {
      EXPECT_FALSE(got->netns_fds[i].valid()) << i;
      continue;
    }
    ASSERT_TRUE(got->netns_fds[i].valid()) << i;
    EXPECT_EQ(Identity(got->netns_fds[i].get()), Identity(fds[i])) << "pod " << i;
    EXPECT_EQ(fcntl(got->netns_fds[i].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  }
  size_t received = owned.size();
  EXPECT_EQ(CountOpenFds(), before + static_cast<int>(received));
  got->netns_fds.clear();
  EXPECT_EQ(CountOpenFds(), before);

  // ACK round trip, success and failure.
  ASSERT_TRUE(SendAck(sp.proxy.get(), 77, "").ok());
  auto acked = ReceiveAck(sp.agent.get(), 1000);
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ(*acked, 77u);
  ASSERT_TRUE(SendAck(sp.proxy.get(), 78, "pods[3]: setns failed").ok());
  EXPECT_EQ(Msg(ReceiveAck(sp.agent.get(), 1000).status()),
            "proxy rejected generation 78: pods[3]: setns failed");
  EXPECT_EQ(ReceiveAck(sp.agent.get(), 20).status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(ProtocolSocket, EmptySnapshot) {
  SocketPair sp;
  Snapshot s;
  s.generation = 1;
  ASSERT_TRUE(SendSnapshot(sp.agent.get(), s, {}).ok());
  auto got = ReceiveSnapshot(sp.proxy.get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->snapshot, s);
  EXPECT_TRUE(got->netns_fds.empty());
  EXPECT_EQ(Msg(SendSnapshot(sp.agent.get(), BigSnapshot(2), {-1})),
            "1 netns fds for 2 pods; need one per pod");
}

// Sends `message` with `n` fresh fds attached, then closes our copies, so
// only the receiver can leak them.
void SendWithFds(int sock, std::string_view message, int n) {
  std::vector<UniqueFd> fds;
  std::vector<int> raw;
  for (int i = 0; i < n; ++i) {
    fds.emplace_back(memfd_create("leak-check", MFD_CLOEXEC));
    raw.push_back(fds.back().get());
  }
  ASSERT_TRUE(SendRawMessage(sock, message, raw).ok());
}

TEST(ProtocolSocket, MalformedMessagesLeakNoFds) {
  SocketPair sp;
  const int before = CountOpenFds();
  struct Case {
    const char* name;
    std::string message;
    int fds;
    const char* error;
  };
  std::string fds_payload = EncodeNetnsFds({0, {true, true, true}});
  std::vector<Case> cases = {
      {"garbage", "this is not a ringmesh message", 5, "bad magic"},
      {"short", "RMSP", 3, "shorter than the 16-byte header"},
      {"fd count lies", EncodeMessage(MessageType::kNetnsFds, fds_payload, 3), 5,
       "announces 3 fds but 5 arrived"},
      {"fds on HELLO", EncodeMessage(MessageType::kHello, EncodeHello(LocalHello(Role::kAgent))), 2,
       "announces 0 fds but 2 arrived"},
      {"truncated payload", EncodeMessage(MessageType::kNetnsFds, fds_payload, 3).substr(0, 18), 3,
       "payload bytes but"},
      {"oversized", std::string(kMaxMessageBytes + 100, 'R'), 4, "message larger than"},
      {"future version", EncodeMessage(MessageType::kNetnsFds, fds_payload, 3, 9), 3, "protocol version 9"},
  };
  for (const auto& c : cases) {
    SendWithFds(sp.agent.get(), c.message, c.fds);
    auto got = ReceiveSnapshot(sp.proxy.get());
    EXPECT_THAT(Msg(got.status()), HasSubstr(c.error)) << c.name;
    EXPECT_FALSE(RejectedGeneration(got.status())) << c.name;
    EXPECT_EQ(CountOpenFds(), before) << c.name;
  }
  // Valid framing, wrong place in the sequence.
  SendWithFds(sp.agent.get(), EncodeMessage(MessageType::kNetnsFds, fds_payload, 3), 3);
  EXPECT_EQ(Msg(ReceiveSnapshot(sp.proxy.get()).status()), "NETNS_FDS before SNAPSHOT_BEGIN");
  EXPECT_EQ(CountOpenFds(), before);
}

TEST(ProtocolSocket, AbortedSnapshotClosesTheFdsReceivedSoFar) {
  SocketPair sp;
  const int before = CountOpenFds();
  ASSERT_TRUE(SendRawMessage(sp.agent.get(),
                             EncodeMessage(MessageType::kSnapshotBegin, EncodeSnapshotBegin({5, 300, 1000})),
                             {})
                  .ok());
  SendWithFds(sp.agent.get(),
              EncodeMessage(MessageType::kNetnsFds, EncodeNetnsFds({0, std::vector<bool>(200, true)}), 200),
              200);
  SendWithFds(sp.agent.get(),
              EncodeMessage(MessageType::kNetnsFds, EncodeNetnsFds({200, std::vector<bool>(50, true)}), 50),
              50);
  sp.agent.Reset();  // the agent dies mid-snapshot
  auto got = ReceiveSnapshot(sp.proxy.get());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CountOpenFds(), before - 1);  // only our closed agent end is gone
}

TEST(ProtocolSocket, SequenceErrors) {
  SocketPair sp;
  auto send = [&](MessageType type, const std::string& payload) {
    ASSERT_TRUE(SendRawMessage(sp.agent.get(), EncodeMessage(type, payload), {}).ok());
  };
  send(MessageType::kSnapshotBegin, EncodeSnapshotBegin({5, 2, 10}));
  send(MessageType::kSnapshotEnd, EncodeSnapshotFragment(0, "{}"));
  EXPECT_EQ(Msg(ReceiveSnapshot(sp.proxy.get()).status()),
            "SNAPSHOT_END before the netns fds of all pods (0 of 2 covered)");
  send(MessageType::kSnapshotBegin, EncodeSnapshotBegin({5, 0, 2}));
  send(MessageType::kSnapshotEnd, EncodeSnapshotFragment(1, "{"));
  EXPECT_EQ(Msg(ReceiveSnapshot(sp.proxy.get()).status()), "SNAPSHOT_END fragment at offset 1, expected 0");
  send(MessageType::kSnapshotBegin, EncodeSnapshotBegin({5, 0, 2}));
  send(MessageType::kSnapshotEnd, EncodeSnapshotFragment(0, "{}{}"));
  EXPECT_EQ(Msg(ReceiveSnapshot(sp.proxy.get()).status()),
            "SNAPSHOT_END data runs past the announced 2 bytes");
  send(MessageType::kSnapshotBegin, EncodeSnapshotBegin({5, 0, 100u << 20}));
  EXPECT_EQ(Msg(ReceiveSnapshot(sp.proxy.get()).status()),
            "snapshot JSON of 104857600 bytes exceeds the limit of 67108864");
  send(MessageType::kSnapshotBegin, EncodeSnapshotBegin({5, 0, 2}));
  ReceiveOptions small;
  small.max_snapshot_bytes = 1;
  EXPECT_THAT(Msg(ReceiveSnapshot(sp.proxy.get(), small).status()), HasSubstr("exceeds the limit of 1"));
  send(MessageType::kHello, EncodeHello(LocalHello(Role::kAgent)));
  EXPECT_EQ(Msg(ReceiveSnapshot(sp.proxy.get()).status()), "unexpected HELLO after the handshake");
}

TEST(ProtocolSocket, RejectedSnapshotKeepsTheStreamInStep) {
  SocketPair sp;
  const int before = CountOpenFds();
  // Complete and well framed, but the JSON is wrong: the proxy can ACK the
  // error and go on with the next snapshot.
  std::string json = R"({"generation": 9, "pods": [{"namespace": "a", "name": "b", "ips": ["1.2.3.400"]}]})";
  ASSERT_TRUE(
      SendRawMessage(sp.agent.get(),
                     EncodeMessage(MessageType::kSnapshotBegin, EncodeSnapshotBegin({9, 1, json.size()})), {})
          .ok());
  SendWithFds(sp.agent.get(), EncodeMessage(MessageType::kNetnsFds, EncodeNetnsFds({0, {true}}), 1), 1);
  ASSERT_TRUE(SendRawMessage(sp.agent.get(),
                             EncodeMessage(MessageType::kSnapshotEnd, EncodeSnapshotFragment(0, json)), {})
                  .ok());
  auto got = ReceiveSnapshot(sp.proxy.get());
  EXPECT_EQ(Msg(got.status()), "generation 9 rejected: $.pods[0].ips[0]: \"1.2.3.400\" is not an IP address");
  EXPECT_EQ(RejectedGeneration(got.status()), 9u);
  EXPECT_EQ(CountOpenFds(), before);
  ASSERT_TRUE(SendAck(sp.proxy.get(), 9, std::string(got.status().message())).ok());
  EXPECT_THAT(Msg(ReceiveAck(sp.agent.get(), 1000).status()), HasSubstr("proxy rejected generation 9"));

  // JSON generation disagreeing with SNAPSHOT_BEGIN.
  json = R"({"generation": 10})";
  ASSERT_TRUE(SendRawMessage(
                  sp.agent.get(),
                  EncodeMessage(MessageType::kSnapshotBegin, EncodeSnapshotBegin({11, 0, json.size()})), {})
                  .ok());
  ASSERT_TRUE(SendRawMessage(sp.agent.get(),
                             EncodeMessage(MessageType::kSnapshotEnd, EncodeSnapshotFragment(0, json)), {})
                  .ok());
  got = ReceiveSnapshot(sp.proxy.get());
  EXPECT_EQ(Msg(got.status()), "generation 11 rejected: JSON says generation 10, SNAPSHOT_BEGIN said 11");
  EXPECT_EQ(RejectedGeneration(got.status()), 11u);

  Snapshot good;
  good.generation = 12;
  ASSERT_TRUE(SendSnapshot(sp.agent.get(), good, {}).ok());
  auto next = ReceiveSnapshot(sp.proxy.get());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->snapshot.generation, 12u);
}

// What a proxy of protocol version 1 reads: every message labelled 1 and
// JSON with only the fields version 1 knows.
TEST(ProtocolVersions, VersionOneProxyGetsSnapshotsWithoutRemotePods) {
  SocketPair sp;
  Snapshot s = RichSnapshot();
  s.generation = 21;
  ASSERT_TRUE(SendSnapshot(sp.agent.get(), s, {-1, -1}, 1).ok());
  std::string json;
  for (;;) {
    auto msg = ReceiveMessage(sp.proxy.get(), 1000);
    ASSERT_TRUE(msg.ok()) << msg.status();
    EXPECT_EQ(msg->header.version, 1) << ToString(msg->header.type);
    if (msg->header.type != MessageType::kSnapshotEnd) continue;
    json += ParseSnapshotFragment(msg->payload)->data;
    if (nlohmann::json::accept(json)) break;
  }
  nlohmann::json j = nlohmann::json::parse(json);
  for (const auto& [key, value] : j.items()) {
    EXPECT_THAT((std::vector<std::string>{"generation", "outboundPort", "pods", "services"}),
                ::testing::Contains(key));
  }
  Snapshot want = s;
  want.remote_pods.clear();
  EXPECT_EQ(*DecodeSnapshotJson(json), want);

  // Through the assembler: version 1, and no remote pods.
  ASSERT_TRUE(SendSnapshot(sp.agent.get(), s, {-1, -1}, 1).ok());
  auto got = ReceiveSnapshot(sp.proxy.get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->version, 1);
  EXPECT_EQ(got->snapshot, want);

  // Version 2 carries them.
  ASSERT_TRUE(SendSnapshot(sp.agent.get(), s, {-1, -1}, kRemotePodsVersion).ok());
  got = ReceiveSnapshot(sp.proxy.get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->version, kRemotePodsVersion);
  EXPECT_EQ(got->snapshot, s);
}

// A proxy of protocol version 2 (before AuthorizationPolicies) gets the
// remote pods but not the policies: it would reject the unknown field and
// so every snapshot, which would stop its updates altogether.
TEST(ProtocolVersions, VersionTwoProxyGetsSnapshotsWithoutPolicies) {
  SocketPair sp;
  Snapshot s = RichSnapshot();
  s.generation = 22;
  AuthorizationPolicy deny;
  deny.ns = "default";
  deny.name = "deny-ops";
  deny.action = AuthzAction::kDeny;
  deny.rules = {AuthzRule{.from = {AuthzSource{.namespaces = {"ops"}}}}};
  s.authorization_policies = {deny};
  ASSERT_FALSE(s.remote_pods.empty());

  ASSERT_TRUE(SendSnapshot(sp.agent.get(), s, {-1, -1}, 2).ok());
  auto got = ReceiveSnapshot(sp.proxy.get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->version, 2);
  Snapshot want = s;
  want.authorization_policies.clear();
  EXPECT_EQ(got->snapshot, want);

  ASSERT_TRUE(SendSnapshot(sp.agent.get(), s, {-1, -1}, kAuthorizationPoliciesVersion).ok());
  got = ReceiveSnapshot(sp.proxy.get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->version, 3);
  EXPECT_EQ(got->snapshot, s);
}

TEST(ProtocolVersions, SendersRefuseVersionsThisBuildDoesNotSpeak) {
  SocketPair sp;
  EXPECT_EQ(Msg(SendSnapshot(sp.agent.get(), Snapshot{}, {}, 0)),
            absl::StrCat("cannot send in protocol version 0, this build speaks 1..", kMaxProtocolVersion));
  EXPECT_EQ(SendSnapshot(sp.agent.get(), Snapshot{}, {}, kMaxProtocolVersion + 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SendAck(sp.proxy.get(), 1, "", kMaxProtocolVersion + 1).code(),
            absl::StatusCode::kInvalidArgument);
  // An ACK in version 1 reaches an agent (of any version speaking 1).
  ASSERT_TRUE(SendAck(sp.proxy.get(), 5, "", 1).ok());
  auto msg = ReceiveMessage(sp.agent.get(), 1000);
  ASSERT_TRUE(msg.ok()) << msg.status();
  EXPECT_EQ(msg->header.version, 1);
  EXPECT_EQ(ParseAck(msg->payload)->generation, 5u);
}

// Sends one snapshot by hand: BEGIN in `begin_version`, the JSON in
// `end_version`.
void SendJsonSnapshot(int fd, uint64_t generation, const std::string& json, uint16_t begin_version,
                      uint16_t end_version) {
  ASSERT_TRUE(
      SendRawMessage(fd,
                     EncodeMessage(MessageType::kSnapshotBegin,
                                   EncodeSnapshotBegin({generation, 0, json.size()}), 0, begin_version),
                     {})
          .ok());
  ASSERT_TRUE(
      SendRawMessage(
          fd, EncodeMessage(MessageType::kSnapshotEnd, EncodeSnapshotFragment(0, json), 0, end_version), {})
          .ok());
}

TEST(ProtocolVersions, ReceiverChecksRemotePodsAndPoliciesAgainstTheVersion) {
  SocketPair sp;
  const std::string json =
      R"({"generation": 30, "remotePods": [{"namespace": "a", "name": "b", "node": "n", "ips": ["198.18.2.1"]},
                                          {"namespace": "a", "name": "c", "node": "n", "ips": ["198.18.2.2"]}]})";
  // Version 1 has no remote pods: rejected, but the stream stays in step.
  SendJsonSnapshot(sp.agent.get(), 30, json, 1, 1);
  auto got = ReceiveSnapshot(sp.proxy.get());
  EXPECT_EQ(Msg(got.status()),
            "generation 30 rejected: remote pods in protocol version 1; they need version 2");
  EXPECT_EQ(RejectedGeneration(got.status()), 30u);

  // Bounded.
  SendJsonSnapshot(sp.agent.get(), 30, json, 2, 2);
  ReceiveOptions small;
  small.max_remote_pods = 1;
  got = ReceiveSnapshot(sp.proxy.get(), small);
  EXPECT_EQ(Msg(got.status()), "generation 30 rejected: snapshot has 2 remote pods, the limit is 1");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RejectedGeneration(got.status()), 30u);

  SendJsonSnapshot(sp.agent.get(), 30, json, 2, 2);
  got = ReceiveSnapshot(sp.proxy.get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->snapshot.remote_pods.size(), 2u);

  // Policies need version 3.
  const std::string policies =
      R"({"generation": 32, "authorizationPolicies": [{"namespace": "a", "name": "p", "action": "DENY"}]})";
  SendJsonSnapshot(sp.agent.get(), 32, policies, 2, 2);
  got = ReceiveSnapshot(sp.proxy.get());
  EXPECT_EQ(Msg(got.status()),
            "generation 32 rejected: AuthorizationPolicies in protocol version 2; they need version 3");
  EXPECT_EQ(RejectedGeneration(got.status()), 32u);
  SendJsonSnapshot(sp.agent.get(), 32, policies, 3, 3);
  got = ReceiveSnapshot(sp.proxy.get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->snapshot.authorization_policies.size(), 1u);

  // One snapshot, one version.
  SendJsonSnapshot(sp.agent.get(), 31, R"({"generation": 31})", 2, 1);
  EXPECT_EQ(Msg(ReceiveSnapshot(sp.proxy.get()).status()),
            "SNAPSHOT_END in protocol version 1 inside a snapshot begun in version 2");
}

class ProtocolUnixPath : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ringmesh_proto_testXXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/agent.sock";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
  std::string path_;
};

TEST_F(ProtocolUnixPath, ListenAcceptConnect) {
  auto server = AgentServer::Listen(path_);
  ASSERT_TRUE(server.ok()) << server.status();
  struct stat st {};
  ASSERT_EQ(lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(fcntl(server->fd(), F_GETFL) & O_NONBLOCK);

  absl::StatusOr<UniqueFd> proxy;
  std::thread t([&] { proxy = ConnectToAgent(path_); });
  auto conn = server->Accept();
  t.join();
  ASSERT_TRUE(conn.ok()) << conn.status();
  ASSERT_TRUE(proxy.ok()) << proxy.status();

  Snapshot s = RichSnapshot();
  s.generation = 3;
  int netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  ASSERT_TRUE(SendSnapshot(conn->get(), s, {netns, -1}).ok());
  close(netns);
  auto got = ReceiveSnapshot(proxy->get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->snapshot, s);
  EXPECT_TRUE(got->netns_fds[0].valid());
  EXPECT_FALSE(got->netns_fds[1].valid());
  ASSERT_TRUE(SendAck(proxy->get(), 3, "").ok());
  EXPECT_EQ(*ReceiveAck(conn->get(), 1000), 3u);

  // The proxy goes away: the agent's next send or receive says so.
  proxy->Reset();
  EXPECT_EQ(ReceiveAck(conn->get(), 1000).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(SendSnapshot(conn->get(), s, {-1, -1}).code(), absl::StatusCode::kUnavailable);
}

TEST_F(ProtocolUnixPath, PeersLearnTheNegotiatedVersion) {
  auto server = AgentServer::Listen(path_);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<PeerConnection> proxy;
  std::thread t([&] { proxy = ConnectToAgentPeer(path_); });
  auto agent_side = server->AcceptPeer();
  t.join();
  ASSERT_TRUE(agent_side.ok()) << agent_side.status();
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  EXPECT_EQ(agent_side->version, kMaxProtocolVersion);
  EXPECT_EQ(proxy->version, kMaxProtocolVersion);

  // A proxy of the previous release (version 1 only).
  absl::StatusOr<uint16_t> old_side;
  std::thread t2([&] {
    UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path_.c_str());
    ASSERT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    old_side = Handshake(fd.get(), Hello{Role::kProxy, 1, 1, "0.1.0"});
  });
  agent_side = server->AcceptPeer();
  t2.join();
  ASSERT_TRUE(agent_side.ok()) << agent_side.status();
  EXPECT_EQ(agent_side->version, 1);
  EXPECT_EQ(*old_side, 1);
}

TEST_F(ProtocolUnixPath, StaleSocketIsReplacedLiveOneIsNot) {
  {
    auto first = AgentServer::Listen(path_);
    ASSERT_TRUE(first.ok()) << first.status();
    auto second = AgentServer::Listen(path_);
    EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
    EXPECT_EQ(Msg(second.status()), "another agent is listening on " + path_);
  }
  // The first server is gone but its socket file stays: stale.
  auto again = AgentServer::Listen(path_);
  ASSERT_TRUE(again.ok()) << again.status();
}

TEST_F(ProtocolUnixPath, RefusesToRemoveANonSocket) {
  close(open(path_.c_str(), O_CREAT | O_WRONLY, 0600));
  EXPECT_EQ(Msg(AgentServer::Listen(path_).status()), path_ + " exists and is not a socket; not removing it");
  EXPECT_EQ(ConnectToAgent(dir_ + "/nobody.sock").status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ProtocolUnixPath, AcceptReportsAFailedHandshakeAndStaysUsable) {
  auto server = AgentServer::Listen(path_);
  ASSERT_TRUE(server.ok()) << server.status();
  std::thread t([&] {
    UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path_.c_str());
    ASSERT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    auto st = Handshake(fd.get(), Hello{Role::kProxy, 7, 9, "9.0.0"});
    EXPECT_THAT(Msg(st.status()), HasSubstr("upgrade the agent"));
  });
  auto conn = server->Accept();
  t.join();
  EXPECT_THAT(Msg(conn.status()), HasSubstr("proxy speaks 7..9 (release 9.0.0): upgrade the agent"));

  absl::StatusOr<UniqueFd> proxy;
  std::thread t2([&] { proxy = ConnectToAgent(path_); });
  conn = server->Accept();
  t2.join();
  EXPECT_TRUE(conn.ok()) << conn.status();
  EXPECT_TRUE(proxy.ok()) << proxy.status();
}

}  // namespace
}  // namespace ringmesh
