// KubernetesSource against the fake API server: sync, enrollment, services
// and endpoints, and every failure the source must ride out (410 Gone,
// dropped and stalled watches, a restarting or unreachable server, token
// rotation, malformed objects). The long soak runs are in
// kubernetes_source_soak_test.cc.
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "tests/agent/k8s/source_test_util.h"

namespace ringmesh::agent::k8s::testing {
namespace {

using std::chrono::milliseconds;

// One watch per kind: Service, EndpointSlice, Namespace, Pod (this node),
// Pod (cluster-wide, remote pods) and AuthorizationPolicy.
constexpr int kWatches = 6;

TEST_F(SourceTest, InitialSyncBuildsOneConsistentSnapshot) {
  SeedBasicWorld();
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return !s.services.empty(); }));
  EXPECT_EQ(snapshots_, 1) << "the first snapshot must already hold everything";
  EXPECT_EQ(source_->Health(), "synced");

  const Snapshot& s = *last_;
  EXPECT_EQ(s.generation, 0u);  // the agent assigns generations
  ASSERT_EQ(s.pods.size(), 1u) << "only this node's pods";
  const Pod& pod = s.pods[0];
  EXPECT_EQ(pod.ns, "shop");
  EXPECT_EQ(pod.name, "web-1");
  EXPECT_EQ(pod.uid, TestUid("web-1"));
  EXPECT_EQ(pod.service_account, "app");
  EXPECT_TRUE(pod.enrolled);
  EXPECT_EQ(pod.netns_path, "/run/netns/" + TestUid("web-1"));
  EXPECT_EQ(pod.cgroup_path, "/sys/fs/cgroup/kubepods/pod" + TestUid("web-1"));
  ASSERT_EQ(pod.ips.size(), 1u);
  EXPECT_EQ(pod.ips[0].ToString(), "10.244.1.5");
  EXPECT_EQ(pod.fail_mode, FailMode::kOpen);

  const Service* svc = FindService(s, "shop", "cart");
  ASSERT_NE(svc, nullptr);
  ASSERT_EQ(svc->vips.size(), 1u);
  EXPECT_EQ(svc->vips[0].ToString(), "10.96.0.20");
  ASSERT_EQ(svc->ports.size(), 1u);
  EXPECT_EQ(svc->ports[0].port, 80);
  EXPECT_EQ(svc->ports[0].target_port, 8080);
  EXPECT_EQ(svc->ports[0].protocol, AppProtocol::kHttp);  // port name "http"
  EXPECT_EQ(ReadyIps(svc), (std::set<std::string>{"10.244.1.7", "10.244.2.7"}));
  EXPECT_EQ(svc->endpoints[0].pod, "shop/cart-1");

  // Nothing changed: no new snapshot, however often the agent polls.
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(PollOnce());
  // Pods are watched with the node's field selector.
  bool saw_selector = false;
  for (const auto& r : api_.requests()) {
    saw_selector |=
        r.find("/api/v1/pods?") == 0 && r.find("fieldSelector=spec.nodeName%3Dnode-a") != std::string::npos;
  }
  EXPECT_TRUE(saw_selector);
}

TEST_F(SourceTest, NoSnapshotUntilEveryKindIsListed) {
  SeedBasicWorld();
  api_.set_event_delay(milliseconds(0));
  StartSource();
  // Whatever order the lists complete in, a snapshot only appears once all
  // four are in, and it then has both the pod and the service.
  ASSERT_TRUE(WaitFor([](const Snapshot&) { return true; }));
  EXPECT_NE(FindPod(*last_, "shop", "web-1"), nullptr);
  EXPECT_NE(FindService(*last_, "shop", "cart"), nullptr);
  EXPECT_TRUE(source_->synced());
}

