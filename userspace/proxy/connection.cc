#include "userspace/proxy/connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>

#include "spdlog/spdlog.h"
#include "userspace/proxy/tls/spiffe_id.h"
#include "userspace/proxy/tls/workload_identities.h"
#include "userspace/proxy/worker.h"

namespace ringmesh::proxy {

int64_t MonotonicNowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

absl::Duration ConnectLatencySample(int fd, absl::Duration wall) {
  // The kernel times the handshake from the SYN's transmission to the
  // SYN-ACK's arrival (the first srtt sample); it leaves out the time the
  // connect waited for the event loop to submit it and for the loop to reap
  // its completion, which on a busy node is scheduling noise larger than
  // the endpoint's own latency. No sample when the SYN was retransmitted
  // (Karn): then the wall time, retransmission included, is the truth.
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
      len < offsetof(tcp_info, tcpi_total_retrans) + sizeof(info.tcpi_total_retrans) || info.tcpi_rtt == 0 ||
      info.tcpi_total_retrans != 0) {
    return wall;
  }
  return std::min(wall, absl::Microseconds(info.tcpi_rtt));
}

namespace {

const char* SideName(Connection::Side s) { return s == Connection::kDown ? "downstream" : "upstream"; }

}  // namespace

Connection::Connection(Worker* worker, uint64_t id, int downstream_fd,
                       std::shared_ptr<const ListenerInfo> listener)
    : w_(worker),
      id_(id),
      listener_(std::move(listener)),
      q_{ByteQueue(worker->options().buffer_bytes, worker->pool()),
         ByteQueue(worker->options().buffer_bytes, worker->pool())},
      recv_op_{IoOp(this, OpType::kRecv, kDown), IoOp(this, OpType::kRecv, kUp)},
      send_op_{IoOp(this, OpType::kSend, kDown), IoOp(this, OpType::kSend, kUp)},
      shutdown_op_{IoOp(this, OpType::kShutdown, kDown), IoOp(this, OpType::kShutdown, kUp)},
      delay_op_{IoOp(this, OpType::kTimer, kDown), IoOp(this, OpType::kTimer, kUp)},
      connect_op_(this, OpType::kConnect),
      timer_op_(this, OpType::kTimer, 2) {
  fd_[kDown] = downstream_fd;
  start_ns_ = last_activity_ns_ = MonotonicNowNs();
}

Connection::~Connection() {
  if (AnyInFlight()) {
    spdlog::critical("connection {} freed with ops in flight", id_);
    std::abort();
  }
  if (cell_ != nullptr) w_->stats().Release(cell_);
}

void Connection::Start() {
  ProxyStats& stats = w_->stats();
  // TCP_NODELAY is inherited from the listening socket.
  if (auto peer = PeerAddress(fd_[kDown])) {
    peer_ = *peer;
  } else {
    // The client is already gone (ENOTCONN): nothing to look up or forward.
    stats.Add(stats.orig_dst_miss);
    Close(CloseReason::kOrigDstMiss, /*reset_down=*/true, false);
    return;
  }

  auto od = w_->resolver().Resolve(fd_[kDown], *listener_, peer_);
  if (!od) {
    stats.Add(stats.orig_dst_miss);
    Close(CloseReason::kOrigDstMiss, /*reset_down=*/true, false);
    return;
  }
  orig_dst_ = *od;
  routes_ = w_->routes();
  route_ = routes_ ? routes_->Find(orig_dst_) : nullptr;
  // An http route is served per request by the L7 proxy, which takes the
  // socket here: never on the fast path, and no op of this object started.
  if (route_ != nullptr && w_->AdoptHttp1(id_, fd_[kDown], listener_, peer_, orig_dst_, routes_, route_)) {
    fd_[kDown] = -1;
    state_ = State::kClosing;
    finished_ = true;
    Worker* w = w_;
    w->loop()->Defer([w, this] { w->Destroy(this); });
    return;
  }
  // A route whose connections are short keeps this end off the fast path
  // too, as sockops does once the datapath knows (rm_short_dst).
  if ((route_ == nullptr || route_->LongLived(w_->options().long_route_forwards())) &&
      !w_->resolver().OnAccepted(fd_[kDown], *listener_, peer_)) {
    stats.Add(stats.sockhash_add_failures);
  }
  // Destinations that are no service share one label value: the addresses
  // pods reach are the tenants' choice, the metrics' memory is the node's.
  cell_ = stats.Cell(listener_->workload, listener_->pod_ns, route_ ? route_->Fqdn() : "unknown");
  stats.Add(cell_->opened);

  connect_deadline_ns_ = start_ns_ + absl::ToInt64Nanoseconds(w_->options().connect_timeout);
  // Read what the client sends first while the upstream connect is under
  // way; the queue bound applies as usual.
  StartRecv(kDown);
  ArmTimer();
  ConnectNext();
}

