#include "userspace/agent/node_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "userspace/common/snapshot_json.h"

namespace ringmesh::agent {
namespace {

using ::testing::HasSubstr;

// Joins lines with '\n' so that the line numbers in expectations are simply
// the position in the list, starting at 1.
std::string Lines(std::initializer_list<std::string_view> lines) {
  std::string out;
  for (auto l : lines) absl::StrAppend(&out, absl::string_view(l.data(), l.size()), "\n");
  return out;
}

std::string ErrorOf(const std::string& yaml) {
  auto s = ParseNodeFile(yaml, "node.yaml");
  if (s.ok()) return "<parsed fine>";
  return std::string(s.status().message());
}

const std::string kExample = Lines({
    "outboundPort: 15001",                                               // 1
    "pods:",                                                             // 2
    "  - namespace: shop",                                               // 3
    "    name: web-0",                                                   // 4
    "    uid: 6f1c2a4e-5b7d-4e0a-9c55-0d6b1e2f3a40",                     // 5
    "    serviceAccount: web",                                           // 6
    "    netns: /run/netns/web-0",                                       // 7
    "    cgroup: /kubepods/burstable/pod6f1c2a4e",                       // 8
    "    ips: [198.18.1.2, \"2001:db8::1:2\"]",                          // 9
    "    labels:",                                                       // 10
    "      app: web",                                                    // 11
    "      app.kubernetes.io/version: \"1.4\"",                          // 12
    "    mode: enabled",                                                 // 13
    "    failMode: open",                                                // 14
    "    optOutPorts: [22, 9100]",                                       // 15
    "    optOutCidrs: [198.18.250.7/24, \"2001:db8:ff::/48\"]",          // 16
    "  - namespace: shop",                                               // 17
    "    name: cart-0",                                                  // 18
    "    netns: /run/netns/cart-0",                                      // 19
    "    ips: [198.18.1.3]",                                             // 20
    "    labels: {app: cart}",                                           // 21
    "    failMode: closed",                                              // 22
    "  - namespace: monitoring",                                         // 23
    "    name: node-exporter",                                           // 24
    "    ips: [198.18.1.4]",                                             // 25
    "    mode: disabled",                                                // 26
    "services:",                                                         // 27
    "  - namespace: shop",                                               // 28
    "    name: web",                                                     // 29
    "    vips: [198.19.0.10]",                                           // 30
    "    lb: p2c",                                                       // 31
    "    ports:",                                                        // 32
    "      - {name: http, port: 80, targetPort: 8080, protocol: http}",  // 33
    "    endpoints:",                                                    // 34
    "      - {ip: 198.18.1.2, pod: shop/web-0}",                         // 35
    "      - {ip: 198.18.2.7, ready: false}",                            // 36
    "  - namespace: shop",                                               // 37
    "    name: cart",                                                    // 38
    "    vips: [198.19.0.11]",                                           // 39
    "    lb: least_connections",                                         // 40
    "    ports:",                                                        // 41
    "      - {name: grpc, port: 9090, protocol: grpc}",                  // 42
    "    endpoints:",                                                    // 43
    "      - {ip: 198.18.1.3, pod: shop/cart-0}",                        // 44
});

TEST(NodeFile, ParsesCompleteExample) {
  auto s = ParseNodeFile(kExample, "node.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->generation, 0u);
  EXPECT_EQ(s->outbound_port, 15001);
  ASSERT_EQ(s->pods.size(), 3u);
  const Pod& web = s->pods[0];
  EXPECT_EQ(web.ns, "shop");
  EXPECT_EQ(web.name, "web-0");
  EXPECT_EQ(web.uid, "6f1c2a4e-5b7d-4e0a-9c55-0d6b1e2f3a40");
  EXPECT_EQ(web.service_account, "web");
  EXPECT_EQ(web.netns_path, "/run/netns/web-0");
  EXPECT_EQ(web.cgroup_path, "/kubepods/burstable/pod6f1c2a4e");
  ASSERT_EQ(web.ips.size(), 2u);
  EXPECT_EQ(web.ips[0].ToString(), "198.18.1.2");
  EXPECT_EQ(web.ips[1].ToString(), "2001:db8::1:2");
  EXPECT_EQ(web.labels.at("app"), "web");
  EXPECT_EQ(web.labels.at("app.kubernetes.io/version"), "1.4");
  EXPECT_TRUE(web.enrolled);
  EXPECT_EQ(web.fail_mode, FailMode::kOpen);
  EXPECT_EQ(web.opt_out_ports, (std::vector<uint16_t>{22, 9100}));
  ASSERT_EQ(web.opt_out_cidrs.size(), 2u);
  EXPECT_EQ(web.opt_out_cidrs[0].ToString(), "198.18.250.0/24");  // host bits cleared
  EXPECT_EQ(web.opt_out_cidrs[1].ToString(), "2001:db8:ff::/48");
  EXPECT_EQ(web.pod_id, 0u);

  const Pod& cart = s->pods[1];
  EXPECT_EQ(cart.service_account, "default");
  EXPECT_EQ(cart.fail_mode, FailMode::kClosed);
  EXPECT_TRUE(cart.enrolled);
  const Pod& exporter = s->pods[2];
  EXPECT_FALSE(exporter.enrolled);
  EXPECT_EQ(exporter.netns_path, "");

  ASSERT_EQ(s->services.size(), 2u);
  const Service& svc = s->services[0];
  EXPECT_EQ(svc.ns, "shop");
  EXPECT_EQ(svc.name, "web");
  EXPECT_EQ(svc.lb, LbPolicy::kP2cPeakEwma);
  ASSERT_EQ(svc.vips.size(), 1u);
  EXPECT_EQ(svc.vips[0].ToString(), "198.19.0.10");
  ASSERT_EQ(svc.ports.size(), 1u);
  EXPECT_EQ(svc.ports[0], (ServicePort{"http", 80, 8080, AppProtocol::kHttp}));
  ASSERT_EQ(svc.endpoints.size(), 2u);
  EXPECT_EQ(svc.endpoints[0].pod, "shop/web-0");
  EXPECT_TRUE(svc.endpoints[0].ready);
  EXPECT_FALSE(svc.endpoints[1].ready);
  EXPECT_EQ(s->services[1].lb, LbPolicy::kLeastConnections);
  EXPECT_EQ(s->services[1].ports[0], (ServicePort{"grpc", 9090, 9090, AppProtocol::kGrpc}));
}

TEST(NodeFile, RoundTripsThroughSnapshotJson) {
  auto s = ParseNodeFile(kExample, "node.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  s->generation = 42;
  s->pods[0].pod_id = 7;
  auto json = EncodeSnapshotJson(*s);
  ASSERT_TRUE(json.ok()) << json.status();
  auto back = DecodeSnapshotJson(*json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *s);
}

// docs/node-file.md promises its example is complete and valid.
TEST(NodeFile, DocumentedExampleParses) {
  std::ifstream doc(RINGMESH_SOURCE_DIR "/docs/node-file.md");
  ASSERT_TRUE(doc) << "docs/node-file.md not found";
  std::string line, yaml;
  bool in_block = false;
  while (std::getline(doc, line)) {
    if (!in_block && line == "```yaml") {
      in_block = true;
    } else if (in_block && line == "```") {
      break;
    } else if (in_block) {
      absl::StrAppend(&yaml, line, "\n");
    }
  }
  auto s = ParseNodeFile(yaml, "docs/node-file.md");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->pods.size(), 3u);
  EXPECT_EQ(s->remote_pods.size(), 2u);
  EXPECT_EQ(s->services.size(), 2u);
}

TEST(NodeFile, EmptyFileIsANodeWithoutPods) {
  for (const char* text : {"", "# nothing here\n", "---\n", "~\n"}) {
    auto s = ParseNodeFile(text, "node.yaml");
    ASSERT_TRUE(s.ok()) << text << ": " << s.status();
    EXPECT_TRUE(s->pods.empty());
    EXPECT_EQ(s->outbound_port, kDefaultOutboundPort);
  }
  auto s = ParseNodeFile("outboundPort: 15006\npods: []\nservices: []\n", "node.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->outbound_port, 15006);
}

// Pods of other nodes: `node:` and no netns/cgroup. They are kept apart from
// the local pods, in file order, so no local-pod code path sees them.
const std::string kWithRemote = Lines({
    "pods:",                                                                             // 1
    "  - namespace: shop",                                                               // 2
    "    name: web-0",                                                                   // 3
    "    netns: /run/netns/web-0",                                                       // 4
    "    ips: [198.18.1.2]",                                                             // 5
    "  - namespace: shop",                                                               // 6
    "    name: api-7d9f8b6c5d-x2x4k",                                                    // 7
    "    node: node-b",                                                                  // 8
    "    serviceAccount: api",                                                           // 9
    "    ips: [198.18.2.7, \"2001:db8::2:7\"]",                                          // 10
    "    labels: {app: api}",                                                            // 11
    "  - namespace: legacy",                                                             // 12
    "    name: batch-0",                                                                 // 13
    "    node: node-c.example.com",                                                      // 14
    "    ips: [198.18.3.9]",                                                             // 15
    "    mode: disabled",                                                                // 16
    "  - {namespace: shop, name: cart-0, netns: /run/netns/cart-0, ips: [198.18.1.3]}",  // 17
    "services:",                                                                         // 18
    "  - namespace: shop",                                                               // 19
    "    name: api",                                                                     // 20
    "    ports: [{port: 80}]",                                                           // 21
    "    endpoints: [{ip: 198.18.2.7, pod: shop/api-7d9f8b6c5d-x2x4k}]",                 // 22
});

TEST(NodeFileRemotePods, ParsedApartFromLocalPods) {
  auto s = ParseNodeFile(kWithRemote, "node.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->pods.size(), 2u);
  EXPECT_EQ(s->pods[0].name, "web-0");
  EXPECT_EQ(s->pods[1].name, "cart-0");
  ASSERT_EQ(s->remote_pods.size(), 2u);
  const RemotePod& api = s->remote_pods[0];
  EXPECT_EQ(api.ns, "shop");
  EXPECT_EQ(api.name, "api-7d9f8b6c5d-x2x4k");
  EXPECT_EQ(api.node, "node-b");
  EXPECT_EQ(api.service_account, "api");
  ASSERT_EQ(api.ips.size(), 2u);
  EXPECT_EQ(api.ips[0].ToString(), "198.18.2.7");
  EXPECT_EQ(api.ips[1].ToString(), "2001:db8::2:7");
  EXPECT_TRUE(api.enrolled);
  const RemotePod& batch = s->remote_pods[1];
  EXPECT_EQ(batch.service_account, "default");
  EXPECT_EQ(batch.node, "node-c.example.com");
  EXPECT_FALSE(batch.enrolled);
  // Exact sizes: the remote pods are counted before they are allocated.
  EXPECT_EQ(s->remote_pods.capacity(), 2u);
  // Nothing checks a netns for them (there is none on this node).
  auto only_remote =
      ParseNodeFile("pods: [{namespace: a, name: b, node: c, ips: [198.18.9.1]}]\n", "node.yaml");
  ASSERT_TRUE(only_remote.ok()) << only_remote.status();
  EXPECT_TRUE(CheckNodeFileResources(*only_remote).ok());
}

TEST(NodeFileRemotePods, RoundTripThroughSnapshotJson) {
  auto s = ParseNodeFile(kWithRemote, "node.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  auto json = EncodeSnapshotJson(*s);
  ASSERT_TRUE(json.ok()) << json.status();
  auto back = DecodeSnapshotJson(*json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *s);
}

TEST(NodeFileRemotePods, LocalOnlyFieldsAreErrors) {
  const std::string head =
      "pods:\n  - namespace: shop\n    name: api-0\n    node: node-b\n    ips: [198.18.2.7]\n";
  EXPECT_EQ(
      ErrorOf(head + "    netns: /run/netns/api-0\n"),
      "node.yaml:6: pods[0].netns: only pods of this node have it; this pod has `node:` (a pod of another "
      "node)");
  EXPECT_EQ(
      ErrorOf(head + "    cgroup: /kubepods/x\n"),
      "node.yaml:6: pods[0].cgroup: only pods of this node have it; this pod has `node:` (a pod of another "
      "node)");
  EXPECT_EQ(ErrorOf(head + "    failMode: closed\n"),
            "node.yaml:6: pods[0].failMode: only pods of this node have it; this pod has `node:` (a pod of "
            "another node)");
  EXPECT_EQ(
      ErrorOf(head + "    optOutPorts: [22]\n"),
      "node.yaml:6: pods[0].optOutPorts: only pods of this node have it; this pod has `node:` (a pod of "
      "another node)");
  EXPECT_EQ(
      ErrorOf(head + "    uid: abc\n"),
      "node.yaml:6: pods[0].uid: only pods of this node have it; this pod has `node:` (a pod of another "
      "node)");
  // Unknown fields are still unknown fields.
  EXPECT_EQ(ErrorOf(head + "    nodee: x\n"), "node.yaml:6: pods[0]: unknown field \"nodee\"");
  // A local pod still needs its netns.
  EXPECT_EQ(ErrorOf("pods:\n  - {namespace: shop, name: web-0, ips: [198.18.1.2]}\n"),
            "node.yaml:2: pods[0].netns: required field missing");
}

TEST(NodeFileRemotePods, BadNames) {
  auto remote = [](std::string_view fields) {
    return absl::StrCat("pods:\n  - {", absl::string_view(fields.data(), fields.size()), "}\n");
  };
  EXPECT_EQ(
      ErrorOf(remote("namespace: shop, name: a, node: Node_B, ips: [198.18.2.7]")),
      "node.yaml:2: pods[0].node: \"Node_B\" is not a valid name (lowercase letters, digits, '-' and '.', "
      "at most 253)");
  EXPECT_EQ(ErrorOf(remote("namespace: shop, name: a, node: , ips: [198.18.2.7]")),
            "node.yaml:2: pods[0].node: required field missing");
  EXPECT_EQ(ErrorOf(remote("namespace: shop, name: a, node: [b], ips: [198.18.2.7]")),
            "node.yaml:2: pods[0].node: expected a string, got a list");
  EXPECT_EQ(
      ErrorOf(remote("namespace: Shop, name: a, node: b, ips: [198.18.2.7]")),
      "node.yaml:2: pods[0].namespace: \"Shop\" is not a valid name (lowercase letters, digits and '-', "
      "at most 63)");
  EXPECT_EQ(ErrorOf(remote("namespace: shop, name: a, node: b, serviceAccount: \"sa/x\", ips: [198.18.2.7]")),
            "node.yaml:2: pods[0].serviceAccount: \"sa/x\" is not a valid name (lowercase letters, digits, "
            "'-' and '.', at most 253)");
  EXPECT_EQ(ErrorOf(remote("namespace: shop, name: a, node: b")),
            "node.yaml:2: pods[0].ips: required field missing");
  EXPECT_EQ(ErrorOf(remote("namespace: shop, name: a, node: b, ips: [198.18.2.7], mode: on")),
            "node.yaml:2: pods[0].mode: unknown value \"on\" (expected one of enabled, disabled)");
  EXPECT_EQ(ErrorOf(remote("namespace: shop, name: a, node: b, ips: [198.18.2.7], labels: {app: \"-x\"}")),
            "node.yaml:2: pods[0].labels.app: \"-x\" is not a valid label value");
}

TEST(NodeFileRemotePods, UniqueAcrossLocalAndRemote) {
  const std::string local = "pods:\n  - {namespace: shop, name: web-0, netns: /n/w, ips: [198.18.1.2]}\n";
  EXPECT_EQ(ErrorOf(local + "  - {namespace: shop, name: web-1, node: b, ips: [198.18.1.2]}\n"),
            "node.yaml:3: duplicate IP 198.18.1.2 (pods[0] and pods[1])");
  EXPECT_EQ(ErrorOf(local + "  - {namespace: shop, name: web-0, node: b, ips: [198.18.2.2]}\n"),
            "node.yaml:3: duplicate pod shop/web-0 (pods[0] and pods[1])");
  // A VIP that is a remote pod's IP names the pod by its place in the file.
  EXPECT_EQ(ErrorOf(local + "  - {namespace: shop, name: api-0, node: b, ips: [198.18.2.2]}\n" +
                    "services:\n  - {namespace: shop, name: s, vips: [198.18.2.2], ports: [{port: 80}]}\n"),
            "node.yaml:5: services[0].vips[0]: VIP 198.18.2.2 is also the IP of pods[1] (shop/api-0)");
}

TEST(NodeFileRemotePods, CountedApartAndBounded) {
  std::string yaml = "pods:\n";
  for (int i = 0; i < 3; ++i)
    absl::StrAppend(&yaml, "- {namespace: d, name: r", i, ", node: b, ips: [10.9.0.", i, "]}\n");
  NodeFileOptions options;
  options.max_remote_pods = 2;
  auto s = ParseNodeFile(yaml, "node.yaml", options);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "node.yaml:4: pods[2]: more than 2 pods of other nodes (with `node:`)");
  options.max_remote_pods = 3;
  s = ParseNodeFile(yaml, "node.yaml", options);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->remote_pods.size(), 3u);
  EXPECT_TRUE(s->pods.empty());

  // kMaxPods counts pods of this node only: a full node plus remote pods is fine.
  std::string full = "pods:\n";
  for (size_t i = 0; i < kMaxPods; ++i) {
    absl::StrAppend(&full, "- {namespace: d, name: p", i, ", netns: /n/", i, ", ips: [10.", i / 256, ".",
                    i % 256, ".1]}\n");
  }
  absl::StrAppend(&full, "- {namespace: d, name: remote, node: b, ips: [10.200.0.1]}\n");
  s = ParseNodeFile(full, "node.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->pods.size(), kMaxPods);
  EXPECT_EQ(s->remote_pods.size(), 1u);
}

#if defined(__SANITIZE_ADDRESS__)
#define RINGMESH_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RINGMESH_UNDER_ASAN 1
#endif
#endif

// The agent's memory per remote pod, measured: the heap a parsed snapshot
// holds per pod of another node (its RemotePod with typical names, one IPv4
// address). docs/node-file.md quotes the number; the budget is 300.
TEST(NodeFileRemotePods, MemoryPerRemotePod) {
#ifdef RINGMESH_UNDER_ASAN
  GTEST_SKIP() << "ASan replaces malloc; mallinfo2 does not see its heap";
#else
  constexpr size_t kPods = 20000;
  std::string yaml = "pods:\n";
  for (size_t i = 0; i < kPods; ++i) {
    // Typical Kubernetes names: a Deployment's pod (20 characters), an EKS node.
    absl::StrAppend(&yaml, "- {namespace: shop, name: api-7d9f8b6c5d-", absl::Dec(i, absl::kZeroPad5),
                    ", serviceAccount: api, node: ip-10-0-", i % 200, "-", i % 250,
                    ".ec2.internal, ips: [10.", 16 + i / 65536, ".", (i / 256) % 256, ".", i % 256, "]}\n");
  }
  // In use from the heap (uordblks) plus mmap()ed blocks (hblkhd): the
  // vector of all remote pods is one allocation large enough to be mmap()ed.
  auto in_use = [] {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
  };
  const size_t before = in_use();
  auto s = ParseNodeFile(yaml, "node.yaml");
  const size_t after = in_use();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->remote_pods.size(), kPods);
  const double per_pod = static_cast<double>(after - before) / kPods;
  RecordProperty("bytes_per_remote_pod", static_cast<int>(per_pod));
  std::printf("agent heap per remote pod: %.0f bytes (sizeof(RemotePod) = %zu)\n", per_pod,
              sizeof(RemotePod));
  EXPECT_LE(per_pod, 300.0);
#endif
}

TEST(NodeFileErrors, BadIp) {
  EXPECT_EQ(ErrorOf(Lines({
                "pods:",                    // 1
                "  - namespace: default",   // 2
                "    name: a",              // 3
                "    netns: /run/netns/a",  // 4
                "    ips: [198.18.0.1]",    // 5
                "  - namespace: default",   // 6
                "    name: b",              // 7
                "    netns: /run/netns/b",  // 8
                "    ips:",                 // 9
                "      - 198.18.0.300",     // 10
            })),
            "node.yaml:10: pods[1].ips[0]: \"198.18.0.300\" is not an IP address");
}

TEST(NodeFileErrors, UnknownField) {
  EXPECT_EQ(ErrorOf(Lines({
                "outboundPort: 15001",       // 1
                "pods:",                     // 2
                "  - namespace: default",    // 3
                "    name: a",               // 4
                "    netnss: /run/netns/a",  // 5
                "    ips: [198.18.0.1]",     // 6
            })),
            "node.yaml:5: pods[0]: unknown field \"netnss\"");
  EXPECT_EQ(ErrorOf(Lines({"outboundport: 1"})), "node.yaml:1: unknown field \"outboundport\"");
  EXPECT_EQ(ErrorOf(Lines({
                "services:",                 // 1
                "  - namespace: default",    // 2
                "    name: web",             // 3
                "    ports:",                // 4
                "      - port: 80",          // 5
                "        targetport: 8080",  // 6
            })),
            "node.yaml:6: services[0].ports[0]: unknown field \"targetport\"");
  EXPECT_EQ(ErrorOf(Lines({
                "services:",                            // 1
                "  - namespace: default",               // 2
                "    name: web",                        // 3
                "    ports: [{port: 80}]",              // 4
                "    endpoints:",                       // 5
                "      - {ip: 198.18.0.9, weight: 3}",  // 6
            })),
            "node.yaml:6: services[0].endpoints[0]: unknown field \"weight\"");
}

TEST(NodeFileErrors, DuplicateIpAcrossPods) {
  EXPECT_EQ(ErrorOf(Lines({
                "pods:",                    // 1
                "  - namespace: default",   // 2
                "    name: a",              // 3
                "    netns: /run/netns/a",  // 4
                "    ips: [198.18.1.2]",    // 5
                "  - namespace: default",   // 6
                "    name: b",              // 7
                "    netns: /run/netns/b",  // 8
                "    ips: [198.18.1.3]",    // 9
                "  - namespace: default",   // 10
                "    name: c",              // 11
                "    netns: /run/netns/c",  // 12
                "    ips:",                 // 13
                "      - 198.18.1.9",       // 14
                "      - 198.18.1.2",       // 15
            })),
            "node.yaml:15: duplicate IP 198.18.1.2 (pods[0] and pods[2])");
  EXPECT_EQ(ErrorOf(Lines({
                "pods:",                              // 1
                "  - namespace: default",             // 2
                "    name: a",                        // 3
                "    netns: /run/netns/a",            // 4
                "    ips: [198.18.1.2, 198.18.1.2]",  // 5
            })),
            "node.yaml:5: pods[0].ips[1]: duplicate IP 198.18.1.2");
}

TEST(NodeFileErrors, RequiredFieldMissing) {
  EXPECT_EQ(ErrorOf(Lines({
                "outboundPort: 15001",     // 1
                "pods:",                   // 2
                "  - namespace: default",  // 3
                "    name: a",             // 4
                "    ips: [198.18.0.1]",   // 5
            })),
            "node.yaml:3: pods[0].netns: required field missing");
  EXPECT_EQ(ErrorOf(Lines({"pods:", "  - {namespace: default, netns: /x, ips: [198.18.0.1]}"})),
            "node.yaml:2: pods[0].name: required field missing");
  EXPECT_EQ(ErrorOf(Lines({"pods:", "  - {namespace: default, name: a, netns: /x}"})),
            "node.yaml:2: pods[0].ips: required field missing");
  EXPECT_EQ(ErrorOf(Lines({"pods:", "  - {namespace: default, name: a, netns: /x, ips: []}"})),
            "node.yaml:2: pods[0].ips: at least one IP address is required");
  EXPECT_EQ(ErrorOf(Lines({"pods:", "  - {namespace: default, name: a, netns:, ips: [198.18.0.1]}"})),
            "node.yaml:2: pods[0].netns: required field missing");
  EXPECT_EQ(ErrorOf(Lines({"services:", "  - {namespace: default, name: web}"})),
            "node.yaml:2: services[0].ports: required field missing");
  EXPECT_EQ(ErrorOf(Lines({"services:", "  - {namespace: default, name: web, ports: [{name: http}]}"})),
            "node.yaml:2: services[0].ports[0].port: required field missing");
  EXPECT_EQ(ErrorOf(Lines({"services:", "  - namespace: default", "    name: web", "    ports: [{port: 80}]",
                           "    endpoints:", "      - {ready: true}"})),
            "node.yaml:6: services[0].endpoints[0].ip: required field missing");
  // A disabled pod is not redirected, so it needs no netns.
  EXPECT_EQ(ErrorOf(Lines({"pods:", "  - {namespace: default, name: a, mode: disabled, ips: [198.18.0.1]}"})),
            "<parsed fine>");
}

TEST(NodeFileErrors, InvalidYamlHasLineAndColumn) {
  EXPECT_THAT(ErrorOf(Lines({
                  "pods:",                   // 1
                  "  - namespace: default",  // 2
                  "    name: [a, b",         // 3
              })),
              HasSubstr("node.yaml:4:1: invalid YAML: "));
  EXPECT_THAT(ErrorOf("pods: {a: 1\n"), HasSubstr("node.yaml:2:1: invalid YAML: "));
  EXPECT_EQ(ErrorOf(Lines({"pods:", "  - name: a", "   bad: indentation"})),
            "node.yaml:3:4: invalid YAML: end of sequence not found");
}

TEST(NodeFileErrors, YamlFeaturesWeRefuse) {
  EXPECT_EQ(ErrorOf(Lines({"pods: &p []", "services: *p"})),
            "node.yaml:2:11: YAML aliases (*name) are not supported");
  EXPECT_EQ(ErrorOf(Lines({"pods: []", "---", "pods: []"})),
            "node.yaml:2:1: only one YAML document is allowed");
  EXPECT_EQ(ErrorOf(Lines({"pods: []", "pods: []"})),
            "node.yaml:2: duplicate field \"pods\" (first on line 1)");
  EXPECT_EQ(ErrorOf(Lines({"pods:", "  - namespace: default", "    namespace: other"})),
            "node.yaml:3: pods[0]: duplicate field \"namespace\" (first on line 2)");
  EXPECT_EQ(ErrorOf(Lines({"? [a]", ": 1"})), "node.yaml:1: field names must be strings, got a list");
}

TEST(NodeFileErrors, WrongTypes) {
  EXPECT_EQ(ErrorOf("- a\n- b\n"), "node.yaml:1: expected a mapping, got a list");
  EXPECT_EQ(ErrorOf("pods: 5\n"), "node.yaml:1: pods: expected a list, got a scalar");
  EXPECT_EQ(ErrorOf(Lines({"pods:", "  - just-a-string"})),
            "node.yaml:2: pods[0]: expected a mapping, got a scalar");
  EXPECT_EQ(ErrorOf(Lines({"pods:", "  - {namespace: default, name: a, netns: /x, ips: 198.18.0.1}"})),
            "node.yaml:2: pods[0].ips: expected a list, got a scalar");
  EXPECT_EQ(ErrorOf(Lines({"pods:", "  - {namespace: default, name: [a], netns: /x, ips: [198.18.0.1]}"})),
            "node.yaml:2: pods[0].name: expected a string, got a list");
  EXPECT_EQ(
      ErrorOf(Lines({"pods:", "  - {namespace: default, name: a, netns: /x, ips: [1.2.3.4], labels: [a]}"})),
      "node.yaml:2: pods[0].labels: expected a mapping, got a list");
  EXPECT_EQ(ErrorOf(Lines({"services:", "  - namespace: default", "    name: web", "    ports: [{port: 80}]",
                           "    endpoints:", "      - {ip: 198.18.0.9, ready: yes}"})),
            "node.yaml:6: services[0].endpoints[0].ready: \"yes\" is not a boolean (true or false)");
}

TEST(NodeFileErrors, Ports) {
  EXPECT_EQ(ErrorOf("outboundPort: 70000\n"), "node.yaml:1: outboundPort: \"70000\" is not a port (1-65535)");
  EXPECT_EQ(ErrorOf("outboundPort: 0\n"), "node.yaml:1: outboundPort: \"0\" is not a port (1-65535)");
  EXPECT_EQ(ErrorOf("outboundPort: -1\n"), "node.yaml:1: outboundPort: \"-1\" is not a port (1-65535)");
  EXPECT_EQ(ErrorOf("outboundPort: \"15001\"\n"),
            "node.yaml:1: outboundPort: \"15001\" is not a port (1-65535)");
  EXPECT_EQ(ErrorOf("outboundPort: 0x50\n"), "node.yaml:1: outboundPort: \"0x50\" is not a port (1-65535)");
  EXPECT_EQ(ErrorOf(Lines({"services:", "  - namespace: default", "    name: web",
                           "    ports:", "      - {port: 80, targetPort: 65536}"})),
            "node.yaml:5: services[0].ports[0].targetPort: \"65536\" is not a port (1-65535)");
  EXPECT_EQ(ErrorOf(Lines({"services:", "  - namespace: default", "    name: web",
                           "    ports:", "      - {port: 80}", "      - {port: 80}"})),
            "node.yaml:6: services[0].ports[1]: duplicate port 80 (ports[0])");
  EXPECT_EQ(ErrorOf(Lines({"services:", "  - namespace: default", "    name: web", "    ports:",
                           "      - {name: http, port: 80}", "      - {name: http, port: 81}"})),
            "node.yaml:6: services[0].ports[1]: duplicate port name \"http\" (ports[0])");
  EXPECT_EQ(ErrorOf(Lines({"services:", "  - namespace: default", "    name: web", "    ports: []"})),
            "node.yaml:4: services[0].ports: at least one port is required");
}

TEST(NodeFileErrors, Enums) {
  std::string pod = "pods:\n  - {namespace: default, name: a, netns: /x, ips: [198.18.0.1], ";
  EXPECT_EQ(ErrorOf(pod + "mode: on}\n"),
            "node.yaml:2: pods[0].mode: unknown value \"on\" (expected one of enabled, disabled)");
  EXPECT_EQ(ErrorOf(pod + "failMode: shut}\n"),
            "node.yaml:2: pods[0].failMode: unknown value \"shut\" (expected one of open, closed)");
  std::string svc = "services:\n  - namespace: default\n    name: web\n";
  EXPECT_EQ(
      ErrorOf(svc + "    ports: [{port: 80}]\n    lb: ring_hash\n"),
      "node.yaml:5: services[0].lb: unknown value \"ring_hash\" (expected one of p2c, round_robin, random, "
      "least_connections)");
  EXPECT_EQ(
      ErrorOf(svc + "    ports: [{port: 80, protocol: udp}]\n"),
      "node.yaml:4: services[0].ports[0].protocol: unknown value \"udp\" (expected one of tcp, http, http2, "
      "grpc)");
}

TEST(NodeFileErrors, OptOutLists) {
  std::string head = "pods:\n  - namespace: default\n    name: a\n    netns: /x\n    ips: [198.18.0.1]\n";
  std::vector<std::string> ports;
  for (int i = 1; i <= 17; ++i) ports.push_back(std::to_string(i));
  EXPECT_EQ(ErrorOf(head + "    optOutPorts: [" + absl::StrJoin(ports, ", ") + "]\n"),
            "node.yaml:6: pods[0].optOutPorts: 17 entries, at most 16 allowed");
  ports.pop_back();
  EXPECT_EQ(ErrorOf(head + "    optOutPorts: [" + absl::StrJoin(ports, ", ") + "]\n"), "<parsed fine>");
  EXPECT_EQ(ErrorOf(head + "    optOutPorts: [22, 22]\n"),
            "node.yaml:6: pods[0].optOutPorts[1]: duplicate port 22");
  std::vector<std::string> cidrs;
  for (int i = 0; i < 65; ++i) cidrs.push_back(absl::StrCat("10.", i, ".0.0/16"));
  EXPECT_EQ(ErrorOf(head + "    optOutCidrs: [" + absl::StrJoin(cidrs, ", ") + "]\n"),
            "node.yaml:6: pods[0].optOutCidrs: 65 entries, at most 64 allowed");
  EXPECT_EQ(ErrorOf(head + "    optOutCidrs:\n      - 10.0.0.0/8\n      - 10.0.0.0/33\n"),
            "node.yaml:8: pods[0].optOutCidrs[1]: \"10.0.0.0/33\" is not a CIDR (address/prefix-length)");
}

TEST(NodeFileErrors, DuplicatesAcrossEntries) {
  std::string two_pods = Lines({
      "pods:",                                                                      // 1
      "  - {namespace: default, name: a, netns: /run/netns/a, ips: [198.18.0.1]}",  // 2
      "  - {namespace: default, name: b, netns: /run/netns/b, ips: [198.18.0.2]}",  // 3
  });
  EXPECT_EQ(ErrorOf(two_pods + "  - {namespace: default, name: a, netns: /run/netns/c, ips: [198.18.0.3]}\n"),
            "node.yaml:4: duplicate pod default/a (pods[0] and pods[2])");
  EXPECT_EQ(ErrorOf(two_pods + "  - {namespace: default, name: c, netns: /run/netns/b, ips: [198.18.0.3]}\n"),
            "node.yaml:4: duplicate netns /run/netns/b (pods[1] and pods[2])");
  std::string svcs =
      two_pods + Lines({
                     "services:",                                                                     // 4
                     "  - {namespace: default, name: web, vips: [198.19.0.1], ports: [{port: 80}]}",  // 5
                 });
  EXPECT_EQ(ErrorOf(svcs + "  - {namespace: default, name: web, ports: [{port: 81}]}\n"),
            "node.yaml:6: duplicate service default/web (services[0] and services[1])");
  EXPECT_EQ(ErrorOf(svcs + "  - {namespace: default, name: api, vips: [198.19.0.1], ports: [{port: 81}]}\n"),
            "node.yaml:6: duplicate VIP 198.19.0.1 (services[0] and services[1])");
  EXPECT_EQ(ErrorOf(svcs + "  - {namespace: default, name: api, vips: [198.18.0.2], ports: [{port: 81}]}\n"),
            "node.yaml:6: services[1].vips[0]: VIP 198.18.0.2 is also the IP of pods[1] (default/b)");
  EXPECT_EQ(ErrorOf(svcs + "  - namespace: default\n    name: api\n    ports: [{port: 81}]\n    endpoints:\n"
                           "      - {ip: 198.18.0.1}\n      - {ip: 198.18.0.1}\n"),
            "node.yaml:11: services[1].endpoints[1].ip: duplicate endpoint 198.18.0.1 (endpoints[0])");
}

TEST(NodeFileErrors, NamesAndText) {
  EXPECT_EQ(ErrorOf("pods:\n  - {namespace: Default, name: a, netns: /x, ips: [198.18.0.1]}\n"),
            "node.yaml:2: pods[0].namespace: \"Default\" is not a valid name (lowercase letters, digits and "
            "'-', at "
            "most 63)");
  EXPECT_EQ(ErrorOf("pods:\n  - {namespace: default, name: a_b, netns: /x, ips: [198.18.0.1]}\n"),
            "node.yaml:2: pods[0].name: \"a_b\" is not a valid name (lowercase letters, digits, '-' and '.', "
            "at most "
            "253)");
  EXPECT_EQ(ErrorOf("pods:\n  - {namespace: default, name: a, netns: run/a, ips: [198.18.0.1]}\n"),
            "node.yaml:2: pods[0].netns: \"run/a\" is not an absolute path");
  EXPECT_EQ(
      ErrorOf("pods:\n  - {namespace: default, name: a, netns: /x, ips: [198.18.0.1], uid: \"a\\x01b\"}\n"),
      "node.yaml:2: pods[0].uid: \"a\\x01\\x62\" contains control characters or invalid UTF-8");
  EXPECT_EQ(
      ErrorOf("pods:\n  - {namespace: default, name: a, netns: /x, ips: [198.18.0.1], uid: \"a\xff\"}\n"),
      "node.yaml:2: pods[0].uid: \"a\\xff\" contains control characters or invalid UTF-8");
  EXPECT_EQ(ErrorOf("pods:\n  - namespace: default\n    name: a\n    netns: /x\n    ips: [198.18.0.1]\n"
                    "    labels:\n      \"bad key!\": x\n"),
            "node.yaml:7: pods[0].labels: \"bad key!\" is not a valid label key");
  EXPECT_EQ(ErrorOf("pods:\n  - namespace: default\n    name: a\n    netns: /x\n    ips: [198.18.0.1]\n"
                    "    labels:\n      app: \"-web\"\n"),
            "node.yaml:7: pods[0].labels.app: \"-web\" is not a valid label value");
  EXPECT_EQ(ErrorOf("services:\n  - namespace: default\n    name: web\n    ports: [{port: 80}]\n"
                    "    endpoints: [{ip: 198.18.0.9, pod: web-0}]\n"),
            "node.yaml:5: services[0].endpoints[0].pod: \"web-0\" is not <namespace>/<name>");
}

TEST(NodeFileErrors, SizeLimits) {
  EXPECT_EQ(ParseNodeFile(std::string(kMaxNodeFileBytes + 1, '#'), "big.yaml").status().message(),
            absl::StrCat("big.yaml: ", kMaxNodeFileBytes + 1, " bytes, larger than the limit of ",
                         kMaxNodeFileBytes));

  std::string pods = "pods:\n";
  for (size_t i = 0; i <= kMaxPods; ++i) {
    absl::StrAppend(&pods, "- {namespace: d, name: p", i, ", netns: /n/", i, ", ips: [10.", i / 256, ".",
                    i % 256, ".1]}\n");
  }
  // Line 1 is "pods:", so pods[i] is on line i + 2.
  EXPECT_EQ(ErrorOf(pods), "node.yaml:4098: pods[4096]: more than 4096 pods of this node (without `node:`)");

  std::string eps = "services:\n- namespace: d\n  name: s\n  ports: [{port: 80}]\n  endpoints:\n";
  for (size_t i = 0; i <= kMaxEndpointsPerService; ++i) {
    absl::StrAppend(&eps, "  - {ip: 10.0.", i / 256, ".", i % 256, "}\n");
  }
  EXPECT_EQ(ErrorOf(eps), "node.yaml:6: services[0].endpoints: 1001 entries, at most 1000 allowed");

  std::string svcs = "services:\n";
  for (size_t i = 0; i <= kMaxServices; ++i)
    absl::StrAppend(&svcs, "- {namespace: d, name: s", i, ", ports: [{port: 80}]}\n");
  EXPECT_EQ(ErrorOf(svcs), "node.yaml:2: services: 10001 entries, at most 10000 allowed");
}

TEST(NodeFile, LoadsFromDisk) {
  char path[] = "/tmp/ringmesh_node_file_testXXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << kExample;
  }
  auto s = LoadNodeFile(path);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->pods.size(), 3u);
  {
    std::ofstream out(path);
    out << "pods: 1\n";
  }
  EXPECT_EQ(LoadNodeFile(path).status().message(),
            absl::StrCat(path, ":1: pods: expected a list, got a scalar"));
  unlink(path);
  auto missing = LoadNodeFile(path);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("cannot open"));
}

Snapshot OnePod(std::string netns, bool enrolled = true) {
  Snapshot s;
  s.pods.resize(3);
  s.pods[0].enrolled = false;  // skipped: disabled pods have no netns
  s.pods[1].netns_path = "/proc/self/ns/net";
  s.pods[2].netns_path = std::move(netns);
  s.pods[2].enrolled = enrolled;
  return s;
}

TEST(NodeFileResources, ChecksNetnsOfEnrolledPods) {
  EXPECT_TRUE(CheckNodeFileResources(OnePod("/proc/self/ns/net")).ok());
  EXPECT_TRUE(CheckNodeFileResources(OnePod("/run/netns/does-not-exist", /*enrolled=*/false)).ok());

  auto missing = CheckNodeFileResources(OnePod("/run/netns/does-not-exist"));
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), "pods[2].netns: /run/netns/does-not-exist does not exist");

  EXPECT_EQ(CheckNodeFileResources(OnePod("/proc/self/ns/mnt")).message(),
            "pods[2].netns: /proc/self/ns/mnt is a mount namespace, not a network namespace");
  EXPECT_EQ(CheckNodeFileResources(OnePod("/etc/hostname")).message(),
            "pods[2].netns: /etc/hostname is not a network namespace");
  EXPECT_EQ(CheckNodeFileResources(OnePod("/tmp")).message(),
            "pods[2].netns: /tmp is not a network namespace");
}

