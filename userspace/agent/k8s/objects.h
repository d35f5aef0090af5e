// Typed, validated views of the Kubernetes objects the endpoint source
// watches (Services, EndpointSlices, Namespaces, Pods, Istio
// AuthorizationPolicies), parsed from the API
// server's JSON. Parsing is the trust boundary: everything the API server
// sends goes through these functions, which never throw and never crash on
// unexpected input; an object that does not validate comes back as an error
// naming the field, and the caller logs it with the object's namespace/name
// and keeps the last good version.
//
// Each parser returns one of three things:
//   - an object                 -> store it
//   - std::nullopt              -> valid, but not for us (headless Service,
//                                  service-proxy-name, FQDN slice...): drop it
//   - an error                  -> malformed: log and keep what we had
//
//   auto svc = ParseService(json);
//   if (!svc.ok()) spdlog::warn("skipping Service {}: {}", ObjectKey(json), svc.status().message());
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "userspace/common/ip.h"
#include "userspace/common/snapshot.h"

namespace ringmesh::agent::k8s {

using Json = nlohmann::json;

// Labels and annotations this source understands.
inline constexpr char kModeLabel[] = "ringmesh.io/mode";                       // enabled | disabled
inline constexpr char kOptOutPortsAnnotation[] = "ringmesh.io/opt-out-ports";  // "22,9090"
inline constexpr char kOptOutCidrsAnnotation[] = "ringmesh.io/opt-out-cidrs";  // "10.0.0.0/8,..."
inline constexpr char kFailModeAnnotation[] = "ringmesh.io/fail-mode";         // open | closed
// kube-proxy semantics: a Service with this label belongs to another proxy.
inline constexpr char kServiceProxyNameLabel[] = "service.kubernetes.io/service-proxy-name";
// EndpointSlices name their Service with this label.
inline constexpr char kServiceNameLabel[] = "kubernetes.io/service-name";

// Bounds on what one pod may ask for; the BPF value holds 16 ports
// (RM_MAX_OPT_OUT_PORTS) and the node file uses the same limits.
inline constexpr size_t kMaxOptOutPorts = 16;
inline constexpr size_t kMaxOptOutCidrs = 64;

struct ServiceObject {
  struct Port {
    std::string name;
    uint16_t port = 0;
    uint16_t target_port = 0;      // 0 when the target port is named
    std::string target_port_name;  // resolved through the EndpointSlices
    AppProtocol protocol = AppProtocol::kTcp;
    bool operator==(const Port&) const = default;
  };
  std::string ns;
  std::string name;
  std::vector<IpAddress> vips;  // spec.clusterIPs (or spec.clusterIP)
  std::vector<Port> ports;      // TCP ports only: the proxy is TCP
  bool operator==(const ServiceObject&) const = default;
};

struct EndpointSliceObject {
  struct Port {
    std::string name;
    uint16_t port = 0;
    bool operator==(const Port&) const = default;
  };
  struct Endpoint {
    IpAddress ip;       // addresses[0], as kube-proxy uses
    bool ready = true;  // conditions; nil ready/serving mean true, nil terminating false
    bool serving = true;
    bool terminating = false;
    std::string pod;  // "<ns>/<name>" from targetRef when it is a Pod
    bool operator==(const Endpoint&) const = default;
  };
  std::string ns;
  std::string name;
  std::string service;      // label kubernetes.io/service-name
  std::vector<Port> ports;  // TCP ports only
  std::vector<Endpoint> endpoints;
  bool operator==(const EndpointSliceObject&) const = default;
};

struct NamespaceObject {
  std::string name;
  std::string mode;  // value of ringmesh.io/mode, "" when absent
  bool operator==(const NamespaceObject&) const = default;
};

enum class PodMode : uint8_t { kInherit, kEnabled, kDisabled };

struct PodObject {
  std::string ns;
  std::string name;
  std::string uid;
  std::string node_name;
  std::string service_account;
  std::string qos_class;  // status.qosClass: Guaranteed | Burstable | BestEffort | ""
  std::string phase;
  bool host_network = false;
  std::vector<IpAddress> ips;
  std::map<std::string, std::string> labels;
  PodMode mode = PodMode::kInherit;  // from the pod's ringmesh.io/mode label
  FailMode fail_mode = FailMode::kOpen;
  std::vector<uint16_t> opt_out_ports;
  std::vector<Cidr> opt_out_cidrs;
  // Annotation values that were ignored (bad entries); logged at ingest, so
  // once per change of the pod rather than once per snapshot.
  std::vector<std::string> warnings;

