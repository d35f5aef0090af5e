#include "userspace/proxy/orig_dst.h"

#include <sys/socket.h>

namespace ringmesh::proxy {

std::optional<SocketAddress> PeerAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
  return SocketAddress::FromSockaddr(ss);
}

std::optional<SocketAddress> AcceptedLocalAddress(int accepted_fd, const ListenerInfo& listener) {
  if (listener.local.port != 0 && !listener.local.ip.is_unspecified()) return listener.local;
  if (accepted_fd < 0) return std::nullopt;
  return LocalAddress(accepted_fd);
}

std::optional<SocketAddress> LocalAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
  return SocketAddress::FromSockaddr(ss);
}

}  // namespace ringmesh::proxy
