// The Istio AuthorizationPolicy parser shared by the node file and the
// Kubernetes source (snapshot.h), and the policies' snapshot JSON encoding.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "userspace/common/snapshot.h"
#include "userspace/common/snapshot_json.h"

namespace ringmesh {
namespace {

using Json = nlohmann::json;

Json Object(Json spec) {
  return Json{{"apiVersion", "security.istio.io/v1"},
              {"kind", "AuthorizationPolicy"},
              {"metadata", {{"namespace", "foo"}, {"name", "p"}, {"resourceVersion", "7"}}},
              {"spec", std::move(spec)}};
}

std::string ErrorOf(const Json& object, const AuthzLimits& limits = {}) {
  auto p = ParseIstioAuthorizationPolicy(object, limits);
  if (p.ok()) return "<parsed fine>";
  return std::string(p.status().message());
}

Json FromSource(Json source) { return {{"rules", {{{"from", {{{"source", std::move(source)}}}}}}}}; }

TEST(IstioAuthorizationPolicy, ParsesEveryL4Field) {
  Json spec = {{"action", "DENY"},
               {"selector", {{"matchLabels", {{"app", "web"}}}}},
               {"rules",
                {{{"from",
                   {{{"source",
                      {{"principals", {"cluster.local/ns/a/sa/b"}},
                       {"notPrincipals", {"*/sa/c"}},
                       {"namespaces", {"a"}},
                       {"notNamespaces", {"b*"}},
                       {"ipBlocks", {"10.0.0.0/8", "2001:db8::1"}},
                       {"notIpBlocks", {"10.1.0.0/16"}}}}}}},
                  {"to", {{{"operation", {{"ports", {"80", 443}}, {"notPorts", {"8080"}}}}}}}}}}};
  auto p = ParseIstioAuthorizationPolicy(Object(spec));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(p->has_value());
  const AuthorizationPolicy& policy = **p;
  EXPECT_EQ(policy.ns, "foo");
  EXPECT_EQ(policy.name, "p");
  EXPECT_EQ(policy.action, AuthzAction::kDeny);
  EXPECT_EQ(policy.match_labels, (std::map<std::string, std::string>{{"app", "web"}}));
  ASSERT_EQ(policy.rules.size(), 1u);
  const AuthzSource& s = policy.rules[0].from.at(0);
  EXPECT_EQ(s.principals, std::vector<std::string>{"cluster.local/ns/a/sa/b"});
  EXPECT_EQ(s.not_principals, std::vector<std::string>{"*/sa/c"});
  EXPECT_EQ(s.namespaces, std::vector<std::string>{"a"});
  EXPECT_EQ(s.not_namespaces, std::vector<std::string>{"b*"});
  ASSERT_EQ(s.ip_blocks.size(), 2u);
  EXPECT_EQ(s.ip_blocks[1].ToString(), "2001:db8::1/128");
  EXPECT_EQ(s.not_ip_blocks.at(0).ToString(), "10.1.0.0/16");
  EXPECT_EQ(policy.rules[0].to.at(0).ports, (std::vector<uint16_t>{80, 443}));
  EXPECT_EQ(policy.rules[0].to.at(0).not_ports, std::vector<uint16_t>{8080});
}

TEST(IstioAuthorizationPolicy, DefaultsAndNullLists) {
  Json object = Object(nullptr);
  auto p = ParseIstioAuthorizationPolicy(object);
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_EQ((*p)->action, AuthzAction::kAllow);
  EXPECT_TRUE((*p)->rules.empty());
  auto q = ParseIstioAuthorizationPolicy(Object({{"rules", nullptr}, {"selector", nullptr}}));
  ASSERT_TRUE(q.ok() && q->has_value()) << q.status();
  EXPECT_TRUE((*q)->rules.empty());
}

TEST(IstioAuthorizationPolicy, NotForANodeProxy) {
  auto custom = ParseIstioAuthorizationPolicy(Object({{"action", "CUSTOM"}, {"provider", {{"name", "x"}}}}));
  ASSERT_TRUE(custom.ok());
  EXPECT_FALSE(custom->has_value());
  auto waypoint = ParseIstioAuthorizationPolicy(Object(
      {{"targetRefs", {{{"kind", "Gateway"}, {"group", "gateway.networking.k8s.io"}, {"name", "w"}}}}}));
  ASSERT_TRUE(waypoint.ok());
  EXPECT_FALSE(waypoint->has_value());
}

// Operation hosts/methods/paths are kept (the Authorizer matches them on
// requests and applies istiod's L4 rule itself); the L7 fields ringmesh does
// not implement drop ALLOW rules and are left out of DENY ones.
TEST(IstioAuthorizationPolicy, OperationL7FieldsKeptOtherL7FieldsDropAllowRules) {
  Json rules = Json::parse(R"([
      {"from": [{"source": {"requestPrincipals": ["*"], "namespaces": ["a"]}}]},
      {"to": [{"operation": {"paths": ["/x"], "ports": ["80"]}}]},
      {"when": [{"key": "request.headers[x]", "values": ["y"]}]},
      {"from": [{"source": {"namespaces": ["b"]}}]}])");
  auto allow = ParseIstioAuthorizationPolicy(Object({{"rules", rules}}));
  ASSERT_TRUE(allow.ok() && allow->has_value()) << allow.status();
  EXPECT_EQ((*allow)->dropped_l7_rules, 2u);
  ASSERT_EQ((*allow)->rules.size(), 2u);
  EXPECT_EQ((*allow)->rules[0].to.at(0).paths, std::vector<std::string>{"/x"});
  EXPECT_EQ((*allow)->rules[0].to.at(0).ports, std::vector<uint16_t>{80});
  EXPECT_EQ((*allow)->rules[1].from.at(0).namespaces, std::vector<std::string>{"b"});