const std::string kPolicies = Lines({
    "authorizationPolicies:",                                        // 1
    "  - apiVersion: security.istio.io/v1",                          // 2
    "    kind: AuthorizationPolicy",                                 // 3
    "    metadata: {namespace: shop, name: allow-web}",              // 4
    "    spec:",                                                     // 5
    "      selector: {matchLabels: {app: cart}}",                    // 6
    "      rules:",                                                  // 7
    "        - from:",                                               // 8
    "            - source:",                                         // 9
    "                principals: [cluster.local/ns/shop/sa/web]",    // 10
    "                ipBlocks: [198.18.0.0/16, \"2001:db8::/32\"]",  // 11
    "          to:",                                                 // 12
    "            - operation: {ports: [\"9090\", 8080]}",            // 13
    "  - metadata: {namespace: istio-system, name: deny-all}",       // 14
    "    spec: {action: DENY, rules: [{}]}",                         // 15
});

TEST(NodeFilePolicies, ParsedLikeKubernetesObjects) {
  auto s = ParseNodeFile(kPolicies, "node.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->authorization_policies.size(), 2u);
  const AuthorizationPolicy& allow = s->authorization_policies[0];
  EXPECT_EQ(allow.ns, "shop");
  EXPECT_EQ(allow.name, "allow-web");
  EXPECT_EQ(allow.action, AuthzAction::kAllow);
  EXPECT_EQ(allow.match_labels.at("app"), "cart");
  ASSERT_EQ(allow.rules.size(), 1u);
  EXPECT_EQ(allow.rules[0].from.at(0).principals, std::vector<std::string>{"cluster.local/ns/shop/sa/web"});
  EXPECT_EQ(allow.rules[0].from.at(0).ip_blocks.size(), 2u);
  EXPECT_EQ(allow.rules[0].to.at(0).ports, (std::vector<uint16_t>{9090, 8080}));
  const AuthorizationPolicy& deny = s->authorization_policies[1];
  EXPECT_EQ(deny.action, AuthzAction::kDeny);
  ASSERT_EQ(deny.rules.size(), 1u);
  EXPECT_EQ(deny.rules[0], AuthzRule{});

  auto json = EncodeSnapshotJson(*s);
  ASSERT_TRUE(json.ok());
  auto back = DecodeSnapshotJson(*json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *s);
}

TEST(NodeFilePolicies, ErrorsNameFileLineAndField) {
  auto replace = [](std::string text, const std::string& from, const std::string& to) {
    size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return text.replace(at, from.size(), to);
  };
  EXPECT_EQ(
      ErrorOf(replace(kPolicies, "\"9090\"", "http")),
      "node.yaml:13: authorizationPolicies[0].spec.rules[0].to[0].operation.ports[0]: \"http\" is not a port "
      "number");
  EXPECT_EQ(
      ErrorOf(replace(kPolicies, "198.18.0.0/16", "198.18.0.0/66")),
      "node.yaml:11: authorizationPolicies[0].spec.rules[0].from[0].source.ipBlocks[0]: \"198.18.0.0/66\" is "
      "not an IP address or CIDR");
  EXPECT_EQ(
      ErrorOf(replace(kPolicies, "principals:", "principal:")),
      "node.yaml:10: authorizationPolicies[0].spec.rules[0].from[0].source: unknown field \"principal\"");
  EXPECT_EQ(ErrorOf(replace(kPolicies, "kind: AuthorizationPolicy", "kind: PeerAuthentication")),
            "node.yaml:3: authorizationPolicies[0].kind: must be AuthorizationPolicy");
  EXPECT_EQ(ErrorOf(kPolicies + "    status: {}\n"),
            "node.yaml:16: authorizationPolicies[1]: unknown field \"status\"");
  EXPECT_EQ(ErrorOf(replace(kPolicies, "action: DENY", "action: CUSTOM")),
            "node.yaml:14: authorizationPolicies[1]: CUSTOM policies and policies with targetRef(s) are "
            "enforced by "
            "waypoints, not by ringmesh");
  EXPECT_TRUE(ParseNodeFile(replace(kPolicies, "name: deny-all", "name: allow-web"), "node.yaml").ok())
      << "same name in another namespace";
  EXPECT_EQ(ErrorOf(replace(kPolicies, "namespace: istio-system, name: deny-all",
                            "namespace: shop, name: allow-web")),
            "node.yaml:14: duplicate authorization policy shop/allow-web (authorizationPolicies[0] and "
            "authorizationPolicies[1])");
  EXPECT_EQ(ErrorOf(replace(kPolicies, "          to:", "          from: []\n          to:")),
            "node.yaml:12: authorizationPolicies[0]: duplicate field \"from\"");
  EXPECT_EQ(ErrorOf(replace(kPolicies, "[cluster.local/ns/shop/sa/web]", "[\"a\\x01b\"]")),
            "node.yaml:10: authorizationPolicies[0]: \"a\\x01\\x62\" is not printable UTF-8");
  EXPECT_EQ(ErrorOf(Lines({"authorizationPolicies:", "  - spec: {}"})),
            "node.yaml:2: authorizationPolicies[0].metadata: required field missing");
  EXPECT_EQ(ErrorOf(Lines({"authorizationPolicies: {a: b}"})),
            "node.yaml:1: authorizationPolicies: expected a list, got a mapping");
}

TEST(NodeFilePolicies, CountIsBounded) {
  NodeFileOptions options;
  options.authz.max_policies = 1;
  auto s = ParseNodeFile(kPolicies, "node.yaml", options);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "node.yaml:2: authorizationPolicies: 2 entries, at most 1 allowed");
  options.authz.max_policies = 2;
  EXPECT_TRUE(ParseNodeFile(kPolicies, "node.yaml", options).ok());
}

}  // namespace
}  // namespace ringmesh::agent
