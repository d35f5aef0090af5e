// The authorization check of the destination side: Istio
// AuthorizationPolicy semantics (see snapshot.h for the policy model and
// where each rule comes from), evaluated once per connection before any
// byte reaches the application, or once per request where the proxy parses
// HTTP. Built once per snapshot, then read-only and safe to share between
// worker threads.
//
//   Authorizer authz(snapshot.authorization_policies);
//   Decision d = authz.Check(Workload::Of(dest_pod), Peer{peer_uri, peer_ip}, dest_port);
//   if (!d.allowed) { count and log d.policy; send 401 / reset }
//   Request req{"GET", "/v1/items?x=1", "shop.example:8080"};
//   d = authz.Check(Workload::Of(dest_pod), peer, dest_port, &req);  // 403 if denied
//
// Without a request (L4) a rule's operation hosts/methods/paths cannot be
// seen: as ztunnel, an ALLOW or AUDIT rule using them never matches and a
// DENY rule matches as if they did. With a request they are matched.
//
// Order, as Istio and ztunnel: CUSTOM is not enforced here; any matching
// DENY denies; then, if any ALLOW policy applies to the workload, one of
// them must match, else the connection is allowed. AUDIT policies never
// change the outcome, they only name themselves in Decision::audit_policy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "userspace/common/ip.h"
#include "userspace/common/snapshot.h"

namespace ringmesh::authz {

struct AuthorizerOptions {
  // Policies in this namespace apply to workloads of every namespace
  // (Istio's meshConfig.rootNamespace).
  std::string root_namespace = "istio-system";
};

// The destination workload: its namespace and labels. Views: they must
// outlive the Check call only.
struct Workload {
  std::string_view ns;
  const std::map<std::string, std::string>* labels = nullptr;  // null: no labels

  static Workload Of(const Pod& pod) { return Workload{pod.ns, &pod.labels}; }
};

// The connecting peer. `principal` is the peer certificate's URI SAN,
// "spiffe://<trust-domain>/ns/<ns>/sa/<sa>", or empty for a plaintext peer.
struct Peer {
  std::string_view principal;
  IpAddress ip;
};

// An HTTP request's attributes for operation.hosts/methods/paths. Views:
// they must outlive the Check call only.
struct Request {
  std::string_view method;  // "GET"; matched case-sensitively, as Istio
  std::string_view path;    // the request target; its query is not matched
  std::string_view host;    // the Host header (or :authority), port and all
};

struct Decision {
  enum class Reason : uint8_t {
    kNoAllowPolicies,  // allowed: no ALLOW policy applies to the workload
    kAllowMatched,     // allowed by `policy`
    kDenyMatched,      // denied by `policy`
    kNoAllowMatched,   // denied: ALLOW policies apply, none matched
  };
  bool allowed = true;
  Reason reason = Reason::kNoAllowPolicies;
  // "<ns>/<name>" of the deciding policy, or empty (kNoAllowPolicies,
  // kNoAllowMatched). Points into the Authorizer: valid while it lives.
  std::string_view policy;
  // The first matching AUDIT policy, or empty.
  std::string_view audit_policy;
};

const char* ToString(Decision::Reason r);

// The namespace in a SPIFFE workload identity, as Istio derives a peer's
// source.namespace: "spiffe://td/ns/foo/sa/bar" -> "foo". Empty when the
// string is not of that form (then no `namespaces` value can match).
std::string_view NamespaceOfPrincipal(std::string_view principal);

// One Istio string match against `value`: "abc" exact, "abc*" prefix, "*abc"
// suffix, "*" any non-empty value.
bool MatchesIstioString(std::string_view pattern, std::string_view value);

class Authorizer {
 public:
  Authorizer() = default;
  explicit Authorizer(const std::vector<AuthorizationPolicy>& policies, AuthorizerOptions options = {});

  // `request` null: a connection (L4); else one request on it.
  Decision Check(const Workload& dest, const Peer& src, uint16_t dest_port,
                 const Request* request = nullptr) const;

  // Every policy that applies to the workload (selector and scope), in
  // evaluation order: for `ringmeshctl policies`.
  std::vector<const AuthorizationPolicy*> PoliciesFor(const Workload& dest) const;

  // All policies: DENY, ALLOW, AUDIT; root namespace first, then by
  // namespace and name. For `ringmeshctl policies`.
  std::vector<const AuthorizationPolicy*> Policies() const;

  size_t size() const { return count_; }

 private:
  struct Entry {
    AuthorizationPolicy policy;
    std::string key;  // "<ns>/<name>"
  };
  // Policies by action, then by namespace. Root-namespace policies are kept
  // apart and checked for every workload.
  struct ByAction {
    absl::flat_hash_map<std::string, std::vector<Entry>> by_ns;
    std::vector<Entry> root;
  };

  template <typename Fn>
  void ForEachApplying(const ByAction& set, const Workload& dest, Fn&& fn) const;

  AuthorizerOptions options_;
  ByAction allow_, deny_, audit_;
  size_t count_ = 0;
};

}  // namespace ringmesh::authz
