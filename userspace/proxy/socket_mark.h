// SO_MARK on the proxy's own upstream sockets. The BPF connect hook lets a
// socket carrying the proxy mark through (bpf/lib/decide.h); an upstream
// socket without it would be redirected back into the proxy. Setting a mark
// needs CAP_NET_ADMIN or CAP_NET_RAW, so a mesh-mode proxy probes once at start-up and
// refuses to run without it, and every later failure is counted.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace ringmesh::proxy {

// Sets SO_MARK `mark` on `fd`: 0, or -errno (-EPERM without CAP_NET_ADMIN or CAP_NET_RAW).
int SetSocketMark(int fd, uint32_t mark);

// Start-up check for mesh mode: a mark of 0 (the hook could not tell the
// proxy's sockets from a pod's) and a mark the process may not set are
// both errors, in a sentence that says what to change.
absl::Status ProbeSocketMark(uint32_t mark);

}  // namespace ringmesh::proxy
