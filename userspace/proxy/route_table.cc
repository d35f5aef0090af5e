#include "userspace/proxy/route_table.h"

#include <tuple>

#include "bpf/include/ringmesh/abi.h"
#include "userspace/proxy/orig_dst.h"

namespace ringmesh::proxy {

std::shared_ptr<const RouteTable> RouteTable::Build(const Snapshot& snapshot, const RouteTable* previous,
                                                    const LbOptions& lb_options) {
  std::map<std::tuple<std::string, std::string, uint16_t>, const ServiceRoute*> old;
  if (previous != nullptr) {
    for (const auto& r : previous->routes_) old[{r->ns, r->name, r->port}] = r.get();
  }
  auto table = std::make_shared<RouteTable>();
  table->generation_ = snapshot.generation;
  for (const Pod& pod : snapshot.pods) {
    if (!pod.enrolled || pod.netns_path.empty()) continue;
    Pod meta;
    meta.ns = pod.ns;
    meta.name = pod.name;
    meta.service_account = pod.service_account;
    meta.labels = pod.labels;
    for (const IpAddress& ip : pod.ips) table->local_pods_.emplace(ip, meta);
  }
  table->BuildMeshPeers(snapshot);
  table->authorizer_ = authz::Authorizer(snapshot.authorization_policies);
  for (const Service& svc : snapshot.services) {
    std::vector<IpAddress> ready, not_ready;
    for (const Endpoint& ep : svc.endpoints) {
      (ep.ready ? ready : not_ready).push_back(ep.ip);
    }
    for (const ServicePort& port : svc.ports) {
      auto route = std::make_unique<ServiceRoute>();
      route->ns = svc.ns;
      route->name = svc.name;
      route->port = port.port;
      route->target_port = port.target_port != 0 ? port.target_port : port.port;
      route->protocol = port.protocol;
      route->vips = svc.vips;
      route->not_ready = not_ready;
      auto it = old.find({svc.ns, svc.name, port.port});
      const LoadBalancer* prev_lb = it == old.end() ? nullptr : it->second->lb.get();
      // Routes with an application protocol are balanced per request (l7/),
      // on request latencies.
      route->lb = std::make_shared<LoadBalancer>(
          svc.lb, ready, prev_lb, port.protocol == AppProtocol::kTcp ? lb_options : lb_options.ForRequests());
      route->retry_budget = it != old.end() ? it->second->retry_budget : std::make_shared<RetryBudget>();
      // Socket LB skips the proxy, and so the destination's policy check:
      // only to endpoints no policy applies to.
      if (svc.lb != LbPolicy::kLeastConnections && !ready.empty() && ready.size() <= RM_MAX_DIRECT_BACKENDS &&
          std::all_of(ready.begin(), ready.end(), [&](const IpAddress& ip) {
            const Pod* pod = table->LocalEnrolledPod(ip);
            return pod != nullptr && table->authorizer_.PoliciesFor(authz::Workload::Of(*pod)).empty();
          })) {
        for (const IpAddress& ip : ready)
          route->direct_endpoints.push_back(SocketAddress{ip, route->target_port});
      }
      if (it != old.end()) {
        // What the route's connections look like, and what the datapath was
        // told about its VIPs (again if they changed), survive the snapshot.
        const ServiceRoute& prev = *it->second;
        route->forwards_avg_x16.store(prev.forwards_avg_x16.load(std::memory_order_relaxed),
                                      std::memory_order_relaxed);
        route->closed_samples.store(prev.closed_samples.load(std::memory_order_relaxed),
                                    std::memory_order_relaxed);
        if (prev.vips == svc.vips)
          route->told.store(prev.told.load(std::memory_order_relaxed), std::memory_order_relaxed);
        std::lock_guard<std::mutex> lock(prev.direct_mu);
        route->direct_failed_seen = prev.direct_failed_seen;
      }
      for (const IpAddress& vip : svc.vips) table->by_vip_[{vip, port.port}] = route.get();
      table->routes_.push_back(std::move(route));
    }
  }
  return table;
}

void TellDatapath(const ServiceRoute& route, bool is_short, uint32_t direct_connects,
                  OrigDstResolver& resolver) {
  std::vector<SocketAddress> direct;
  if (is_short && direct_connects > 0 && !route.direct_endpoints.empty()) {
    {
      std::lock_guard<std::mutex> lock(route.direct_mu);
      for (size_t i = 0; i < route.direct_endpoints.size() && i < route.lb->size(); ++i) {
        const SocketAddress& ep = route.direct_endpoints[i];
        const uint64_t failed = resolver.DirectStats(ep).failed;
        auto [it, fresh] = route.direct_failed_seen.try_emplace(ep.ToString(), failed);
        if (fresh || failed <= it->second) continue;  // first look: the baseline
        // As many failed connects as happened, up to what ejects.
        const uint64_t n = std::min<uint64_t>(failed - it->second, 8);
        for (uint64_t k = 0; k < n; ++k) route.lb->OnResult(i, absl::ZeroDuration(), false);
        it->second = failed;
      }
    }
    const auto stats = route.lb->Stats();
    for (size_t i = 0; i < route.direct_endpoints.size(); ++i) {
      if (i < stats.size() && (stats[i].ejected || stats[i].consecutive_failures > 0)) continue;
      direct.push_back(route.direct_endpoints[i]);
    }
  }
  route.closed_since_told.store(0, std::memory_order_relaxed);
  for (const IpAddress& vip : route.vips) {
    resolver.MarkShortRoute(SocketAddress{vip, route.port}, is_short, direct,
                            direct.empty() ? 0 : direct_connects);
  }
}

void RouteTable::RetellDatapath(const RouteTable* previous, uint32_t direct_connects,
                                OrigDstResolver& resolver) const {
  for (const auto& r : routes_) {
    if (r->told.load(std::memory_order_relaxed) == 2) TellDatapath(*r, true, direct_connects, resolver);
  }
  if (previous == nullptr) return;
  for (const auto& r : previous->routes_) {
    if (r->told.load(std::memory_order_relaxed) != 2) continue;
    for (const IpAddress& vip : r->vips) {
      const ServiceRoute* now = Find(SocketAddress{vip, r->port});
      if (now == nullptr || now->told.load(std::memory_order_relaxed) != 2) {
        resolver.MarkShortRoute(SocketAddress{vip, r->port}, false, {}, 0);
      }
    }
  }
}

void RouteTable::BuildMeshPeers(const Snapshot& snapshot) {
  // This node knows its own pods best: a remote entry that claims the IP of
  // any local pod (enrolled or not) is ignored, and so is a second remote
  // entry for one IP (the node file rejects both; another source might
  // briefly send them while a pod moves).
  std::set<IpAddress> local;
  for (const Pod& pod : snapshot.pods) local.insert(pod.ips.begin(), pod.ips.end());
  size_t enrolled = 0, ips = 0;
  for (const RemotePod& pod : snapshot.remote_pods) {
    if (!pod.enrolled) continue;
    ++enrolled;
    ips += pod.ips.size();
  }
  mesh_peers_.reserve(enrolled);
  mesh_peer_by_ip_.reserve(ips);
  for (const RemotePod& pod : snapshot.remote_pods) {
    if (!pod.enrolled) continue;
    const auto index = static_cast<uint32_t>(mesh_peers_.size());
    bool used = false;
    for (const IpAddress& ip : pod.ips) {
      if (local.contains(ip)) continue;
      used |= mesh_peer_by_ip_.emplace(ip, index).second;
    }
    if (used) mesh_peers_.push_back(MeshPeer{pod.ns, pod.name, pod.service_account, pod.node});
  }
}

const MeshPeer* RouteTable::MeshPeerOf(const IpAddress& ip) const {
  auto it = mesh_peer_by_ip_.find(ip);
  return it == mesh_peer_by_ip_.end() ? nullptr : &mesh_peers_[it->second];
}

const ServiceRoute* RouteTable::Find(const SocketAddress& dst) const {
  auto it = by_vip_.find({dst.ip, dst.port});
  return it == by_vip_.end() ? nullptr : it->second;
}

}  // namespace ringmesh::proxy
