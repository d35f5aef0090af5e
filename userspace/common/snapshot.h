// The node's desired state as the agent publishes it to the proxy: enrolled
// pods, services and their endpoints, and the mesh pods of other nodes.
// Immutable once published; a new generation replaces the whole value, so
// the datapath never sees a half-applied change.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

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

struct Snapshot {
  uint64_t generation = 0;
  uint16_t outbound_port = 15001;  // proxy listener port inside every pod netns
  std::vector<Pod> pods;           // this node's pods only
  std::vector<Service> services;
  std::vector<RemotePod> remote_pods;

  bool operator==(const Snapshot&) const = default;
};

const char* ToString(FailMode m);
const char* ToString(LbPolicy p);
const char* ToString(AppProtocol p);
std::optional<FailMode> ParseFailMode(std::string_view s);
std::optional<LbPolicy> ParseLbPolicy(std::string_view s);
std::optional<AppProtocol> ParseAppProtocol(std::string_view s);

}  // namespace ringmesh
