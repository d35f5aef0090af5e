// Which agent may write a pin dir's maps. A DaemonSet surge runs the old
// and the new agent of a node side by side; both publish snapshots to their
// own proxy, but only the lease holder writes rm_pods/rm_opt_out_cidrs (two
// writers would allocate colliding pod ids and delete each other's
// entries). The lease is a one-entry array pinned at
// <pin_dir>/maps/rm_agent_lease, written only by agents (no BPF program
// reads it, so it is not part of the BPF ABI):
//   - a starting agent claims it (epoch + 1, its pid, now);
//   - the holder renews the heartbeat on every poll;
//   - another agent stands by while the heartbeat is fresh, and claims the
//     lease when it is older than the timeout (the holder died or was
//     removed, e.g. a rolled-back update).
// Two agents claiming at the same instant both write epoch + 1; the pid
// decides, and the loser sees it on its next poll.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::bpf {

struct AgentLeaseValue {
  uint64_t epoch = 0;
  uint64_t heartbeat_ns = 0;  // CLOCK_MONOTONIC (system-wide)
  uint32_t pid = 0;
  uint32_t _pad = 0;
};

enum class LeaseAction { kRenew, kStandBy, kClaim };

// Pure decision for one poll, given what is in the map.
LeaseAction DecideLease(const AgentLeaseValue& current, uint64_t my_epoch, uint32_t my_pid, uint64_t now_ns,
                        uint64_t timeout_ns);

class AgentLease {
 public:
  // Opens <pin_dir>/maps/rm_agent_lease, creating and pinning it if absent.
  static absl::StatusOr<AgentLease> OpenOrCreate(const std::string& pin_dir);

  // Claims the lease now (used at start). Returns the new epoch.
  absl::StatusOr<uint64_t> Claim(uint32_t pid);
  // One poll: renews, stands by or claims. Returns true while we hold it.
  absl::StatusOr<bool> Poll(uint32_t pid, uint64_t timeout_ns);
  absl::StatusOr<AgentLeaseValue> Read() const;
  uint64_t epoch() const { return epoch_; }

 private:
  absl::Status Write(const AgentLeaseValue& v);
  UniqueFd fd_;
  uint64_t epoch_ = 0;
};

uint64_t MonotonicNowNs();

}  // namespace ringmesh::bpf