  auto deny = ParseIstioAuthorizationPolicy(Object({{"action", "DENY"}, {"rules", rules}}));
  ASSERT_TRUE(deny.ok() && deny->has_value()) << deny.status();
  // The `when` rule never matches in ztunnel (an empty clause): dropped.
  EXPECT_EQ((*deny)->dropped_l7_rules, 1u);
  ASSERT_EQ((*deny)->rules.size(), 3u);
  EXPECT_EQ((*deny)->rules[0].from.at(0).namespaces, std::vector<std::string>{"a"});
  EXPECT_EQ((*deny)->rules[1].to.at(0).ports, std::vector<uint16_t>{80});
  EXPECT_EQ((*deny)->rules[1].to.at(0).paths, std::vector<std::string>{"/x"});

  auto every = ParseIstioAuthorizationPolicy(Object({{"rules", Json::parse(R"([{"to": [{"operation": {
      "hosts": ["Shop.Example"], "notHosts": ["*.internal"], "methods": ["GET", "HEAD"],
      "notMethods": ["DELETE"], "paths": ["/api/*"], "notPaths": ["*/admin"]}}]}])")}}));
  ASSERT_TRUE(every.ok() && every->has_value()) << every.status();
  const AuthzOperation& op = (*every)->rules.at(0).to.at(0);
  EXPECT_EQ(op.hosts, std::vector<std::string>{"Shop.Example"});
  EXPECT_EQ(op.not_hosts, std::vector<std::string>{"*.internal"});
  EXPECT_EQ(op.methods, (std::vector<std::string>{"GET", "HEAD"}));
  EXPECT_EQ(op.not_methods, std::vector<std::string>{"DELETE"});
  EXPECT_EQ(op.paths, std::vector<std::string>{"/api/*"});
  EXPECT_EQ(op.not_paths, std::vector<std::string>{"*/admin"});
  EXPECT_EQ(ErrorOf(Object({{"rules", Json::parse(R"([{"to": [{"operation": {"methods": [""]}}]}])")}})),
            "spec.rules[0].to[0].operation.methods[0]: empty value");
}

