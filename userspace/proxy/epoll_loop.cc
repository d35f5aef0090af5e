#include "userspace/proxy/epoll_loop.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "spdlog/spdlog.h"

namespace ringmesh::proxy {
namespace {

// Accepts handled per readiness edge before yielding to other work; the
// rest are picked up in the next round so one busy listener cannot starve
// established connections.
constexpr int kAcceptBatch = 64;
// Wake-up events share the epoll set with sockets; this data value can
// never be an fd.
constexpr uint64_t kWakeData = std::numeric_limits<uint64_t>::max();

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EpollLoop>> EpollLoop::Create(const EventLoopOptions& options) {
  std::unique_ptr<EpollLoop> loop(new EpollLoop(options));
  loop->epfd_.Reset(epoll_create1(EPOLL_CLOEXEC));
  if (!loop->epfd_) return absl::ErrnoToStatus(errno, "epoll_create1");
  loop->wake_fd_.Reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!loop->wake_fd_) return absl::ErrnoToStatus(errno, "eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeData;
  if (epoll_ctl(loop->epfd_.get(), EPOLL_CTL_ADD, loop->wake_fd_.get(), &ev) != 0) {
    return absl::ErrnoToStatus(errno, "epoll_ctl(eventfd)");
  }
  // Probe once: a refused epoll_pwait2 would otherwise fail every wait and
  // the loop would spin on the error.
  epoll_event probe[1];
  timespec zero{};
  if (epoll_pwait2(loop->epfd_.get(), probe, 1, &zero, nullptr) < 0 && (errno == ENOSYS || errno == EPERM)) {
    spdlog::warn("epoll_pwait2 refused ({}); waiting with epoll_wait (millisecond timer resolution)",
                 std::strerror(errno));
    loop->use_pwait2_ = false;
  }
  return loop;
}

EpollLoop::EpollLoop(const EventLoopOptions& options) : options_(options), scratch_(options.scratch_size) {}

EpollLoop::~EpollLoop() {
  // Owners drain their ops before the loop goes away; anything left here is
  // a bug in an owner, but the loop itself holds no kernel-side references
  // to user memory, so there is nothing unsafe to wait for.
  DrainPosted();
}

int EpollLoop::socket_flags() const { return SOCK_NONBLOCK | SOCK_CLOEXEC; }

EpollLoop::FdState& EpollLoop::State(int fd) {
  if (static_cast<size_t>(fd) >= fds_.size()) fds_.resize(static_cast<size_t>(fd) + 64);
  return fds_[static_cast<size_t>(fd)];
}

void EpollLoop::Register(int fd) {
  FdState& st = State(fd);
  if (st.registered) return;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = static_cast<uint64_t>(fd);
  if (epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    // Only EEXIST (fd reused without Close) or resource exhaustion; the op
    // will still be attempted from the try list, and a later edge cannot
    // be observed, so report loudly.
    spdlog::error("epoll_ctl(ADD, {}): {}", fd, std::strerror(errno));
    return;
  }
  st.registered = true;
}

void EpollLoop::Begin(IoOp* op, int fd) {
  if (op->in_flight_) {
    spdlog::critical("IoOp submitted twice (type {})", static_cast<int>(op->type_));
    std::abort();
  }
  op->in_flight_ = true;
  op->cancel_requested_ = false;
  op->fd_ = fd;
}

void EpollLoop::Queue(IoOp* op) {
  if (op->queued_) return;
  op->queued_ = true;
  try_.push_back(op);
}

void EpollLoop::Accept(IoOp* op, int listen_fd) {
  Begin(op, listen_fd);
  op->multishot_ = true;
  Register(listen_fd);
  State(listen_fd).reader = op;
  Queue(op);
}

void EpollLoop::Connect(IoOp* op, int fd, const sockaddr* addr, socklen_t len) {
  Begin(op, fd);
  if (::connect(fd, addr, len) == 0) {
    Complete(op, 0);
    return;
  }
  if (errno != EINPROGRESS) {
    Complete(op, -errno);
    return;
  }
  // Registered only now: a fresh, unconnected TCP socket polls as
  // EPOLLOUT|EPOLLHUP, which would look like a finished connect.
  Register(fd);
  State(fd).writer = op;
}

void EpollLoop::Recv(IoOp* op, int fd, size_t max_len) {
  Begin(op, fd);
  op->len_ = max_len;
  Register(fd);
  State(fd).reader = op;
  Queue(op);
}

void EpollLoop::Send(IoOp* op, int fd, const char* data, size_t len) {
  Begin(op, fd);
  op->buf_ = data;
  op->len_ = len;
  Register(fd);
  State(fd).writer = op;
  Queue(op);
}

void EpollLoop::ShutdownWrite(IoOp* op, int fd) {
  Begin(op, fd);
  Complete(op, ::shutdown(fd, SHUT_WR) == 0 ? 0 : -errno);
}

void EpollLoop::StartTimer(IoOp* op, absl::Duration after) {
  Begin(op, -1);
  op->seq_ = next_seq_++;
  int64_t delay = std::max<int64_t>(0, absl::ToInt64Nanoseconds(after));
  timers_.push({NowNs() + delay, op->seq_});
  timer_ops_[op->seq_] = op;
}

void EpollLoop::Cancel(IoOp* op) {
  if (!op->in_flight_ || op->cancel_requested_) return;
  op->cancel_requested_ = true;
  if (op->type_ == OpType::kTimer) {
    timer_ops_.erase(op->seq_);
    op->seq_ = 0;
  } else if (op->fd_ >= 0 && static_cast<size_t>(op->fd_) < fds_.size()) {
    FdState& st = fds_[static_cast<size_t>(op->fd_)];
    if (st.reader == op) st.reader = nullptr;
    if (st.writer == op) st.writer = nullptr;
  }
  // A shutdown or an instant connect may already sit in done_ with its real
  // result; the op completes once, with that result.
  for (const Done& d : done_) {
    if (d.op == op) return;
  }
  Complete(op, -ECANCELED);
}

void EpollLoop::Close(int fd) {
  if (fd < 0) return;
  if (static_cast<size_t>(fd) < fds_.size()) {
    FdState& st = fds_[static_cast<size_t>(fd)];
    if (st.reader || st.writer) {
      spdlog::critical("Close(fd {}) with an op in flight", fd);
      std::abort();
    }
    if (st.registered) epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
    st = FdState{};
  }
  ::close(fd);
}

void EpollLoop::Defer(absl::AnyInvocable<void()> fn) { deferred_.push_back(std::move(fn)); }

void EpollLoop::Post(absl::AnyInvocable<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    posted_.push_back(std::move(fn));
  }
  if (!wake_pending_.exchange(true)) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
  }
}