bool AuthorizedToLocalPod(Worker& w, const RouteTable* routes, const ListenerInfo& src,
                          const IpAddress& src_ip, const SocketAddress& target, uint64_t conn_id,
                          const authz::Request* request) {
  if (routes == nullptr || routes->authorizer().size() == 0) return true;
  const Pod* dest = routes->LocalEnrolledPod(target.ip);
  if (dest == nullptr) return true;
  // The client is an enrolled pod too (its connect was redirected here):
  // its identity is known without a handshake.
  const std::string& principal = src.principal;
  const authz::Decision d = routes->authorizer().Check(authz::Workload::Of(*dest),
                                                       authz::Peer{principal, src_ip}, target.port, request);
  if (d.allowed) return true;
  w.stats().Add(w.stats().authz_denied_local);
  spdlog::info("connection {}: {} -> {}/{} port {}{} denied ({}{}{})", conn_id,
               principal.empty() ? src_ip.ToString() : principal, dest->ns, dest->name, target.port,
               request == nullptr ? std::string()
                                  : fmt::format(" {} {}{}", request->method, request->host, request->path),
               authz::ToString(d.reason), d.policy.empty() ? "" : ": ", d.policy);
  return false;
}

void Connection::ReleaseEndpoint() {
  if (route_ != nullptr && endpoint_ != LoadBalancer::kNone) route_->lb->OnRelease(endpoint_);
  endpoint_ = LoadBalancer::kNone;
}

void Connection::ConnectNext() {
  SocketAddress target = orig_dst_;
  if (route_ != nullptr) {
    size_t i = route_->lb->Pick(tried_);
    if (i == LoadBalancer::kNone) {
      Close(tried_.empty() ? CloseReason::kNoEndpoint : CloseReason::kConnectFailed, /*reset_down=*/true,
            false);
      return;
    }
    tried_.push_back(i);
    endpoint_ = i;
    route_->lb->OnConnectStart(i);
    target = SocketAddress{route_->lb->endpoint(i), route_->target_port};
  }
  ++attempts_;
  upstream_ = target;
  have_upstream_ = true;
  // A mesh pod of another node: through an mTLS tunnel to its proxy.
  if (const MeshPeer* peer =
          (routes_ != nullptr && listener_->identities) ? routes_->MeshPeerOf(target.ip) : nullptr) {
    connect_start_ns_ = MonotonicNowNs();
    auto stream = w_->OpenTunnelStream(*listener_, target, *peer);
    if (!stream.ok()) {
      spdlog::warn("connection {}: tunnel to {}: {}", id_, target.ToString(), stream.status().ToString());
      OnConnect(-ECONNREFUSED);
      return;
    }
    tunnel_ = std::move(*stream);
    to_local_pod_ = false;
    tunnel_->Connect(&connect_op_);
    return;
  }
  if (!AuthorizedToLocalPod(*w_, routes_.get(), *listener_, peer_.ip, target, id_)) {
    Close(CloseReason::kDenied, /*reset_down=*/true, false);
    return;
  }
  int fd = w_->CreateUpstreamSocket(*listener_, target.ip.family());
  if (fd < 0) {
    spdlog::warn("connection {}: upstream socket: {}", id_, std::strerror(-fd));
    Close(CloseReason::kSocketError, /*reset_down=*/true, false);
    return;
  }
  fd_[kUp] = fd;
  to_local_pod_ = w_->options().fastpath_upstream && routes_ != nullptr &&
                  routes_->IsLocalEnrolledPod(target.ip) &&
                  (route_ == nullptr || route_->LongLived(w_->options().long_route_forwards()));
  if (to_local_pod_) w_->resolver().OnUpstreamToLocalPod(fd);
  up_len_ = target.ToSockaddr(&up_addr_);
  connect_start_ns_ = MonotonicNowNs();
  w_->loop()->Connect(&connect_op_, fd, reinterpret_cast<const sockaddr*>(&up_addr_), up_len_);
}

