// EventLoop backend on nonblocking sockets and edge-triggered epoll, used
// where io_uring is unavailable (e.g. blocked by a container's seccomp
// profile). It emulates completion semantics: an op is attempted when
// submitted and again on each readiness edge, and its result is delivered
// from the loop, never from inside the submitting call.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <mutex>
#include <queue>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "userspace/common/unique_fd.h"
#include "userspace/proxy/event_loop.h"

namespace ringmesh::proxy {

class EpollLoop final : public EventLoop {
 public:
  static absl::StatusOr<std::unique_ptr<EpollLoop>> Create(const EventLoopOptions& options);
  ~EpollLoop() override;

  IoBackend backend() const override { return IoBackend::kEpoll; }
  int socket_flags() const override;

  void Accept(IoOp* op, int listen_fd) override;
  void Connect(IoOp* op, int fd, const sockaddr* addr, socklen_t len) override;
  void Recv(IoOp* op, int fd, size_t max_len) override;
  void Send(IoOp* op, int fd, const char* data, size_t len) override;
  void ShutdownWrite(IoOp* op, int fd) override;
  void StartTimer(IoOp* op, absl::Duration after) override;
  void Cancel(IoOp* op) override;
  void Close(int fd) override;
  void Defer(absl::AnyInvocable<void()> fn) override;
  void Post(absl::AnyInvocable<void()> fn) override;
  void Run() override;
  void RunOnce(absl::Duration timeout) override;
  void Stop() override;
  // False when epoll_pwait2 was refused at creation (kernel before 5.11,
  // a seccomp profile, valgrind) and the loop waits with epoll_wait.
  bool uses_epoll_pwait2() const { return use_pwait2_; }

 private:
  struct FdState {
    IoOp* reader = nullptr;  // accept or recv
    IoOp* writer = nullptr;  // connect or send
    bool registered = false;
  };
  struct TimerEntry {
    int64_t deadline_ns;
    uint64_t seq;
    bool operator>(const TimerEntry& o) const { return deadline_ns > o.deadline_ns; }
  };
  struct Done {
    IoOp* op;
    int res;
  };

  explicit EpollLoop(const EventLoopOptions& options);
  FdState& State(int fd);
  void Register(int fd);
  void Begin(IoOp* op, int fd);
  void Queue(IoOp* op);
  void Complete(IoOp* op, int res) { done_.push_back({op, res}); }
  void Deliver(IoOp* op, const Completion& c);
  void Attempt(IoOp* op);
  void AttemptConnect(IoOp* op);
  void ProcessReady();
  void FireTimers();
  void DrainPosted();
  int64_t NextTimerDelayNs();
  // epoll_pwait2 (nanosecond timeout) where the kernel and the seccomp
  // profile allow it, else epoll_wait with the timeout rounded up to a
  // millisecond (never 0 for a pending timer, so the loop does not spin).
  int Wait(epoll_event* events, int max, int64_t wait_ns);

  EventLoopOptions options_;
  UniqueFd epfd_;
  UniqueFd wake_fd_;
  std::vector<FdState> fds_;
  std::vector<IoOp*> try_;
  std::vector<Done> done_;
  std::vector<absl::AnyInvocable<void()>> deferred_;
  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<>> timers_;
  absl::flat_hash_map<uint64_t, IoOp*> timer_ops_;
  uint64_t next_seq_ = 1;
  std::vector<char> scratch_;
  std::atomic<bool> stop_{false};
  bool use_pwait2_ = true;

  std::mutex post_mu_;
  std::vector<absl::AnyInvocable<void()>> posted_;  // guarded by post_mu_
  std::atomic<bool> wake_pending_{false};
};

}  // namespace ringmesh::proxy