TEST_F(SourceTest, EnrollmentByNamespaceLabelPodLabelOverrideAndDisabled) {
  api_.Upsert("namespaces", MakeNamespace("meshed", {{"ringmesh.io/mode", "enabled"}}));
  api_.Upsert("namespaces", MakeNamespace("plain"));
  api_.Upsert("pods", MakePod("meshed", "inherits", TestUid("u1"), "node-a", "10.0.0.1"));
  api_.Upsert("pods", MakePod("meshed", "opts-out", TestUid("u2"), "node-a", "10.0.0.2",
                              {{"ringmesh.io/mode", "disabled"}}));
  api_.Upsert("pods", MakePod("plain", "opts-in", TestUid("u3"), "node-a", "10.0.0.3",
                              {{"ringmesh.io/mode", "enabled"}}));
  api_.Upsert("pods", MakePod("plain", "plain", TestUid("u4"), "node-a", "10.0.0.4"));
  api_.Upsert("pods", MakePod("meshed", "typo", TestUid("u5"), "node-a", "10.0.0.5",
                              {{"ringmesh.io/mode", "enable"}}));
  LogCapture log;
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return s.pods.size() == 5; }));
  EXPECT_TRUE(Enrolled(*last_, "meshed", "inherits"));
  EXPECT_FALSE(Enrolled(*last_, "meshed", "opts-out"));
  EXPECT_TRUE(Enrolled(*last_, "plain", "opts-in"));
  EXPECT_FALSE(Enrolled(*last_, "plain", "plain"));
  EXPECT_TRUE(Enrolled(*last_, "meshed", "typo")) << "an unknown value leaves the decision to the namespace";
  EXPECT_TRUE(log.Contains("pod meshed/typo: ringmesh.io/mode: \"enable\""));
  // Unenrolled pods carry no netns: the agent must not touch them.
  EXPECT_TRUE(FindPod(*last_, "plain", "plain")->netns_path.empty());

  // While running: the namespace stops opting in, the plain pod opts in.
  api_.Upsert("namespaces", MakeNamespace("meshed"));
  api_.Upsert("pods", MakePod("plain", "plain", TestUid("u4"), "node-a", "10.0.0.4",
                              {{"ringmesh.io/mode", "enabled"}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    return !Enrolled(s, "meshed", "inherits") && Enrolled(s, "plain", "plain") &&
           Enrolled(s, "plain", "opts-in");
  }));
  EXPECT_FALSE(Enrolled(*last_, "meshed", "typo"));
  // And back.
  api_.Upsert("namespaces", MakeNamespace("meshed", {{"ringmesh.io/mode", "enabled"}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return Enrolled(s, "meshed", "inherits"); }));
  // A deleted pod leaves the snapshot.
  api_.Delete("pods", "meshed", "inherits");
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindPod(s, "meshed", "inherits") == nullptr; }));
}

TEST_F(SourceTest, OptOutAndFailModeAnnotations) {
  api_.Upsert("namespaces", MakeNamespace("ns", {{"ringmesh.io/mode", "enabled"}}));
  api_.Upsert("pods", MakePod("ns", "a", TestUid("ua"), "node-a", "10.0.0.1", {},
                              {{"ringmesh.io/opt-out-ports", "22, 9090,22"},
                               {"ringmesh.io/opt-out-cidrs", "10.0.0.0/8,fd00::/8"},
                               {"ringmesh.io/fail-mode", "closed"}}));
  api_.Upsert("pods", MakePod("ns", "bad", TestUid("ub"), "node-a", "10.0.0.2", {},
                              {{"ringmesh.io/opt-out-ports", "ssh,8080,70000"},
                               {"ringmesh.io/opt-out-cidrs", "10.0.0.0/33,192.168.0.0/16"},
                               {"ringmesh.io/fail-mode", "sometimes"}}));
  LogCapture log;
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return s.pods.size() == 2; }));
  const Pod* a = FindPod(*last_, "ns", "a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->opt_out_ports, (std::vector<uint16_t>{22, 9090}));
  ASSERT_EQ(a->opt_out_cidrs.size(), 2u);
  EXPECT_EQ(a->opt_out_cidrs[0].ToString(), "10.0.0.0/8");
  EXPECT_EQ(a->opt_out_cidrs[1].ToString(), "fd00::/8");
  EXPECT_EQ(a->fail_mode, FailMode::kClosed);

  const Pod* b = FindPod(*last_, "ns", "bad");
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->enrolled) << "bad annotation entries are skipped, the pod stays meshed";
  EXPECT_EQ(b->opt_out_ports, (std::vector<uint16_t>{8080}));
  ASSERT_EQ(b->opt_out_cidrs.size(), 1u);
  EXPECT_EQ(b->opt_out_cidrs[0].ToString(), "192.168.0.0/16");
  EXPECT_EQ(b->fail_mode, FailMode::kOpen);
  EXPECT_TRUE(log.Contains("pod ns/bad: ringmesh.io/opt-out-ports: \"ssh\" is not a port"));
  EXPECT_TRUE(log.Contains("\"70000\" is not a port"));
  EXPECT_TRUE(log.Contains("\"10.0.0.0/33\" is not a CIDR"));
  EXPECT_TRUE(log.Contains("\"sometimes\" is not open or closed"));

  // Annotations change while the pod runs.
  api_.Upsert("pods", MakePod("ns", "a", TestUid("ua"), "node-a", "10.0.0.1", {},
                              {{"ringmesh.io/opt-out-ports", "15"}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    const Pod* p = FindPod(s, "ns", "a");
    return p && p->opt_out_ports == std::vector<uint16_t>{15} && p->opt_out_cidrs.empty() &&
           p->fail_mode == FailMode::kOpen;
  }));
}