void Connection::OnConnect(int res) {
  const absl::Duration latency = absl::Nanoseconds(MonotonicNowNs() - connect_start_ns_);
  if (res == 0) {
    if (route_ != nullptr) {
      route_->lb->OnResult(endpoint_, tunnel_ ? latency : ConnectLatencySample(fd_[kUp], latency), true);
    }
    state_ = State::kEstablished;
    established_ = true;
    last_activity_ns_ = MonotonicNowNs();
    StartRecv(kUp);
    Pump(kUp);
    return;
  }
  ProxyStats& stats = w_->stats();
  stats.Add(stats.upstream_connect_failures);
  if (route_ != nullptr) route_->lb->OnResult(endpoint_, latency, false);
  ReleaseEndpoint();
  spdlog::debug("connection {}: connect to {} failed: {}", id_, upstream_.ToString(), std::strerror(-res));
  if (tunnel_) {
    tunnel_->Close(/*reset=*/true);
    tunnel_.reset();
  } else if (fd_[kUp] >= 0) {
    w_->loop()->Close(fd_[kUp]);
  }
  fd_[kUp] = -1;
  if (route_ != nullptr && attempts_ < w_->options().connect_attempts) {
    ConnectNext();
    return;
  }
  // Refused or unreachable: reset the client at once so it fails as fast
  // as a direct connect would have.
  Close(CloseReason::kConnectFailed, /*reset_down=*/true, false);
}

void Connection::StartRecv(Side s) {
  if (state_ == State::kClosing || eof_[s] || recv_op_[s].in_flight()) return;
  if (s == kUp && state_ != State::kEstablished) return;
  const size_t room = q_[s].free_space();
  if (room == 0) return;  // backpressure: resumes when the other side drains
  if (s == kUp && tunnel_) {
    tunnel_->Recv(&recv_op_[s], room);
  } else {
    w_->loop()->Recv(&recv_op_[s], fd_[s], room);
  }
}

void Connection::OnRecv(Side s, const Completion& c) {
  if (c.res > 0) {
    const size_t n = static_cast<size_t>(c.res);
    if (n > q_[s].free_space()) {
      // The loop promised at most the room we asked for.
      spdlog::critical("connection {}: recv overran its queue ({} > {})", id_, n, q_[s].free_space());
      std::abort();
    }
    q_[s].Append(c.data, n);
    peak_buffered_ = std::max(peak_buffered_, q_[s].size());
    if (s == kDown) {
      // Tell the fast path how much of what the app sent has been read, so
      // an app that keeps us busy stays on it (see rm_fp_credit).
      read_down_ += n;
      const uint64_t step = w_->resolver().credit_step();
      if (step != 0 && read_down_ - credited_ >= step) {
        w_->resolver().OnConsumed(*listener_, peer_, read_down_);
        credited_ = read_down_;
      }
    }
    last_activity_ns_ = MonotonicNowNs();
    Pump(Other(s));
    if (!c.more) StartRecv(s);
    return;
  }
  if (c.res == 0) {
    eof_[s] = true;
    // The end of a spliced connection: its direct byte counts are final
    // (and still there: the sockets' entries go when they reach CLOSE, which
    // needs the shutdown below), and what follows of the other direction
    // is little enough to go through the proxy again.
    EndSplice();
    MaybeShutdown(Other(s));
    return;
  }
  if (c.res == -ECANCELED) return;
  // ECONNRESET and friends: the peer is gone; make the other side see a
  // reset as well instead of a clean end of stream.
  spdlog::debug("connection {}: recv from {}: {}", id_, SideName(s), std::strerror(-c.res));
  Close(s == kDown ? CloseReason::kDownstreamReset : CloseReason::kUpstreamReset, s == kUp, s == kDown);
}

