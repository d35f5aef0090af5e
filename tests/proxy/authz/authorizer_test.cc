// The Authorizer against Istio's AuthorizationPolicy semantics. Policies are
// written in Istio's own YAML-ish JSON and go through the shared parser, so
// each case reads like the policy an operator would apply.
#include "userspace/proxy/authz/authorizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ringmesh::authz {
namespace {

using Json = nlohmann::json;

constexpr char kSleep[] = "spiffe://cluster.local/ns/default/sa/sleep";
constexpr char kOther[] = "spiffe://cluster.local/ns/default/sa/other";
constexpr char kEvil[] = "spiffe://cluster.local/ns/evil/sa/sleep";

AuthorizationPolicy Policy(const std::string& ns, const std::string& name, Json spec) {
  Json object{{"metadata", {{"namespace", ns}, {"name", name}}}, {"spec", std::move(spec)}};
  auto p = ParseIstioAuthorizationPolicy(object);
  EXPECT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p.ok() && p->has_value());
  return p.ok() && p->has_value() ? **p : AuthorizationPolicy{};
}

IpAddress Ip(const char* s) { return *IpAddress::Parse(s); }

struct Fixture {
  std::map<std::string, std::string> web_labels{{"app", "web"}};
  std::map<std::string, std::string> db_labels{{"app", "db"}};
  Workload web{"foo", &web_labels};
  Workload db{"foo", &db_labels};
};

Decision Check(const Authorizer& a, const Workload& w, const char* principal, const char* ip = "10.0.0.1",
               uint16_t port = 8080) {
  return a.Check(w, Peer{principal, Ip(ip)}, port);
}

// One request from kSleep to port 8080.
bool Allows(const Authorizer& a, const Workload& w, std::string_view method, std::string_view path,
            std::string_view host = "web.foo") {
  Request r{method, path, host};
  return a.Check(w, Peer{kSleep, Ip("10.0.0.1")}, 8080, &r).allowed;
}

TEST(Authorizer, NoPoliciesAllows) {
  Fixture f;
  Authorizer a(std::vector<AuthorizationPolicy>{});
  Decision d = Check(a, f.web, kSleep);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.reason, Decision::Reason::kNoAllowPolicies);
  EXPECT_EQ(d.policy, "");
}

TEST(Authorizer, AllowByPrincipalLetsExactlyThatPrincipalIn) {
  Fixture f;
  Authorizer a({Policy(
      "foo", "allow-sleep",
      {{"rules", {{{"from", {{{"source", {{"principals", {"cluster.local/ns/default/sa/sleep"}}}}}}}}}}})});
  Decision d = Check(a, f.web, kSleep);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.reason, Decision::Reason::kAllowMatched);
  EXPECT_EQ(d.policy, "foo/allow-sleep");
  Decision other = Check(a, f.web, kOther);
  EXPECT_FALSE(other.allowed);
  EXPECT_EQ(other.reason, Decision::Reason::kNoAllowMatched);
  EXPECT_EQ(other.policy, "");
  EXPECT_FALSE(Check(a, f.web, kEvil).allowed);
  EXPECT_FALSE(Check(a, f.web, "").allowed) << "plaintext has no principal";
  // Istio principals never carry the scheme; a peer without it has none.
  EXPECT_FALSE(Check(a, f.web, "cluster.local/ns/default/sa/sleep").allowed);
}

TEST(Authorizer, PrincipalWildcards) {
  Fixture f;
  auto allow = [](const char* pattern) {
    return Authorizer(
        {Policy("foo", "p", {{"rules", {{{"from", {{{"source", {{"principals", {pattern}}}}}}}}}}})});
  };
  EXPECT_TRUE(Check(allow("cluster.local/ns/default/*"), f.web, kSleep).allowed);
  EXPECT_FALSE(Check(allow("cluster.local/ns/default/*"), f.web, kEvil).allowed);
  EXPECT_TRUE(Check(allow("*/sa/sleep"), f.web, kEvil).allowed);
  EXPECT_FALSE(Check(allow("*/sa/sleep"), f.web, kOther).allowed);
  EXPECT_TRUE(Check(allow("*"), f.web, kOther).allowed);
  EXPECT_FALSE(Check(allow("*"), f.web, "").allowed) << "\"*\" needs an identity";
  EXPECT_FALSE(Check(allow("cluster.local/ns/default/sa/slee"), f.web, kSleep).allowed)
      << "exact, not prefix";
}

