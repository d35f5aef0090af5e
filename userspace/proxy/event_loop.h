// Completion-style event loop interface shared by the io_uring and epoll
// backends, so the forwarding code (Connection, Worker) is written once.
//
// Every asynchronous operation is an IoOp embedded in its owner. The loop
// reports each result through IoHandler::OnCompletion; an op is "in flight"
// from submission until its last completion (the one with more == false).
// An owner must not be freed while any of its ops is in flight: call
// Cancel() on each, wait for the final completions (res == -ECANCELED or the
// real result if it raced), then free. This cancel-then-drain rule is what
// makes the io_uring backend safe, and the epoll backend obeys it too so
// both behave the same.
//
// Usage (single thread; only Post() is thread-safe):
//   auto loop = CreateEventLoop(IoBackend::kAuto, {});
//   IoOp recv(&handler, OpType::kRecv);
//   (*loop)->Recv(&recv, fd, 4096);
//   (*loop)->Run();  // until Stop()
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ringmesh::proxy {

enum class IoBackend : uint8_t { kAuto, kIoUring, kEpoll };
const char* ToString(IoBackend b);
std::optional<IoBackend> ParseIoBackend(std::string_view s);

enum class OpType : uint8_t { kAccept, kConnect, kRecv, kSend, kShutdown, kTimer };

struct Completion {
  // >= 0: accepted fd (kAccept), bytes (kRecv/kSend; 0 from kRecv is EOF),
  // 0 (kConnect/kShutdown/kTimer fired). < 0: -errno; -ECANCELED after
  // Cancel().
  int res = 0;
  // The op stays armed and more completions follow (multishot accept and
  // multishot recv).
  bool more = false;
  // kRecv: the res received bytes. Valid only during the callback (they
  // live in the loop's provided buffers / scratch space).
  const char* data = nullptr;
};

class IoOp;

class IoHandler {
 public:
  virtual void OnCompletion(IoOp* op, const Completion& c) = 0;

 protected:
  ~IoHandler() = default;
};

class IoOp {
 public:
  IoOp(IoHandler* handler, OpType type, uint32_t tag = 0) : handler_(handler), type_(type), tag_(tag) {}
  IoOp(const IoOp&) = delete;
  IoOp& operator=(const IoOp&) = delete;

  bool in_flight() const { return in_flight_; }
  bool cancel_requested() const { return cancel_requested_; }
  OpType type() const { return type_; }
  uint32_t tag() const { return tag_; }  // owner-defined (e.g. which side)
  IoHandler* handler() const { return handler_; }

 private:
  friend class EpollLoop;
  friend class IoUringLoop;
  friend class EventLoop;  // user-space ops (BeginUserOp / FinishUserOp)

  IoHandler* handler_;
  OpType type_;
  uint32_t tag_;
  bool in_flight_ = false;
  bool cancel_requested_ = false;
  // Backend-private state.
  bool multishot_ = false;
  bool queued_ = false;
  int fd_ = -1;
  const char* buf_ = nullptr;
  size_t len_ = 0;
  uint64_t seq_ = 0;   // epoll timers: invalidates stale heap entries
  int64_t ts_[2] = {};  // io_uring timers: __kernel_timespec storage
};

// Backend-independent knobs.
struct EventLoopOptions {
  // io_uring: provided-buffer ring per worker (entries must be a power of 2).
  uint32_t buf_ring_entries = 64;
  uint32_t buf_size = 64 * 1024;
  uint32_t sq_entries = 1024;
  // io_uring: use a byte-limited multishot recv where the kernel has it;
  // false forces single-shot recvs (the path older kernels take).
  bool multishot_recv = true;
  // epoll: size of the recv scratch buffer.
  size_t scratch_size = 64 * 1024;
};

class EventLoop {
 public:
  virtual ~EventLoop() = default;

  virtual IoBackend backend() const = 0;
  // Flags for accept4/socket(): the epoll backend needs nonblocking sockets;
  // io_uring wants blocking ones (it polls internally).
  virtual int socket_flags() const = 0;

  // Multishot: completes once per accepted connection (more == true) until
  // cancelled or an error ends it (more == false).
  virtual void Accept(IoOp* op, int listen_fd) = 0;
  // `addr` must stay valid until the completion.
  virtual void Connect(IoOp* op, int fd, const sockaddr* addr, socklen_t len) = 0;
  // Receives at most max_len bytes in total, in one or more completions; the
  // last one has more == false. max_len > 0.
  virtual void Recv(IoOp* op, int fd, size_t max_len) = 0;
  // May send fewer bytes than len; `data` must stay valid until completion.
  virtual void Send(IoOp* op, int fd, const char* data, size_t len) = 0;
  virtual void ShutdownWrite(IoOp* op, int fd) = 0;
  // One-shot; completes with 0 when it fires.
  virtual void StartTimer(IoOp* op, absl::Duration after) = 0;
  // Requests cancellation; the final completion still arrives. No-op when
  // the op is not in flight.
  virtual void Cancel(IoOp* op) = 0;
  // Closes an fd that has no op in flight.
  virtual void Close(int fd) = 0;

  // Runs `fn` on the loop thread after the current batch of completions;
  // only from the loop thread. Used to free owners outside their callbacks.
  virtual void Defer(absl::AnyInvocable<void()> fn) = 0;
  // Thread-safe: runs `fn` on the loop thread soon (eventfd wake-up).
  virtual void Post(absl::AnyInvocable<void()> fn) = 0;

  // User-space transports (an HBONE tunnel stream standing in for a
  // socket) complete ops themselves, with the same contract as the
  // kernel's: BeginUserOp marks `op` in flight; FinishUserOp delivers its
  // one final completion from the loop (deferred, never inside the caller),
  // and `data` must stay valid until then.
  void BeginUserOp(IoOp* op);
  void FinishUserOp(IoOp* op, int res, const char* data = nullptr);

  // Runs until Stop() (which may be called from the loop or via Post).
  virtual void Run() = 0;
  // One iteration: waits up to `timeout` for completions and handles them.
  virtual void RunOnce(absl::Duration timeout) = 0;
  virtual void Stop() = 0;
};

// Creates a loop for the calling thread. kAuto tries io_uring (ring setup
// plus the ops and features ringmesh needs) and falls back to epoll.
absl::StatusOr<std::unique_ptr<EventLoop>> CreateEventLoop(IoBackend backend, const EventLoopOptions& options);

// Resolves kAuto once per process: io_uring if a probe ring works, else
// epoll. Logs the reason for a fallback.
IoBackend ResolveBackend(IoBackend requested);

}  // namespace ringmesh::proxy