void Connection::Pump(Side to) {
  if (state_ == State::kClosing || send_op_[to].in_flight() || shut_[to]) return;
  if (to == kUp && state_ != State::kEstablished) return;
  ByteQueue& q = q_[Other(to)];
  if (q.empty()) {
    MaybeShutdown(to);
    return;
  }
  const absl::Duration delay = w_->options().forward_delay;
  if (delay > absl::ZeroDuration() && !delayed_[to]) {
    if (!delay_op_[to].in_flight()) w_->loop()->StartTimer(&delay_op_[to], delay);
    return;
  }
  delayed_[to] = false;
  auto front = q.Front();
  if (HoldForReader(to, front.size())) return;
  if (to == kUp && tunnel_) {
    tunnel_->Send(&send_op_[to], front.data(), front.size());
  } else {
    w_->loop()->Send(&send_op_[to], fd_[to], front.data(), front.size());
  }
}

// A spliced direction's reader with most of the fast-path budget unread:
// the proxy waits for it rather than push its own socket past the budget,
// which would put that socket on TCP for good and end the splice (rm_splice
// in abi.h). Not for small connections: one bpf() call per write.
bool Connection::HoldForReader(Side to, size_t len) {
  if (!splice_ || hold_given_up_[to] || bytes_[Other(to)] < ProxyOptions::kSpliceHoldAfterBytes) return false;
  OrigDstResolver& r = w_->resolver();
  const uint64_t limit = r.splice_hold_bytes();
  if (limit == 0) return false;
  const int64_t unread = r.SpliceTargetUnread(*splice_, to == kUp);
  if (unread < 0 || static_cast<uint64_t>(unread) + len <= limit) {
    hold_since_ns_[to] = 0;
    return false;
  }
  const ProxyOptions& o = w_->options();
  ProxyStats& stats = w_->stats();
  const int64_t now = MonotonicNowNs();
  if (hold_since_ns_[to] == 0) {
    hold_since_ns_[to] = now;
    hold_step_[to] = o.splice_hold;
  } else if (absl::Nanoseconds(now - hold_since_ns_[to]) >= o.splice_hold_max) {
    hold_given_up_[to] = true;  // TCP from here on (see splice_hold_max)
    stats.Add(stats.splice_hold_timeouts);
    return false;
  } else {
    hold_step_[to] = std::min(hold_step_[to] * 2, ProxyOptions::kSpliceHoldStepMax);
  }
  // Our receive side stays as it is: the queue stops it once full, and then
  // TCP holds the writer.
  if (!delay_op_[to].in_flight()) w_->loop()->StartTimer(&delay_op_[to], hold_step_[to]);
  stats.Add(stats.splice_holds);
  return true;
}

