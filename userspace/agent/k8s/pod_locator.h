// Finds where a Kubernetes pod lives on this node: its cgroup (from the pod
// UID under the kubelet's cgroup layout) and its network namespace (through
// any process in that cgroup). PodLocator is the seam: the Kubernetes source
// calls it on every rebuild, tests substitute a fake, and CgroupPodLocator
// reads the real filesystem.
//
// The kubelet's layouts, for pod UID 1b2c-... in QoS class Burstable:
//   systemd driver:  kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c_....slice
//   cgroupfs driver: kubepods/burstable/pod1b2c-...
// Guaranteed pods sit directly under kubepods (kubepods-pod<uid>.slice,
// kubepods/pod<uid>). With the kubelet's --cgroup-root=/kubelet every name
// gains that prefix (kubelet.slice/kubelet-kubepods.slice/...).
//
//   CgroupPodLocator locator({.cgroup_root = DefaultCgroupRoot()});
//   auto where = locator.Locate({.uid = "1b2c-...", .qos_class = "Burstable"});
//   if (where.ok()) pod.netns_path = where->netns_path;  // /proc/<pid>/ns/net
#pragma once

#include <sys/types.h>

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ringmesh::agent::k8s {

struct PodRef {
  std::string ns;
  std::string name;
  std::string uid;
  std::string qos_class;  // "Guaranteed" | "Burstable" | "BestEffort" | "" (unknown: try all)
};

struct PodLocation {
  std::string cgroup_path;  // absolute
  std::string netns_path;   // /proc/<pid>/ns/net
  bool operator==(const PodLocation&) const = default;
};

class PodLocator {
 public:
  virtual ~PodLocator() = default;
  // NotFound while the pod has no cgroup or no process yet (just scheduled);
  // the caller retries on its next rebuild.
  virtual absl::StatusOr<PodLocation> Locate(const PodRef& pod) = 0;
};

enum class CgroupDriver { kAuto, kSystemd, kCgroupfs };
enum class QosClass { kGuaranteed, kBurstable, kBestEffort };

// Parses "systemd" | "cgroupfs" | "auto".
std::optional<CgroupDriver> ParseCgroupDriver(const std::string& s);

// The pod's cgroup relative to the cgroup root, e.g.
// "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice".
// `kubelet_cgroup_root` is the kubelet's --cgroup-root ("/" by default).
// driver must be kSystemd or kCgroupfs.
std::string KubeletPodCgroup(CgroupDriver driver, QosClass qos, const std::string& uid,
                             const std::string& kubelet_cgroup_root = "/");

// /sys/fs/cgroup when it is cgroup2 (unified), /sys/fs/cgroup/unified when
// that is (hybrid), else /sys/fs/cgroup.
std::string DefaultCgroupRoot();

struct CgroupPodLocatorOptions {
  std::string cgroup_root = "/sys/fs/cgroup";
  CgroupDriver driver = CgroupDriver::kAuto;  // auto tries systemd, then cgroupfs
  std::string kubelet_cgroup_root = "/";
  std::string proc_root = "/proc";
  // Bounds on the search for a process below the pod cgroup (containers are
  // sub-cgroups, a few levels deep at most).
  int max_depth = 4;
  int max_dirs = 256;
};

class CgroupPodLocator : public PodLocator {
 public:
  explicit CgroupPodLocator(CgroupPodLocatorOptions opts) : opts_(std::move(opts)) {}
  absl::StatusOr<PodLocation> Locate(const PodRef& pod) override;

  // The process whose netns represents the pod: the oldest one below
  // `cgroup_dir` (the pod sandbox's pause process is started first and lives
  // as long as the pod's netns, whereas exec'd probes come and go).
  absl::StatusOr<pid_t> OldestProcess(const std::string& cgroup_dir) const;

 private:
  struct Cached {
    PodLocation location;
    dev_t dev = 0;
    ino_t ino = 0;
  };

  CgroupPodLocatorOptions opts_;
  std::mutex mu_;
  std::map<std::string, Cached> cache_;  // by uid
};

}  // namespace ringmesh::agent::k8s