TEST(IstioAuthorizationPolicy, ErrorsNameTheField) {
  EXPECT_EQ(ErrorOf(Json::array()), "$: expected a mapping, got a list");
  EXPECT_EQ(ErrorOf({{"spec", Json::object()}}), "metadata: required field missing");
  EXPECT_EQ(ErrorOf({{"metadata", {{"name", "p"}}}}), "metadata.namespace: required field missing");
  EXPECT_EQ(ErrorOf({{"metadata", {{"namespace", "foo"}}}}), "metadata.name: required field missing");
  EXPECT_EQ(ErrorOf({{"metadata", {{"namespace", "Foo/x"}, {"name", "p"}}}}),
            "metadata.namespace: \"Foo/x\" is not a Kubernetes object name");
  EXPECT_EQ(ErrorOf(Object({{"action", "REJECT"}})),
            "spec.action: unknown value \"REJECT\" (expected one of ALLOW, DENY, AUDIT, CUSTOM)");
  EXPECT_EQ(ErrorOf(Object({{"actions", "DENY"}})), "spec: unknown field \"actions\"");
  EXPECT_EQ(ErrorOf(Object({{"selector", {{"matchLabels", {{"app", 3}}}}}})),
            "spec.selector.matchLabels.app: expected a string, got an integer");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"from", {{{"source", Json::object()}}}}}}}})),
            "spec.rules[0].from[0].source: must not be empty");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"from", {Json::object()}}}}}})),
            "spec.rules[0].from[0].source: required field missing");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"to", {{{"operation", Json::object()}}}}}}}})),
            "spec.rules[0].to[0].operation: must not be empty");
  EXPECT_EQ(ErrorOf(Object(FromSource({{"notPrincipal", {"x"}}}))),
            "spec.rules[0].from[0].source: unknown field \"notPrincipal\"");
  EXPECT_EQ(ErrorOf(Object(FromSource({{"principals", "x"}}))),
            "spec.rules[0].from[0].source.principals: expected a list, got a string");
  EXPECT_EQ(ErrorOf(Object(FromSource({{"principals", {""}}}))),
            "spec.rules[0].from[0].source.principals[0]: empty value");
  EXPECT_EQ(ErrorOf(Object(FromSource({{"ipBlocks", {"10.0.0.0/8", "10.0.0.300/8"}}}))),
            "spec.rules[0].from[0].source.ipBlocks[1]: \"10.0.0.300/8\" is not an IP address or CIDR");
  EXPECT_EQ(ErrorOf(Object(FromSource({{"serviceAccounts", {"a/b"}}}))),
            "spec.rules[0].from[0].source.serviceAccounts: not supported by ringmesh; use principals");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"to", {{{"operation", {{"ports", {"http"}}}}}}}}}}})),
            "spec.rules[0].to[0].operation.ports[0]: \"http\" is not a port number");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"to", {{{"operation", {{"ports", {0}}}}}}}}}}})),
            "spec.rules[0].to[0].operation.ports[0]: 0 is not a port (1-65535)");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"to", {{{"operation", {{"ports", {-80}}}}}}}}}}})),
            "spec.rules[0].to[0].operation.ports[0]: -80 is not a port (1-65535)");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"to", {{{"operation", {{"ports", {80.5}}}}}}}}}}})),
            "spec.rules[0].to[0].operation.ports[0]: expected a port number, got a fractional number");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"to", {{{"operation", {{"notPorts", {"70000"}}}}}}}}}}})),
            "spec.rules[0].to[0].operation.notPorts[0]: 70000 is not a port (1-65535)");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"when", {{{"key", "source.ip"}, {"values", {"1.2.3.4"}}}}}}}}})),
            "spec.rules[0].when[0].key: \"source.ip\" is not supported by ringmesh yet; use from/to fields");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"when", {{{"values", {"x"}}}}}}}}})),
            "spec.rules[0].when[0].key: required field missing");
  EXPECT_EQ(ErrorOf(Object({{"rules", {{{"by", 1}}}}})), "spec.rules[0]: unknown field \"by\"");
}

TEST(IstioAuthorizationPolicy, LimitsRejectNeverTruncate) {
  AuthzLimits limits;
  limits.max_values_per_field = 2;
  limits.max_rules_per_policy = 2;
  limits.max_entries_per_rule = 1;
  limits.max_match_labels = 1;
  limits.max_string_bytes = 16;
  EXPECT_EQ(ErrorOf(Object(FromSource({{"namespaces", {"a", "b", "c"}}})), limits),
            "spec.rules[0].from[0].source.namespaces: 3 values, more than the limit of 2");
  EXPECT_EQ(ErrorOf(Object({{"rules", {Json::object(), Json::object(), Json::object()}}}), limits),
            "spec.rules: 3 rules, more than the limit of 2");
  Json two_sources = {
      {"rules",
       {{{"from", {{{"source", {{"namespaces", {"a"}}}}}, {{"source", {{"namespaces", {"b"}}}}}}}}}}};
  EXPECT_EQ(ErrorOf(Object(two_sources), limits), "spec.rules[0].from: 2 entries, more than the limit of 1");
  EXPECT_EQ(ErrorOf(Object({{"selector", {{"matchLabels", {{"a", "1"}, {"b", "2"}}}}}}), limits),
            "spec.selector.matchLabels: 2 labels, more than the limit of 1");
  EXPECT_EQ(ErrorOf(Object(FromSource({{"principals", {std::string(17, 'x')}}})), limits),
            "spec.rules[0].from[0].source.principals[0]: longer than 16 bytes");
  EXPECT_EQ(ErrorOf(Object(FromSource({{"namespaces", {"a", "b"}}})), limits), "<parsed fine>");
}