TEST_F(SourceTest, EndpointConditionsAndTerminatingFallback) {
  api_.Upsert("namespaces", MakeNamespace("ns"));
  api_.Upsert("services", MakeService("ns", "svc", "10.96.0.1", {{"tcp", 80, 8080}}));
  // Two slices; one endpoint appears in both (moving between slices).
  api_.Upsert("endpointslices", MakeEndpointSlice("ns", "svc-1", "svc", {{"tcp", 8080}},
                                                  {{.ip = "10.1.0.1"},
                                                   {.ip = "10.1.0.2", .ready = false},
                                                   {.ip = "10.1.0.3", .ready = nullptr}}));
  api_.Upsert("endpointslices",
              MakeEndpointSlice("ns", "svc-2", "svc", {{"tcp", 8080}}, {{.ip = "10.1.0.1", .ready = false}}));
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "ns", "svc") != nullptr; }));
  const Service* svc = FindService(*last_, "ns", "svc");
  EXPECT_EQ(svc->endpoints.size(), 3u) << "deduplicated by IP";
  // nil ready means ready; ready in any slice wins.
  EXPECT_EQ(ReadyIps(svc), (std::set<std::string>{"10.1.0.1", "10.1.0.3"}));

  // Rolling update of the last replicas: nothing ready, one still serving
  // while terminating -> it takes the traffic (kube-proxy's fallback).
  api_.Delete("endpointslices", "ns", "svc-2");
  api_.Upsert("endpointslices",
              MakeEndpointSlice("ns", "svc-1", "svc", {{"tcp", 8080}},
                                {{.ip = "10.1.0.1", .ready = false, .serving = true, .terminating = true},
                                 {.ip = "10.1.0.2", .ready = false, .serving = false, .terminating = true},
                                 {.ip = "10.1.0.3", .ready = false, .serving = true, .terminating = false}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    return ReadyIps(FindService(s, "ns", "svc")) == std::set<std::string>{"10.1.0.1"};
  }));
  // A new ready endpoint: the terminating one stops taking traffic.
  api_.Upsert("endpointslices",
              MakeEndpointSlice("ns", "svc-1", "svc", {{"tcp", 8080}},
                                {{.ip = "10.1.0.1", .ready = false, .serving = true, .terminating = true},
                                 {.ip = "10.1.0.4"}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    return ReadyIps(FindService(s, "ns", "svc")) == std::set<std::string>{"10.1.0.4"};
  }));
  // Slices of a Service that does not exist change nothing visible.
  int before = snapshots_;
  api_.Upsert("endpointslices",
              MakeEndpointSlice("ns", "ghost-1", "ghost", {{"tcp", 1}}, {{.ip = "10.9.9.9"}}));
  std::this_thread::sleep_for(milliseconds(200));
  for (int i = 0; i < 5; ++i) PollOnce();
  EXPECT_EQ(snapshots_, before);
}

TEST_F(SourceTest, NamedTargetPortResolvedThroughSlices) {
  api_.Upsert("namespaces", MakeNamespace("ns"));
  api_.Upsert("services",
              MakeService("ns", "grpc", "fd00::10", {{"grpc-api", 443, "api"}, {"metrics", 9090, 9091}}));
  StartSource();
  // No slice yet: the named port has nowhere to go, the numeric one does.
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "ns", "grpc") != nullptr; }));
  const Service* svc = FindService(*last_, "ns", "grpc");
  ASSERT_EQ(svc->ports.size(), 1u);
  EXPECT_EQ(svc->ports[0].port, 9090);
  EXPECT_EQ(svc->vips[0].ToString(), "fd00::10");
  api_.Upsert("endpointslices",
              MakeEndpointSlice("ns", "grpc-x", "grpc", {{"grpc-api", 7443}, {"metrics", 9091}},
                                {{.ip = "fd00::1:5"}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    const Service* g = FindService(s, "ns", "grpc");
    return g && g->ports.size() == 2;
  }));
  svc = FindService(*last_, "ns", "grpc");
  EXPECT_EQ(svc->ports[0].port, 443);
  EXPECT_EQ(svc->ports[0].target_port, 7443);
  EXPECT_EQ(svc->ports[0].protocol, AppProtocol::kGrpc);
  EXPECT_EQ(ReadyIps(svc), (std::set<std::string>{"fd00::1:5"}));
}

TEST_F(SourceTest, HeadlessAndServiceProxyNameServicesIgnored) {
  api_.Upsert("namespaces", MakeNamespace("ns"));
  api_.Upsert("services", MakeService("ns", "normal", "10.96.0.1", {{"p", 80, 80}}));
  api_.Upsert("services", MakeService("ns", "headless", "None", {{"p", 80, 80}}));
  api_.Upsert("services", MakeService("ns", "other-proxy", "10.96.0.2", {{"p", 80, 80}},
                                      {{"service.kubernetes.io/service-proxy-name", "foo"}}));
  Json external = MakeService("ns", "ext", "", {});
  external["spec"] = {{"type", "ExternalName"}, {"externalName", "example.com"}};
  api_.Upsert("services", external);
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "ns", "normal") != nullptr; }));
  EXPECT_EQ(last_->services.size(), 1u);
  // A Service that gains the label leaves; losing it brings it back.
  api_.Upsert("services", MakeService("ns", "normal", "10.96.0.1", {{"p", 80, 80}},
                                      {{"service.kubernetes.io/service-proxy-name", "foo"}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return s.services.empty(); }));
  api_.Upsert("services", MakeService("ns", "other-proxy", "10.96.0.2", {{"p", 80, 80}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "ns", "other-proxy") != nullptr; }));
}

