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

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "userspace/common/ip.h"
#include "userspace/common/unique_fd.h"
#include "userspace/proxy/tls/spiffe_id.h"

namespace ringmesh::bpf {
class PinnedMaps;
}  // namespace ringmesh::bpf

namespace ringmesh::proxy {

namespace tls {
class WorkloadIdentities;
}  // namespace tls

struct ListenerInfo {
  std::string pod_ns;
  std::string pod_name;
  std::string service_account;
  std::string workload;  // Istio's source_workload label
  // The pod's workload identity in the proxy's trust domain (an unset
  // service account is "default", as in Kubernetes), computed once: what its
  // certificate carries and what AuthorizationPolicy principals match. An
  // error for a pod whose names cannot form one (or no pod).
  absl::StatusOr<tls::SpiffeId> identity = absl::FailedPreconditionError("no pod");
  std::string principal;  // identity->ToString(), or empty
  uint32_t pod_id = 0;
  uint64_t netns_cookie = 0;
  // The pod's network namespace, where upstream sockets are created too;
  // null means the proxy's own namespace (plain-proxy mode).
  std::shared_ptr<const UniqueFd> netns;
  SocketAddress local;  // the bound listener address
  // Inbound HBONE (<pod IP>:15008): what arrives here is an mTLS tunnel
  // from another node's proxy (or any HBONE client) to this pod, answered
  // with the pod's certificate from `identities`; CONNECTs may target only
  // the pod's own addresses.
  bool hbone_inbound = false;
  std::vector<IpAddress> pod_ips;
  std::shared_ptr<tls::WorkloadIdentities> identities;
  // The pod's labels: AuthorizationPolicy selectors of inbound tunnels.
  std::map<std::string, std::string> pod_labels;

  int netns_fd() const { return netns ? netns->get() : -1; }
};

// The four sockets of a connection between two pods of this node whose
// legs are both on the fast path: the app's, the proxy's two, the server's.
struct SpliceEnds {
  uint64_t pod_cookie = 0;   // the client pod's netns
  SocketAddress app;         // the app socket's own address
  SocketAddress proxy_down;  // the proxy's accepted socket (its own address)
  SocketAddress proxy_up;    // the proxy's upstream socket (its own address)
  SocketAddress server;      // the server socket's own address
};

class OrigDstResolver {
 public:
  virtual ~OrigDstResolver() = default;
  // `peer` is the accepted socket's peer address (the caller has it).
  virtual std::optional<SocketAddress> Resolve(int accepted_fd, const ListenerInfo& listener,
                                               const SocketAddress& peer) = 0;
  // Called for each accepted downstream socket whose destination resolved.
  // Returns false when the socket could not join a fast path; the
  // connection then simply carries on through the normal TCP path.
  virtual bool OnAccepted(int /*accepted_fd*/, const ListenerInfo& /*listener*/,
                          const SocketAddress& /*peer*/) {
    return true;
  }
  // Fast-path flow control (rm_fp_credit): a connection reports every
  // credit_step() bytes read from its downstream socket (0 = never) the
  // total so far, and OnConnectionEnd when it has reported any.
  virtual uint64_t credit_step() const { return 0; }
  virtual void OnConsumed(const ListenerInfo& /*listener*/, const SocketAddress& /*peer*/,
                          uint64_t /*total*/) {}
  virtual void OnConnectionEnd(const ListenerInfo& /*listener*/, const SocketAddress& /*peer*/) {}
  // Before connecting an upstream socket to an enrolled pod on this node:
  // lets that socket, and the server's end, join the fast path.
  virtual void OnUpstreamToLocalPod(int /*fd*/) {}
  // Leaving the data path (rm_splice): the writer of one direction (`up`:
  // app -> server) may send straight to its far end once the proxy has
  // forwarded `forwarded` bytes of it, all it sent. False: not available.
  virtual bool SpliceSet(const SpliceEnds& /*e*/, bool /*up*/, uint64_t /*forwarded*/) { return false; }
  virtual void SpliceClear(const SpliceEnds& /*e*/) {}
  // Both legs are on the fast path (checked once, before SpliceSet).
  virtual bool SpliceAvailable(const SpliceEnds& /*e*/) { return false; }
  // Bytes the writer of that direction sent straight to its far end.
  virtual uint64_t SpliceDirect(const SpliceEnds& /*e*/, bool /*up*/) { return 0; }
  // Starts both directions' direct counts at 0 (before SpliceSet), and
  // reads and ends one (after SpliceClear).
  virtual bool SpliceCountStart(const SpliceEnds& /*e*/) { return false; }
  virtual uint64_t SpliceCountTake(const SpliceEnds& /*e*/, bool /*up*/) { return 0; }
  // Redirected bytes the far end of that direction has not read yet, -1
  // when unknown; and how many it may hold before the proxy waits (0: the
  // proxy never waits). See rm_unread_args in abi.h.
  virtual int64_t SpliceTargetUnread(const SpliceEnds& /*e*/, bool /*up*/) { return -1; }
  virtual uint64_t splice_hold_bytes() const { return 0; }
  // App <-> proxy connections to `dst` stay off the fast path while
  // `is_short` (rm_short_dst in abi.h); with `direct` endpoints, the next
  // `direct_left` connects to `dst` go straight to one of them (socket LB).
  virtual void MarkShortRoute(const SocketAddress& /*dst*/, bool /*is_short*/,
                              std::span<const SocketAddress> /*direct*/, uint32_t /*direct_left*/) {}
  // Connections connect() sent straight to `endpoint`, and how many of them
  // failed to connect (rm_direct_conns).
  struct DirectCounts {
    uint64_t connects = 0;
    uint64_t failed = 0;
  };
  virtual DirectCounts DirectStats(const SocketAddress& /*endpoint*/) const { return {}; }
  // Per (source pod, endpoint): direct connections established and closed
  // so far (cumulative; a counter the datapath evicted starts again at 0).
  struct DirectSourceCounts {
    uint32_t pod_id = 0;
    SocketAddress endpoint;
    uint64_t established = 0;
    uint64_t closed = 0;
  };
  virtual std::vector<DirectSourceCounts> DirectStatsBySource() const { return {}; }
};

class StaticOrigDstResolver final : public OrigDstResolver {
 public:
  explicit StaticOrigDstResolver(SocketAddress destination) : destination_(destination) {}
  std::optional<SocketAddress> Resolve(int, const ListenerInfo&, const SocketAddress&) override {
    return destination_;
  }

