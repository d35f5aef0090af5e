#include "userspace/proxy/outbound_tunnel.h"

#include <cerrno>
#include <utility>
#include <vector>

#include "spdlog/spdlog.h"
#include "userspace/proxy/connection.h"
#include "userspace/proxy/worker.h"

namespace ringmesh::proxy {

namespace {
constexpr size_t kStreamChunk = 64 * 1024;
}  // namespace

// --- TunnelStream -------------------------------------------------------------

TunnelStream::~TunnelStream() {
  if (connect_ != nullptr || recv_ != nullptr || send_ != nullptr) {
    spdlog::critical("tunnel stream freed with ops pending");
    std::abort();
  }
  Close(/*reset=*/true);
}

void TunnelStream::Finish(IoOp*& pending, int res, const char* data) {
  IoOp* op = pending;
  pending = nullptr;
  if (op != nullptr) loop_->FinishUserOp(op, res, data);
}

void TunnelStream::Connect(IoOp* op) {
  loop_->BeginUserOp(op);
  connect_ = op;
  if (established_) {
    Finish(connect_, 0);
  } else if (gone_) {
    Finish(connect_, reset_ ? -ECONNRESET : -ECONNREFUSED);
  }
}

void TunnelStream::Recv(IoOp* op, size_t max_len) {
  loop_->BeginUserOp(op);
  recv_ = op;
  recv_max_ = std::min(max_len, kStreamChunk);
  TryRecv();
}

void TunnelStream::Send(IoOp* op, const char* data, size_t len) {
  loop_->BeginUserOp(op);
  send_ = op;
  send_data_ = data;
  send_len_ = len;
  TrySend();
}

// Calls into the HboneConn deliver its events before they return, and an
// event may end the stream (OnGone clears tunnel_, the tunnel itself lives
// until a deferred destroy): each call below keeps the tunnel in a local
// and takes its pending op first, so an event cannot complete it twice.
void TunnelStream::ShutdownWrite(IoOp* op) {
  loop_->BeginUserOp(op);
  if (OutboundTunnel* t = tunnel_) {
    t->client()->CloseWrite(sid_);  // END_STREAM after what was written
    t->PumpWire();
  }
  loop_->FinishUserOp(op, 0);
}

void TunnelStream::Cancel(IoOp* op) {
  if (op == connect_) Finish(connect_, -ECANCELED);
  if (op == recv_) Finish(recv_, -ECANCELED);
  if (op == send_) Finish(send_, -ECANCELED);
}

void TunnelStream::Close(bool reset) {
  if (tunnel_ == nullptr) return;
  OutboundTunnel* t = tunnel_;
  tunnel_ = nullptr;
  // A clean close leaves the stream to finish on its own (what was written
  // is still going out); a reset ends it now.
  if (reset) t->client()->Reset(sid_);
  t->Detach(sid_);
  t->PumpWire();
}

void TunnelStream::TryRecv() {
  if (recv_ == nullptr) return;
  if (OutboundTunnel* t = tunnel_) {
    hbone::HboneClientConn* c = t->client();
    if (c->Readable(sid_) > 0) {
      IoOp* op = std::exchange(recv_, nullptr);
      recv_buf_.resize(recv_max_);
      // Reading the last bytes may end the stream (OnClosed) inside Read.
      const size_t n = c->Read(sid_, {reinterpret_cast<uint8_t*>(recv_buf_.data()), recv_buf_.size()});
      recv_buf_.resize(n);
      loop_->FinishUserOp(op, static_cast<int>(n), recv_buf_.data());
      t->PumpWire();  // the window reopened
      return;
    }
    if (c->PeerClosed(sid_)) Finish(recv_, 0);
    return;
  }
  if (gone_) Finish(recv_, reset_ ? -ECONNRESET : 0);
}

void TunnelStream::TrySend() {
  if (send_ == nullptr) return;
  OutboundTunnel* t = tunnel_;
  if (t == nullptr) {
    if (gone_) Finish(send_, -EPIPE);
    return;
  }
  const size_t n = t->client()->Write(sid_, {reinterpret_cast<const uint8_t*>(send_data_), send_len_});
  if (n == 0) return;  // the stream's queue is full: OnWritable (or gone: OnGone)
  Finish(send_, static_cast<int>(n));
  t->PumpWire();
}

void TunnelStream::OnEstablished() {
  established_ = true;
  status_ = hbone::kStatusOk;
  Finish(connect_, 0);
}

void TunnelStream::OnRefused(int status) {
  status_ = status;
  OnGone(/*reset=*/false);
}

void TunnelStream::OnReadable() { TryRecv(); }

void TunnelStream::OnWritable() { TrySend(); }

void TunnelStream::OnGone(bool reset) {
  tunnel_ = nullptr;
  gone_ = true;
  reset_ = reset;
  if (!established_) Finish(connect_, reset ? -ECONNRESET : -ECONNREFUSED);
  TryRecv();
  TrySend();
}

// --- OutboundTunnel -----------------------------------------------------------

OutboundTunnel::OutboundTunnel(Worker* worker, uint64_t id, std::string key, int fd)
    : TunnelSocket(worker, fd), id_(id), key_(std::move(key)), idle_since_ns_(MonotonicNowNs()) {}

OutboundTunnel::~OutboundTunnel() {
  if (WireInFlight()) {
    spdlog::critical("outbound tunnel {} freed with ops in flight", id_);
    std::abort();
  }
}

absl::Status OutboundTunnel::Start(const SocketAddress& far, const std::shared_ptr<SSL_CTX>& client_ctx,
                                   tls::SpiffeId destination) {
  auto conn = hbone::HboneClientConn::Create(client_ctx, std::move(destination), this);
  if (!conn.ok()) {
    Close(/*abort=*/true);
    return conn.status();
  }
  conn_ = std::move(*conn);
  far_ = far;
  far_len_ = far.ToSockaddr(&far_addr_);
  w_loop()->Connect(&connect_op_, fd_, reinterpret_cast<const sockaddr*>(&far_addr_), far_len_);
  StartHandshakeTimer();
  return absl::OkStatus();
}

absl::Status OutboundTunnel::Open(TunnelStream* stream, const SocketAddress& target,
                                  const hbone::HboneConnectOptions& options) {
  if (!CanOpen()) return absl::UnavailableError("tunnel takes no new streams");
  auto sid = conn_->OpenStream(target, options);
  if (!sid.ok()) return sid.status();
  streams_[*sid] = stream;
  stream->Attach(this, *sid);
  idle_since_ns_ = 0;
  PumpWire();
  return absl::OkStatus();
}

bool OutboundTunnel::CanOpen() const {
  return !closing_ && conn_ != nullptr && !conn_->failed() && !conn_->draining() &&
         streams_.size() < conn_->limits().max_streams;
}

TunnelStream* OutboundTunnel::Find(hbone::StreamId id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second;
}

void OutboundTunnel::Detach(hbone::StreamId sid) {
  streams_.erase(sid);
  if (streams_.empty()) idle_since_ns_ = MonotonicNowNs();
  MaybeFinish();
}

void OutboundTunnel::OnCompletion(IoOp* op, const Completion& c) {
  if (op == &connect_op_) {
    if (c.res != 0 && c.res != -ECANCELED) {
      w_->stats().Add(w_->stats().upstream_connect_failures);
      spdlog::debug("tunnel to {}: connect: {}", far_.ToString(), std::strerror(-c.res));
      Close(/*abort=*/true);
    }
  } else {
    OnWireCompletion(op, c);
  }
  PumpWire();
  MaybeFinish();
}

void OutboundTunnel::OnEstablished(hbone::StreamId id) {
  if (TunnelStream* s = Find(id)) s->OnEstablished();
}

void OutboundTunnel::OnRefused(hbone::StreamId id, int status) {
  TunnelStream* s = Find(id);
  if (s == nullptr) return;
  spdlog::debug("tunnel to {}: CONNECT refused with {}", far_.ToString(), status);
  Detach(id);
  s->OnRefused(status);
}

void OutboundTunnel::OnData(hbone::StreamId id) {
  if (TunnelStream* s = Find(id)) s->OnReadable();
}

void OutboundTunnel::OnPeerHalfClosed(hbone::StreamId id) {
  if (TunnelStream* s = Find(id)) s->OnReadable();
}

void OutboundTunnel::OnReset(hbone::StreamId id, hbone::HboneStreamEnd, uint32_t) {
  TunnelStream* s = Find(id);
  if (s == nullptr) return;
  Detach(id);
  s->OnGone(/*reset=*/true);
}

void OutboundTunnel::OnWritable(hbone::StreamId id) {
  if (TunnelStream* s = Find(id)) s->OnWritable();
}

void OutboundTunnel::OnClosed(hbone::StreamId id) {
  TunnelStream* s = Find(id);
  if (s == nullptr) return;
  Detach(id);
  s->OnGone(/*reset=*/false);
}

void OutboundTunnel::OnConnectionError(hbone::HboneConnError error) {
  ProxyStats& stats = w_->stats();
  if (error == hbone::HboneConnError::kTls) {
    stats.Add(stats.hbone_outbound_tls_failures);
    spdlog::warn("tunnel to {}: TLS: {}", far_.ToString(), tls::TlsErrorName(conn_->tls_error()));
  }
  FailAll();
}

void OutboundTunnel::FailAll() {
  std::vector<TunnelStream*> all;
  for (auto& [sid, s] : streams_) all.push_back(s);
  streams_.clear();
  idle_since_ns_ = MonotonicNowNs();
  for (TunnelStream* s : all) s->OnGone(/*reset=*/true);
}

void OutboundTunnel::Close(bool abort) {
  if (closing_) return;
  closing_ = true;
  aborted_ = abort || conn_ == nullptr || conn_->failed();
  FailAll();
  if (!aborted_) {
    conn_->Goaway();  // nothing is open: tell the far end, then close
    PumpWire();
  }
  MaybeFinish();
}

void OutboundTunnel::MaybeFinish() {
  if (finished_) return;
  if (!closing_) {
    if (conn_ == nullptr || !(conn_->failed() || conn_->Finished())) return;
    Close(/*abort=*/conn_->failed());
    return;
  }
  // A graceful close waits until its GOAWAY went out.
  if (!aborted_ && !wire_stopped_ && !WireFlushed()) return;
  if (!wire_stopped_) CancelWire();
  if (WireInFlight()) return;
  finished_ = true;
  CloseWire(aborted_);
  Worker* w = w_;
  OutboundTunnel* self = this;
  w->loop()->Defer([w, self] { w->DestroyOutbound(self); });
}

}  // namespace ringmesh::proxy
