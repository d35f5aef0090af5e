// One proxied TCP connection: the accepted downstream socket, the upstream
// socket the proxy opens from the source pod's namespace, and a bounded
// queue per direction between them. Written once against EventLoop, so it
// runs unchanged on io_uring and epoll.
//
// Per direction (bytes received from side s, sent to the other side):
//   recv from s -> queue[s] -> send to other
// A side is read only while its queue has room (backpressure), EOF from a
// side becomes shutdown(SHUT_WR) on the other once its queue drained
// (half-close), and a reset or error on one side resets the other
// (SO_LINGER {1, 0} before close). Every end is a CloseReason.
//
// Lifetime: owned by its Worker; Abort() cancels every op in flight and the
// connection frees itself (via the worker, outside any callback) once all
// final completions arrived.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "userspace/common/ip.h"
#include "userspace/proxy/byte_queue.h"
#include "userspace/proxy/event_loop.h"
#include "userspace/proxy/orig_dst.h"
#include "userspace/proxy/outbound_tunnel.h"
#include "userspace/proxy/route_table.h"
#include "userspace/proxy/stats.h"

namespace ringmesh::proxy {

class Worker;

// What /connections shows; also what tests inspect.
struct ConnectionInfo {
  uint64_t id = 0;
  int worker = 0;
  std::string pod_ns;
  std::string pod_name;
  uint32_t pod_id = 0;
  std::string downstream_peer;
  std::string original_destination;
  std::string service;  // "ns/name" or empty
  std::string endpoint;
  uint64_t bytes_up = 0;    // downstream -> upstream
  uint64_t bytes_down = 0;  // upstream -> downstream
  bool spliced = false;     // the proxy left the data path (bytes include the direct ones)
  int64_t age_ms = 0;
  std::string state;
  size_t buffered_up = 0;  // queued toward upstream now
  size_t buffered_down = 0;
  size_t peak_buffered = 0;  // highest queue size seen in either direction
  size_t buffer_cap = 0;
  // L7 connections (l7/): "http1" and the requests served so far; the
  // endpoint is the current (or last) request's.
  std::string protocol = "tcp";
  uint64_t requests = 0;
};

// The destination's AuthorizationPolicies for a connection (or, with
// `request`, one HTTP request) from the enrolled pod behind `src` to
// `target`, when `target` is an enrolled pod of this node (elsewhere its
// node's proxy checks them, on the tunnel's CONNECT). A denial is counted
// and logged with both ends and the policy; the caller resets or answers.
bool AuthorizedToLocalPod(Worker& w, const RouteTable* routes, const ListenerInfo& src,
                          const IpAddress& src_ip, const SocketAddress& target, uint64_t conn_id,
                          const authz::Request* request = nullptr);

class Connection final : public IoHandler {
 public:
  enum Side : int { kDown = 0, kUp = 1 };

  Connection(Worker* worker, uint64_t id, int downstream_fd, std::shared_ptr<const ListenerInfo> listener);
  ~Connection();

  // Resolves the destination, picks an endpoint and starts connecting.
  void Start();
  // Ends the connection now; `reset` sends RST to both sides.
  void Abort(CloseReason reason, bool reset);

  void OnCompletion(IoOp* op, const Completion& c) override;

  uint64_t id() const { return id_; }
  ConnectionInfo Info() const;

 private:
  enum class State : uint8_t { kConnecting, kEstablished, kClosing };
  enum OpTag : uint32_t { kTagRecv, kTagSend, kTagShutdown, kTagDelay, kTagConnect, kTagTimer };

  static Side Other(Side s) { return s == kDown ? kUp : kDown; }
  void ConnectNext();
  void OnConnect(int res);
  void StartRecv(Side s);
  void OnRecv(Side s, const Completion& c);
  void Pump(Side to);
  void OnSend(Side to, int res);
  void MaybeShutdown(Side to);
  void ArmTimer();
  void OnTimer(int res);
  void Close(CloseReason reason, bool reset_down, bool reset_up);
  bool AnyInFlight() const;
  void MaybeFinish();
  void ReleaseEndpoint();
  void MaybeSplice(Side from);
  bool HoldForReader(Side to, size_t len);
  void EndSplice();
  // The loop, or the tunnel stream for the upstream side of a tunnel.
  void CancelOp(IoOp* op, Side s);

  Worker* w_;
  uint64_t id_;
  std::shared_ptr<const ListenerInfo> listener_;
  int fd_[2] = {-1, -1};
  State state_ = State::kConnecting;
  ByteQueue q_[2];  // q_[s]: received from side s, waiting to be sent to the other
  bool eof_[2] = {false, false};
  bool shut_[2] = {false, false};
  bool delayed_[2] = {false, false};
  // HoldForReader, per direction: since when (0: not holding), the current
  // wait, and whether this reader was given up on.
  int64_t hold_since_ns_[2] = {0, 0};
  absl::Duration hold_step_[2];
  bool hold_given_up_[2] = {false, false};
  bool reset_[2] = {false, false};
  bool finished_ = false;
  uint64_t bytes_[2] = {0, 0};  // forwarded, by source side
  uint64_t read_down_ = 0;      // received from downstream
  uint64_t credited_ = 0;       // last total reported to the resolver
  size_t peak_buffered_ = 0;
  CloseReason reason_ = CloseReason::kNormal;

  IoOp recv_op_[2];
  IoOp send_op_[2];
  IoOp shutdown_op_[2];
  IoOp delay_op_[2];
  IoOp connect_op_;
  IoOp timer_op_;

  int64_t start_ns_;
  int64_t last_activity_ns_;
  int64_t connect_start_ns_ = 0;
  int64_t connect_deadline_ns_ = 0;

  SocketAddress peer_;
  SocketAddress orig_dst_;
  SocketAddress upstream_;
  bool have_upstream_ = false;
  sockaddr_storage up_addr_{};
  socklen_t up_len_ = 0;
  std::shared_ptr<const RouteTable> routes_;
  const ServiceRoute* route_ = nullptr;
  size_t endpoint_ = LoadBalancer::kNone;
  std::vector<size_t> tried_;
  int attempts_ = 0;
  TcpMetricCell* cell_ = nullptr;
  bool to_local_pod_ = false;  // upstream marked to join the fast path
  int forwards_ = 0;           // completed sends, both directions
  bool established_ = false;   // the upstream connect succeeded
  std::optional<SpliceEnds> splice_;
  // The upstream is a CONNECT stream in an mTLS tunnel (the endpoint is a
  // mesh pod of another node): the kUp ops go to it instead of the loop.
  std::unique_ptr<TunnelStream> tunnel_;
  bool splice_ended_ = false;
  uint64_t direct_seen_ = 0;  // direct bytes at the last idle check
};

int64_t MonotonicNowNs();

// The fields of ConnectionInfo every kind of downstream connection (L4,
// L7) fills the same way: who, from where, to what, since when.
ConnectionInfo DownstreamInfo(uint64_t id, int worker, const ListenerInfo& listener,
                              const SocketAddress& peer, const SocketAddress& orig_dst,
                              const ServiceRoute* route, int64_t start_ns);

// The latency sample a successful connect gives the balancer: the kernel's
// handshake RTT of `fd` when it has one, else `wall` (never more than it).
absl::Duration ConnectLatencySample(int fd, absl::Duration wall);

}  // namespace ringmesh::proxy
