#include "userspace/proxy/socket_mark.h"

#include <sys/socket.h>

#include <cerrno>

#include "absl/strings/str_format.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::proxy {

int SetSocketMark(int fd, uint32_t mark) {
  return setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) == 0 ? 0 : -errno;
}

absl::Status ProbeSocketMark(uint32_t mark) {
  if (mark == 0) {
    return absl::InvalidArgumentError(
        "--proxy-mark 0 in mesh mode: the BPF connect hook tells the proxy's own upstream sockets apart by "
        "their mark, so without one they would be redirected back to the proxy");
  }
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return absl::ErrnoToStatus(errno, "socket");
  if (const int err = SetSocketMark(fd.get(), mark); err != 0) {
    return absl::ErrnoToStatus(
        -err,
        absl::StrFormat("setting SO_MARK 0x%x%s: without the mark the proxy's own upstream connects would be "
                        "redirected back to the proxy",
                        mark, err == -EPERM ? " needs CAP_NET_ADMIN or CAP_NET_RAW" : ""));
  }
  return absl::OkStatus();
}

}  // namespace ringmesh::proxy
