#include "userspace/common/netns.h"

#include <sched.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "userspace/common/unique_fd.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace ringmesh {

absl::Status RunInNetns(int netns_fd, const std::function<absl::Status()>& fn) {
  absl::Status result;
  std::thread t([&] {
    if (setns(netns_fd, CLONE_NEWNET) != 0) {
      result = absl::InternalError(absl::StrCat("setns: ", std::strerror(errno)));
      return;
    }
    result = fn();
  });
  t.join();
  return result;
}

absl::StatusOr<uint64_t> SocketNetnsCookie(int sock_fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(sock_fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) {
    return absl::InternalError(absl::StrCat("SO_NETNS_COOKIE: ", std::strerror(errno)));
  }
  return cookie;
}

absl::StatusOr<uint64_t> NetnsCookie(int netns_fd) {
  absl::StatusOr<uint64_t> cookie = absl::InternalError("not run");
  auto st = RunInNetns(netns_fd, [&]() -> absl::Status {
    UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
    cookie = SocketNetnsCookie(s.get());
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return cookie;
}

}  // namespace ringmesh
