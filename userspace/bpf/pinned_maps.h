// Access to the agent's pinned BPF maps from other processes (the proxy,
// ringmeshctl). Opens maps by pin path with bpf_obj_get; never loads or
// attaches anything. This directory is the only userspace code that
// includes libbpf.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bpf/include/ringmesh/abi.h"
#include "userspace/common/ip.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::bpf {

// Summed per-CPU counters, indexed by enum rm_counter.
using Counters = std::array<uint64_t, RM_CTR_MAX>;
const char* CounterName(int index);

class PinnedMaps {
 public:
  // pin_dir is the instance directory (e.g. /sys/fs/bpf/ringmesh/<node>);
  // maps live under <pin_dir>/maps/<name>.
  static absl::StatusOr<PinnedMaps> Open(const std::string& pin_dir);

  // Original destination of an accepted proxy socket: looked up by the
  // socket's netns cookie and its peer address, then deleted.
  std::optional<rm_orig_dst> TakeOrigDst(uint64_t netns_cookie, const SocketAddress& peer) const;
  // Inserts a proxy-side socket into the sockhash under its own view
  // (local, remote). kAlreadyPresent: sockops inserted it first (the normal
  // case when sockops is attached to a cgroup holding the proxy).
  // kFailed (map full, socket gone): the connection simply stays on the
  // normal path.
  enum class SockhashAdd { kAdded, kAlreadyPresent, kFastpathOff, kFailed };
  SockhashAdd AddToSockhash(int fd, uint64_t netns_cookie, const SocketAddress& local,
                            const SocketAddress& remote) const;
  bool FastpathEnabled() const;
  // rm_upstream (see abi.h): the unconnected socket `fd` will connect to an
  // enrolled pod on this node and may join the fast path. False on error.
  bool MarkUpstreamToLocalPod(int fd) const;
  // One direction of a connection the proxy may leave (rm_splice in
  // abi.h): `writer` sends to `target`, through the proxy's socket `via`.
  // Each socket is given as (own address, peer address); netns_cookie is
  // the pod's (used for loopback ends only, as the BPF side keys them).
  struct SpliceLeg {
    uint64_t netns_cookie = 0;
    SocketAddress writer, writer_peer;
    SocketAddress target, target_peer;
    SocketAddress via, via_peer;
  };
  // Whether the sockhash holds both ends of the leg's `via` connection
  // (the proxy's socket and the far end), i.e. that leg is on the fast path.
  bool LegOnFastPath(const SpliceLeg& leg) const;
  bool SetSplice(const SpliceLeg& leg, uint64_t forwarded) const;
  void ClearSplice(const SpliceLeg& leg) const;
  // rm_short_dst: app <-> proxy connections to `dst` (a service VIP:port)
  // stay out of the sockhash while `is_short`. With `direct` endpoints (at
  // most RM_MAX_DIRECT_BACKENDS, else none are written) the next
  // `direct_left` connects of enrolled pods to `dst` go straight to one of
  // them (socket LB, abi.h). False on a map error.
  bool SetShortRoute(const SocketAddress& dst, bool is_short, std::span<const SocketAddress> direct = {},
                     uint32_t direct_left = 0) const;
  // Deletes every rm_short_dst entry (a starting proxy owns the map).
  void ClearShortRoutes() const;
  // rm_direct_conns: connections connect() sent straight to `endpoint`, and
  // how many of them failed to connect (zeros if none).
  rm_direct_conns DirectStats(const SocketAddress& endpoint) const;
  // rm_direct_conns per (source pod, endpoint), pod 0 (the sums) left out.
  struct DirectBySource {
    uint32_t pod_id = 0;
    SocketAddress endpoint;
    rm_direct_conns counts{};
  };
  std::vector<DirectBySource> DirectStatsBySource() const;
  // The rm_short_dst entry of `dst`, if any.
  std::optional<rm_short_dst> ShortRoute(const SocketAddress& dst) const;
  // rm_splice_bytes: the count of bytes the writer sends straight to its
  // target, kept under `via` by the proxy's own entry. Start creates it
  // at 0; Direct reads it; Take reads and deletes it (the splice's end).
  bool StartDirectCount(const SpliceLeg& leg) const;
  uint64_t DirectBytes(const SpliceLeg& leg) const;
  uint64_t TakeDirectBytes(const SpliceLeg& leg) const;
  // Redirected bytes the leg's target has not read yet (the rm_unread
  // program, abi.h); -1 when unknown (no program pinned, kernel before
  // 6.12, socket gone).
  int64_t TargetUnread(const SpliceLeg& leg) const;
  // rm_fp_credit (see abi.h): the proxy end (local, remote) has read
  // `consumed` bytes in total; false when the map is full.
  bool Credit(uint64_t netns_cookie, const SocketAddress& local, const SocketAddress& remote, uint64_t consumed) const;
  void ForgetCredit(uint64_t netns_cookie, const SocketAddress& local, const SocketAddress& remote) const;
  // rm_config.fastpath_budget (0 if unreadable).
  uint64_t FastpathBudget() const;
  absl::Status SetFastpath(bool enabled) const;
  // rm_config.fastpath_budget (bytes per socket; see abi.h).
  absl::Status SetFastpathBudget(uint64_t bytes) const;
  // rm_config.flow_control (RM_FLOW_CONTROL_*; UINT32_MAX if unreadable).
  uint32_t FlowControl() const;
  absl::Status SetFlowControl(uint32_t mode) const;
  absl::StatusOr<Counters> ReadCounters() const;
  // Number of entries currently in a map (iterates keys; for tests/ctl).
  absl::StatusOr<size_t> CountEntries(const char* map_name) const;
  int map_fd(const char* map_name) const;

 private:
  std::optional<rm_config> ReadConfig() const;
  // Read-modify-write of the single rm_config entry.
  absl::Status UpdateConfig(const std::function<void(rm_config&)>& change) const;

  struct Map {
    std::string name;
    UniqueFd fd;
  };
  std::vector<Map> maps_;
  UniqueFd unread_prog_;  // <pin_dir>/progs/rm_unread; absent on older agents
};

}  // namespace ringmesh::bpf
