// BpfOrigDstResolver lives apart from orig_dst.cc so that only binaries
// that use BPF link libbpf (through ringmesh_bpf).
#include <arpa/inet.h>

#include "userspace/bpf/pinned_maps.h"
#include "userspace/proxy/orig_dst.h"

namespace ringmesh::proxy {

std::optional<SocketAddress> BpfOrigDstResolver::Resolve(int accepted_fd, const ListenerInfo& listener) {
  auto peer = PeerAddress(accepted_fd);
  if (!peer) return std::nullopt;
  auto od = maps_->TakeOrigDst(listener.netns_cookie, *peer);
  if (!od) return std::nullopt;
  // The ABI stores every address as 16 bytes (IPv4 v4-mapped) and ports in
  // network order.
  return SocketAddress{IpAddress::FromV6(od->addr), ntohs(od->port)};
}

bool BpfOrigDstResolver::OnAccepted(int accepted_fd, const ListenerInfo& listener) {
  auto local = LocalAddress(accepted_fd);
  auto peer = PeerAddress(accepted_fd);
  if (!local || !peer) return false;
  return maps_->AddToSockhash(accepted_fd, listener.netns_cookie, *local, *peer);
}

}  // namespace ringmesh::proxy
