// ResolveBackend(kAuto) probes io_uring with a throwaway ring. That ring's
// teardown must not reach the caller's thread: a ring torn down with work
// left hands it to the thread that submitted it, with a signal-like
// notification, and a blocking recv() with SO_RCVTIMEO on that thread then
// fails with EINTR. This binary holds a single test so that the probe
// really runs here (the result is cached per process).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "tests/proxy/test_util.h"
#include "userspace/common/unique_fd.h"
#include "userspace/proxy/event_loop.h"

namespace ringmesh::proxy {
namespace {

TEST(BackendProbeTest, LeavesTheCallersThreadUninterrupted) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd reader(sv[0]), writer(sv[1]);
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  ASSERT_EQ(setsockopt(reader.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);

  const IoBackend backend = ResolveBackend(IoBackend::kAuto);
  if (backend != IoBackend::kIoUring) RINGMESH_SKIP_OR_FAIL("io_uring unavailable: nothing was probed here");

  // The reader waits inside recv() while the probe ring's teardown would
  // finish (it is asynchronous, tens of milliseconds at most).
  std::thread late_writer([&] {
    usleep(300'000);
    EXPECT_EQ(write(writer.get(), "x", 1), 1);
  });
  char b = 0;
  const ssize_t n = recv(reader.get(), &b, 1, 0);
  const int err = errno;
  late_writer.join();
  EXPECT_EQ(n, 1) << "recv: " << std::strerror(err);
  EXPECT_EQ(b, 'x');
}

}  // namespace
}  // namespace ringmesh::proxy