void Connection::OnSend(Side to, int res) {
  if (res == -ECANCELED) return;
  if (res <= 0) {
    spdlog::debug("connection {}: send to {}: {}", id_, SideName(to), std::strerror(res == 0 ? EPIPE : -res));
    Close(to == kDown ? CloseReason::kDownstreamReset : CloseReason::kUpstreamReset, to == kUp, to == kDown);
    return;
  }
  const Side from = Other(to);
  const auto n = static_cast<uint64_t>(res);
  q_[from].Consume(n);
  bytes_[from] += n;
  last_activity_ns_ = MonotonicNowNs();
  ProxyStats& stats = w_->stats();
  if (from == kDown) {
    stats.Add(stats.bytes_upstream, n);
    stats.Add(cell_->sent_bytes, n);
  } else {
    stats.Add(stats.bytes_downstream, n);
    stats.Add(cell_->received_bytes, n);
  }
  ++forwards_;
  if (to_local_pod_) MaybeSplice(from);
  StartRecv(from);  // room again: lift backpressure
  Pump(to);
}

// Tells the datapath how much of one direction the proxy has forwarded; once
// that is all its writer sent, the writer's next message goes straight to
// the far end (rm_splice in abi.h). Updated only when this direction's
// queue is empty: with bytes still queued here the counts cannot match. The
// entry itself is made either way (a writer that never pauses still needs
// it to come back from TCP once it does).
void Connection::MaybeSplice(Side from) {
  if (tunnel_) return;  // a tunnel stream is no socket to splice
  const int after = w_->options().splice_after_forwards;
  // An artificial forward delay (--delay-us) must stay in the data path.
  if (after <= 0 || splice_ended_ || w_->options().forward_delay > absl::ZeroDuration()) return;
  OrigDstResolver& r = w_->resolver();
  if (splice_) {
    if (q_[from].empty()) r.SpliceSet(*splice_, from == kDown, bytes_[from]);
    return;
  }
  if (forwards_ < after) return;
  SpliceEnds e;
  e.pod_cookie = listener_->netns_cookie;
  e.app = peer_;
  auto down_local = AcceptedLocalAddress(fd_[kDown], *listener_);
  auto up_local = LocalAddress(fd_[kUp]);
  if (!down_local || !up_local) {
    to_local_pod_ = false;
    return;
  }
  e.proxy_down = *down_local;
  e.proxy_up = *up_local;
  e.server = upstream_;
  if (!r.SpliceAvailable(e)) {
    to_local_pod_ = false;  // the server leg is on TCP: nothing to leave
    return;
  }
  if (!r.SpliceCountStart(e) || !r.SpliceSet(e, true, bytes_[kDown]) || !r.SpliceSet(e, false, bytes_[kUp])) {
    r.SpliceClear(e);
    r.SpliceCountTake(e, true);
    r.SpliceCountTake(e, false);
    to_local_pod_ = false;  // not available here: stop trying
    return;
  }
  splice_ = e;
  if (const int rcvbuf = w_->options().splice_rcvbuf; rcvbuf > 0) {
    // Best effort: a failure only leaves the kernel's autotuning in place.
    for (int fd : fd_) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  }
  w_->stats().Add(w_->stats().spliced_connections);
}

// At the first end of stream, or in Close() (every way to the end passes
// there, before either socket is let go): nothing may go around the proxy
// any more, and what went around it counts in the connection's bytes.
void Connection::EndSplice() {
  if (!splice_) return;
  OrigDstResolver& r = w_->resolver();
  r.SpliceClear(*splice_);
  const uint64_t up = r.SpliceCountTake(*splice_, true), down = r.SpliceCountTake(*splice_, false);
  splice_.reset();
  splice_ended_ = true;  // its counts are taken: never again on this connection
  bytes_[kDown] += up;
  bytes_[kUp] += down;
  ProxyStats& stats = w_->stats();
  stats.Add(stats.bytes_upstream, up);
  stats.Add(stats.bytes_downstream, down);
  stats.Add(stats.spliced_bytes, up + down);
  if (cell_ != nullptr) {
    stats.Add(cell_->sent_bytes, up);
    stats.Add(cell_->received_bytes, down);
  }
}

