#include "userspace/agent/k8s/pod_locator.h"

#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/vfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "userspace/agent/k8s/objects.h"
#include "userspace/agent/utf8.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

namespace ringmesh::agent::k8s {
namespace {

const char* QosName(QosClass q) {
  switch (q) {
    case QosClass::kGuaranteed:
      return "";
    case QosClass::kBurstable:
      return "burstable";
    case QosClass::kBestEffort:
      return "besteffort";
  }
  return "";
}

bool IsCgroup2(const char* path) {
  struct statfs fs {};
  return statfs(path, &fs) == 0 && static_cast<unsigned long>(fs.f_type) == CGROUP2_SUPER_MAGIC;
}

bool IsDir(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Start time (clock ticks since boot, field 22 of /proc/<pid>/stat); the
// command name may contain spaces and parentheses, so count after the last ')'.
std::optional<unsigned long long> StartTime(const std::string& proc_root, pid_t pid) {
  std::ifstream in(absl::StrCat(proc_root, "/", pid, "/stat"));
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  // After ')' come fields 3 (state) .. ; starttime is field 22.
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return std::nullopt;
  }
  char* end = nullptr;
  unsigned long long v = std::strtoull(field.c_str(), &end, 10);
  if (!end || *end) return std::nullopt;
  return v;
}

}  // namespace

std::optional<CgroupDriver> ParseCgroupDriver(const std::string& s) {
  if (s == "auto") return CgroupDriver::kAuto;
  if (s == "systemd") return CgroupDriver::kSystemd;
  if (s == "cgroupfs") return CgroupDriver::kCgroupfs;
  return std::nullopt;
}

std::string KubeletPodCgroup(CgroupDriver driver, QosClass qos, const std::string& uid,
                             const std::string& kubelet_cgroup_root) {
  // The kubelet thinks in cgroup names (lists of components) and converts
  // them per driver; do the same so --cgroup-root works for both.
  std::vector<std::string> name;
  for (absl::string_view c : absl::StrSplit(kubelet_cgroup_root, '/', absl::SkipEmpty()))
    name.emplace_back(c);
  name.push_back("kubepods");
  if (qos != QosClass::kGuaranteed) name.push_back(QosName(qos));
  name.push_back(absl::StrCat("pod", uid));

  if (driver == CgroupDriver::kCgroupfs) return absl::StrJoin(name, "/");
  // systemd: each level is a slice whose unit name repeats its parents'
  // names joined by '-'; '-' inside a component is escaped to '_'.
  std::vector<std::string> parts;
  std::string prefix;
  for (const auto& c : name) {
    std::string escaped = absl::StrReplaceAll(c, {{"-", "_"}});
    prefix = prefix.empty() ? escaped : absl::StrCat(prefix, "-", escaped);
    parts.push_back(absl::StrCat(prefix, ".slice"));
  }
  return absl::StrJoin(parts, "/");
}

std::string DefaultCgroupRoot() {
  if (IsCgroup2("/sys/fs/cgroup")) return "/sys/fs/cgroup";
  if (IsCgroup2("/sys/fs/cgroup/unified")) return "/sys/fs/cgroup/unified";
  return "/sys/fs/cgroup";
}

absl::StatusOr<pid_t> CgroupPodLocator::OldestProcess(const std::string& cgroup_dir) const {
  std::deque<std::pair<std::string, int>> todo{{cgroup_dir, 0}};
  int visited = 0;
  pid_t best = 0;
  unsigned long long best_start = 0;
  while (!todo.empty() && visited < opts_.max_dirs) {
    auto [dir, depth] = todo.front();
    todo.pop_front();
    ++visited;
    std::ifstream procs(dir + "/cgroup.procs");
    std::string line;
    for (int n = 0; n < 4096 && std::getline(procs, line); ++n) {
      char* end = nullptr;
      long pid = std::strtol(line.c_str(), &end, 10);
      if (pid <= 0 || !end || *end) continue;
      auto start = StartTime(opts_.proc_root, static_cast<pid_t>(pid));
      if (!start) continue;  // exited meanwhile
      if (!best || *start < best_start || (*start == best_start && pid < best)) {
        best = static_cast<pid_t>(pid);
        best_start = *start;
      }
    }
    if (depth >= opts_.max_depth) continue;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_directory(ec) && !it->is_symlink(ec)) todo.emplace_back(it->path().string(), depth + 1);
    }
  }
  if (!best) return absl::NotFoundError(absl::StrCat("no process in ", cgroup_dir, " yet"));
  return best;
}

absl::StatusOr<PodLocation> CgroupPodLocator::Locate(const PodRef& pod) {
  // The UID comes from the API server and becomes a path component: one
  // that is not a UUID ("../../x") could name any directory.
  if (!IsPodUid(pod.uid)) {
    return absl::InvalidArgumentError(absl::StrCat("pod ", pod.ns, "/", pod.name, ": uid \"",
                                                   Utf8Preview(pod.uid, 64), "\" is not a UUID"));
  }
  std::lock_guard lock(mu_);
  // Fast path: the process found last time still holds the same netns.
  if (auto it = cache_.find(pod.uid); it != cache_.end()) {
    struct stat st {};
    if (stat(it->second.location.netns_path.c_str(), &st) == 0 && st.st_dev == it->second.dev &&
        st.st_ino == it->second.ino && IsDir(it->second.location.cgroup_path)) {
      return it->second.location;
    }
    cache_.erase(it);
  }

  std::vector<CgroupDriver> drivers;
  if (opts_.driver == CgroupDriver::kAuto) {
    drivers = {CgroupDriver::kSystemd, CgroupDriver::kCgroupfs};
  } else {
    drivers = {opts_.driver};
  }
  std::vector<QosClass> classes;
  if (pod.qos_class == "Guaranteed") {
    classes = {QosClass::kGuaranteed};
  } else if (pod.qos_class == "Burstable") {
    classes = {QosClass::kBurstable};
  } else if (pod.qos_class == "BestEffort") {
    classes = {QosClass::kBestEffort};
  } else {
    classes = {QosClass::kGuaranteed, QosClass::kBurstable, QosClass::kBestEffort};
  }
  std::string cgroup;
  std::vector<std::string> tried;
  for (auto d : drivers) {
    for (auto q : classes) {
      std::string path =
          absl::StrCat(opts_.cgroup_root, "/", KubeletPodCgroup(d, q, pod.uid, opts_.kubelet_cgroup_root));
      if (IsDir(path)) {
        cgroup = path;
        break;
      }
      tried.push_back(path);
    }
    if (!cgroup.empty()) break;
  }
  if (cgroup.empty()) {
    return absl::NotFoundError(absl::StrCat("no cgroup yet (tried ", absl::StrJoin(tried, ", "), ")"));
  }
  auto pid = OldestProcess(cgroup);
  if (!pid.ok()) return pid.status();
  PodLocation loc{cgroup, absl::StrCat(opts_.proc_root, "/", *pid, "/ns/net")};
  struct stat st {};
  if (stat(loc.netns_path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(loc.netns_path, ": ", std::strerror(errno)));
  }
  cache_[pod.uid] = Cached{loc, st.st_dev, st.st_ino};
  // Forget pods that are gone, so the cache stays the size of the node.
  if (cache_.size() > 1024) {
    std::erase_if(cache_, [](const auto& kv) { return !IsDir(kv.second.location.cgroup_path); });
  }
  return loc;
}

}  // namespace ringmesh::agent::k8s