TEST_F(SourceTest, MalformedObjectsAreLoggedAndSkipped) {
  SeedBasicWorld();
  // Malformed in the initial list.
  Json bad_svc = MakeService("shop", "broken", "10.96.0.30", {{"http", 80, 80}});
  bad_svc["spec"]["ports"][0]["port"] = "eighty";
  api_.Upsert("services", bad_svc);
  Json bad_pod = MakePod("shop", "no-uid", "", "node-a", "10.244.1.9");
  api_.Upsert("pods", bad_pod);
  LogCapture log;
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  EXPECT_EQ(FindService(*last_, "shop", "broken"), nullptr);
  EXPECT_EQ(FindPod(*last_, "shop", "no-uid"), nullptr);
  EXPECT_TRUE(
      log.Contains("skipping malformed Service shop/broken: spec.ports[0].port: expected a port number"));
  EXPECT_TRUE(log.Contains("skipping malformed Pod shop/no-uid: metadata.uid: missing"));

  // A bad update to a good object keeps the last good version.
  Json bad_update = MakeEndpointSlice("shop", "cart-abc", "cart", {{"http", 8080}}, {{.ip = "10.244.1.8"}});
  bad_update["endpoints"][0]["addresses"][0] = "not-an-ip";
  api_.Upsert("endpointslices", bad_update);
  // Garbage on the stream, objects of the wrong shape, unknown event types.
  api_.EmitRaw("services", "{this is not json");
  api_.EmitRaw("services", R"({"type":"ADDED","object":42})");
  api_.EmitRaw("services", R"({"type":"SURPRISE","object":{"metadata":{"name":"x"}}})");
  api_.EmitRaw("services", R"({"type":"ADDED","object":{"metadata":{"namespace":"shop"}}})");
  // Then a good event, which must still be applied.
  api_.Upsert("services", MakeService("shop", "after", "10.96.0.40", {{"http", 80, 80}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "after") != nullptr; }));
  EXPECT_EQ(ReadyIps(FindService(*last_, "shop", "cart")),
            (std::set<std::string>{"10.244.1.7", "10.244.2.7"}));
  EXPECT_TRUE(log.Contains("skipping malformed EndpointSlice shop/cart-abc: endpoints[0].addresses[0]"));
  EXPECT_TRUE(log.Contains("watch Service: skipping malformed event: {this is not json"));
  EXPECT_TRUE(log.Contains("skipping event of unknown type \"SURPRISE\""));
  EXPECT_TRUE(log.Contains("skipping Service ADDED event without metadata.name"));
  EXPECT_EQ(source_->Health(), "synced");

  // A relist with the object still malformed also keeps the last good one.
  api_.BumpVersion();
  api_.Compact();
  api_.KillWatches();
  ASSERT_TRUE(WaitUntil([&] { return api_.lists("endpointslices") >= 2; }));
  ASSERT_TRUE(WaitUntil([&] { return source_->Health() == "synced"; }));
  for (int i = 0; i < 10; ++i) PollOnce();
  EXPECT_EQ(ReadyIps(FindService(*last_, "shop", "cart")),
            (std::set<std::string>{"10.244.1.7", "10.244.2.7"}));
}

TEST_F(SourceTest, RelistAfterGoneErrorEvent) {
  SeedBasicWorld();
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  int lists = api_.lists("services");
  // Changes the watch will never deliver: compaction drops them, so only a
  // relist can show them (the deletion in particular).
  api_.Stop();
  api_.Delete("services", "shop", "cart");
  api_.Upsert("services", MakeService("shop", "new", "10.96.0.50", {{"http", 80, 80}}));
  api_.Compact();
  ASSERT_TRUE(api_.Start().ok());
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    return FindService(s, "shop", "cart") == nullptr && FindService(s, "shop", "new") != nullptr;
  }));
  EXPECT_GT(api_.lists("services"), lists);
  EXPECT_GE(source_->reflector_states()["Service"].relists_after_gone, 1u);

  // An ERROR 410 event on a live watch (the watch cache fell behind). Like
  // the API server, the fake only sends it to watches open at the time.
  ASSERT_TRUE(WaitUntil([&] { return api_.open_watches() == kWatches; }));
  lists = api_.lists("pods");
  api_.EmitError("pods", 410);
  ASSERT_TRUE(WaitUntil([&] { return api_.lists("pods") > lists; }));
  api_.Upsert("pods", MakePod("shop", "web-3", TestUid("web-3"), "node-a", "10.244.1.6"));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindPod(s, "shop", "web-3") != nullptr; }));
}

TEST_F(SourceTest, RelistAfterGoneHttpStatus) {
  SeedBasicWorld();
  api_.set_gone_as_http_status(true);
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  int lists = api_.lists("endpointslices");
  api_.Stop();
  api_.Upsert("endpointslices",
              MakeEndpointSlice("shop", "cart-abc", "cart", {{"http", 8080}}, {{.ip = "10.244.1.99"}}));
  api_.Compact();
  ASSERT_TRUE(api_.Start().ok());
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    return ReadyIps(FindService(s, "shop", "cart")) == std::set<std::string>{"10.244.1.99"};
  }));
  EXPECT_GT(api_.lists("endpointslices"), lists);
}