TEST(Authorizer, DenyByNamespaceWinsOverAllow) {
  Fixture f;
  Authorizer a(
      {Policy("foo", "allow-all-mtls", {{"rules", {{{"from", {{{"source", {{"principals", {"*"}}}}}}}}}}}),
       Policy("foo", "deny-evil",
              {{"action", "DENY"}, {"rules", {{{"from", {{{"source", {{"namespaces", {"evil"}}}}}}}}}}})});
  Decision d = Check(a, f.web, kEvil);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, Decision::Reason::kDenyMatched);
  EXPECT_EQ(d.policy, "foo/deny-evil");
  Decision ok = Check(a, f.web, kSleep);
  EXPECT_TRUE(ok.allowed);
  EXPECT_EQ(ok.policy, "foo/allow-all-mtls");
}

TEST(Authorizer, PortRule) {
  Fixture f;
  Authorizer a(
      {Policy("foo", "ports", {{"rules", {{{"to", {{{"operation", {{"ports", {"8080", "9090"}}}}}}}}}}})});
  EXPECT_TRUE(Check(a, f.web, kSleep, "10.0.0.1", 8080).allowed);
  EXPECT_TRUE(Check(a, f.web, "", "10.0.0.1", 9090).allowed);
  EXPECT_FALSE(Check(a, f.web, kSleep, "10.0.0.1", 22).allowed);

  Authorizer deny(
      {Policy("foo", "no-admin",
              {{"action", "DENY"}, {"rules", {{{"to", {{{"operation", {{"notPorts", {"80"}}}}}}}}}}})});
  EXPECT_TRUE(Check(deny, f.web, kSleep, "10.0.0.1", 80).allowed);
  EXPECT_FALSE(Check(deny, f.web, kSleep, "10.0.0.1", 81).allowed);
}

TEST(Authorizer, FromAndToAreAndedEntriesOred) {
  Fixture f;
  Json rule = {{"from",
                {{{"source", {{"principals", {"cluster.local/ns/default/sa/sleep"}}}}},
                 {{"source", {{"namespaces", {"evil"}}}}}}},
               {"to", {{{"operation", {{"ports", {"80"}}}}}, {{"operation", {{"ports", {"443"}}}}}}}};
  Authorizer a({Policy("foo", "p", {{"rules", {rule}}})});
  EXPECT_TRUE(Check(a, f.web, kSleep, "10.0.0.1", 80).allowed);
  EXPECT_TRUE(Check(a, f.web, kEvil, "10.0.0.1", 443).allowed);
  EXPECT_FALSE(Check(a, f.web, kSleep, "10.0.0.1", 8080).allowed) << "from matched, to did not";
  EXPECT_FALSE(Check(a, f.web, kOther, "10.0.0.1", 80).allowed) << "to matched, from did not";
}

TEST(Authorizer, FieldsInOneSourceAreAnded) {
  Fixture f;
  Authorizer a({Policy(
      "foo", "p",
      {{"rules",
        {{{"from", {{{"source", {{"namespaces", {"default"}}, {"ipBlocks", {"10.1.0.0/16"}}}}}}}}}}})});
  EXPECT_TRUE(Check(a, f.web, kSleep, "10.1.2.3").allowed);
  EXPECT_FALSE(Check(a, f.web, kSleep, "10.2.2.3").allowed);
  EXPECT_FALSE(Check(a, f.web, kEvil, "10.1.2.3").allowed);
}

TEST(Authorizer, NotPrincipalsMatchesPlaintext) {
  Fixture f;
  // Istio's "deny plaintext" idiom: notPrincipals ["*"].
  Authorizer a(
      {Policy("foo", "require-mtls",
              {{"action", "DENY"}, {"rules", {{{"from", {{{"source", {{"notPrincipals", {"*"}}}}}}}}}}})});
  Decision plain = Check(a, f.web, "");
  EXPECT_FALSE(plain.allowed);
  EXPECT_EQ(plain.policy, "foo/require-mtls");
  EXPECT_TRUE(Check(a, f.web, kSleep).allowed);

  Authorizer b(
      {Policy("foo", "not-sleep",
              {{"rules",
                {{{"from", {{{"source", {{"notPrincipals", {"cluster.local/ns/default/sa/sleep"}}}}}}}}}}})});
  EXPECT_FALSE(Check(b, f.web, kSleep).allowed);
  EXPECT_TRUE(Check(b, f.web, kOther).allowed);
  EXPECT_TRUE(Check(b, f.web, "").allowed) << "plaintext is not sleep";
}

