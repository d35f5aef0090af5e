#include "userspace/proxy/io_uring_loop.h"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace ringmesh::proxy {
namespace {

// Typed user_data: an IoOp pointer (8-byte aligned, tag 0) or one of the
// internal tags below in the low three bits with no pointer.
enum : uint64_t {
  kTagOp = 0,
  kTagWake = 1,    // read on the cross-thread eventfd
  kTagIgnore = 2,  // cancel requests: their own result carries no news
  kTagProbe = 3,   // feature probe at start-up
  kTagMask = 7,
};
static_assert(alignof(IoOp) >= 8, "IoOp pointers need three free low bits");

constexpr uint16_t kBufGroup = 0;

uint64_t OpData(IoOp* op) { return reinterpret_cast<uintptr_t>(op) | kTagOp; }

__kernel_timespec ToTimespec(int64_t ns) {
  __kernel_timespec ts{};
  ts.tv_sec = ns / 1'000'000'000;
  ts.tv_nsec = ns % 1'000'000'000;
  return ts;
}

}  // namespace

absl::StatusOr<std::unique_ptr<IoUringLoop>> IoUringLoop::Create(const EventLoopOptions& options) {
  std::unique_ptr<IoUringLoop> loop(new IoUringLoop(options));
  if (absl::Status s = loop->Init(); !s.ok()) return s;
  return loop;
}

IoUringLoop::IoUringLoop(const EventLoopOptions& options) : options_(options) {}

absl::Status IoUringLoop::Init() {
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
                 IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  params.cq_entries = options_.sq_entries * 4;
  int ret = io_uring_queue_init_params(options_.sq_entries, &ring_, &params);
  if (ret == -EINVAL) {
    // Older kernels lack the task-run flags; they are optimisations only.
    params = io_uring_params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = options_.sq_entries * 4;
    ret = io_uring_queue_init_params(options_.sq_entries, &ring_, &params);
  }
  if (ret < 0) return absl::ErrnoToStatus(-ret, "io_uring_queue_init");
  ring_ok_ = true;

  // NODROP: completions are never lost under CQ pressure. EXT_ARG: waits
  // with a timeout without a timeout SQE. FAST_POLL: socket ops poll
  // internally instead of using worker threads.
  constexpr uint32_t kNeededFeatures = IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG | IORING_FEAT_FAST_POLL;
  if ((params.features & kNeededFeatures) != kNeededFeatures) {
    return absl::UnavailableError(absl::StrCat("io_uring lacks features, have 0x", absl::Hex(params.features)));
  }
  io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
  if (probe == nullptr) return absl::UnavailableError("io_uring probe failed");
  const struct {
    int op;
    const char* name;
  } kNeededOps[] = {
      {IORING_OP_ACCEPT, "accept"},   {IORING_OP_CONNECT, "connect"},
      {IORING_OP_RECV, "recv"},       {IORING_OP_SEND, "send"},
      {IORING_OP_SHUTDOWN, "shutdown"}, {IORING_OP_TIMEOUT, "timeout"},
      {IORING_OP_ASYNC_CANCEL, "async_cancel"}, {IORING_OP_READ, "read"},
  };
  for (const auto& needed : kNeededOps) {
    if (!io_uring_opcode_supported(probe, needed.op)) {
      io_uring_free_probe(probe);
      return absl::UnavailableError(absl::StrCat("io_uring lacks op ", needed.name));
    }
  }
  io_uring_free_probe(probe);

  if (absl::Status s = SetUpBufferRing(); !s.ok()) return s;
  bounded_multishot_recv_ = options_.multishot_recv && ProbeBoundedMultishotRecv();

  // Blocking eventfd: a read on an O_NONBLOCK file would complete with
  // -EAGAIN instead of waiting.
  wake_fd_.Reset(eventfd(0, EFD_CLOEXEC));
  if (!wake_fd_) return absl::ErrnoToStatus(errno, "eventfd");
  ArmWake();
  io_uring_submit(&ring_);
  return absl::OkStatus();
}