TEST_F(SourceTest, BookmarkKeepsTheWatchResumable) {
  SeedBasicWorld();
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  ASSERT_TRUE(WaitUntil([&] { return api_.open_watches() == kWatches; }));
  int lists = api_.lists("services");
  // Other resources moved the version on; the bookmark tells the source, so
  // its next watch starts after the compaction point and needs no relist.
  api_.BumpVersion(100);
  api_.EmitBookmark("services");
  ASSERT_TRUE(WaitUntil([&] {
    return source_->reflector_states()["Service"].resource_version == std::to_string(api_.resource_version());
  }));
  api_.Compact();
  int watches = api_.watches("services");  // before the kill: the re-watch may come at once
  api_.KillWatches();
  ASSERT_TRUE(WaitUntil([&] { return api_.watches("services") > watches && api_.open_watches() >= 1; }));
  api_.Upsert("services", MakeService("shop", "later", "10.96.0.60", {{"http", 80, 80}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "later") != nullptr; }));
  EXPECT_EQ(api_.lists("services"), lists) << "a bookmarked watch resumes without relisting";
}

TEST_F(SourceTest, ApiServerUnreachableAtStartIsRetried) {
  api_.Stop();
  SeedBasicWorld();
  StartSource();
  ASSERT_TRUE(WaitUntil([&] { return source_->Health().find("retry in") != std::string::npos; }));
  std::string health = source_->Health();
  EXPECT_EQ(health.rfind("connecting to " + api_.url() + ": list ", 0), 0u) << health;
  EXPECT_FALSE(source_->synced());
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(PollOnce());
  ASSERT_TRUE(api_.Start().ok());
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  EXPECT_EQ(source_->Health(), "synced");
}

TEST_F(SourceTest, ApiServerRestartResumesWatchesWithoutRelist) {
  SeedBasicWorld();
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  int lists = api_.lists("services");
  api_.Stop();
  ASSERT_TRUE(
      WaitUntil([&] { return source_->Health().find("serving the last state") != std::string::npos; }));
  api_.Upsert("services", MakeService("shop", "while-down", "10.96.0.70", {{"http", 80, 80}}));
  ASSERT_TRUE(api_.Start().ok());
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "while-down") != nullptr; }));
  EXPECT_EQ(api_.lists("services"), lists) << "history intact: the watch resumes from its resourceVersion";
  ASSERT_TRUE(WaitUntil([&] { return source_->Health() == "synced"; }));
}

TEST_F(SourceTest, DroppedAndSlowWatchesRecover) {
  SeedBasicWorld();
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  api_.set_event_delay(milliseconds(30));
  for (int i = 0; i < 5; ++i) {
    api_.Upsert("services", MakeService("shop", "s" + std::to_string(i), "10.96.1." + std::to_string(i + 1),
                                        {{"http", 80, 80}}));
    api_.KillWatches();
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return s.services.size() == 6; }));
}

TEST_F(SourceTest, TokenRotationIsPickedUp) {
  api_.RequireToken("token-1");
  SeedBasicWorld();
  auto opts = Options();
  opts.token_refresh = std::chrono::hours(1);  // only the 401 makes it re-read
  StartSource(opts);
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  EXPECT_EQ(api_.unauthorized(), 0);

  // The kubelet rotates the projected token; the server stops accepting the
  // old one and drops the connections made with it.
  WriteToken("token-2");
  api_.RequireToken("token-2");
  api_.KillWatches();
  api_.Upsert("services", MakeService("shop", "after-rotation", "10.96.0.80", {{"http", 80, 80}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "after-rotation") != nullptr; }));
  ASSERT_TRUE(WaitUntil([&] { return source_->Health() == "synced"; }));

  // Without any 401: the periodic re-read picks up a new token too.
  auto opts2 = Options();
  opts2.token_refresh = milliseconds(100);
  source_.reset();
  last_.reset();
  StartSource(opts2);
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "after-rotation") != nullptr; }));
  WriteToken("token-3");
  std::this_thread::sleep_for(milliseconds(300));
  int unauthorized = api_.unauthorized();
  api_.RequireToken("token-3");
  api_.KillWatches();
  api_.Upsert("services", MakeService("shop", "third", "10.96.0.81", {{"http", 80, 80}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "third") != nullptr; }));
  EXPECT_EQ(api_.unauthorized(), unauthorized);
}

TEST_F(SourceTest, UnauthorizedIsReportedInHealth) {
  api_.RequireToken("something-else");
  SeedBasicWorld();
  StartSource();
  ASSERT_TRUE(WaitUntil([&] { return source_->Health().find("HTTP 401") != std::string::npos; }));
  EXPECT_NE(source_->Health().find("re-reading token " + token_file_), std::string::npos)
      << source_->Health();
}

