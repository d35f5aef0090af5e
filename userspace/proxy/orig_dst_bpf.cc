// BpfOrigDstResolver lives apart from orig_dst.cc so that only binaries
// that use BPF link libbpf (through ringmesh_bpf).
#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "spdlog/spdlog.h"
#include "userspace/bpf/pinned_maps.h"
#include "userspace/proxy/orig_dst.h"

namespace ringmesh::proxy {
namespace {

bpf::PinnedMaps::SpliceLeg Leg(const SpliceEnds& e, bool up) {
  bpf::PinnedMaps::SpliceLeg l;
  l.netns_cookie = e.pod_cookie;
  if (up) {  // app -> server, through the proxy's upstream socket
    l.writer = e.app, l.writer_peer = e.proxy_down;
    l.target = e.server, l.target_peer = e.proxy_up;
    l.via = e.proxy_up, l.via_peer = e.server;
  } else {  // server -> app, through the proxy's accepted socket
    l.writer = e.server, l.writer_peer = e.proxy_up;
    l.target = e.app, l.target_peer = e.proxy_down;
    l.via = e.proxy_down, l.via_peer = e.app;
  }
  return l;
}

}  // namespace

bool BpfOrigDstResolver::SpliceSet(const SpliceEnds& e, bool up, uint64_t forwarded) {
  return maps_->SetSplice(Leg(e, up), forwarded);
}

bool BpfOrigDstResolver::SpliceAvailable(const SpliceEnds& e) {
  // The server leg is what may be missing (fast path off, the server's end
  // did not join); the app leg joined at accept.
  return maps_->LegOnFastPath(Leg(e, true));
}

void BpfOrigDstResolver::SpliceClear(const SpliceEnds& e) {
  maps_->ClearSplice(Leg(e, true));
  maps_->ClearSplice(Leg(e, false));
}

void BpfOrigDstResolver::MarkShortRoute(const SocketAddress& dst, bool is_short, std::span<const SocketAddress> direct,
                                        uint32_t direct_left) {
  if (!maps_->SetShortRoute(dst, is_short, direct, direct_left)) {
    spdlog::warn("rm_short_dst {} {}: {}", is_short ? "set" : "clear", dst.ToString(), std::strerror(errno));
  }
}

std::vector<OrigDstResolver::DirectSourceCounts> BpfOrigDstResolver::DirectStatsBySource() const {
  std::vector<DirectSourceCounts> out;
  for (const auto& d : maps_->DirectStatsBySource()) {
    out.push_back({d.pod_id, d.endpoint, d.counts.established, d.counts.closed});
  }
  return out;
}

OrigDstResolver::DirectCounts BpfOrigDstResolver::DirectStats(const SocketAddress& endpoint) const {
  const rm_direct_conns c = maps_->DirectStats(endpoint);
  return {c.connects, c.failed};
}

uint64_t BpfOrigDstResolver::SpliceDirect(const SpliceEnds& e, bool up) { return maps_->DirectBytes(Leg(e, up)); }

bool BpfOrigDstResolver::SpliceCountStart(const SpliceEnds& e) {
  return maps_->StartDirectCount(Leg(e, true)) && maps_->StartDirectCount(Leg(e, false));
}

uint64_t BpfOrigDstResolver::SpliceCountTake(const SpliceEnds& e, bool up) { return maps_->TakeDirectBytes(Leg(e, up)); }

BpfOrigDstResolver::BpfOrigDstResolver(const bpf::PinnedMaps* maps) : maps_(maps) {
  const uint64_t budget = maps_->FastpathBudget();
  credit_step_ = budget == 0 ? 0 : std::min<uint64_t>(uint64_t{1} << 20, std::max<uint64_t>(1, budget / 4));
  // A splice writer stops at half the budget, the proxy's socket commits
  // to TCP past all of it: the proxy waits in between (rm_splice, abi.h).
  hold_bytes_ = budget / 4 * 3;
}

int64_t BpfOrigDstResolver::SpliceTargetUnread(const SpliceEnds& e, bool up) {
  return maps_->TargetUnread(Leg(e, up));
}

void BpfOrigDstResolver::OnConsumed(const ListenerInfo& listener, const SocketAddress& peer, uint64_t total) {
  if (auto local = AcceptedLocalAddress(-1, listener)) maps_->Credit(listener.netns_cookie, *local, peer, total);
}

void BpfOrigDstResolver::OnConnectionEnd(const ListenerInfo& listener, const SocketAddress& peer) {
  if (auto local = AcceptedLocalAddress(-1, listener)) maps_->ForgetCredit(listener.netns_cookie, *local, peer);
}

void BpfOrigDstResolver::OnUpstreamToLocalPod(int fd) {
  // Best effort: without the mark this connection's server leg stays on TCP.
  maps_->MarkUpstreamToLocalPod(fd);
}

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
  std::optional<SocketAddress> local = AcceptedLocalAddress(accepted_fd, listener);
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
