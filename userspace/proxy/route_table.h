// Immutable routing view of one snapshot generation: which (VIP, port)
// pairs are services, the load balancer over each port's ready endpoints,
// and which pod IPs of other nodes a ringmesh proxy serves (MeshPeerOf).
// Built off the data plane, published to workers as a
// shared_ptr swap; a worker reads its current table without locks and a
// connection keeps the table (and so its load balancer) alive until it ends.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "userspace/common/ip.h"
#include "userspace/common/snapshot.h"
#include "userspace/proxy/authz/authorizer.h"
#include "userspace/proxy/lb.h"
#include "userspace/proxy/retry_budget.h"

namespace ringmesh::proxy {

struct ServiceRoute {
  std::string ns;
  std::string name;
  uint16_t port = 0;         // service port
  uint16_t target_port = 0;  // endpoint port
  AppProtocol protocol = AppProtocol::kTcp;
  std::vector<IpAddress> vips;
  std::vector<IpAddress> not_ready;  // endpoints kept out of the balancer
  std::shared_ptr<LoadBalancer> lb;  // ready endpoints only
  // Requests in flight and retries among them (L7), shared by the workers
  // and carried over snapshots like the balancer's state.
  std::shared_ptr<RetryBudget> retry_budget;

  // How many forwards this route's connections make (moving average over
  // closed connections, x16 fixed point; shared by the workers). Joining
  // the server leg to the fast path costs each connection two more psocks;
  // it pays only for connections that live long enough to be spliced, so
  // routes whose connections are one exchange long stop joining.
  mutable std::atomic<uint32_t> forwards_avg_x16{0};
  mutable std::atomic<uint32_t> closed_samples{0};
  void RecordForwards(int forwards) const {
    const uint32_t v = static_cast<uint32_t>(std::min(forwards, 1024)) * 16;
    if (closed_samples.fetch_add(1, std::memory_order_relaxed) == 0) {
      forwards_avg_x16.store(v, std::memory_order_relaxed);
      return;
    }
    // avg += (v - avg) / 8; lost updates between workers only blur it.
    const uint32_t avg = forwards_avg_x16.load(std::memory_order_relaxed);
    forwards_avg_x16.store(avg + (static_cast<int32_t>(v - avg) / 8), std::memory_order_relaxed);
  }
  // Too few closed connections to tell: join.
  bool LongLived(int min_forwards) const {
    return closed_samples.load(std::memory_order_relaxed) < 16 ||
           forwards_avg_x16.load(std::memory_order_relaxed) >= static_cast<uint32_t>(min_forwards) * 16;
  }

  // What the datapath was last told about this route's VIPs (rm_short_dst):
  // 0 nothing yet, 1 long-lived, 2 short. A new route object (every
  // snapshot) tells it again once, so a stale entry lasts one connection.
  mutable std::atomic<uint8_t> told{0};
  // The short/long state to tell the datapath now, if it differs from what
  // it was told last.
  std::optional<bool> ShortRouteChange(int min_forwards) const {
    const uint8_t want = LongLived(min_forwards) ? 1 : 2;
    if (told.exchange(want, std::memory_order_relaxed) == want) return std::nullopt;
    return want == 2;
  }

  // Socket LB (rm_short_dst with endpoints, abi.h): the endpoints connect()
  // may send this route's connections straight to while it is short. Empty
  // when it may not: an endpoint that is not an enrolled pod of this node
  // (it may need mTLS, or lives where this node's policy does not reach),
  // more than RM_MAX_DIRECT_BACKENDS of them, or a policy a uniform random
  // choice does not honour (least connections). Set by Build.
  std::vector<SocketAddress> direct_endpoints;
  // Per direct endpoint (its ToString()): the datapath's count of failed
  // direct connects (rm_direct_conns.failed) when last looked at. A count
  // that grew is fed to the balancer as failed connects, and the endpoint
  // stays out of socket LB until a connect through the proxy succeeds.
  // Carried over snapshots.
  mutable std::mutex direct_mu;
  mutable std::map<std::string, uint64_t> direct_failed_seen;
  // Connections through the proxy that closed since the datapath was last
  // told about this short route.
  mutable std::atomic<uint32_t> closed_since_told{0};
  // A short route with direct endpoints whose connections come through the
  // proxy again (its allowance of direct connects ran out, or they raced
  // the arming): true once per `every` closes, to renew the allowance after
  // the proxy has judged the route on them. Counts only while short.
  bool DirectRearmDue(uint32_t every) const {
    if (direct_endpoints.empty() || told.load(std::memory_order_relaxed) != 2) return false;
    if (closed_since_told.fetch_add(1, std::memory_order_relaxed) + 1 < every) return false;
    closed_since_told.store(0, std::memory_order_relaxed);
    return true;
  }

