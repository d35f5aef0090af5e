#include "userspace/proxy/route_table.h"

#include <tuple>

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
    if (pod.enrolled && !pod.netns_path.empty()) table->local_pod_ips_.insert(pod.ips.begin(), pod.ips.end());
  }
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
      route->lb = std::make_shared<LoadBalancer>(svc.lb, ready, prev_lb, lb_options);
      if (it != old.end()) {
        // What the route's connections look like, and what the datapath was
        // told about its VIPs (again if they changed), survive the snapshot.
        const ServiceRoute& prev = *it->second;
        route->forwards_avg_x16.store(prev.forwards_avg_x16.load(std::memory_order_relaxed), std::memory_order_relaxed);
        route->closed_samples.store(prev.closed_samples.load(std::memory_order_relaxed), std::memory_order_relaxed);
        if (prev.vips == svc.vips) route->told.store(prev.told.load(std::memory_order_relaxed), std::memory_order_relaxed);
      }
      for (const IpAddress& vip : svc.vips) table->by_vip_[{vip, port.port}] = route.get();
      table->routes_.push_back(std::move(route));
    }
  }
  return table;
}

const ServiceRoute* RouteTable::Find(const SocketAddress& dst) const {
  auto it = by_vip_.find({dst.ip, dst.port});
  return it == by_vip_.end() ? nullptr : it->second;
}

}  // namespace ringmesh::proxy