TEST_F(SourceTest, StalledWatchIsDetectedAndReplaced) {
  SeedBasicWorld();
  auto opts = Options();
  opts.reflector.stall_timeout = milliseconds(1000);
  StartSource(opts);
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  // The snapshot is published once every kind is listed, which can be before
  // the services watch reaches the server; counted before it opens, its first
  // request would look like a replacement.
  ASSERT_TRUE(WaitUntil([&] { return api_.open_watches() == kWatches; }));
  int watches = api_.watches("services");
  // The connection stays open but nothing arrives, not even a bookmark.
  api_.set_stalled(true);
  api_.Upsert("services", MakeService("shop", "stalled", "10.96.0.90", {{"http", 80, 80}}));
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitUntil([&] { return api_.watches("services") > watches; }, std::chrono::seconds(5)));
  auto detected = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(detected, milliseconds(900));
  EXPECT_LT(detected, std::chrono::seconds(4));
  api_.set_stalled(false);
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "stalled") != nullptr; }));
}

TEST_F(SourceTest, UnlocatedPodsAreSkippedAndRetried) {
  SeedBasicWorld();
  api_.Upsert("pods", MakePod("shop", "new", TestUid("new"), "node-a", ""));
  locator_->SetMissing(TestUid("new"), true);
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindPod(s, "shop", "web-1") != nullptr; }));
  for (int i = 0; i < 5; ++i) PollOnce();
  EXPECT_EQ(FindPod(*last_, "shop", "new"), nullptr);
  int calls = locator_->calls();
  for (int i = 0; i < 3; ++i) PollOnce();
  EXPECT_GE(locator_->calls(), calls + 3) << "retried on every Poll";
  locator_->SetMissing(TestUid("new"), false);
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return Enrolled(s, "shop", "new"); }));
}

TEST_F(SourceTest, NonRunningAndHostNetworkPodsAreNotEnrolled) {
  SeedBasicWorld();
  Json done = MakePod("shop", "job", TestUid("job"), "node-a", "10.244.1.10");
  done["status"]["phase"] = "Succeeded";
  api_.Upsert("pods", done);
  Json hostnet = MakePod("shop", "hostnet", TestUid("hostnet"), "node-a", "192.0.2.1");
  hostnet["spec"]["hostNetwork"] = true;
  api_.Upsert("pods", hostnet);
  LogCapture log;
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindPod(s, "shop", "web-1") != nullptr; }));
  EXPECT_EQ(FindPod(*last_, "shop", "job"), nullptr);
  ASSERT_NE(FindPod(*last_, "shop", "hostnet"), nullptr);
  EXPECT_FALSE(Enrolled(*last_, "shop", "hostnet"));
  EXPECT_TRUE(log.Contains("pod shop/hostnet: uses the host network; not enrolled"));
}

TEST_F(SourceTest, ListsArePaginated) {
  api_.Upsert("namespaces", MakeNamespace("ns"));
  for (int i = 0; i < 25; ++i) {
    api_.Upsert("services", MakeService("ns", "s" + std::to_string(i), "10.96.2." + std::to_string(i + 1),
                                        {{"http", 80, 80}}));
  }
  auto opts = Options();
  opts.reflector.page_size = 4;
  StartSource(opts);
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return s.services.size() == 25; }));
  EXPECT_EQ(api_.lists("services"), 7);  // ceil(25 / 4)
}

TEST_F(SourceTest, ConfigurationErrors) {
  auto opts = Options();
  opts.node_name.clear();
  unsetenv("NODE_NAME");
  auto src = KubernetesSource::Create(opts, std::make_unique<FakeLocator>());
  EXPECT_EQ(src.status().code(), absl::StatusCode::kInvalidArgument);
  setenv("NODE_NAME", "node-from-env", 1);
  src = KubernetesSource::Create(opts, std::make_unique<FakeLocator>());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->Describe(), "kubernetes " + api_.url() + " (node node-from-env)");
  unsetenv("NODE_NAME");
  opts = Options();
  opts.api_server = "ftp://example";
  EXPECT_FALSE(KubernetesSource::Create(opts, std::make_unique<FakeLocator>()).ok());
  opts = Options();
  opts.reflector.backoff_max = milliseconds(1);
  EXPECT_FALSE(KubernetesSource::Create(opts, std::make_unique<FakeLocator>()).ok());
}

TEST_F(SourceTest, StopsPromptlyWithOpenWatches) {
  SeedBasicWorld();
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindService(s, "shop", "cart") != nullptr; }));
  ASSERT_TRUE(WaitUntil([&] { return api_.open_watches() == kWatches; }));
  auto t0 = std::chrono::steady_clock::now();
  source_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(2000)) << "the watches are 60 s long: stop must not wait them out";
}

}  // namespace
}  // namespace ringmesh::agent::k8s::testing

