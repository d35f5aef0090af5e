#include "userspace/proxy/event_loop.h"

#include <mutex>
#include <thread>

#include "spdlog/spdlog.h"
#include "userspace/proxy/epoll_loop.h"
#include "userspace/proxy/io_uring_loop.h"

namespace ringmesh::proxy {

const char* ToString(IoBackend b) {
  switch (b) {
    case IoBackend::kAuto: return "auto";
    case IoBackend::kIoUring: return "io_uring";
    case IoBackend::kEpoll: return "epoll";
  }
  return "?";
}

std::optional<IoBackend> ParseIoBackend(std::string_view s) {
  if (s == "auto") return IoBackend::kAuto;
  if (s == "io_uring" || s == "iouring") return IoBackend::kIoUring;
  if (s == "epoll") return IoBackend::kEpoll;
  return std::nullopt;
}

IoBackend ResolveBackend(IoBackend requested) {
  if (requested != IoBackend::kAuto) return requested;
  static IoBackend resolved = [] {
    // A throwaway ring runs the same probe the workers will: setup (which
    // seccomp may refuse), opcodes, features, buffer ring. It runs on a
    // thread of its own that exits before we go on: a ring's teardown is
    // asynchronous and hands its leftover task work to the thread that
    // submitted, with a signal-like notification. On the caller's thread
    // that made a later blocking recv() with SO_RCVTIMEO fail with EINTR
    // (seen in proxy_pod_listeners_test, ~1 run in 150 under load).
    absl::Status status;
    std::thread([&status] {
      EventLoopOptions small;
      small.buf_ring_entries = 2;
      small.buf_size = 4096;
      small.sq_entries = 8;
      status = IoUringLoop::Create(small).status();
    }).join();
    if (status.ok()) return IoBackend::kIoUring;
    spdlog::warn("io_uring unavailable ({}); falling back to epoll", status.ToString());
    return IoBackend::kEpoll;
  }();
  return resolved;
}

void EventLoop::BeginUserOp(IoOp* op) {
  if (op->in_flight_) {
    spdlog::critical("user op started twice");
    std::abort();
  }
  op->in_flight_ = true;
}

void EventLoop::FinishUserOp(IoOp* op, int res, const char* data) {
  Defer([op, res, data] {
    op->in_flight_ = false;
    op->handler()->OnCompletion(op, Completion{.res = res, .more = false, .data = data});
  });
}

absl::StatusOr<std::unique_ptr<EventLoop>> CreateEventLoop(IoBackend backend, const EventLoopOptions& options) {
  switch (ResolveBackend(backend)) {
    case IoBackend::kIoUring: {
      auto loop = IoUringLoop::Create(options);
      if (!loop.ok()) return loop.status();
      return std::unique_ptr<EventLoop>(std::move(*loop));
    }
    case IoBackend::kEpoll:
    case IoBackend::kAuto: {
      auto loop = EpollLoop::Create(options);
      if (!loop.ok()) return loop.status();
      return std::unique_ptr<EventLoop>(std::move(*loop));
    }
  }
  return absl::InternalError("unreachable");
}

}  // namespace ringmesh::proxy