void EpollLoop::DrainPosted() {
  std::vector<absl::AnyInvocable<void()>> fns;
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    fns.swap(posted_);
  }
  for (auto& fn : fns) fn();
}

void EpollLoop::Deliver(IoOp* op, const Completion& c) {
  if (!c.more) {
    op->in_flight_ = false;
    op->cancel_requested_ = false;
    op->multishot_ = false;
  }
  op->handler_->OnCompletion(op, c);
}

void EpollLoop::AttemptConnect(IoOp* op) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(op->fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0) {
    sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    if (getpeername(op->fd_, reinterpret_cast<sockaddr*>(&peer), &plen) != 0 && errno == ENOTCONN) {
      return;  // spurious edge: still connecting
    }
  }
  State(op->fd_).writer = nullptr;
  Deliver(op, {.res = -err});
}

void EpollLoop::Attempt(IoOp* op) {
  const int fd = op->fd_;
  switch (op->type_) {
    case OpType::kAccept:
      for (int i = 0; i < kAcceptBatch; ++i) {
        if (State(fd).reader != op) return;  // cancelled from a callback
        int nfd = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (nfd >= 0) {
          Deliver(op, {.res = nfd, .more = true});
          continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        int err = errno;
        State(fd).reader = nullptr;
        Deliver(op, {.res = -err});
        return;
      }
      Queue(op);
      return;
    case OpType::kRecv: {
      size_t want = std::min(op->len_, scratch_.size());
      ssize_t n;
      do {
        n = ::recv(fd, scratch_.data(), want, 0);
      } while (n < 0 && errno == EINTR);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      State(fd).reader = nullptr;
      Deliver(op, {.res = n < 0 ? -errno : static_cast<int>(n), .data = scratch_.data()});
      return;
    }
    case OpType::kSend: {
      ssize_t n;
      do {
        n = ::send(fd, op->buf_, op->len_, MSG_NOSIGNAL | MSG_DONTWAIT);
      } while (n < 0 && errno == EINTR);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      State(fd).writer = nullptr;
      Deliver(op, {.res = n < 0 ? -errno : static_cast<int>(n)});
      return;
    }
    case OpType::kConnect:
      AttemptConnect(op);
      return;
    case OpType::kShutdown:
    case OpType::kTimer:
      return;  // completed through done_ / timers_
  }
}

void EpollLoop::ProcessReady() {
  // Bounded rounds: callbacks queue more work, which the next RunOnce picks
  // up with a zero timeout, so a chatty connection cannot pin the loop here.
  for (int round = 0; round < 8; ++round) {
    if (try_.empty() && done_.empty() && deferred_.empty()) return;
    std::vector<IoOp*> tries;
    tries.swap(try_);
    for (IoOp* op : tries) {
      op->queued_ = false;
      if (!op->in_flight_ || op->cancel_requested_) continue;
      Attempt(op);
    }
    std::vector<Done> dones;
    dones.swap(done_);
    for (const Done& d : dones) Deliver(d.op, {.res = d.res});
    std::vector<absl::AnyInvocable<void()>> deferred;
    deferred.swap(deferred_);
    for (auto& fn : deferred) fn();
  }
}

int64_t EpollLoop::NextTimerDelayNs() {
  while (!timers_.empty() && !timer_ops_.contains(timers_.top().seq)) timers_.pop();
  if (timers_.empty()) return -1;
  return std::max<int64_t>(0, timers_.top().deadline_ns - NowNs());
}

void EpollLoop::FireTimers() {
  const int64_t now = NowNs();
  while (!timers_.empty() && timers_.top().deadline_ns <= now) {
    TimerEntry e = timers_.top();
    timers_.pop();
    auto it = timer_ops_.find(e.seq);
    if (it == timer_ops_.end()) continue;
    IoOp* op = it->second;
    timer_ops_.erase(it);
    op->seq_ = 0;
    Complete(op, 0);
  }
}

void EpollLoop::RunOnce(absl::Duration timeout) {
  DrainPosted();
  ProcessReady();

  int64_t wait_ns = timeout == absl::InfiniteDuration() ? -1 : absl::ToInt64Nanoseconds(timeout);
  if (!try_.empty() || !done_.empty() || !deferred_.empty() || stop_.load(std::memory_order_relaxed)) wait_ns = 0;
  int64_t timer_ns = NextTimerDelayNs();
  if (timer_ns >= 0 && (wait_ns < 0 || timer_ns < wait_ns)) wait_ns = timer_ns;

  epoll_event events[256];
  int n = Wait(events, 256, wait_ns);
  if (n < 0 && errno != EINTR) spdlog::error("epoll wait: {}", std::strerror(errno));
  for (int i = 0; i < n; ++i) {
    const uint64_t data = events[i].data.u64;
    if (data == kWakeData) {
      uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(wake_fd_.get(), &v, sizeof(v));
      wake_pending_.store(false);
      continue;
    }
    const int fd = static_cast<int>(data);
    const uint32_t ev = events[i].events;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
      if (IoOp* r = State(fd).reader) Attempt(r);
    }
    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
      if (IoOp* w = State(fd).writer) Attempt(w);
    }
  }
  FireTimers();
  DrainPosted();
  ProcessReady();
}

int EpollLoop::Wait(epoll_event* events, int max, int64_t wait_ns) {
  if (use_pwait2_) {
    timespec ts{};
    timespec* tsp = nullptr;
    if (wait_ns >= 0) {
      ts.tv_sec = wait_ns / 1'000'000'000;
      ts.tv_nsec = wait_ns % 1'000'000'000;
      tsp = &ts;
    }
    return epoll_pwait2(epfd_.get(), events, max, tsp, nullptr);
  }
  int ms = -1;
  if (wait_ns >= 0) {
    ms = static_cast<int>(std::min<int64_t>((wait_ns + 999'999) / 1'000'000, std::numeric_limits<int>::max()));
  }
  return epoll_wait(epfd_.get(), events, max, ms);
}

void EpollLoop::Run() {
  while (!stop_.load(std::memory_order_relaxed)) RunOnce(absl::InfiniteDuration());
  stop_.store(false);
}

void EpollLoop::Stop() {
  stop_.store(true);
  Post([] {});
}

}  // namespace ringmesh::proxy