namespace ringmesh::agent::k8s::testing {
namespace {

const RemotePod* FindRemote(const Snapshot& s, const std::string& ns, const std::string& name) {
  for (const auto& p : s.remote_pods) {
    if (p.ns == ns && p.name == name) return &p;
  }
  return nullptr;
}

// Issue 13: the source node must know which pod IPs of other nodes a
// ringmesh proxy serves, and with which identity, to tunnel to them.
TEST_F(SourceTest, PodsOfOtherNodesBecomeRemotePods) {
  SeedBasicWorld();  // shop (enabled): web-1 on node-a (ours), web-2 on node-b
  api_.Upsert("namespaces", MakeNamespace("plain"));
  api_.Upsert("pods", MakePod("plain", "db-0", TestUid("db-0"), "node-c", "10.244.3.9"));
  Json hostnet = MakePod("shop", "agent-x", TestUid("agent-x"), "node-b", "192.168.0.2");
  hostnet["spec"]["hostNetwork"] = true;
  api_.Upsert("pods", hostnet);
  Json done = MakePod("shop", "job-1", TestUid("job-1"), "node-b", "10.244.2.77");
  done["status"]["phase"] = "Succeeded";
  api_.Upsert("pods", done);
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return s.remote_pods.size() == 2; }));

  const RemotePod* web2 = FindRemote(*last_, "shop", "web-2");
  ASSERT_NE(web2, nullptr);
  EXPECT_EQ(web2->service_account, "app");
  EXPECT_EQ(web2->node, "node-b");
  ASSERT_EQ(web2->ips.size(), 1u);
  EXPECT_EQ(web2->ips[0].ToString(), "10.244.2.5");
  EXPECT_TRUE(web2->enrolled) << "its namespace opts in";
  const RemotePod* db = FindRemote(*last_, "plain", "db-0");
  ASSERT_NE(db, nullptr);
  EXPECT_FALSE(db->enrolled) << "known, but no proxy serves it: plain TCP";
  EXPECT_EQ(FindRemote(*last_, "shop", "web-1"), nullptr) << "this node's pods are pods, not remote pods";
  EXPECT_EQ(FindRemote(*last_, "shop", "agent-x"), nullptr) << "host network: not a pod IP";
  EXPECT_EQ(FindRemote(*last_, "shop", "job-1"), nullptr) << "finished: no IP to reach";
  ASSERT_EQ(last_->pods.size(), 1u);

  // The namespace opts in: the remote pod is enrolled without a pod event.
  api_.Upsert("namespaces", MakeNamespace("plain", {{"ringmesh.io/mode", "enabled"}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    const RemotePod* p = FindRemote(s, "plain", "db-0");
    return p && p->enrolled;
  }));
  // A pod that opts out on its own label.
  api_.Upsert("pods", MakePod("shop", "web-2", TestUid("web-2"), "node-b", "10.244.2.5",
                              {{"ringmesh.io/mode", "disabled"}}));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    const RemotePod* p = FindRemote(s, "shop", "web-2");
    return p && !p->enrolled;
  }));
  // Moved IP and deletion.
  api_.Upsert("pods", MakePod("plain", "db-0", TestUid("db-0"), "node-c", "10.244.3.10"));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    const RemotePod* p = FindRemote(s, "plain", "db-0");
    return p && p->ips.size() == 1 && p->ips[0].ToString() == "10.244.3.10";
  }));
  api_.Delete("pods", "plain", "db-0");
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindRemote(s, "plain", "db-0") == nullptr; }));
  // Cluster-wide: the second pod watch has no field selector.
  bool saw_cluster_wide = false;
  for (const auto& r : api_.requests()) {
    saw_cluster_wide |= r.find("/api/v1/pods?") == 0 && r.find("fieldSelector") == std::string::npos;
  }
  EXPECT_TRUE(saw_cluster_wide);
}

TEST_F(SourceTest, RemotePodsCanBeTurnedOff) {
  SeedBasicWorld();
  KubernetesOptions o = Options();
  o.remote_pods = false;
  StartSource(o);
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return !s.services.empty(); }));
  EXPECT_TRUE(last_->remote_pods.empty());
  for (const auto& r : api_.requests()) {
    EXPECT_FALSE(r.find("/api/v1/pods?") == 0 && r.find("fieldSelector") == std::string::npos) << r;
  }
}

Json MakePolicy(const std::string& ns, const std::string& name, const std::string& action,
                const std::string& from_ns) {
  return Json{
      {"metadata", {{"namespace", ns}, {"name", name}}},
      {"spec", {{"action", action}, {"rules", {{{"from", {{{"source", {{"namespaces", {from_ns}}}}}}}}}}}}};
}

const AuthorizationPolicy* FindPolicy(const Snapshot& s, const std::string& ns, const std::string& name) {
  for (const auto& p : s.authorization_policies) {
    if (p.ns == ns && p.name == name) return &p;
  }
  return nullptr;
}

