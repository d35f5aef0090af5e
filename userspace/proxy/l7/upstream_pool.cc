#include "userspace/proxy/l7/upstream_pool.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "userspace/proxy/connection.h"
#include "userspace/proxy/worker.h"

namespace ringmesh::proxy::l7 {

UpstreamConn::UpstreamConn(UpstreamPool* pool, std::string key, SocketAddress address, int fd, size_t cap)
    : pool_(pool), key_(std::move(key)), address_(address), fd_(fd), cap_(cap) {}

UpstreamConn::~UpstreamConn() {
  if (AnyInFlight()) {
    spdlog::critical("upstream connection to {} freed with ops in flight", address_.ToString());
    std::abort();
  }
}

void UpstreamConn::StartConnect() {
  EventLoop* loop = pool_->worker()->loop();
  addr_len_ = address_.ToSockaddr(&addr_);
  connect_deadline_ns_ = MonotonicNowNs() + absl::ToInt64Nanoseconds(pool_->options().connect_timeout);
  loop->Connect(&connect_op_, fd_, reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
  ArmTimer(connect_deadline_ns_);
}

void UpstreamConn::Consume(size_t n) {
  in_.erase(0, n);
  ArmRecv();
}

void UpstreamConn::Send(const char* data, size_t len) {
  out_.assign(data, len);
  pool_->worker()->loop()->Send(&send_op_, fd_, out_.data(), out_.size());
}

void UpstreamConn::ArmRecv() {
  if ((state_ != State::kBusy && state_ != State::kIdle) || ended_ || recv_op_.in_flight()) return;
  if (in_.size() >= cap_) return;  // the owner consumes, then calls again
  pool_->worker()->loop()->Recv(&recv_op_, fd_, cap_ - in_.size());
}

void UpstreamConn::ArmTimer(int64_t deadline_ns) {
  if (timer_op_.in_flight()) return;  // it re-arms itself when it fires
  pool_->worker()->loop()->StartTimer(
      &timer_op_, absl::Nanoseconds(std::max<int64_t>(0, deadline_ns - MonotonicNowNs())));
}

void UpstreamConn::OnTimer() {
  const int64_t now = MonotonicNowNs();
  if (state_ == State::kConnecting) {
    if (now >= connect_deadline_ns_) {
      // The connect's completion (-ECANCELED) reports the failure.
      pool_->worker()->loop()->Cancel(&connect_op_);
    } else {
      ArmTimer(connect_deadline_ns_);
    }
  } else if (state_ == State::kIdle) {
    const int64_t deadline = idle_since_ns_ + absl::ToInt64Nanoseconds(pool_->options().idle_timeout);
    if (now >= deadline) {
      pool_->Discard(this, false);
    } else {
      ArmTimer(deadline);
    }
  }
}

void UpstreamConn::OnCompletion(IoOp* op, const Completion& c) {
  if (state_ == State::kClosing) {
    MaybeFree();
    return;
  }
  if (op == &timer_op_) {
    if (c.res == 0) OnTimer();
  } else if (op == &connect_op_) {
    int res = c.res;
    if (res == -ECANCELED) res = -ETIMEDOUT;  // only the connect timeout cancels it
    if (res == 0) {
      state_ = State::kBusy;
      ArmRecv();
    }
    if (owner_ != nullptr) owner_->OnUpstreamConnected(this, res);
  } else if (op == &send_op_) {
    if (c.res != -ECANCELED && owner_ != nullptr) owner_->OnUpstreamSent(this, c.res);
  } else if (op == &recv_op_) {
    if (c.res > 0) {
      if (state_ == State::kIdle) {
        // A server may not answer what was never asked: drop it.
        pool_->Discard(this, true);
      } else {
        in_.append(c.data, static_cast<size_t>(c.res));
        if (owner_ != nullptr) owner_->OnUpstreamData(this);
        if (!c.more) ArmRecv();
      }
    } else if (c.res != -ECANCELED) {
      ended_ = true;
      if (state_ == State::kIdle) {
        pool_->Discard(this, c.res < 0);  // closed by the server while idle
      } else if (owner_ != nullptr) {
        owner_->OnUpstreamEnded(this, c.res);
      }
    }
  }
  if (state_ == State::kClosing) MaybeFree();
}

bool UpstreamConn::AnyInFlight() const {
  return connect_op_.in_flight() || recv_op_.in_flight() || send_op_.in_flight() || timer_op_.in_flight();
}

void UpstreamConn::MaybeFree() {
  if (freed_ || AnyInFlight()) return;
  freed_ = true;
  if (fd_ >= 0) {
    if (reset_) {
      linger lg{1, 0};
      setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    pool_->worker()->loop()->Close(fd_);
    fd_ = -1;
  }
  UpstreamPool* pool = pool_;
  pool->worker()->loop()->Defer([pool, this] { pool->Free(this); });
}

UpstreamPool::UpstreamPool(Worker* worker, const UpstreamPoolOptions& options)
    : worker_(worker), options_(options) {}

UpstreamPool::~UpstreamPool() {
  if (!all_.empty()) {
    spdlog::critical("upstream pool freed with {} connection(s) left", all_.size());
    std::abort();
  }
}

std::string UpstreamPool::Key(const ListenerInfo& listener, const SocketAddress& endpoint) {
  return absl::StrCat(listener.pod_id, "/", listener.pod_ns, "/", listener.pod_name, "/",
                      listener.netns_cookie, "|", endpoint.ToString());
}

UpstreamConn* UpstreamPool::TakeIdle(const std::string& key, UpstreamOwner* owner) {
  auto it = idle_.find(key);
  if (it == idle_.end()) return nullptr;
  UpstreamConn* u = it->second.back();
  it->second.pop_back();
  if (it->second.empty()) idle_.erase(it);
  u->state_ = UpstreamConn::State::kBusy;
  u->owner_ = owner;
  ++u->uses_;
  ++reuses_;
  return u;
}

UpstreamConn* UpstreamPool::Connect(const ListenerInfo& listener, const std::string& key,
                                    const SocketAddress& address, UpstreamOwner* owner, int* error) {
  const int fd = worker_->CreateUpstreamSocket(listener, address.ip.family());
  if (fd < 0) {
    *error = fd;
    return nullptr;
  }
  auto conn = std::make_unique<UpstreamConn>(this, key, address, fd, options_.buffer_bytes);
  UpstreamConn* u = conn.get();
  all_[u] = std::move(conn);
  u->owner_ = owner;
  u->uses_ = 1;
  ++connects_;
  u->StartConnect();
  return u;
}

void UpstreamPool::Release(UpstreamConn* u) {
  if (u->state_ != UpstreamConn::State::kBusy || u->ended_ || !u->in_.empty()) {
    Discard(u, false);
    return;
  }
  auto& list = idle_[u->key_];
  if (list.size() >= options_.max_idle_per_key) {
    Discard(u, false);
    return;
  }
  u->owner_ = nullptr;
  u->state_ = UpstreamConn::State::kIdle;
  u->idle_since_ns_ = MonotonicNowNs();
  list.push_back(u);
  u->ArmRecv();
  u->ArmTimer(u->idle_since_ns_ + absl::ToInt64Nanoseconds(options_.idle_timeout));
}

void UpstreamPool::RemoveIdle(UpstreamConn* u) {
  auto it = idle_.find(u->key_);
  if (it == idle_.end()) return;
  std::erase(it->second, u);
  if (it->second.empty()) idle_.erase(it);
}

void UpstreamPool::Discard(UpstreamConn* u, bool reset) {
  if (u->state_ == UpstreamConn::State::kClosing) return;
  if (u->state_ == UpstreamConn::State::kIdle) RemoveIdle(u);
  u->state_ = UpstreamConn::State::kClosing;
  u->owner_ = nullptr;
  u->reset_ = reset;
  EventLoop* loop = worker_->loop();
  loop->Cancel(&u->connect_op_);
  loop->Cancel(&u->recv_op_);
  loop->Cancel(&u->send_op_);
  loop->Cancel(&u->timer_op_);
  u->MaybeFree();
}

void UpstreamPool::CloseIdle() {
  std::vector<UpstreamConn*> idle;
  for (auto& [key, list] : idle_) idle.insert(idle.end(), list.begin(), list.end());
  for (UpstreamConn* u : idle) Discard(u, false);
}

size_t UpstreamPool::idle_count() const {
  size_t n = 0;
  for (const auto& [key, list] : idle_) n += list.size();
  return n;
}

void UpstreamPool::Free(UpstreamConn* u) { all_.erase(u); }

}  // namespace ringmesh::proxy::l7
