// Where an accepted connection was originally going, and who sent it.
//
// ListenerInfo is the source identity: the pod whose network namespace a
// listener lives in. The data plane learns the source workload only from
// the listener a connection arrived on, never from its source address.
//
// OrigDstResolver is the seam between the data plane and the BPF maps:
// StaticOrigDstResolver (one fixed destination) serves unit tests,
// benchmarks and the plain-proxy mode; BpfOrigDstResolver reads what the
// cgroup/connect and sockops programs recorded. Resolvers are called from
// all worker threads at once and must be thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "userspace/common/ip.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::bpf {
class PinnedMaps;
}  // namespace ringmesh::bpf

namespace ringmesh::proxy {

struct ListenerInfo {
  std::string pod_ns;
  std::string pod_name;
  std::string service_account;
  std::string workload;  // Istio's source_workload label
  uint32_t pod_id = 0;
  uint64_t netns_cookie = 0;
  // The pod's network namespace, where upstream sockets are created too;
  // null means the proxy's own namespace (plain-proxy mode).
  std::shared_ptr<const UniqueFd> netns;
  SocketAddress local;  // the bound listener address

  int netns_fd() const { return netns ? netns->get() : -1; }
};

class OrigDstResolver {
 public:
  virtual ~OrigDstResolver() = default;
  virtual std::optional<SocketAddress> Resolve(int accepted_fd, const ListenerInfo& listener) = 0;
  // Called for each accepted downstream socket whose destination resolved.
  // Returns false when the socket could not join a fast path; the
  // connection then simply carries on through the normal TCP path.
  virtual bool OnAccepted(int /*accepted_fd*/, const ListenerInfo& /*listener*/) { return true; }
};

class StaticOrigDstResolver final : public OrigDstResolver {
 public:
  explicit StaticOrigDstResolver(SocketAddress destination) : destination_(destination) {}
  std::optional<SocketAddress> Resolve(int, const ListenerInfo&) override { return destination_; }

 private:
  SocketAddress destination_;
};

// Looks the destination up in rm_orig_dst by (listener netns cookie, peer
// address of the accepted socket) and adds each accepted socket to the
// sk_msg sockhash. `maps` must outlive the resolver.
class BpfOrigDstResolver final : public OrigDstResolver {
 public:
  explicit BpfOrigDstResolver(const bpf::PinnedMaps* maps) : maps_(maps) {}
  std::optional<SocketAddress> Resolve(int accepted_fd, const ListenerInfo& listener) override;
  bool OnAccepted(int accepted_fd, const ListenerInfo& listener) override;

 private:
  const bpf::PinnedMaps* maps_;
};

// Peer / local address of a socket.
std::optional<SocketAddress> PeerAddress(int fd);
std::optional<SocketAddress> LocalAddress(int fd);

}  // namespace ringmesh::proxy
