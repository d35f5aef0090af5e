// The agent's handle on the BPF datapath: loads the programs (or adopts the
// ones a previous agent pinned), attaches them through pinned bpf_links,
// and keeps the pods and opt-out maps equal to the desired state.
//
// Restart story: maps and links are pinned under <pin_dir>. A new agent
// reuses the pinned maps (their contents survive) and swaps the program of
// each pinned link with bpf_link_update, which is atomic for the hook: no
// connect() ever runs without a program. Unpinning (Uninstall) detaches.
//
//   auto dp = Datapath::LoadOrAdopt({.pin_dir = "/sys/fs/bpf/ringmesh/node1",
//                                    .cgroup_path = "/sys/fs/cgroup/kubepods"});
//   dp->SyncPods(entries);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bpf/include/ringmesh/abi.h"
#include "userspace/bpf/pinned_maps.h"
#include "userspace/common/ip.h"

struct rm_datapath;  // bpftool skeleton (global namespace)

namespace ringmesh::bpf {

struct DatapathOptions {
  std::string pin_dir;      // instance pin directory
  std::string cgroup_path;  // cgroup v2 directory to attach to (never a hierarchy root)
  uint32_t proxy_mark = 0x539;
  uint32_t max_pods = RM_DEFAULT_MAX_PODS;
  uint32_t max_opt_out_cidrs = RM_DEFAULT_MAX_OPT_OUT_CIDRS;
  uint32_t max_orig_dst = RM_DEFAULT_MAX_ORIG_DST;
  uint32_t max_sockhash = RM_DEFAULT_MAX_SOCKHASH;
  uint32_t max_short_routes = RM_DEFAULT_MAX_SHORT_DST;
  uint32_t max_direct_backends = RM_DEFAULT_MAX_DIRECT_CONNS;
  bool fastpath = true;  // initial value only when nothing is pinned yet
  // rm_config.fastpath_budget, written at every start (see abi.h).
  uint64_t fastpath_budget = RM_DEFAULT_FASTPATH_BUDGET;
  // rm_config.flow_control (RM_FLOW_CONTROL_*), written at every start.
  uint32_t flow_control = RM_FLOW_CONTROL_AUTO;
};

struct PodEntry {
  uint64_t netns_cookie = 0;
  rm_pod_info info{};
  std::vector<Cidr> opt_out_cidrs;
};

struct SyncResult {
  int upserted = 0;
  int removed = 0;
  std::vector<std::string> errors;  // per pod, e.g. map full; others still applied
};

class Datapath {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Datapath>> LoadOrAdopt(const DatapathOptions& opts);
  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  // True when the maps and links came from a previous agent.
  bool adopted() const { return adopted_; }

  // Makes rm_pods and rm_opt_out_cidrs equal to `pods` (upsert, then delete
  // what is no longer wanted).
  [[nodiscard]] SyncResult SyncPods(const std::vector<PodEntry>& pods);

  const PinnedMaps& maps() const { return maps_; }

  // Unpins everything under pin_dir: links detach once no process holds
  // them. Safe to call when nothing is pinned.
  [[nodiscard]] static absl::Status Uninstall(const std::string& pin_dir);

 private:
  Datapath() = default;
  absl::Status Load(const DatapathOptions& opts);
  absl::Status AttachAll(const DatapathOptions& opts);
  absl::Status PinUnreadProgram(const std::string& pin_dir);

  ::rm_datapath* skel_ = nullptr;
  bool adopted_ = false;
  PinnedMaps maps_;
  std::vector<UniqueFd> links_;
};

}  // namespace ringmesh::bpf