void Connection::MaybeShutdown(Side to) {
  const Side from = Other(to);
  if (!eof_[from] || !q_[from].empty() || shut_[to] || send_op_[to].in_flight()) return;
  if (state_ != State::kEstablished) return;  // re-checked after connect
  shut_[to] = true;
  if (to == kUp && tunnel_) {
    tunnel_->ShutdownWrite(&shutdown_op_[to]);
  } else {
    w_->loop()->ShutdownWrite(&shutdown_op_[to], fd_[to]);
  }
}

void Connection::ArmTimer() {
  if (timer_op_.in_flight() || state_ == State::kClosing) return;
  int64_t deadline = last_activity_ns_ + absl::ToInt64Nanoseconds(w_->options().idle_timeout);
  if (state_ == State::kConnecting) deadline = std::min(deadline, connect_deadline_ns_);
  w_->loop()->StartTimer(&timer_op_, absl::Nanoseconds(deadline - MonotonicNowNs()));
}

void Connection::OnTimer(int res) {
  if (res < 0) return;
  const int64_t now = MonotonicNowNs();
  if (state_ == State::kConnecting && now >= connect_deadline_ns_) {
    w_->stats().Add(w_->stats().upstream_connect_failures);
    if (route_ != nullptr) {
      route_->lb->OnResult(endpoint_, absl::Nanoseconds(now - connect_start_ns_), false);
    }
    Close(CloseReason::kConnectTimeout, /*reset_down=*/true, false);
    return;
  }
  if (now - last_activity_ns_ >= absl::ToInt64Nanoseconds(w_->options().idle_timeout)) {
    if (splice_) {
      // Bytes going around the proxy are activity too.
      const uint64_t direct =
          w_->resolver().SpliceDirect(*splice_, true) + w_->resolver().SpliceDirect(*splice_, false);
      if (direct != direct_seen_) {
        direct_seen_ = direct;
        last_activity_ns_ = now;
        ArmTimer();
        return;
      }
    }
    Close(CloseReason::kIdleTimeout, false, false);
    return;
  }
  ArmTimer();
}

void Connection::OnCompletion(IoOp* op, const Completion& c) {
  const Side s = static_cast<Side>(op->tag() & 1);
  if (state_ != State::kClosing) {
    switch (op->type()) {
      case OpType::kRecv:
        OnRecv(s, c);
        break;
      case OpType::kSend:
        OnSend(s, c.res);
        break;
      case OpType::kShutdown:
        // ENOTCONN when the peer already went away; the recv side reports
        // that as a reset or EOF, so nothing to add here.
        break;
      case OpType::kConnect:
        OnConnect(c.res);
        break;
      case OpType::kTimer:
        if (op == &timer_op_) {
          OnTimer(c.res);
        } else if (c.res == 0) {
          delayed_[s] = true;
          Pump(s);
        }
        break;
      case OpType::kAccept:
        break;
    }
  }
  if (state_ != State::kClosing && shut_[kDown] && shut_[kUp] && !shutdown_op_[kDown].in_flight() &&
      !shutdown_op_[kUp].in_flight()) {
    // Both directions delivered their EOF: nothing left to carry.
    Close(CloseReason::kNormal, false, false);
  }
  if (state_ == State::kClosing) MaybeFinish();
}

void Connection::Abort(CloseReason reason, bool reset) { Close(reason, reset, reset); }

void Connection::Close(CloseReason reason, bool reset_down, bool reset_up) {
  if (state_ == State::kClosing) return;
  state_ = State::kClosing;
  reason_ = reason;
  EndSplice();
  reset_[kDown] = reset_down;
  reset_[kUp] = reset_up;
  for (Side s : {kDown, kUp}) {
    CancelOp(&recv_op_[s], s);
    CancelOp(&send_op_[s], s);
    CancelOp(&shutdown_op_[s], s);
    w_->loop()->Cancel(&delay_op_[s]);
  }
  CancelOp(&connect_op_, kUp);
  w_->loop()->Cancel(&timer_op_);
  MaybeFinish();
}

void Connection::CancelOp(IoOp* op, Side s) {
  if (s == kUp && tunnel_) {
    tunnel_->Cancel(op);
  } else {
    w_->loop()->Cancel(op);
  }
}

