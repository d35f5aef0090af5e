#include "userspace/bpf/agent_lease.h"

#include <bpf/bpf.h>
#include <time.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ringmesh::bpf {

uint64_t MonotonicNowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

LeaseAction DecideLease(const AgentLeaseValue& current, uint64_t my_epoch, uint32_t my_pid, uint64_t now_ns,
                        uint64_t timeout_ns) {
  if (my_epoch != 0 && current.epoch == my_epoch && current.pid == my_pid) return LeaseAction::kRenew;
  bool stale = current.epoch == 0 || now_ns < current.heartbeat_ns ||  // clock went back: treat as stale
               now_ns - current.heartbeat_ns > timeout_ns;
  return stale ? LeaseAction::kClaim : LeaseAction::kStandBy;
}

absl::StatusOr<AgentLease> AgentLease::OpenOrCreate(const std::string& pin_dir) {
  std::string path = pin_dir + "/maps/rm_agent_lease";
  AgentLease l;
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0 && errno == ENOENT) {
    fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "rm_agent_lease", sizeof(uint32_t), sizeof(AgentLeaseValue), 1,
                        nullptr);
    if (fd < 0) return absl::InternalError(absl::StrCat("create lease map: ", std::strerror(errno)));
    if (bpf_obj_pin(fd, path.c_str()) != 0) {
      int err = errno;
      close(fd);
      // Another agent pinned it first: use theirs.
      if (err != EEXIST) return absl::InternalError(absl::StrCat("pin ", path, ": ", std::strerror(err)));
      fd = bpf_obj_get(path.c_str());
    }
  }
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  l.fd_.Reset(fd);
  return l;
}

absl::StatusOr<AgentLeaseValue> AgentLease::Read() const {
  uint32_t zero = 0;
  AgentLeaseValue v;
  if (bpf_map_lookup_elem(fd_.get(), &zero, &v) != 0) {
    return absl::InternalError(absl::StrCat("read lease: ", std::strerror(errno)));
  }
  return v;
}

absl::Status AgentLease::Write(const AgentLeaseValue& v) {
  uint32_t zero = 0;
  if (bpf_map_update_elem(fd_.get(), &zero, &v, BPF_ANY) != 0) {
    return absl::InternalError(absl::StrCat("write lease: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> AgentLease::Claim(uint32_t pid) {
  auto cur = Read();
  if (!cur.ok()) return cur.status();
  AgentLeaseValue next{cur->epoch + 1, MonotonicNowNs(), pid, 0};
  if (auto st = Write(next); !st.ok()) return st;
  epoch_ = next.epoch;
  return epoch_;
}

absl::StatusOr<bool> AgentLease::Poll(uint32_t pid, uint64_t timeout_ns) {
  auto cur = Read();
  if (!cur.ok()) return cur.status();
  switch (DecideLease(*cur, epoch_, pid, MonotonicNowNs(), timeout_ns)) {
    case LeaseAction::kRenew: {
      AgentLeaseValue v = *cur;
      v.heartbeat_ns = MonotonicNowNs();
      if (auto st = Write(v); !st.ok()) return st;
      return true;
    }
    case LeaseAction::kStandBy:
      return false;
    case LeaseAction::kClaim: {
      auto e = Claim(pid);
      if (!e.ok()) return e.status();
      return true;
    }
  }
  return false;
}

}  // namespace ringmesh::bpf
