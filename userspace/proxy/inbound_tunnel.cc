#include "userspace/proxy/inbound_tunnel.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "spdlog/spdlog.h"
#include "userspace/proxy/tls/tls_context.h"
#include "userspace/proxy/tls/workload_identities.h"
#include "userspace/proxy/worker.h"

namespace ringmesh::proxy {

// One accepted CONNECT stream and its TCP connection to the app.
class InboundTunnel::App final : public IoHandler {
 public:
  enum Tag : uint32_t { kConnect, kRecv, kSend, kShutdown };

  App(InboundTunnel* t, hbone::StreamId sid) : t_(t), sid_(sid) {}
  ~App() {
    if (AnyInFlight()) {
      spdlog::critical("tunnel stream freed with ops in flight");
      std::abort();
    }
  }

  hbone::StreamId sid() const { return sid_; }
  bool AnyInFlight() const {
    return connect_op_.in_flight() || recv_op_.in_flight() || send_op_.in_flight() ||
           shutdown_op_.in_flight();
  }

  void Connect(const SocketAddress& target) {
    fd_ = t_->w_->CreateUpstreamSocket(*t_->listener_, target.ip.family());
    if (fd_ < 0) {
      spdlog::warn("tunnel {}: socket for {}: {}", t_->id_, target.ToString(), std::strerror(-fd_));
      fd_ = -1;
      Refuse();
      return;
    }
    len_ = target.ToSockaddr(&addr_);
    t_->w_->loop()->Connect(&connect_op_, fd_, reinterpret_cast<const sockaddr*>(&addr_), len_);
  }

  void OnCompletion(IoOp* op, const Completion& c) override {
    switch (op->tag()) {
      case kConnect:
        if (closing_) break;
        if (c.res != 0) {
          t_->w_->stats().Add(t_->w_->stats().upstream_connect_failures);
          Refuse();
          break;
        }
        if (stream_gone_) {  // the client gave up meanwhile
          Close(/*reset=*/true);
          break;
        }
        if (absl::Status s = t_->conn_->Accept(sid_); !s.ok()) {
          Close(/*reset=*/true);
          break;
        }
        connected_ = true;
        StartRecv();
        PumpToApp();
        break;
      case kRecv:
        if (closing_) break;
        if (c.res > 0) {
          FromApp(std::string_view(c.data, static_cast<size_t>(c.res)));
        } else if (c.res == 0) {
          app_eof_ = true;
          MaybeCloseWrite();
        } else if (c.res != -ECANCELED) {
          AppFailed();
          break;
        }
        if (!c.more) StartRecv();
        break;
      case kSend:
        if (closing_) break;
        if (c.res < 0) {
          AppFailed();
          break;
        }
        to_app_pos_ += static_cast<size_t>(c.res);
        if (to_app_pos_ < to_app_.size()) {
          t_->w_->loop()->Send(&send_op_, fd_, to_app_.data() + to_app_pos_, to_app_.size() - to_app_pos_);
        } else {
          PumpToApp();
        }
        break;
      case kShutdown:
        break;
    }
    t_->PumpWire();
    MaybeGone();
  }

  // Events from the stream.
  void PumpToApp() {
    if (!connected_ || closing_ || send_op_.in_flight()) return;
    // A stream that ended cleanly had every byte read (it may end inside
    // the Read below): what is left is to send them and shut the app's side.
    if (to_app_pos_ == to_app_.size() && !stream_gone_) {
      to_app_.resize(kAppChunk);
      size_t n = t_->conn_->Read(sid_, {reinterpret_cast<uint8_t*>(to_app_.data()), to_app_.size()});
      to_app_.resize(n);
      to_app_pos_ = 0;
      if (n > 0) t_->w_->stats().Add(t_->w_->stats().bytes_upstream, n);
    }
    if (to_app_pos_ < to_app_.size()) {
      t_->w_->loop()->Send(&send_op_, fd_, to_app_.data() + to_app_pos_, to_app_.size() - to_app_pos_);
    } else if ((stream_gone_ || t_->conn_->PeerClosed(sid_)) && !app_shut_) {
      app_shut_ = true;  // the client half-closed: so does the app's peer
      t_->w_->loop()->ShutdownWrite(&shutdown_op_, fd_);
    }
  }
  void OnWritable() {
    if (closing_ || stream_gone_) return;
    FromApp({});
  }
  void OnPeerHalfClosed() { PumpToApp(); }
  void OnStreamGone(bool clean) {
    stream_gone_ = true;
    if (!clean) {
      Close(/*reset=*/true);
    } else {
      MaybeDone();
    }
  }
  // The whole tunnel ends: reset the app connection.
  void Abort() { Close(/*reset=*/true); }

