// The node's desired state as the agent publishes it to the proxy: enrolled
// pods, services and their endpoints, and the mesh pods of other nodes.
// Immutable once published; a new generation replaces the whole value, so
// the datapath never sees a half-applied change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "userspace/common/ip.h"

namespace ringmesh {

enum class FailMode : uint8_t { kOpen, kClosed };
enum class LbPolicy : uint8_t { kP2cPeakEwma, kRoundRobin, kRandom, kLeastConnections };
enum class AppProtocol : uint8_t { kTcp, kHttp, kHttp2, kGrpc };

struct Pod {
  std::string ns;
  std::string name;
  std::string uid;
  std::string service_account;
  std::string netns_path;   // e.g. /run/netns/<name> or /proc/<pid>/ns/net
  std::string cgroup_path;  // absolute path in the cgroup v2 hierarchy
  std::vector<IpAddress> ips;
  std::map<std::string, std::string> labels;
  bool enrolled = true;
  FailMode fail_mode = FailMode::kOpen;
  std::vector<uint16_t> opt_out_ports;  // host byte order
  std::vector<Cidr> opt_out_cidrs;
  uint32_t pod_id = 0;  // assigned by the agent, stable while the pod lives

  bool operator==(const Pod&) const = default;
};

// A pod of another node. It has no netns or cgroup here and never gets a
// listener, a pod id or a pods-map entry; it exists so that a connection to
// one of its IPs can be tunnelled (HBONE) to the ringmesh proxy of its node,
// expecting the identity
// spiffe://<trust-domain>/ns/<ns>/sa/<service_account>. Kept apart from
// Snapshot::pods so that no local-pod code path ever sees one. Compact on
// purpose: a cluster has many of them (docs/node-file.md gives the memory
// per pod).
struct RemotePod {
  std::string ns;
  std::string name;
  std::string service_account;
  std::string node;
  std::vector<IpAddress> ips;
  bool enrolled = true;  // false: known, but no ringmesh proxy serves it

  bool operator==(const RemotePod&) const = default;
};

struct ServicePort {
  std::string name;
  uint16_t port = 0;         // service port (host order)
  uint16_t target_port = 0;  // endpoint port (host order)
  AppProtocol protocol = AppProtocol::kTcp;

  bool operator==(const ServicePort&) const = default;
};

struct Endpoint {
  IpAddress ip;
  bool ready = true;
  std::string pod;  // "<ns>/<name>", informational

  bool operator==(const Endpoint&) const = default;
};

struct Service {
  std::string ns;
  std::string name;
  std::vector<IpAddress> vips;
  std::vector<ServicePort> ports;
  LbPolicy lb = LbPolicy::kP2cPeakEwma;
  std::vector<Endpoint> endpoints;

  bool operator==(const Service&) const = default;
};

// --- Authorization (Istio AuthorizationPolicy, security.istio.io/v1, L4) ---
//
// The converted form of an Istio AuthorizationPolicy, as istiod converts it
// for ztunnel (pilot/pkg/serviceregistry/kube/controller/ambient/
// authorization.go, convertAuthorizationPolicy/handleRule) and ztunnel
// evaluates it (src/rbac.rs, Authorization::matches). Semantics:
//   - a policy matches when any rule matches; a policy without rules never
//     matches. istiod sends an empty `rules` as zero groups and ztunnel
//     returns false for "empty rules"; Istio's reference documents the same
//     ("If not set, the match will never occur"), which is why `spec: {}`
//     with ALLOW is the "allow-nothing" policy and a DENY needs `rules: [{}]`
//     to deny everything;
//   - a rule matches when its `from` matches AND its `to` matches; an empty
//     `from` (or `to`) list does not constrain, so a rule `{}` matches every
//     connection;
//   - `from` entries are ORed, `to` entries are ORed; the fields inside one
//     entry are ANDed; the values of one field are ORed; a `not*` field
//     matches when none of its values does;
//   - an entry with no L4 field at all never matches (ztunnel skips "empty
//     clause" matches). Istio's validation refuses such an entry, so the
//     parsers do too; it only arises from a DENY entry whose fields were all
//     L7 (see below).
// L7 fields cannot be seen at L4. operation.hosts/methods/paths (and their
// not*) are kept: the proxy matches them against each request where it
// parses HTTP (a same-node L7 route); a connection checked at L4 (TCP, an
// inbound tunnel) evaluates them as istiod tells ztunnel to: an ALLOW (and
// AUDIT) rule with any of them never matches, a DENY rule matches as if
// they did (more restrictive; an entry left with no L4 field never
// matches, see above). The others (source.requestPrincipals/remoteIpBlocks
// and their not*, `when`) are not implemented: an ALLOW/AUDIT rule using
// them is dropped, so it can never allow anything (the policy still applies
// to its workloads); in a DENY rule source fields are removed and the rest
// stays, and a `when` condition drops the rule.
enum class AuthzAction : uint8_t { kAllow, kDeny, kAudit };

// One `from[].source`. Principals and namespaces are Istio string matches:
// "abc" exact, "abc*" prefix, "*abc" suffix, "*" any non-empty value.
// Principals are written without "spiffe://", e.g.
// "cluster.local/ns/default/sa/sleep".
struct AuthzSource {
  std::vector<std::string> principals;
  std::vector<std::string> not_principals;
  std::vector<std::string> namespaces;
  std::vector<std::string> not_namespaces;
  std::vector<Cidr> ip_blocks;  // a single address is a /32 or /128
  std::vector<Cidr> not_ip_blocks;

