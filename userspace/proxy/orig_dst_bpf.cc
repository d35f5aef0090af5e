// BpfOrigDstResolver lives apart from orig_dst.cc so that only binaries
// that use BPF link libbpf (through ringmesh_bpf).
#include <arpa/inet.h>

#include "userspace/bpf/pinned_maps.h"
#include "userspace/proxy/orig_dst.h"

namespace ringmesh::proxy {

std::optional<SocketAddress> BpfOrigDstResolver::Resolve(int /*accepted_fd*/, const ListenerInfo& listener,
                                                         const SocketAddress& peer) {
  auto od = maps_->TakeOrigDst(listener.netns_cookie, peer);
  if (!od) return std::nullopt;
  // The ABI stores every address as 16 bytes (IPv4 v4-mapped) and ports in
  // network order.
  return SocketAddress{IpAddress::FromV6(od->addr), ntohs(od->port)};
}

bool BpfOrigDstResolver::OnAccepted(int accepted_fd, const ListenerInfo& listener, const SocketAddress& peer) {
  const uint64_t n = accepted_.fetch_add(1, std::memory_order_relaxed);
  if (existing_in_a_row_.load(std::memory_order_relaxed) >= kSkipAfterExisting && n % kProbeEvery != 0) {
    skipped_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // A listener bound to a specific address and port is the accepted
  // socket's local address; only a wildcard one needs the syscall.
  std::optional<SocketAddress> local;
  if (listener.local.port != 0 && !listener.local.ip.is_unspecified()) {
    local = listener.local;
  } else {
    local = LocalAddress(accepted_fd);
  }
  if (!local) return false;
  switch (maps_->AddToSockhash(accepted_fd, listener.netns_cookie, *local, peer)) {
    case bpf::PinnedMaps::SockhashAdd::kAdded:
      existing_in_a_row_.store(0, std::memory_order_relaxed);
      return true;
    case bpf::PinnedMaps::SockhashAdd::kAlreadyPresent:
      existing_in_a_row_.fetch_add(1, std::memory_order_relaxed);
      return true;
    case bpf::PinnedMaps::SockhashAdd::kFastpathOff:
      return true;  // nothing to join: not a failure
    case bpf::PinnedMaps::SockhashAdd::kFailed:
      break;
  }
  return false;
}

}  // namespace ringmesh::proxy
