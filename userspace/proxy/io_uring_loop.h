// EventLoop backend on io_uring: one ring per worker thread, multishot
// accept, receives into a per-ring provided-buffer ring, and kernel
// timeouts. Every submission carries typed user_data (a tagged IoOp pointer
// or an internal tag), a full submission queue is flushed and retried, and
// the required opcodes/features are probed when the ring is created.
//
// Receives stay bounded per connection: each Recv() delivers at most
// max_len bytes. When the kernel supports a byte limit on multishot recv
// (sqe->optlen, Linux 6.17+; probed at start) one multishot recv covers the
// budget; otherwise each Recv() is a single-shot recv whose length is the
// budget. Either way a connection never holds more than its cap, which an
// unlimited multishot recv could not guarantee (the kernel keeps filling
// buffers until a cancel lands).
#pragma once

#include <liburing.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "userspace/common/unique_fd.h"
#include "userspace/proxy/event_loop.h"

namespace ringmesh::proxy {

class IoUringLoop final : public EventLoop {
 public:
  static absl::StatusOr<std::unique_ptr<IoUringLoop>> Create(const EventLoopOptions& options);
  ~IoUringLoop() override;

  IoBackend backend() const override { return IoBackend::kIoUring; }
  int socket_flags() const override { return SOCK_CLOEXEC; }
  bool bounded_multishot_recv() const { return bounded_multishot_recv_; }

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

 private:
  explicit IoUringLoop(const EventLoopOptions& options);
  absl::Status Init();
  absl::Status SetUpBufferRing();
  bool ProbeBoundedMultishotRecv();
  io_uring_sqe* GetSqe();
  void Begin(IoOp* op, int fd);
  void SubmitRecv(IoOp* op);
  void ArmWake();
  void HandleCqe(const io_uring_cqe* cqe);
  void RecycleBuffer(uint16_t bid);
  void ProcessCompletions();
  void RunDeferred();
  void DrainPosted();

  EventLoopOptions options_;
  io_uring ring_{};
  bool ring_ok_ = false;
  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  char* buffers_ = nullptr;
  size_t buffers_bytes_ = 0;
  int buf_mask_ = 0;
  bool bounded_multishot_recv_ = false;

  UniqueFd wake_fd_;
  uint64_t wake_value_ = 0;
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> stop_{false};

  std::vector<IoOp*> retry_recv_;  // recvs that hit -ENOBUFS
  std::vector<absl::AnyInvocable<void()>> deferred_;
  std::mutex post_mu_;
  std::vector<absl::AnyInvocable<void()>> posted_;  // guarded by post_mu_
};

}  // namespace ringmesh::proxy