  bool empty() const {
    return principals.empty() && not_principals.empty() && namespaces.empty() && not_namespaces.empty() &&
           ip_blocks.empty() && not_ip_blocks.empty();
  }
  bool operator==(const AuthzSource&) const = default;
};

// One `to[].operation`. Ports are L4; hosts, methods and paths are L7 and
// Istio string matches (hosts case-insensitively, against the Host header
// with or without its port; paths against the path without its query).
struct AuthzOperation {
  std::vector<uint16_t> ports;  // host order, 1..65535
  std::vector<uint16_t> not_ports;
  std::vector<std::string> hosts;
  std::vector<std::string> not_hosts;
  std::vector<std::string> methods;
  std::vector<std::string> not_methods;
  std::vector<std::string> paths;
  std::vector<std::string> not_paths;

  bool has_l4() const { return !ports.empty() || !not_ports.empty(); }
  bool has_l7() const {
    return !hosts.empty() || !not_hosts.empty() || !methods.empty() || !not_methods.empty() || !paths.empty() ||
           !not_paths.empty();
  }
  bool empty() const { return !has_l4() && !has_l7(); }
  bool operator==(const AuthzOperation&) const = default;
};

// The operation's string-list fields by their Istio names: one table for
// the policy parser, the wire JSON and the limits.
struct AuthzOperationStrings {
  const char* key;
  std::vector<std::string> AuthzOperation::*field;
};
inline constexpr AuthzOperationStrings kAuthzOperationStrings[] = {
    {"hosts", &AuthzOperation::hosts},     {"notHosts", &AuthzOperation::not_hosts},
    {"methods", &AuthzOperation::methods}, {"notMethods", &AuthzOperation::not_methods},
    {"paths", &AuthzOperation::paths},     {"notPaths", &AuthzOperation::not_paths},
};

struct AuthzRule {
  std::vector<AuthzSource> from;
  std::vector<AuthzOperation> to;

  // Uses operation hosts/methods/paths: matched only on HTTP requests.
  bool has_l7() const {
    for (const AuthzOperation& o : to) {
      if (o.has_l7()) return true;
    }
    return false;
  }

  bool operator==(const AuthzRule&) const = default;
};

struct AuthorizationPolicy {
  std::string ns;
  std::string name;
  AuthzAction action = AuthzAction::kAllow;
  // spec.selector.matchLabels: a workload is selected when it carries every
  // pair. Empty (or no selector): every workload of `ns`, or of the whole
  // mesh when `ns` is the root namespace (Authorizer's option).
  std::map<std::string, std::string> match_labels;
  std::vector<AuthzRule> rules;
  // ALLOW/AUDIT rules dropped because they used L7 fields ringmesh does not
  // implement (see above); kept so that `ringmeshctl policies` can say why a
  // policy allows less.
  uint32_t dropped_l7_rules = 0;

  bool operator==(const AuthorizationPolicy&) const = default;
};

// Bounds on policies, checked by every parser (node file, Kubernetes
// objects, snapshot JSON). Going over one is an error that names the policy
// and the field; nothing is ever truncated, because a truncated ALLOW or
// DENY list changes who gets in. The defaults are far above what clusters
// use (Istio's own scale tests stay below a few hundred policies).
struct AuthzLimits {
  size_t max_policies = 10000;  // per snapshot
  size_t max_rules_per_policy = 256;
  size_t max_entries_per_rule = 256;   // from[] and to[] each
  size_t max_values_per_field = 1024;  // principals, ports, ipBlocks, ...
  size_t max_match_labels = 64;
  size_t max_string_bytes = 1024;  // one principal, namespace or label
};

// Parses one AuthorizationPolicy in the Kubernetes object's shape
// ({"metadata": {"namespace", "name", ...}, "spec": {...}}; apiVersion,
// kind and status are ignored, unknown spec fields are errors). Both the
// node file (converted from YAML) and the Kubernetes source use it, so the
// two accept exactly the same policies. It lives in ringmesh_common because
// that is the one library both link; nlohmann is header-only.
//
// Returns nullopt for a policy that is valid but not enforced by a node
// proxy, as in Istio ambient: action CUSTOM (ext-authz) and policies bound
// with targetRef/targetRefs (waypoints and gateways enforce those).
// Errors name the field, e.g.
//   spec.rules[0].from[1].source.ipBlocks[2]: "10.0.0.300/8" is not an IP address or CIDR
[[nodiscard]] absl::StatusOr<std::optional<AuthorizationPolicy>> ParseIstioAuthorizationPolicy(
    const nlohmann::json& object, const AuthzLimits& limits = {});

// Checks a policy's per-policy bounds, for decoders that build the struct
// themselves (the snapshot JSON); errors name the field.
[[nodiscard]] absl::Status CheckAuthzLimits(const AuthorizationPolicy& policy, const AuthzLimits& limits);

struct Snapshot {
  uint64_t generation = 0;
  uint16_t outbound_port = 15001;  // proxy listener port inside every pod netns
  std::vector<Pod> pods;           // this node's pods only
  std::vector<Service> services;
  std::vector<RemotePod> remote_pods;
  std::vector<AuthorizationPolicy> authorization_policies = {};

  bool operator==(const Snapshot&) const = default;
};

const char* ToString(FailMode m);
const char* ToString(LbPolicy p);
const char* ToString(AppProtocol p);
std::optional<FailMode> ParseFailMode(std::string_view s);
std::optional<LbPolicy> ParseLbPolicy(std::string_view s);
std::optional<AppProtocol> ParseAppProtocol(std::string_view s);
const char* ToString(AuthzAction a);  // "ALLOW", "DENY", "AUDIT", as Istio spells them
std::optional<AuthzAction> ParseAuthzAction(std::string_view s);

}  // namespace ringmesh