bool Connection::AnyInFlight() const {
  for (int s = 0; s < 2; ++s) {
    if (recv_op_[s].in_flight() || send_op_[s].in_flight() || shutdown_op_[s].in_flight() ||
        delay_op_[s].in_flight()) {
      return true;
    }
  }
  return connect_op_.in_flight() || timer_op_.in_flight();
}

void Connection::MaybeFinish() {
  if (finished_ || AnyInFlight()) return;
  finished_ = true;
  if (tunnel_) {
    tunnel_->Close(reset_[kUp]);
    tunnel_.reset();
  }
  for (int s = 0; s < 2; ++s) {
    if (fd_[s] < 0) continue;
    if (reset_[s]) {
      // Abortive close: the peer sees RST, as it would have from the real
      // server or client.
      linger lg{1, 0};
      setsockopt(fd_[s], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    w_->loop()->Close(fd_[s]);
    fd_[s] = -1;
  }
  q_[kDown].Clear();
  q_[kUp].Clear();
  if (credited_ != 0) w_->resolver().OnConnectionEnd(*listener_, peer_);
  if (route_ != nullptr && established_) {
    route_->RecordForwards(forwards_);
    // Only a route of the current table speaks for its VIPs: an older one
    // may name endpoints a snapshot has removed since.
    if (routes_ == w_->routes()) {
      const uint32_t direct = w_->options().direct_connects;
      if (auto is_short = route_->ShortRouteChange(w_->options().long_route_forwards())) {
        TellDatapath(*route_, *is_short, direct, w_->resolver());
      } else if (direct > 0 && route_->DirectRearmDue(ProxyOptions::kDirectRejudge)) {
        TellDatapath(*route_, true, direct, w_->resolver());
      }
    }
  }
  ReleaseEndpoint();
  ProxyStats& stats = w_->stats();
  stats.Closed(reason_);
  if (cell_ != nullptr) stats.Add(cell_->closed);
  Worker* w = w_;
  w->loop()->Defer([w, this] { w->Destroy(this); });
}

ConnectionInfo DownstreamInfo(uint64_t id, int worker, const ListenerInfo& listener,
                              const SocketAddress& peer, const SocketAddress& orig_dst,
                              const ServiceRoute* route, int64_t start_ns) {
  ConnectionInfo info;
  info.id = id;
  info.worker = worker;
  info.pod_ns = listener.pod_ns;
  info.pod_name = listener.pod_name;
  info.pod_id = listener.pod_id;
  info.downstream_peer = peer.ToString();
  info.original_destination = orig_dst.ToString();
  if (route != nullptr) info.service = route->ns + "/" + route->name;
  info.age_ms = (MonotonicNowNs() - start_ns) / 1'000'000;
  return info;
}

ConnectionInfo Connection::Info() const {
  ConnectionInfo info = DownstreamInfo(id_, w_->id(), *listener_, peer_, orig_dst_, route_, start_ns_);
  if (have_upstream_) info.endpoint = upstream_.ToString();
  info.bytes_up = bytes_[kDown];
  info.bytes_down = bytes_[kUp];
  if (splice_) {
    info.spliced = true;
    info.bytes_up += w_->resolver().SpliceDirect(*splice_, true);
    info.bytes_down += w_->resolver().SpliceDirect(*splice_, false);
  }
  switch (state_) {
    case State::kConnecting:
      info.state = "connecting";
      break;
    case State::kEstablished:
      info.state = (eof_[kDown] || eof_[kUp]) ? "half_closed" : "established";
      break;
    case State::kClosing:
      info.state = "closing";
      break;
  }
  info.buffered_up = q_[kDown].size();
  info.buffered_down = q_[kUp].size();
  info.peak_buffered = peak_buffered_;
  info.buffer_cap = q_[kDown].cap();
  return info;
}

}  // namespace ringmesh::proxy
