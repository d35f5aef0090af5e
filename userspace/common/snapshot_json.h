// Snapshot <-> JSON. This is the encoding of the snapshot inside the
// agent->proxy protocol (SNAPSHOT_END, see snapshot_protocol.h) and the body
// of the proxy's /config_dump, so one reader understands both.
//
// The field names are those of the node file (docs/node-file.md) plus
// `generation` and `podId`, which only the agent assigns, and
// `remotePods` (protocol version 2), the mesh pods of other nodes, left out
// when there are none:
//
//   {"generation": 7, "outboundPort": 15001,
//    "pods": [{"namespace": "default", "name": "web-0", "uid": "...",
//              "serviceAccount": "web", "netns": "/run/netns/web-0",
//              "cgroup": "/kubepods/...", "ips": ["198.18.1.2"],
//              "labels": {"app": "web"}, "mode": "enabled",
//              "failMode": "open", "optOutPorts": [22],
//              "optOutCidrs": ["198.18.9.0/24"], "podId": 3}],
//    "services": [{"namespace": "default", "name": "web",
//                  "vips": ["198.19.0.10"], "lb": "p2c",
//                  "ports": [{"name": "http", "port": 80,
//                             "targetPort": 8080, "protocol": "http"}],
//                  "endpoints": [{"ip": "198.18.1.2", "ready": true,
//                                 "pod": "default/web-0"}]}],
//    "remotePods": [{"namespace": "default", "name": "api-1",
//                    "serviceAccount": "api", "node": "node-b",
//                    "ips": ["198.18.2.7"], "mode": "enabled"}],
//    "authorizationPolicies": [{"namespace": "default", "name": "web-allow",
//        "action": "ALLOW", "matchLabels": {"app": "web"},
//        "rules": [{"from": [{"principals": ["cluster.local/ns/default/sa/api"],
//                             "ipBlocks": ["198.18.0.0/16"]}],
//                   "to": [{"ports": [8080]}]}]}]}
//
// `authorizationPolicies` is the converted form of snapshot.h (L7 parts
// already handled, empty lists left out, `droppedL7Rules` only when
// nonzero), left out when there are none. Like remotePods, a peer of an
// older protocol version rejects it: the sender must not send policies to
// a proxy that would not enforce them.
//
// Round trips are lossless: DecodeSnapshotJson(EncodeSnapshotJson(s)) == s
// for every snapshot whose CIDRs are normalised (host bits clear, which
// Cidr::Parse guarantees) and whose ports are nonzero.
//
// Decoding is strict, because the two ends of the wire are versioned
// together (the protocol version changes whenever this schema does): unknown
// fields, wrong JSON types, unknown enum strings, bad IPs/CIDRs and ports
// outside 1..65535 are rejected with a Status that names the JSON path, e.g.
//   $.pods[3].ips[0]: "198.18.0.300" is not an IP address
// Missing fields take the defaults of snapshot.h, except the identifying
// ones (pod, remote pod and service namespace/name, a remote pod's node,
// endpoint ip, service port number).
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "userspace/common/snapshot.h"

namespace ringmesh {

// A snapshot is at most 5 levels deep; anything much deeper is an attack on
// the parser's memory, rejected before nlohmann builds the tree.
inline constexpr int kMaxSnapshotJsonDepth = 16;

// The JSON's schema goes with the agent<->proxy protocol version
// (snapshot_protocol.h): a field first appears in the version that
// introduced it, and an encoding for an older version leaves it out, since
// that version's readers reject unknown fields.
//   1  generation, outboundPort, pods, services
//   2  + remotePods
//   3  + authorizationPolicies
inline constexpr uint16_t kJsonRemotePodsSince = 2;
inline constexpr uint16_t kJsonAuthorizationPoliciesSince = 3;
inline constexpr uint16_t kJsonLatestSchema = 3;

nlohmann::json SnapshotToJson(const Snapshot& snapshot, uint16_t schema = kJsonLatestSchema);
// authz_limits bound Snapshot::authorization_policies (over a bound: an
// error naming the field, never a truncated list).
[[nodiscard]] absl::StatusOr<Snapshot> SnapshotFromJson(const nlohmann::json& json,
                                                        const AuthzLimits& authz_limits = {});

// Serialises compactly (indent < 0) or pretty-printed (indent >= 0). Fails
// only when a string in the snapshot is not valid UTF-8, which JSON cannot
// carry; the node file parser never produces such strings.
[[nodiscard]] absl::StatusOr<std::string> EncodeSnapshotJson(
    const Snapshot& snapshot, int indent = -1, uint16_t schema = kJsonLatestSchema);
[[nodiscard]] absl::StatusOr<Snapshot> DecodeSnapshotJson(std::string_view text,
                                                          const AuthzLimits& authz_limits = {});

// Deepest bracket nesting of JSON text (brackets inside strings ignored),
// in one linear pass: lets callers bound recursion before parsing or
// dump()ing untrusted input.
size_t JsonNestingDepth(std::string_view text);

}  // namespace ringmesh