TEST(Authorizer, NamespacesOfPlaintextPeers) {
  Fixture f;
  Authorizer ns({Policy("foo", "p", {{"rules", {{{"from", {{{"source", {{"namespaces", {"*"}}}}}}}}}}})});
  EXPECT_TRUE(Check(ns, f.web, kSleep).allowed);
  EXPECT_FALSE(Check(ns, f.web, "").allowed);
  Authorizer not_ns(
      {Policy("foo", "p", {{"rules", {{{"from", {{{"source", {{"notNamespaces", {"evil"}}}}}}}}}}})});
  EXPECT_TRUE(Check(not_ns, f.web, "").allowed);
  EXPECT_TRUE(Check(not_ns, f.web, kSleep).allowed);
  EXPECT_FALSE(Check(not_ns, f.web, kEvil).allowed);
}

TEST(Authorizer, IpBlocksV4AndV6) {
  Fixture f;
  Authorizer a({Policy("foo", "p",
                       {{"rules",
                         {{{"from",
                            {{{"source",
                               {{"ipBlocks", {"192.0.2.0/24", "2001:db8::/32", "198.51.100.7"}},
                                {"notIpBlocks", {"192.0.2.128/25", "2001:db8:bad::/48"}}}}}}}}}}})});
  EXPECT_TRUE(Check(a, f.web, "", "192.0.2.5").allowed);
  EXPECT_FALSE(Check(a, f.web, "", "192.0.2.200").allowed) << "in notIpBlocks";
  EXPECT_TRUE(Check(a, f.web, "", "198.51.100.7").allowed) << "a bare address is a /32";
  EXPECT_FALSE(Check(a, f.web, "", "198.51.100.8").allowed);
  EXPECT_TRUE(Check(a, f.web, "", "2001:db8:1::1").allowed);
  EXPECT_FALSE(Check(a, f.web, "", "2001:db8:bad::1").allowed);
  EXPECT_FALSE(Check(a, f.web, "", "2001:db9::1").allowed);
}

TEST(Authorizer, SelectorOnlyAppliesToMatchingWorkloads) {
  Fixture f;
  Authorizer a({Policy("foo", "web-only",
                       {{"selector", {{"matchLabels", {{"app", "web"}}}}}, {"rules", Json::array()}})});
  Decision web = Check(a, f.web, kSleep);
  EXPECT_FALSE(web.allowed) << "allow-nothing for app=web";
  EXPECT_TRUE(Check(a, f.db, kSleep).allowed) << "db has no ALLOW policy";
  Workload bare{"foo", nullptr};
  EXPECT_TRUE(Check(a, bare, kSleep).allowed);
  Workload other_ns{"bar", &f.web_labels};
  EXPECT_TRUE(Check(a, other_ns, kSleep).allowed) << "namespace-scoped";
}

TEST(Authorizer, RootNamespacePolicyAppliesMeshWide) {
  Fixture f;
  Json deny_evil = {{"action", "DENY"}, {"rules", {{{"from", {{{"source", {{"namespaces", {"evil"}}}}}}}}}}};
  Authorizer a({Policy("istio-system", "mesh-deny", deny_evil)});
  Workload other_ns{"bar", &f.db_labels};
  Decision d = Check(a, other_ns, kEvil);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.policy, "istio-system/mesh-deny");
  EXPECT_FALSE(Check(a, f.web, kEvil).allowed);
  EXPECT_TRUE(Check(a, f.web, kSleep).allowed);

  // A configured root namespace: istio-system is then an ordinary one.
  Authorizer custom({Policy("istio-system", "mesh-deny", deny_evil)}, AuthorizerOptions{"mesh-root"});
  EXPECT_TRUE(Check(custom, f.web, kEvil).allowed);
  Workload in_istio_system{"istio-system", nullptr};
  EXPECT_FALSE(Check(custom, in_istio_system, kEvil).allowed);
}

