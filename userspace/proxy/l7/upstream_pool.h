// Upstream HTTP/1.1 connections of one worker's L7 proxy: each is owned by
// the pool for its whole life (connecting, lent to one request, idle in the
// pool, draining its ops before it is freed), so the cancel-then-drain rule
// of event_loop.h is kept in one place and a request that ends early only
// hands its connection back.
//
// Idle keep-alive connections are kept per (source pod, endpoint): a source
// pod's request never travels on a connection opened from another pod's
// namespace (its SO_MARK, its source address, its identity). An idle
// connection keeps a recv armed, so one the server closes (or writes to
// unasked) is noticed and dropped, and one idle for `idle_timeout` is
// closed; at most `max_idle_per_key` wait per key.
//
//   UpstreamConn* u = pool.TakeIdle(key, owner);    // or
//   UpstreamConn* u = pool.Connect(listener, key, addr, owner, &err);
//   ... u->Send(...); owner->OnUpstreamData(u) -> u->in(), u->Consume(n) ...
//   pool.Release(u);            // response done, connection reusable
//   pool.Discard(u, reset);     // anything else
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/time/time.h"
#include "userspace/common/ip.h"
#include "userspace/proxy/event_loop.h"
#include "userspace/proxy/orig_dst.h"

namespace ringmesh::proxy {
class Worker;
}

namespace ringmesh::proxy::l7 {

class UpstreamConn;
class UpstreamPool;

// The request that holds a connection (lent by the pool) hears about it here.
class UpstreamOwner {
 public:
  // The connect finished: 0 or -errno (-ETIMEDOUT after the connect timeout).
  virtual void OnUpstreamConnected(UpstreamConn* u, int res) = 0;
  // in() has new bytes.
  virtual void OnUpstreamData(UpstreamConn* u) = 0;
  // The receive side ended: 0 for EOF, -errno for an error.
  virtual void OnUpstreamEnded(UpstreamConn* u, int res) = 0;
  // The send started with Send() completed: bytes sent or -errno.
  virtual void OnUpstreamSent(UpstreamConn* u, int res) = 0;

 protected:
  ~UpstreamOwner() = default;
};

class UpstreamConn final : public IoHandler {
 public:
  enum class State : uint8_t { kConnecting, kBusy, kIdle, kClosing };

  UpstreamConn(UpstreamPool* pool, std::string key, SocketAddress address, int fd, size_t cap);
  ~UpstreamConn();
  UpstreamConn(const UpstreamConn&) = delete;
  UpstreamConn& operator=(const UpstreamConn&) = delete;

  const std::string& key() const { return key_; }
  const SocketAddress& address() const { return address_; }
  State state() const { return state_; }
  // Requests this connection has carried, the current one included.
  uint64_t uses() const { return uses_; }
  // Received bytes not consumed yet (at most the buffer cap).
  const std::string& in() const { return in_; }
  void Consume(size_t n);
  // One send at a time. The bytes are copied: a connection the owner drops
  // may still have its send in flight, and must not point into the owner.
  void Send(const char* data, size_t len);
  bool sending() const { return send_op_.in_flight(); }

  void OnCompletion(IoOp* op, const Completion& c) override;

 private:
  friend class UpstreamPool;
  void StartConnect();
  void ArmRecv();
  void ArmTimer(int64_t deadline_ns);
  void OnTimer();
  bool AnyInFlight() const;
  void MaybeFree();

  UpstreamPool* pool_;
  std::string key_;
  SocketAddress address_;
  int fd_;
  size_t cap_;
  State state_ = State::kConnecting;
  UpstreamOwner* owner_ = nullptr;
  std::string in_;
  std::string out_;
  bool ended_ = false;  // EOF or error from the receive side
  bool reset_ = false;  // close with RST
  bool freed_ = false;
  uint64_t uses_ = 0;
  int64_t connect_deadline_ns_ = 0;
  int64_t idle_since_ns_ = 0;
  sockaddr_storage addr_{};
  socklen_t addr_len_ = 0;
  IoOp connect_op_{this, OpType::kConnect};
  IoOp recv_op_{this, OpType::kRecv};
  IoOp send_op_{this, OpType::kSend};
  IoOp timer_op_{this, OpType::kTimer};
};

struct UpstreamPoolOptions {
  size_t buffer_bytes = 64 * 1024;  // receive buffer cap per connection
  absl::Duration connect_timeout = absl::Seconds(5);
  absl::Duration idle_timeout = absl::Seconds(4);
  size_t max_idle_per_key = 16;
};

class UpstreamPool {
 public:
  UpstreamPool(Worker* worker, const UpstreamPoolOptions& options);
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // "pod id/ns/name|ip:port": the pool key of a source pod and an endpoint.
  static std::string Key(const ListenerInfo& listener, const SocketAddress& endpoint);

  // The most recently used idle connection of `key`, now lent to `owner`.
  UpstreamConn* TakeIdle(const std::string& key, UpstreamOwner* owner);
  // A new connection from the listener's pod to `address`, connecting; null
  // with *error (-errno) when no socket could be made.
  UpstreamConn* Connect(const ListenerInfo& listener, const std::string& key, const SocketAddress& address,
                        UpstreamOwner* owner, int* error);
  // The owner is done and the connection can carry another request.
  void Release(UpstreamConn* u);
  // Closes `u` (RST if `reset`); it is freed once its ops drained.
  void Discard(UpstreamConn* u, bool reset);
  // Closes every idle connection (shutdown).
  void CloseIdle();

  // No connection at all, in any state.
  bool empty() const { return all_.empty(); }
  size_t idle_count() const;
  uint64_t connects() const { return connects_; }
  uint64_t reuses() const { return reuses_; }

  Worker* worker() { return worker_; }
  const UpstreamPoolOptions& options() const { return options_; }

 private:
  friend class UpstreamConn;
  void RemoveIdle(UpstreamConn* u);
  void Free(UpstreamConn* u);

  Worker* worker_;
  UpstreamPoolOptions options_;
  std::unordered_map<UpstreamConn*, std::unique_ptr<UpstreamConn>> all_;
  std::map<std::string, std::vector<UpstreamConn*>> idle_;  // most recently released last
  uint64_t connects_ = 0;
  uint64_t reuses_ = 0;
};

}  // namespace ringmesh::proxy::l7
