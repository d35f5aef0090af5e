// Running code inside another network namespace. setns(CLONE_NEWNET) only
// changes the calling thread, so a short-lived helper thread enters the
// namespace, runs the function (typically creating sockets, which stay bound
// to that namespace for life) and exits; the caller's namespace is never
// touched.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ringmesh {

// Runs fn on a helper thread inside the network namespace netns_fd.
absl::Status RunInNetns(int netns_fd, const std::function<absl::Status()>& fn);

// The kernel's cookie for a network namespace (SO_NETNS_COOKIE of a socket
// created in it); the key of the BPF pods map.
absl::StatusOr<uint64_t> NetnsCookie(int netns_fd);

// Cookie of the namespace a socket lives in.
absl::StatusOr<uint64_t> SocketNetnsCookie(int sock_fd);

}  // namespace ringmesh