TEST(Authorizer, EmptyRulesAndEmptyRule) {
  Fixture f;
  // spec: {} is Istio's allow-nothing; a DENY without rules denies nothing.
  Authorizer nothing({Policy("foo", "allow-nothing", Json::object())});
  EXPECT_FALSE(Check(nothing, f.web, kSleep).allowed);
  Authorizer deny_none({Policy("foo", "deny", {{"action", "DENY"}})});
  EXPECT_TRUE(Check(deny_none, f.web, kSleep).allowed);
  // rules: [{}] matches everything: allow-all / deny-all.
  Authorizer deny_all({Policy("foo", "deny-all", {{"action", "DENY"}, {"rules", {Json::object()}}})});
  EXPECT_FALSE(Check(deny_all, f.web, "").allowed);
  Authorizer allow_all({Policy("foo", "allow-all", {{"rules", {Json::object()}}}),
                        Policy("foo", "allow-nothing", Json::object())});
  EXPECT_TRUE(Check(allow_all, f.web, "").allowed);
}

TEST(Authorizer, L7RulesFollowIstiodAtL4AndMatchRequests) {
  Fixture f;
  // ALLOW: a rule with methods can never match at L4; on a request it does.
  AuthorizationPolicy allow =
      Policy("foo", "get-only",
             {{"rules", {{{"to", {{{"operation", {{"methods", {"GET"}}, {"ports", {"8080"}}}}}}}}}}});
  EXPECT_EQ(allow.rules.size(), 1u);
  EXPECT_EQ(allow.dropped_l7_rules, 0u);
  Authorizer a({allow});
  EXPECT_FALSE(Check(a, f.web, kSleep).allowed);
  EXPECT_TRUE(Allows(a, f.web, "GET", "/"));
  EXPECT_FALSE(Allows(a, f.web, "POST", "/"));
  EXPECT_FALSE(Allows(a, f.web, "get", "/")) << "methods match case-sensitively";
  // DENY: at L4 the L7 part is taken as matched; the port still restricts.
  AuthorizationPolicy deny =
      Policy("foo", "no-post",
             {{"action", "DENY"},
              {"rules", {{{"to", {{{"operation", {{"methods", {"POST"}}, {"ports", {"8080"}}}}}}}}}}});
  Authorizer d({deny});
  EXPECT_FALSE(Check(d, f.web, kSleep, "10.0.0.1", 8080).allowed);
  EXPECT_TRUE(Check(d, f.web, kSleep, "10.0.0.1", 9090).allowed);
  EXPECT_FALSE(Allows(d, f.web, "POST", "/"));
  EXPECT_TRUE(Allows(d, f.web, "GET", "/"));
  // DENY with only L7 fields in the entry: ztunnel skips the empty match, so
  // at L4 it never denies; a request it matches is denied.
  Authorizer only_l7(
      {Policy("foo", "no-get",
              {{"action", "DENY"}, {"rules", {{{"to", {{{"operation", {{"methods", {"GET"}}}}}}}}}}})});
  EXPECT_TRUE(Check(only_l7, f.web, kSleep).allowed);
  EXPECT_FALSE(Allows(only_l7, f.web, "GET", "/"));
  EXPECT_TRUE(Allows(only_l7, f.web, "PUT", "/"));
  // AUDIT: like ALLOW, never at L4.
  Authorizer audit({Policy("foo", "audit-get",
                           {{"action", "AUDIT"}, {"rules", {{{"to", {{{"operation", {{"methods", {"GET"}}}}}}}}}}})});
  EXPECT_EQ(Check(audit, f.web, kSleep).audit_policy, "");
  Request get{"GET", "/", "web"};
  EXPECT_EQ(audit.Check(f.web, Peer{kSleep, Ip("10.0.0.1")}, 8080, &get).audit_policy, "foo/audit-get");
}