 private:
  SocketAddress destination_;
};

// Looks the destination up in rm_orig_dst by (listener netns cookie, peer
// address of the accepted socket) and makes sure each accepted socket is in
// the sk_msg sockhash. `maps` must outlive the resolver.
//
// The sockops program normally inserts the proxy's end itself (at
// PASSIVE_ESTABLISHED, when it is attached to a cgroup holding the proxy);
// the userspace insert is the fallback for a proxy outside that cgroup.
// While the kernel keeps answering "already there", the fallback costs two
// bpf() calls per connection for nothing, so after `kSkipAfterExisting` such
// answers in a row it runs only for one connection in `kProbeEvery`, and
// resumes on the first insert that was really needed. Thread-safe.
class BpfOrigDstResolver final : public OrigDstResolver {
 public:
  static constexpr int kSkipAfterExisting = 64;
  static constexpr uint64_t kProbeEvery = 1024;

  // Credits every quarter of the fast-path budget in force at start-up, at
  // most every 1 MiB.
  explicit BpfOrigDstResolver(const bpf::PinnedMaps* maps);
  std::optional<SocketAddress> Resolve(int accepted_fd, const ListenerInfo& listener,
                                       const SocketAddress& peer) override;
  bool OnAccepted(int accepted_fd, const ListenerInfo& listener, const SocketAddress& peer) override;
  uint64_t credit_step() const override { return credit_step_; }
  void OnUpstreamToLocalPod(int fd) override;
  bool SpliceSet(const SpliceEnds& e, bool up, uint64_t forwarded) override;
  bool SpliceAvailable(const SpliceEnds& e) override;
  void SpliceClear(const SpliceEnds& e) override;
  uint64_t SpliceDirect(const SpliceEnds& e, bool up) override;
  bool SpliceCountStart(const SpliceEnds& e) override;
  uint64_t SpliceCountTake(const SpliceEnds& e, bool up) override;
  int64_t SpliceTargetUnread(const SpliceEnds& e, bool up) override;
  uint64_t splice_hold_bytes() const override { return hold_bytes_; }
  void MarkShortRoute(const SocketAddress& dst, bool is_short, std::span<const SocketAddress> direct,
                      uint32_t direct_left) override;
  DirectCounts DirectStats(const SocketAddress& endpoint) const override;
  std::vector<DirectSourceCounts> DirectStatsBySource() const override;
  void OnConsumed(const ListenerInfo& listener, const SocketAddress& peer, uint64_t total) override;
  void OnConnectionEnd(const ListenerInfo& listener, const SocketAddress& peer) override;

  // Userspace inserts skipped because the kernel was doing them.
  uint64_t inserts_skipped() const { return skipped_.load(std::memory_order_relaxed); }

 private:
  const bpf::PinnedMaps* maps_;
  uint64_t credit_step_ = 0;
  uint64_t hold_bytes_ = 0;
  std::atomic<int> existing_in_a_row_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> skipped_{0};
};

// Peer / local address of a socket.
std::optional<SocketAddress> PeerAddress(int fd);
std::optional<SocketAddress> LocalAddress(int fd);
// The local address of a socket accepted on `listener`: the listener's own
// when it is bound to a specific address and port (no syscall), else
// getsockname(accepted_fd) (none when accepted_fd < 0).
std::optional<SocketAddress> AcceptedLocalAddress(int accepted_fd, const ListenerInfo& listener);

}  // namespace ringmesh::proxy