  bool operator==(const PodObject& o) const;  // ignores warnings
};

// A pod of another node, kept for every pod of the cluster so that a
// connection to its IP can be tunnelled to the proxy of its node with the
// identity it must present (issue 13). Compact on purpose: the strings many
// pods share (namespace, service account, node) are interned (Intern), the
// name lives in the store's key "<ns>/<name>", and at most two IPs (dual
// stack) are kept inline. docs/kubernetes.md gives the measured bytes per
// pod (RemotePodMapBytesPerPod in tests/agent/k8s/objects_test.cc).
struct RemotePodObject {
  const std::string* ns = nullptr;  // interned; never null once parsed
  const std::string* service_account = nullptr;
  const std::string* node = nullptr;
  std::array<IpAddress, 2> ips{};
  uint8_t ip_count = 0;
  PodMode mode = PodMode::kInherit;
  // Interned strings compare by address.
  bool operator==(const RemotePodObject&) const = default;
};
// What the source keeps remote pods in, keyed by "<ns>/<name>".
using RemotePodMap = std::map<std::string, RemotePodObject>;

// One shared copy of `s` for the life of the process (namespaces, service
// accounts and node names repeat across thousands of pods). Thread-safe.
// Bounded by the cluster's distinct values; past kMaxInterned it returns
// nullptr and the caller drops the object (logged as malformed).
inline constexpr size_t kMaxInterned = 1'000'000;
const std::string* Intern(std::string_view s);

// "<ns>/<name>" (or "<name>" for cluster-scoped objects), best effort, for
// log lines and store keys; "" when the object has no name at all.
std::string ObjectKey(const Json& object);
// metadata.resourceVersion, "" when absent.
std::string ResourceVersionOf(const Json& object);

absl::StatusOr<std::optional<ServiceObject>> ParseService(const Json& object);
absl::StatusOr<std::optional<EndpointSliceObject>> ParseEndpointSlice(const Json& object);
absl::StatusOr<std::optional<NamespaceObject>> ParseNamespace(const Json& object);
// Rejects a pod whose metadata.uid is not a UUID (IsPodUid): the UID
// becomes part of the pod's cgroup path.
absl::StatusOr<std::optional<PodObject>> ParsePod(const Json& object);

// An Istio AuthorizationPolicy (security.istio.io/v1 or v1beta1, same
// schema), through the parser the node file uses (snapshot.h,
// ParseIstioAuthorizationPolicy): nullopt for CUSTOM and targetRef(s)
// policies, which waypoints enforce; errors name the field. The caller
// bounds the number of policies (AuthzLimits::max_policies).
absl::StatusOr<std::optional<AuthorizationPolicy>> ParseAuthorizationPolicy(const Json& object,
                                                                            const AuthzLimits& limits = {});

// A running pod with an IP that is not on the host network, in the compact
// form; nullopt for the others (they cannot be tunnelled to).
absl::StatusOr<std::optional<RemotePodObject>> ParseRemotePod(const Json& object);

// A pod UID as the API server makes them: a UUID, 8-4-4-4-12 hex digits
// (either case). Anything else ("../../x", "", 37 characters) must never be
// put into a path.
bool IsPodUid(std::string_view uid);

// The annotation lists; bad entries are reported in *warnings and skipped.
std::vector<uint16_t> ParseOptOutPorts(const std::string& value, std::vector<std::string>* warnings);
std::vector<Cidr> ParseOptOutCidrs(const std::string& value, std::vector<std::string>* warnings);

}  // namespace ringmesh::agent::k8s