TEST(Authorizer, HostsAndPathsOfARequest) {
  Fixture f;
  Authorizer a({Policy("foo", "api",
                       {{"rules", Json::parse(R"([{"to": [{"operation": {
                           "hosts": ["Shop.Example", "*.shop.internal"], "paths": ["/api/*", "/health"],
                           "notPaths": ["*/admin"]}}]}])")}})});
  EXPECT_TRUE(Allows(a, f.web, "GET", "/api/items", "shop.example"));
  EXPECT_TRUE(Allows(a, f.web, "GET", "/api/items", "SHOP.EXAMPLE:8080")) << "any case, with its port";
  EXPECT_TRUE(Allows(a, f.web, "GET", "/health?verbose=1", "cart.shop.internal")) << "the query is not matched";
  EXPECT_TRUE(Allows(a, f.web, "GET", "/health#top", "shop.example"));
  EXPECT_FALSE(Allows(a, f.web, "GET", "/healthz", "shop.example"));
  EXPECT_FALSE(Allows(a, f.web, "GET", "/api/items", "other.example"));
  EXPECT_FALSE(Allows(a, f.web, "GET", "/api/items", "")) << "no Host header matches no host";
  EXPECT_FALSE(Allows(a, f.web, "GET", "/api/x/admin", "shop.example")) << "notPaths";
  EXPECT_FALSE(Allows(a, f.web, "GET", "/api/x/admin?y", "shop.example"));
  EXPECT_FALSE(Allows(a, f.web, "GET", "/api/items", "shop.example:http")) << "not a port: the host as it is";
  EXPECT_FALSE(Allows(a, f.web, "GET", "/api/items", "[::1]:80"));
  // IPv6 literals: the brackets stay, only a port goes.
  Authorizer v6({Policy("foo", "v6", {{"rules", Json::parse(R"([{"to": [{"operation": {"hosts": ["[fd00::1]"]}}]}])")}})});
  EXPECT_TRUE(Allows(v6, f.web, "GET", "/", "[FD00::1]:8080"));
  EXPECT_TRUE(Allows(v6, f.web, "GET", "/", "[fd00::1]"));
  EXPECT_FALSE(Allows(v6, f.web, "GET", "/", "[fd00::2]"));
  // Without a request (L4) none of it can be seen: the ALLOW rule never matches.
  EXPECT_FALSE(Check(a, f.web, kSleep).allowed);
}

TEST(Authorizer, AuditOnlyMarks) {
  Fixture f;
  Authorizer a(
      {Policy("foo", "audit-evil",
              {{"action", "AUDIT"}, {"rules", {{{"from", {{{"source", {{"namespaces", {"evil"}}}}}}}}}}})});
  Decision d = Check(a, f.web, kEvil);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.reason, Decision::Reason::kNoAllowPolicies) << "an AUDIT policy is not an ALLOW policy";
  EXPECT_EQ(d.audit_policy, "foo/audit-evil");
  EXPECT_EQ(Check(a, f.web, kSleep).audit_policy, "");
}

TEST(Authorizer, PoliciesForListsApplyingPolicies) {
  Fixture f;
  Authorizer a({Policy("foo", "web", {{"selector", {{"matchLabels", {{"app", "web"}}}}}}),
                Policy("foo", "ns", {{"action", "DENY"}}), Policy("bar", "elsewhere", Json::object()),
                Policy("istio-system", "mesh", {{"action", "AUDIT"}})});
  std::vector<std::string> web, db;
  for (const auto* p : a.PoliciesFor(f.web)) web.push_back(p->ns + "/" + p->name);
  for (const auto* p : a.PoliciesFor(f.db)) db.push_back(p->ns + "/" + p->name);
  EXPECT_EQ(web, (std::vector<std::string>{"foo/ns", "foo/web", "istio-system/mesh"}));
  EXPECT_EQ(db, (std::vector<std::string>{"foo/ns", "istio-system/mesh"}));
  EXPECT_EQ(a.size(), 4u);
}

TEST(NamespaceOfPrincipal, ParsesSpiffeIds) {
  EXPECT_EQ(NamespaceOfPrincipal("spiffe://cluster.local/ns/foo/sa/bar"), "foo");
  EXPECT_EQ(NamespaceOfPrincipal("spiffe://td/ns/x/sa/y"), "x");
  EXPECT_EQ(NamespaceOfPrincipal(""), "");
  EXPECT_EQ(NamespaceOfPrincipal("cluster.local/ns/foo/sa/bar"), "");
  EXPECT_EQ(NamespaceOfPrincipal("spiffe://cluster.local/ns/foo"), "");
  EXPECT_EQ(NamespaceOfPrincipal("spiffe://cluster.local/ns//sa/bar"), "");
  EXPECT_EQ(NamespaceOfPrincipal("spiffe://cluster.local/xx/foo/sa/bar"), "");
  EXPECT_EQ(NamespaceOfPrincipal("spiffe://cluster.local/ns/foo/sa/bar/extra"), "");
}

}  // namespace
}  // namespace ringmesh::authz