AuthorizationPolicy RichPolicy() {
  AuthorizationPolicy p;
  p.ns = "foo";
  p.name = "rich";
  p.action = AuthzAction::kAudit;
  p.match_labels = {{"app", "web"}, {"tier", "front"}};
  p.dropped_l7_rules = 2;
  AuthzRule r;
  AuthzSource s;
  s.principals = {"cluster.local/ns/a/sa/b", "*"};
  s.not_principals = {"x*"};
  s.namespaces = {"a"};
  s.not_namespaces = {"*b"};
  s.ip_blocks = {*Cidr::Parse("10.0.0.0/8"), *Cidr::Parse("2001:db8::/32")};
  s.not_ip_blocks = {*Cidr::Parse("10.1.0.0/16")};
  r.from = {s, AuthzSource{}};  // an empty (L7-only DENY) entry survives too
  AuthzOperation l7;
  l7.hosts = {"shop.example"};
  l7.not_hosts = {"*.internal"};
  l7.methods = {"GET"};
  l7.not_methods = {"DELETE"};
  l7.paths = {"/api/*"};
  l7.not_paths = {"*/admin"};
  r.to = {AuthzOperation{{80, 443}, {8080}}, l7};
  p.rules = {r, AuthzRule{}};
  return p;
}

TEST(AuthzSnapshotJson, RoundTrips) {
  Snapshot s;
  s.generation = 3;
  AuthorizationPolicy deny;
  deny.ns = "bar";
  deny.name = "deny";
  deny.action = AuthzAction::kDeny;
  s.authorization_policies = {RichPolicy(), deny};
  auto text = EncodeSnapshotJson(s);
  ASSERT_TRUE(text.ok()) << text.status();
  auto back = DecodeSnapshotJson(*text);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << *text;
  EXPECT_EQ(*back, s);
}

TEST(AuthzSnapshotJson, LeftOutWhenEmptyAndBeforeSchema3) {
  Snapshot s;
  EXPECT_FALSE(SnapshotToJson(s).contains("authorizationPolicies"));
  s.authorization_policies = {RichPolicy()};
  EXPECT_TRUE(SnapshotToJson(s).contains("authorizationPolicies"));
  EXPECT_TRUE(SnapshotToJson(s, 3).contains("authorizationPolicies"));
  EXPECT_FALSE(SnapshotToJson(s, 2).contains("authorizationPolicies"));
  EXPECT_FALSE(SnapshotToJson(s, 1).contains("authorizationPolicies"));
}

std::string DecodeError(const std::string& policies, const AuthzLimits& limits = {}) {
  auto s = DecodeSnapshotJson(R"({"authorizationPolicies": )" + policies + "}", limits);
  return s.ok() ? "<decoded fine>" : std::string(s.status().message());
}

TEST(AuthzSnapshotJson, StrictDecoding) {
  EXPECT_EQ(DecodeError(R"([{"name": "p"}])"),
            "$.authorizationPolicies[0].namespace: required field missing");
  EXPECT_EQ(
      DecodeError(R"([{"namespace": "a", "name": "p", "action": "CUSTOM"}])"),
      "$.authorizationPolicies[0].action: unknown value \"CUSTOM\" (expected one of ALLOW, DENY, AUDIT)");
  EXPECT_EQ(DecodeError(
                R"([{"namespace": "a", "name": "p", "rules": [{"from": [{"ipBlocks": ["10.0.0.1/33"]}]}]}])"),
            "$.authorizationPolicies[0].rules[0].from[0].ipBlocks[0]: \"10.0.0.1/33\" is not a CIDR");
  EXPECT_EQ(DecodeError(R"([{"namespace": "a", "name": "p", "rules": [{"to": [{"ports": ["80"]}]}]}])"),
            "$.authorizationPolicies[0].rules[0].to[0].ports[0]: expected a port number, got a string");
  EXPECT_EQ(DecodeError(R"([{"namespace": "a", "name": "p", "rules": [{"when": []}]}])"),
            "$.authorizationPolicies[0].rules[0]: unknown field \"when\"");
  AuthzLimits limits;
  limits.max_policies = 1;
  limits.max_values_per_field = 1;
  EXPECT_EQ(DecodeError(R"([{"namespace": "a", "name": "p"}, {"namespace": "a", "name": "q"}])", limits),
            "$.authorizationPolicies: 2 policies, more than the limit of 1");
  EXPECT_EQ(
      DecodeError(R"([{"namespace": "a", "name": "p", "rules": [{"to": [{"ports": [1, 2]}]}]}])", limits),
      "$.authorizationPolicies[0].rules[0].to[0].ports: 2 values, more than the limit of 1");
}

TEST(AuthzLimits, CheckAuthzLimits) {
  AuthzLimits limits;
  EXPECT_TRUE(CheckAuthzLimits(RichPolicy(), limits).ok());
  limits.max_values_per_field = 1;
  auto st = CheckAuthzLimits(RichPolicy(), limits);
  EXPECT_EQ(st.message(), "rules[0].from[0].source: 2 values, more than the limit of 1");
}

}  // namespace
}  // namespace ringmesh
