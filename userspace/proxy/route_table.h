// Immutable routing view of one snapshot generation: which (VIP, port)
// pairs are services, and the load balancer over each port's ready
// endpoints. Built off the data plane, published to workers as a
// shared_ptr swap; a worker reads its current table without locks and a
// connection keeps the table (and so its load balancer) alive until it ends.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "userspace/common/ip.h"
#include "userspace/common/snapshot.h"
#include "userspace/proxy/lb.h"

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

  // "name.ns.svc.cluster.local", Istio's destination_service label.
  std::string Fqdn() const { return name + "." + ns + ".svc.cluster.local"; }
};

class RouteTable {
 public:
  // Carries load-balancer state over from `previous` for routes and
  // endpoints that stayed.
  static std::shared_ptr<const RouteTable> Build(const Snapshot& snapshot, const RouteTable* previous,
                                                 const LbOptions& lb_options = {});

  const ServiceRoute* Find(const SocketAddress& dst) const;
  // An address of an enrolled pod on this node (one the proxy listens in).
  bool IsLocalEnrolledPod(const IpAddress& ip) const { return local_pod_ips_.contains(ip); }
  uint64_t generation() const { return generation_; }
  const std::vector<std::unique_ptr<ServiceRoute>>& routes() const { return routes_; }

 private:
  uint64_t generation_ = 0;
  std::vector<std::unique_ptr<ServiceRoute>> routes_;
  std::map<std::pair<IpAddress, uint16_t>, const ServiceRoute*> by_vip_;
  std::set<IpAddress> local_pod_ips_;
};

}  // namespace ringmesh::proxy
