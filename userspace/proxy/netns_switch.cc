#include "userspace/proxy/netns_switch.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "spdlog/spdlog.h"

namespace ringmesh::proxy {

absl::StatusOr<NetnsId> GetNetnsId(int netns_fd) {
  struct stat st;
  if (fstat(netns_fd, &st) != 0) return absl::ErrnoToStatus(errno, "fstat(netns)");
  return NetnsId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

absl::StatusOr<NetnsSwitch> NetnsSwitch::ForCurrentThread() {
  UniqueFd home(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!home) return absl::ErrnoToStatus(errno, "open /proc/thread-self/ns/net");
  auto id = GetNetnsId(home.get());
  if (!id.ok()) return id.status();
  return NetnsSwitch(std::move(home), *id);
}

absl::Status NetnsSwitch::Enter(int netns_fd) {
  if (netns_fd < 0) return absl::OkStatus();
  auto id = GetNetnsId(netns_fd);
  if (!id.ok()) return id.status();
  if (*id == home_id_) return absl::OkStatus();
  if (setns(netns_fd, CLONE_NEWNET) != 0) return absl::ErrnoToStatus(errno, "setns(pod netns)");
  away_ = true;
  return absl::OkStatus();
}

void NetnsSwitch::Leave() {
  if (!away_) return;
  if (setns(home_.get(), CLONE_NEWNET) != 0) {
    spdlog::critical("setns back to the proxy's namespace failed: {}", std::strerror(errno));
    std::abort();
  }
  away_ = false;
}

}  // namespace ringmesh::proxy