absl::Status IoUringLoop::SetUpBufferRing() {
  const uint32_t entries = options_.buf_ring_entries;
  if (entries == 0 || (entries & (entries - 1)) != 0 || entries > 32768) {
    return absl::InvalidArgumentError("buf_ring_entries must be a power of two <= 32768");
  }
  buf_ring_bytes_ = entries * sizeof(io_uring_buf);
  void* ring_mem = mmap(nullptr, buf_ring_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ring_mem == MAP_FAILED) return absl::ErrnoToStatus(errno, "mmap(buf ring)");
  buf_ring_ = static_cast<io_uring_buf_ring*>(ring_mem);
  buffers_bytes_ = size_t{entries} * options_.buf_size;
  void* bufs = mmap(nullptr, buffers_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (bufs == MAP_FAILED) return absl::ErrnoToStatus(errno, "mmap(buffers)");
  buffers_ = static_cast<char*>(bufs);

  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uintptr_t>(buf_ring_);
  reg.ring_entries = entries;
  reg.bgid = kBufGroup;
  int ret = io_uring_register_buf_ring(&ring_, &reg, 0);
  if (ret < 0) return absl::ErrnoToStatus(-ret, "io_uring_register_buf_ring");
  buf_mask_ = io_uring_buf_ring_mask(entries);
  io_uring_buf_ring_init(buf_ring_);
  for (uint32_t i = 0; i < entries; ++i) {
    io_uring_buf_ring_add(buf_ring_, buffers_ + size_t{i} * options_.buf_size, options_.buf_size,
                          static_cast<uint16_t>(i), buf_mask_, static_cast<int>(i));
  }
  io_uring_buf_ring_advance(buf_ring_, static_cast<int>(entries));
  return absl::OkStatus();
}

// Does this kernel support a byte limit on multishot recv (sqe->optlen,
// Linux 6.17+)? Sends 3 bytes over a socketpair and arms a multishot recv
// with a per-recv cap of 2 and a limit of 2: a kernel with the feature
// completes once with 2 bytes and ends the multishot; an older one rejects
// the SQE or ignores the limit (then the recv is cancelled).
bool IoUringLoop::ProbeBoundedMultishotRecv() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
  UniqueFd a(sv[0]), b(sv[1]);
  if (::write(b.get(), "abc", 3) != 3) return false;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_recv_multishot(sqe, a.get(), nullptr, 2, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufGroup;
  sqe->file_index = 2;  // shares its slot with sqe->optlen, the byte limit
  sqe->user_data = kTagProbe;
  io_uring_submit(&ring_);

  int total = 0;
  bool error = false;
  bool cancelled = false;
  for (int i = 0; i < 100; ++i) {
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts = ToTimespec(10'000'000);
    int ret = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
    if (ret == -ETIME) {
      if (!cancelled) {
        io_uring_sqe* c = GetSqe();
        io_uring_prep_cancel64(c, kTagProbe, 0);
        c->user_data = kTagIgnore;
        io_uring_submit(&ring_);
        cancelled = true;
      }
      continue;
    }
    if (ret < 0) return false;
    const uint64_t ud = cqe->user_data;
    const int res = cqe->res;
    const uint32_t flags = cqe->flags;
    io_uring_cqe_seen(&ring_, cqe);
    if (ud != kTagProbe) continue;
    if (flags & IORING_CQE_F_BUFFER) RecycleBuffer(static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT));
    if (res > 0) total += res;
    if (res < 0 && res != -ECANCELED) error = true;
    if (!(flags & IORING_CQE_F_MORE)) {
      return !error && !cancelled && total == 2;
    }
    if (total > 2 && !cancelled) {
      io_uring_sqe* c = GetSqe();
      io_uring_prep_cancel64(c, kTagProbe, 0);
      c->user_data = kTagIgnore;
      io_uring_submit(&ring_);
      cancelled = true;
    }
  }
  spdlog::error("io_uring: multishot recv probe did not finish; leaking its socketpair");
  a.Release();
  b.Release();
  return false;
}

IoUringLoop::~IoUringLoop() {
  if (ring_ok_) {
    // Cancel whatever is left (normally only the eventfd read) and drain it
    // before the memory those requests point at goes away.
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe != nullptr) {
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
      sqe->user_data = kTagIgnore;
    }
    io_uring_submit(&ring_);
    for (int i = 0; i < 100; ++i) {
      io_uring_cqe* cqe = nullptr;
      __kernel_timespec ts = ToTimespec(10'000'000);
      if (io_uring_wait_cqe_timeout(&ring_, &cqe, &ts) != 0) break;
      io_uring_cqe_seen(&ring_, cqe);
    }
    if (buf_ring_ != nullptr) io_uring_unregister_buf_ring(&ring_, kBufGroup);
    io_uring_queue_exit(&ring_);
  }
  if (buffers_ != nullptr) munmap(buffers_, buffers_bytes_);
  if (buf_ring_ != nullptr) munmap(buf_ring_, buf_ring_bytes_);
}

