// The local node file: a YAML description of this node's pods and of the
// services and endpoints they talk to, for standalone use, demos and tests
// (the other endpoint source is the Kubernetes API). Pods with `node: <name>`
// are mesh pods of other nodes: they land in Snapshot::remote_pods, never in
// Snapshot::pods. `authorizationPolicies` holds Istio AuthorizationPolicy
// objects (metadata + spec, as in Kubernetes), read by the same parser as
// the Kubernetes source's. The format, with a complete example, is in
// docs/node-file.md.
//
// Parsing is strict and every error names file, line and field, so a typo is
// found at once instead of silently ignored:
//   node.yaml:14: pods[1].ips[0]: "198.18.0.300" is not an IP address
//   node.yaml:9: pods[0]: unknown field "netnss"
//   node.yaml:22: duplicate IP 198.18.1.2 (pods[0] and pods[2])
//   node.yaml:3:7: invalid YAML: ...
//
// Usage:
//   ASSIGN_OR_RETURN(Snapshot s, agent::LoadNodeFile("/etc/ringmesh/node.yaml"));
//   RETURN_IF_ERROR(agent::CheckNodeFileResources(s));  // netns paths exist
//   // assign pod ids and the generation, then publish.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "userspace/common/snapshot.h"

namespace ringmesh::agent {

// Bounds keep a hostile or broken file from exhausting the agent; each is
// far above what one node runs. Per-pod opt-out ports match the BPF value
// (RM_MAX_OPT_OUT_PORTS).
inline constexpr size_t kMaxNodeFileBytes = 16 << 20;
inline constexpr size_t kMaxYamlNodes = 4'000'000;
inline constexpr size_t kMaxPods = 4096;  // pods of this node
// Pods of other nodes. ~230 bytes each in the agent (docs/node-file.md), so
// the default bounds them to ~25 MB.
inline constexpr size_t kDefaultMaxRemotePods = 100000;
inline constexpr size_t kMaxServices = 10000;
inline constexpr size_t kMaxEndpointsPerService = 1000;
inline constexpr size_t kMaxPortsPerService = 256;
inline constexpr size_t kMaxIpsPerPod = 16;
inline constexpr size_t kMaxVipsPerService = 16;
inline constexpr size_t kMaxLabelsPerPod = 256;
inline constexpr size_t kMaxOptOutPorts = 16;
inline constexpr size_t kMaxOptOutCidrs = 64;
inline constexpr uint16_t kDefaultOutboundPort = 15001;

struct NodeFileOptions {
  size_t max_remote_pods = kDefaultMaxRemotePods;
  // Bounds on `authorizationPolicies` (count and sizes); over one, the file
  // is rejected.
  AuthzLimits authz;
};

// Parses and validates. file_name only appears in error messages. The
// result has generation 0 and every pod_id 0: the agent assigns both.
[[nodiscard]] absl::StatusOr<Snapshot> ParseNodeFile(std::string_view text, std::string_view file_name,
                                                     const NodeFileOptions& options = {});
// Reads at most kMaxNodeFileBytes from `path`, then ParseNodeFile.
[[nodiscard]] absl::StatusOr<Snapshot> LoadNodeFile(const std::string& path,
                                                    const NodeFileOptions& options = {});

// Checks what the text cannot: the netns path of every enrolled pod exists
// and is a network namespace. Separate from parsing so parsing stays pure
// (and fuzzable) and the agent can re-check when it retries a pod. Errors
// name the pod by its index in the file:
//   pods[2].netns: /run/netns/x does not exist
[[nodiscard]] absl::Status CheckNodeFileResources(const Snapshot& snapshot);

}  // namespace ringmesh::agent