TEST_F(SourceTest, AuthorizationPoliciesAreMirrored) {
  SeedBasicWorld();
  api_.Upsert("authorizationpolicies", MakePolicy("shop", "deny-evil", "DENY", "evil"));
  Json custom = MakePolicy("shop", "ext", "CUSTOM", "x");
  custom["spec"]["provider"] = {{"name", "opa"}};
  api_.Upsert("authorizationpolicies", custom);
  Json bad = MakePolicy("shop", "bad", "ALLOW", "x");
  bad["spec"]["rules"][0]["from"][0]["source"]["ipBlocks"] = {"10.0.0.300/8"};
  api_.Upsert("authorizationpolicies", bad);
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return !s.authorization_policies.empty(); }));
  ASSERT_EQ(last_->authorization_policies.size(), 1u) << "CUSTOM is for waypoints; the bad one is skipped";
  const AuthorizationPolicy* deny = FindPolicy(*last_, "shop", "deny-evil");
  ASSERT_NE(deny, nullptr);
  EXPECT_EQ(deny->action, AuthzAction::kDeny);
  EXPECT_EQ(deny->rules.at(0).from.at(0).namespaces, std::vector<std::string>{"evil"});
  EXPECT_GE(source_->skipped_objects()["AuthorizationPolicy"], 1u);

  // Changed, then deleted, through the watch.
  api_.Upsert("authorizationpolicies", MakePolicy("shop", "deny-evil", "ALLOW", "evil"));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) {
    const AuthorizationPolicy* p = FindPolicy(s, "shop", "deny-evil");
    return p && p->action == AuthzAction::kAllow;
  }));
  api_.Delete("authorizationpolicies", "shop", "deny-evil");
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return s.authorization_policies.empty(); }));
  bool cluster_wide = false;
  for (const auto& r : api_.requests())
    cluster_wide |= r.find("/apis/security.istio.io/v1/authorizationpolicies") == 0;
  EXPECT_TRUE(cluster_wide);
}

TEST_F(SourceTest, AbsentAuthorizationPolicyCrdDoesNotHoldPollBack) {
  LogCapture log;
  SeedBasicWorld();
  api_.InjectError(
      "authorizationpolicies", /*watch=*/false, 404, "application/json",
      R"({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404})");
  StartSource();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return !s.services.empty(); }));
  EXPECT_TRUE(last_->authorization_policies.empty());
  EXPECT_TRUE(source_->synced());
  EXPECT_EQ(source_->Health(), "synced") << "an uninstalled optional CRD is not a problem";
  // Retried with backoff; warned about once, not on every retry.
  const std::string error = "list AuthorizationPolicy: HTTP 404";
  ASSERT_TRUE(WaitUntil([&] { return log.Count(error) >= 3; }));
  EXPECT_EQ(log.Count(error, "[warning]"), 1);
  EXPECT_GE(log.Count(error, "[debug]"), 2);

  // The CRD gets installed: the retried list finds it.
  api_.ClearErrors();
  api_.Upsert("authorizationpolicies", MakePolicy("shop", "deny-evil", "DENY", "evil"));
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return FindPolicy(s, "shop", "deny-evil") != nullptr; }));
}

TEST_F(SourceTest, ForbiddenAuthorizationPoliciesHoldPollBack) {
  SeedBasicWorld();
  api_.InjectError(
      "authorizationpolicies", /*watch=*/false, 403, "application/json",
      R"({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403})");
  StartSource();
  ASSERT_TRUE(WaitUntil([&] { return !source_->reflector_states()["AuthorizationPolicy"].error.empty(); }));
  ASSERT_TRUE(WaitUntil([&] { return source_->reflector_states()["Service"].synced; }));
  EXPECT_FALSE(source_->synced()) << "publishing without the policies would drop every DENY";
  EXPECT_FALSE(PollOnce());
  EXPECT_NE(source_->Health().find("AuthorizationPolicy: HTTP 403"), std::string::npos) << source_->Health();
  api_.ClearErrors();
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return !s.services.empty(); }));
}

TEST_F(SourceTest, TooManyAuthorizationPoliciesFailPoll) {
  SeedBasicWorld();
  api_.Upsert("authorizationpolicies", MakePolicy("shop", "a", "DENY", "x"));
  api_.Upsert("authorizationpolicies", MakePolicy("shop", "b", "DENY", "y"));
  KubernetesOptions o = Options();
  o.authz.max_policies = 1;
  StartSource(o);
  // Polled here rather than through WaitUntil, whose polls expect success.
  absl::Status error;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (error.ok() && std::chrono::steady_clock::now() < deadline) {
    auto polled = source_->Poll();
    if (!polled.ok()) error = polled.status();
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(
      error.message(),
      "kubernetes: 2 AuthorizationPolicies, more than the limit of 1; not publishing a snapshot without "
      "some of them");
  api_.Delete("authorizationpolicies", "shop", "b");
  bool published = false;
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!published && std::chrono::steady_clock::now() < deadline) {
    auto polled = source_->Poll();
    published = polled.ok() && polled->has_value() && (*polled)->authorization_policies.size() == 1;
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_TRUE(published);
}

TEST_F(SourceTest, AuthorizationPoliciesCanBeTurnedOff) {
  SeedBasicWorld();
  KubernetesOptions o = Options();
  o.authorization_policies = false;
  StartSource(o);
  ASSERT_TRUE(WaitFor([](const Snapshot& s) { return !s.services.empty(); }));
  for (const auto& r : api_.requests()) EXPECT_EQ(r.find("/apis/security.istio.io"), std::string::npos) << r;
}

}  // namespace
}  // namespace ringmesh::agent::k8s::testing