io_uring_sqe* IoUringLoop::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe != nullptr) return sqe;
  // Full submission queue: hand the batch to the kernel and retry.
  int ret = io_uring_submit(&ring_);
  sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    spdlog::critical("io_uring: no SQE after submit (ret {})", ret);
    std::abort();
  }
  return sqe;
}

void IoUringLoop::Begin(IoOp* op, int fd) {
  if (op->in_flight_) {
    spdlog::critical("IoOp submitted twice (type {})", static_cast<int>(op->type_));
    std::abort();
  }
  op->in_flight_ = true;
  op->cancel_requested_ = false;
  op->multishot_ = false;
  op->fd_ = fd;
}

void IoUringLoop::ArmWake() {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_read(sqe, wake_fd_.get(), &wake_value_, sizeof(wake_value_), 0);
  sqe->user_data = kTagWake;
}

void IoUringLoop::Accept(IoOp* op, int listen_fd) {
  Begin(op, listen_fd);
  op->multishot_ = true;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_multishot_accept(sqe, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  sqe->user_data = OpData(op);
}

void IoUringLoop::Connect(IoOp* op, int fd, const sockaddr* addr, socklen_t len) {
  Begin(op, fd);
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_connect(sqe, fd, addr, len);
  sqe->user_data = OpData(op);
}

void IoUringLoop::Recv(IoOp* op, int fd, size_t max_len) {
  Begin(op, fd);
  op->len_ = max_len;
  SubmitRecv(op);
}

void IoUringLoop::SubmitRecv(IoOp* op) {
  io_uring_sqe* sqe = GetSqe();
  if (bounded_multishot_recv_) {
    // The kernel ends a limited multishot recv once it has received at
    // least `limit` bytes, and each completion carries at most `per_recv`;
    // so the most it can deliver is limit - 1 + per_recv, which these
    // choices keep within the budget.
    const size_t budget = op->len_;
    const size_t per_recv = std::min<size_t>(options_.buf_size, std::max<size_t>(1, budget / 2));
    const size_t limit = budget - per_recv + 1;
    io_uring_prep_recv_multishot(sqe, op->fd_, nullptr, per_recv, 0);
    sqe->file_index = static_cast<uint32_t>(limit);  // shares its slot with sqe->optlen
    op->multishot_ = true;
  } else {
    io_uring_prep_recv(sqe, op->fd_, nullptr, std::min<size_t>(op->len_, options_.buf_size), 0);
  }
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufGroup;
  sqe->user_data = OpData(op);
}

void IoUringLoop::Send(IoOp* op, int fd, const char* data, size_t len) {
  Begin(op, fd);
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_send(sqe, fd, data, len, MSG_NOSIGNAL);
  sqe->user_data = OpData(op);
}

void IoUringLoop::ShutdownWrite(IoOp* op, int fd) {
  // shutdown(SHUT_WR) on a TCP socket never blocks (it queues the FIN), but
  // IORING_OP_SHUTDOWN is always handed to an io-wq thread: a thread wake-up
  // and a context switch per half-close, a fifth of the proxy's CPU in a
  // connection-per-request load. So it is called here, and the completion
  // is delivered from the loop like any other (never re-entrantly).
  Begin(op, fd);
  const int res = ::shutdown(fd, SHUT_WR) == 0 ? 0 : -errno;
  Defer([op, res] {
    op->in_flight_ = false;
    op->cancel_requested_ = false;
    op->multishot_ = false;
    op->handler_->OnCompletion(op, {.res = res});
  });
}

void IoUringLoop::StartTimer(IoOp* op, absl::Duration after) {
  Begin(op, -1);
  __kernel_timespec ts = ToTimespec(std::max<int64_t>(0, absl::ToInt64Nanoseconds(after)));
  static_assert(sizeof(ts) == sizeof(op->ts_));
  std::memcpy(op->ts_, &ts, sizeof(ts));  // must outlive the submission
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_timeout(sqe, reinterpret_cast<__kernel_timespec*>(op->ts_), 0, 0);
  sqe->user_data = OpData(op);
}

void IoUringLoop::Cancel(IoOp* op) {
  if (!op->in_flight_ || op->cancel_requested_) return;
  op->cancel_requested_ = true;
  if (op->queued_) return;  // waiting in retry_recv_; resolved there
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_cancel64(sqe, OpData(op), 0);
  sqe->user_data = kTagIgnore;
}

void IoUringLoop::Close(int fd) {
  if (fd >= 0) ::close(fd);
}

void IoUringLoop::Defer(absl::AnyInvocable<void()> fn) { deferred_.push_back(std::move(fn)); }

void IoUringLoop::Post(absl::AnyInvocable<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    posted_.push_back(std::move(fn));
  }
  if (!wake_pending_.exchange(true)) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
  }
}