  // "name.ns.svc.cluster.local", Istio's destination_service label.
  std::string Fqdn() const { return name + "." + ns + ".svc.cluster.local"; }
};

// An enrolled pod of another node (Snapshot::remote_pods): a ringmesh proxy
// serves its IPs, so a connection to one goes through an HBONE tunnel to
// <ip>:15008 and the far end must present the identity
// spiffe://<trust-domain>/ns/<ns>/sa/<service_account>
// (tls::SpiffeId{trust_domain, ns, service_account}).
struct MeshPeer {
  std::string ns;
  std::string name;
  std::string service_account;
  std::string node;

  bool operator==(const MeshPeer&) const = default;
};

class OrigDstResolver;

// Tells the datapath (rm_short_dst, through `resolver`) what `route` is
// now, for each of its VIPs: long (entry removed) or short; short with
// direct endpoints also arms socket LB for `direct_connects` connections
// (0: never direct). Direct connects that failed since it last looked are
// first fed to the balancer; endpoints it has ejected, or whose last
// connect failed, are left out.
void TellDatapath(const ServiceRoute& route, bool is_short, uint32_t direct_connects,
                  OrigDstResolver& resolver);

class RouteTable {
 public:
  // Carries load-balancer state over from `previous` for routes and
  // endpoints that stayed.
  static std::shared_ptr<const RouteTable> Build(const Snapshot& snapshot, const RouteTable* previous,
                                                 const LbOptions& lb_options = {});

  const ServiceRoute* Find(const SocketAddress& dst) const;
  // An address of an enrolled pod on this node (one the proxy listens in).
  bool IsLocalEnrolledPod(const IpAddress& ip) const { return local_pods_.contains(ip); }
  // That pod (namespace and labels, for authorization), or nullptr.
  const Pod* LocalEnrolledPod(const IpAddress& ip) const {
    auto it = local_pods_.find(ip);
    return it == local_pods_.end() ? nullptr : &it->second;
  }
  // This node's enrolled pods by IP (a pod with two IPs is there twice).
  const std::map<IpAddress, Pod>& local_pods() const { return local_pods_; }
  // The snapshot's AuthorizationPolicies, checked at the destination side:
  // inbound tunnels and connections to this node's enrolled pods.
  const authz::Authorizer& authorizer() const { return authorizer_; }
  // The pod of another node that a ringmesh proxy serves at `ip`, or
  // nullptr: not a pod IP, a pod of this node, or a remote pod that is not
  // enrolled (reach it in plain TCP). O(1). Valid as long as the table.
  const MeshPeer* MeshPeerOf(const IpAddress& ip) const;
  size_t mesh_peer_ips() const { return mesh_peer_by_ip_.size(); }
  uint64_t generation() const { return generation_; }
  const std::vector<std::unique_ptr<ServiceRoute>>& routes() const { return routes_; }
  // After a snapshot: what the datapath holds for `previous`'s short routes
  // is rewritten from this table (the endpoints may have changed) or
  // removed (the route or the VIP is gone), so that no connect goes straight
  // to an endpoint the new snapshot no longer has.
  void RetellDatapath(const RouteTable* previous, uint32_t direct_connects, OrigDstResolver& resolver) const;

 private:
  void BuildMeshPeers(const Snapshot& snapshot);

  uint64_t generation_ = 0;
  std::vector<std::unique_ptr<ServiceRoute>> routes_;
  std::map<std::pair<IpAddress, uint16_t>, const ServiceRoute*> by_vip_;
  std::map<IpAddress, Pod> local_pods_;  // enrolled pods of this node by IP (their labels, not netns)
  authz::Authorizer authorizer_;

  struct IpHash {
    size_t operator()(const IpAddress& ip) const {
      const auto& b = ip.bytes();
      return std::hash<std::string_view>{}(
          std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
    }
  };
  std::vector<MeshPeer> mesh_peers_;
  std::unordered_map<IpAddress, uint32_t, IpHash> mesh_peer_by_ip_;  // index into mesh_peers_
};

}  // namespace ringmesh::proxy
