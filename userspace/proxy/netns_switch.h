// Moving the calling thread into a pod's network namespace and back. Sockets
// keep the namespace they were created in, so a thread enters the pod's
// namespace just long enough to call socket(), then returns. setns() affects
// only the calling thread; a thread that cannot get back home would create
// every later socket in the wrong namespace, so that failure is fatal.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::proxy {

// Identity of a namespace file: equal for every fd that refers to the same
// namespace (st_dev, st_ino of the nsfs inode).
struct NetnsId {
  uint64_t dev = 0;
  uint64_t ino = 0;
  auto operator<=>(const NetnsId&) const = default;
};
absl::StatusOr<NetnsId> GetNetnsId(int netns_fd);

class NetnsSwitch {
 public:
  // Remembers the calling thread's current namespace as home.
  static absl::StatusOr<NetnsSwitch> ForCurrentThread();

  // Enters netns_fd (no-op for -1 or when it is home).
  absl::Status Enter(int netns_fd);
  // Returns home if Enter() left it; aborts if that fails.
  void Leave();

  const NetnsId& home_id() const { return home_id_; }

 private:
  NetnsSwitch(UniqueFd home, NetnsId id) : home_(std::move(home)), home_id_(id) {}
  UniqueFd home_;
  NetnsId home_id_;
  bool away_ = false;
};

}  // namespace ringmesh::proxy