 private:
  void StartRecv() {
    if (!connected_ || closing_ || app_eof_ || stream_gone_ || recv_op_.in_flight() || !to_tunnel_.empty())
      return;
    t_->w_->loop()->Recv(&recv_op_, fd_, kAppChunk);
  }
  // App bytes into the stream; what Write does not take waits (the app is
  // not read meanwhile) until OnWritable.
  void FromApp(std::string_view data) {
    if (!data.empty()) {
      if (to_tunnel_.empty()) {
        size_t n = t_->conn_->Write(sid_, {reinterpret_cast<const uint8_t*>(data.data()), data.size()});
        t_->w_->stats().Add(t_->w_->stats().bytes_downstream, n);
        data.remove_prefix(n);
      }
      to_tunnel_.append(data);
    } else if (!to_tunnel_.empty()) {
      size_t n =
          t_->conn_->Write(sid_, {reinterpret_cast<const uint8_t*>(to_tunnel_.data()), to_tunnel_.size()});
      t_->w_->stats().Add(t_->w_->stats().bytes_downstream, n);
      to_tunnel_.erase(0, n);
    }
    if (to_tunnel_.empty()) {
      MaybeCloseWrite();
      StartRecv();
    }
  }
  void MaybeCloseWrite() {
    if (app_eof_ && to_tunnel_.empty() && !close_write_sent_ && !stream_gone_) {
      close_write_sent_ = true;
      t_->conn_->CloseWrite(sid_);
    }
  }
  void Refuse() {
    if (!stream_gone_) {
      (void)t_->conn_->Refuse(sid_, hbone::kStatusUpstreamFailed);
      stream_gone_ = true;
    }
    Close(/*reset=*/false);
  }
  void AppFailed() {
    if (!stream_gone_) {
      t_->conn_->Reset(sid_);
      stream_gone_ = true;
    }
    Close(/*reset=*/true);
  }
  void MaybeDone() {
    // Both directions finished and the stream is gone.
    if (stream_gone_ && (!connected_ || (app_eof_ && app_shut_))) Close(/*reset=*/false);
  }
  void Close(bool reset) {
    if (closing_) return;
    closing_ = true;
    if (!stream_gone_) {
      t_->conn_->Reset(sid_);
      stream_gone_ = true;
    }
    if (fd_ >= 0 && reset) {
      linger lg{1, 0};
      setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    for (IoOp* op : {&connect_op_, &recv_op_, &send_op_, &shutdown_op_}) t_->w_->loop()->Cancel(op);
    MaybeGone();
  }
  void MaybeGone() {
    if (!closing_) {
      MaybeDone();
      if (!closing_) return;
    }
    if (gone_ || AnyInFlight()) return;
    gone_ = true;
    if (fd_ >= 0) t_->w_->loop()->Close(fd_);
    fd_ = -1;
    t_->AppGone(this);
  }

  InboundTunnel* t_;
  hbone::StreamId sid_;
  int fd_ = -1;
  sockaddr_storage addr_{};
  socklen_t len_ = 0;
  std::string to_app_;
  size_t to_app_pos_ = 0;
  std::string to_tunnel_;
  bool connected_ = false;
  bool app_eof_ = false;
  bool close_write_sent_ = false;
  bool app_shut_ = false;
  bool stream_gone_ = false;
  bool closing_ = false;
  bool gone_ = false;
  IoOp connect_op_{this, OpType::kConnect, kConnect};
  IoOp recv_op_{this, OpType::kRecv, kRecv};
  IoOp send_op_{this, OpType::kSend, kSend};
  IoOp shutdown_op_{this, OpType::kShutdown, kShutdown};
};

InboundTunnel::InboundTunnel(Worker* worker, uint64_t id, int fd,
                             std::shared_ptr<const ListenerInfo> listener)
    : TunnelSocket(worker, fd), id_(id), listener_(std::move(listener)) {}

InboundTunnel::~InboundTunnel() {
  if (WireInFlight()) {
    spdlog::critical("tunnel {} freed with ops in flight", id_);
    std::abort();
  }
}

void InboundTunnel::OnHandshakeTimeout() {
  w_->stats().Add(w_->stats().hbone_handshake_timeouts);
  Abort(CloseReason::kIdleTimeout);
}

void InboundTunnel::Start() {
  ProxyStats& stats = w_->stats();
  stats.Add(stats.hbone_inbound_connections);
  const tls::WorkloadIdentities* ids = listener_->identities.get();
  absl::StatusOr<std::shared_ptr<const tls::Credential>> cred =
      absl::UnavailableError("no workload certificates");
  if (ids != nullptr) {
    const absl::StatusOr<tls::SpiffeId>& id = listener_->identity;
    cred = id.ok() ? ids->Get(*id) : id.status();
  }
  if (!cred.ok()) {
    // No certificate (yet) for this pod: nothing to answer a handshake with.
    spdlog::warn("tunnel {} to {}/{}: {}", id_, listener_->pod_ns, listener_->pod_name,
                 cred.status().ToString());
    stats.Add(stats.hbone_no_certificate);
    Abort(CloseReason::kSocketError);
    return;
  }
  hbone::HboneServerPolicy policy;
  policy.serves = [l = listener_](const SocketAddress& target) {
    return std::find(l->pod_ips.begin(), l->pod_ips.end(), target.ip) != l->pod_ips.end();
  };
  // The source address for ipBlocks: what the client's proxy says the
  // connection came from (`forwarded: for=`), else the tunnel's own peer.
  std::optional<IpAddress> tunnel_peer;
  if (auto peer = PeerAddress(fd_); peer) tunnel_peer = peer->ip;
  policy.authorize = [w = w_, l = listener_, tunnel_peer, id = id_](const tls::SpiffeId& peer,
                                                                    const hbone::HboneConnectRequest& req) {
    const std::string principal = peer.ToString();
    const IpAddress src = req.forwarded_for ? *req.forwarded_for : tunnel_peer.value_or(IpAddress());
    const authz::Decision d = w->routes()->authorizer().Check(authz::Workload{l->pod_ns, &l->pod_labels},
                                                              authz::Peer{principal, src}, req.target.port);
    if (!d.allowed) {
      w->stats().Add(w->stats().authz_denied_hbone);
      spdlog::info("tunnel {}: {} -> {}/{} port {} denied ({}{}{})", id, principal, l->pod_ns, l->pod_name,
                   req.target.port, authz::ToString(d.reason), d.policy.empty() ? "" : ": ", d.policy);
    }
    return d.allowed;
  };
  auto conn =
      hbone::HboneServerConn::Create((*cred)->server_ctx, ids->trust_domain(), std::move(policy), this);
  if (!conn.ok()) {
    spdlog::warn("tunnel {}: {}", id_, conn.status().ToString());
    Abort(CloseReason::kSocketError);
    return;
  }
  conn_ = std::move(*conn);
  StartHandshakeTimer();
  PumpWire();
}

void InboundTunnel::Abort(CloseReason reason) {
  if (closing_) return;
  closing_ = true;
  reset_ = true;
  reason_ = reason;
  // Streams first: each resets its app socket and goes once its ops drained.
  std::vector<App*> all;
  for (auto& [sid, app] : apps_) all.push_back(app.get());
  for (App* a : all) a->Abort();
  CancelWire();
  MaybeFinish();
}

InboundTunnel::App* InboundTunnel::FindApp(hbone::StreamId id) {
  auto it = apps_.find(id);
  return it == apps_.end() ? nullptr : it->second.get();
}

void InboundTunnel::OnCompletion(IoOp* op, const Completion& c) {
  OnWireCompletion(op, c);
  PumpWire();
  MaybeFinish();
}

void InboundTunnel::OnConnect(hbone::StreamId id, const hbone::HboneInboundConnect& connect) {
  w_->stats().Add(w_->stats().hbone_streams);
  spdlog::debug("tunnel {}: CONNECT {} from {}", id_, connect.request.target.ToString(),
                connect.peer.ToString());
  auto app = std::make_unique<App>(this, id);
  App* a = app.get();
  apps_[id] = std::move(app);
  a->Connect(connect.request.target);
}

void InboundTunnel::OnData(hbone::StreamId id) {
  if (App* a = FindApp(id)) a->PumpToApp();
}

void InboundTunnel::OnPeerHalfClosed(hbone::StreamId id) {
  if (App* a = FindApp(id)) a->OnPeerHalfClosed();
}

void InboundTunnel::OnReset(hbone::StreamId id, hbone::HboneStreamEnd, uint32_t) {
  if (App* a = FindApp(id)) a->OnStreamGone(/*clean=*/false);
}

void InboundTunnel::OnWritable(hbone::StreamId id) {
  if (App* a = FindApp(id)) a->OnWritable();
}

void InboundTunnel::OnClosed(hbone::StreamId id) {
  if (App* a = FindApp(id)) a->OnStreamGone(/*clean=*/true);
}

void InboundTunnel::OnConnectionError(hbone::HboneConnError error) {
  ProxyStats& stats = w_->stats();
  if (error == hbone::HboneConnError::kTls) {
    stats.Add(
        stats.hbone_tls_failures[std::min(static_cast<size_t>(conn_->tls_error()), kTlsReasonSlots - 1)]);
    spdlog::info("tunnel {} to {}/{}: TLS: {}", id_, listener_->pod_ns, listener_->pod_name,
                 tls::TlsErrorName(conn_->tls_error()));
  } else {
    stats.Add(stats.hbone_protocol_failures);
  }
}

void InboundTunnel::AppGone(App* app) {
  const hbone::StreamId sid = app->sid();
  // Freed outside its own callback.
  w_->loop()->Defer([this, sid] {
    apps_.erase(sid);
    PumpWire();
    MaybeFinish();
  });
}

void InboundTunnel::MaybeFinish() {
  if (finished_) return;
  if (!closing_) {
    // Done when the HBONE connection is and every byte went out.
    if (!conn_ || !conn_->Finished() || !WireFlushed() || !apps_.empty()) return;
    closing_ = true;
    CancelWire();
  }
  if (WireInFlight() || !apps_.empty()) return;
  finished_ = true;
  w_->stats().Closed(reason_);
  CloseWire(reset_);
  Worker* w = w_;
  InboundTunnel* self = this;
  w->loop()->Defer([w, self] { w->DestroyTunnel(self); });
}

}  // namespace ringmesh::proxy