void IoUringLoop::DrainPosted() {
  std::vector<absl::AnyInvocable<void()>> fns;
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    fns.swap(posted_);
  }
  for (auto& fn : fns) fn();
}

void IoUringLoop::RunDeferred() {
  for (int round = 0; round < 8 && !deferred_.empty(); ++round) {
    std::vector<absl::AnyInvocable<void()>> fns;
    fns.swap(deferred_);
    for (auto& fn : fns) fn();
  }
}

void IoUringLoop::RecycleBuffer(uint16_t bid) {
  io_uring_buf_ring_add(buf_ring_, buffers_ + size_t{bid} * options_.buf_size, options_.buf_size, bid, buf_mask_, 0);
  io_uring_buf_ring_advance(buf_ring_, 1);
}

void IoUringLoop::HandleCqe(const io_uring_cqe* cqe) {
  const uint64_t ud = cqe->user_data;
  switch (ud & kTagMask) {
    case kTagIgnore:
      return;
    case kTagWake:
      wake_pending_.store(false);
      ArmWake();
      return;
    case kTagProbe:
      if (cqe->flags & IORING_CQE_F_BUFFER) RecycleBuffer(static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
      return;
    default:
      break;
  }
  IoOp* op = reinterpret_cast<IoOp*>(ud);
  Completion c{.res = cqe->res, .more = (cqe->flags & IORING_CQE_F_MORE) != 0};
  const bool has_buf = (cqe->flags & IORING_CQE_F_BUFFER) != 0;
  const uint16_t bid = static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
  switch (op->type_) {
    case OpType::kTimer:
      if (c.res == -ETIME) c.res = 0;
      break;
    case OpType::kRecv:
      if (c.res == -ENOBUFS && !c.more && !op->cancel_requested_) {
        // Every provided buffer is in use right now; they come back as this
        // batch is handled, so retry on the next loop iteration.
        if (has_buf) RecycleBuffer(bid);
        op->queued_ = true;
        retry_recv_.push_back(op);
        return;
      }
      if (has_buf) c.data = buffers_ + size_t{bid} * options_.buf_size;
      if (c.res > 0) op->len_ -= std::min(op->len_, static_cast<size_t>(c.res));
      break;
    default:
      break;
  }
  if (!c.more) {
    op->in_flight_ = false;
    op->cancel_requested_ = false;
    op->multishot_ = false;
  }
  op->handler_->OnCompletion(op, c);
  if (has_buf) RecycleBuffer(bid);
}

void IoUringLoop::ProcessCompletions() {
  io_uring_cqe* cqes[128];
  for (int round = 0; round < 16; ++round) {
    unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, 128);
    if (n == 0) return;
    for (unsigned i = 0; i < n; ++i) HandleCqe(cqes[i]);
    io_uring_cq_advance(&ring_, n);
  }
}

void IoUringLoop::RunOnce(absl::Duration timeout) {
  DrainPosted();
  RunDeferred();
  if (!retry_recv_.empty()) {
    std::vector<IoOp*> retry;
    retry.swap(retry_recv_);
    for (IoOp* op : retry) {
      op->queued_ = false;
      if (op->cancel_requested_) {
        op->in_flight_ = false;
        op->cancel_requested_ = false;
        op->handler_->OnCompletion(op, {.res = -ECANCELED});
        continue;
      }
      SubmitRecv(op);
    }
    RunDeferred();
  }

  const bool busy = !deferred_.empty() || !retry_recv_.empty() || stop_.load(std::memory_order_relaxed);
  io_uring_cqe* cqe = nullptr;
  int ret;
  if (busy) {
    __kernel_timespec ts{};
    ret = io_uring_submit_and_wait_timeout(&ring_, &cqe, 0, &ts, nullptr);
  } else if (timeout == absl::InfiniteDuration()) {
    ret = io_uring_submit_and_wait(&ring_, 1);
  } else {
    __kernel_timespec ts = ToTimespec(absl::ToInt64Nanoseconds(timeout));
    ret = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  }
  if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN) {
    spdlog::error("io_uring_submit_and_wait: {}", std::strerror(-ret));
  }
  ProcessCompletions();
  DrainPosted();
  RunDeferred();
}

void IoUringLoop::Run() {
  while (!stop_.load(std::memory_order_relaxed)) RunOnce(absl::InfiniteDuration());
  stop_.store(false);
  io_uring_submit(&ring_);
}

void IoUringLoop::Stop() {
  stop_.store(true);
  Post([] {});
}

}  // namespace ringmesh::proxy
