// HBONE connection: TLS below, HTTP/2 above, CONNECT streams as tunnels.
#include "userspace/proxy/hbone/hbone_conn.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ringmesh::proxy::hbone {
namespace {

// One TLS record of plaintext: what a single Read can yield.
constexpr size_t kIoChunk = 16 * 1024;
// Stops a pathological ping-pong between the layers from spinning forever
// inside one call; the next call continues where this one stopped.
constexpr int kMaxPumpRounds = 1 << 14;

}  // namespace

const char* HboneConnErrorName(HboneConnError e) {
  switch (e) {
    case HboneConnError::kNone:
      return "none";
    case HboneConnError::kTls:
      return "tls";
    case HboneConnError::kNotHttp2:
      return "not_http2";
    case HboneConnError::kHttp2Protocol:
      return "http2_protocol";
    case HboneConnError::kPeerClosed:
      return "peer_closed";
  }
  return "unknown";
}

HboneConn::HboneConn(http::Http2Role role, HboneLimits limits, HboneEvents* events)
    : limits_(std::move(limits)), events_sink_(events), h2_(role, limits_.http2, this), buf_(kIoChunk) {}

HboneConn::~HboneConn() = default;

absl::Status HboneConn::Init(std::unique_ptr<tls::TlsSession> tls) {
  tls_ = std::move(tls);
  absl::Status st = h2_.Start();
  if (!st.ok()) return st;
  Pump();
  return absl::OkStatus();
}

HboneConn::Stream* HboneConn::Find(StreamId id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : &it->second;
}

const HboneConn::Stream* HboneConn::Find(StreamId id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : &it->second;
}

void HboneConn::Erase(StreamId id) {
  Stream* s = Find(id);
  if (s == nullptr) return;
  size_t unread = s->readable();
  if (unread > 0) h2_.Consume(id, unread);  // else the connection window shrinks for good
  receive_total_ -= unread;
  streams_.erase(id);
}

void HboneConn::MaybeRetire(StreamId id) {
  Stream* s = Find(id);
  if (s == nullptr || !s->h2_closed || s->readable() > 0 || s->retiring) return;
  // Erased when OnClosed is delivered, so events queued before (data, half
  // close) still reach the handler first.
  s->retiring = true;
  Queue({EventKind::kClosed, id});
}

// --- bytes ---

size_t HboneConn::FeedWire(std::span<const uint8_t> ciphertext) {
  if (failed() && tls_->failed()) return 0;
  size_t n = tls_->Feed(ciphertext);
  Pump();
  return n;
}

void HboneConn::FeedEof() {
  tls_->FeedEof();
  Pump();
  // Whatever the TLS layer made of it, an EOF while the HTTP/2 session still
  // expected bytes ends the connection.
  if (!failed() && !h2_.Finished()) Fail(HboneConnError::kPeerClosed);
  Pump();
}

size_t HboneConn::PendingWire() const { return tls_->PendingWire(); }

size_t HboneConn::TakeWire(std::span<uint8_t> out) {
  size_t n = tls_->TakeWire(out);
  Pump();
  return n;
}

void HboneConn::Pump() {
  if (pumping_) return;
  pumping_ = true;
  bool progress = true;
  for (int i = 0; progress && i < kMaxPumpRounds; ++i) {
    progress = false;
    MoveBytes(&progress);
    CheckState();
  }
  pumping_ = false;
  Dispatch();
}

void HboneConn::MoveBytes(bool* progress) {
  // In: always read what TLS has decrypted. HTTP/2 holds at most the flow
  // control windows of stream data, and nghttp2 bounds the rest (ACK queue,
  // session memory), so reading never grows anything without bound, and it
  // keeps both peers from waiting on each other's full send buffers.
  while (!h2_dead_ && !tls_->failed()) {
    size_t n = tls_->Read(buf_);
    if (n == 0) break;
    *progress = true;
    absl::Status st = h2_.Feed(absl::MakeConstSpan(buf_.data(), n));
    if (!st.ok()) h2_dead_ = true;  // CheckState classifies it
  }
  // Out: HTTP/2 frames into TLS records, as far as the TLS bound lets them.
  if (!tls_->handshake_done() || tls_->failed() || tls_shutdown_) return;
  for (;;) {
    absl::Span<const uint8_t> out = h2_.PendingOutput();
    if (out.empty()) break;
    size_t n = tls_->Write(std::span<const uint8_t>(out.data(), out.size()));
    if (n == 0) break;
    h2_.ConsumeOutput(n);
    *progress = true;
  }
}

void HboneConn::CheckState() {
  const bool h2_clean_end = h2_.close_reason() == http::Http2CloseReason::kGoawayComplete;
  if (tls_->failed() && !failed()) {
    if (tls_->error() != tls::TlsError::kPeerClosed) {
      Fail(HboneConnError::kTls);
    } else if (!h2_clean_end) {
      Fail(HboneConnError::kPeerClosed);
    }
  }
  switch (h2_.close_reason()) {
    case http::Http2CloseReason::kNotHttp2:
      Fail(HboneConnError::kNotHttp2);
      break;
    case http::Http2CloseReason::kProtocolError:
    case http::Http2CloseReason::kAbuse:
    case http::Http2CloseReason::kResourceLimit:
      Fail(HboneConnError::kHttp2Protocol);
      break;
    case http::Http2CloseReason::kGoawayComplete:
      draining_ = true;
      break;
    case http::Http2CloseReason::kNone:
      break;
  }
  if (tls_->peer_closed() && !h2_.Finished()) Fail(HboneConnError::kPeerClosed);
  // close_notify once the HTTP/2 session is over and its last frames (the
  // GOAWAY) were handed to TLS.
  if (!tls_shutdown_ && tls_->handshake_done() && !tls_->failed() && h2_.Finished()) {
    tls_->Shutdown();
    tls_shutdown_ = true;
  }
}

void HboneConn::Fail(HboneConnError error) {
  if (failed()) return;
  error_ = error;
  draining_ = true;
  h2_dead_ = true;
  for (auto& [id, s] : streams_) Queue({EventKind::kReset, id, 0, HboneStreamEnd::kConnectionFailed, 0});
  streams_.clear();
  receive_total_ = 0;
  Queue({EventKind::kConnectionError});
  // Nothing of HTTP/2 is left to say (no preface, or the transport is gone):
  // end TLS now. A protocol error first sends its GOAWAY (CheckState).
  if ((error == HboneConnError::kNotHttp2 || error == HboneConnError::kPeerClosed) && !tls_shutdown_ &&
      !tls_->failed()) {
    tls_->Shutdown();
    tls_shutdown_ = true;
  }
}

bool HboneConn::Finished() const {
  if (tls_->failed() || tls_shutdown_) return tls_->PendingWire() == 0;
  return false;
}

HboneBuffered HboneConn::Buffered() const {
  HboneBuffered b;
  b.tls_pending_wire = tls_->PendingWire();
  b.receive = receive_total_;
  for (const auto& [id, s] : streams_) b.h2_send += h2_.send_buffered(id);
  b.h2_memory = h2_.MemoryUsage();
  return b;
}

// --- events ---

void HboneConn::Dispatch() {
  if (dispatching_) return;
  dispatching_ = true;
  while (!events_.empty()) {
    Event e = events_.front();
    events_.pop_front();
    switch (e.kind) {
      case EventKind::kEstablished:
        if (Find(e.id)) events_sink_->OnEstablished(e.id);
        break;
      case EventKind::kRefused:
        events_sink_->OnRefused(e.id, e.status);
        break;
      case EventKind::kData: {
        Stream* s = Find(e.id);
        if (s == nullptr) break;
        s->data_event_queued = false;
        if (s->readable() > 0) events_sink_->OnData(e.id);
        break;
      }
      case EventKind::kPeerHalfClosed:
        if (Find(e.id)) events_sink_->OnPeerHalfClosed(e.id);
        break;
      case EventKind::kReset:
        events_sink_->OnReset(e.id, e.end, e.code);
        break;
      case EventKind::kWritable:
        if (Find(e.id)) events_sink_->OnWritable(e.id);
        break;
      case EventKind::kClosed: {
        Stream* s = Find(e.id);
        if (s == nullptr || !s->retiring) break;  // reset or failed meanwhile: told already
        streams_.erase(e.id);
        events_sink_->OnClosed(e.id);
        break;
      }
      case EventKind::kGoaway:
        events_sink_->OnGoaway();
        break;
      case EventKind::kConnectionError:
        events_sink_->OnConnectionError(error_);
        break;
      case EventKind::kConnect: {
        Stream* s = Find(e.id);
        if (s == nullptr || !s->connect) break;
        // A copy: the handler may Accept or Refuse, which frees the original.
        HboneInboundConnect connect = *s->connect;
        DeliverConnect(e.id, connect);
        break;
      }
    }
  }
  dispatching_ = false;
}

void HboneConn::OnHeaders(int32_t stream_id, const http::Http2Headers& headers, bool end_stream) {
  if (failed()) return;
  OnHead(stream_id, headers, end_stream);
}

void HboneConn::OnData(int32_t stream_id, absl::Span<const uint8_t> data) {
  Stream* s = failed() ? nullptr : Find(stream_id);
  if (s == nullptr) {
    h2_.Consume(stream_id, data.size());  // nobody will read these
    return;
  }
  // Flow control bounds this: the peer may only send what Read has
  // reopened (nghttp2 ends a connection that sends more).
  s->recv.append(reinterpret_cast<const char*>(data.data()), data.size());
  receive_total_ += data.size();
  if (!s->data_event_queued) {
    s->data_event_queued = true;
    Queue({EventKind::kData, stream_id});
  }
}

void HboneConn::OnStreamEnd(int32_t stream_id) {
  Stream* s = Find(stream_id);
  if (s == nullptr || s->peer_ended) return;
  s->peer_ended = true;
  Queue({EventKind::kPeerHalfClosed, stream_id});
}

void HboneConn::OnStreamReset(int32_t stream_id, uint32_t error_code) {
  if (Find(stream_id) == nullptr) return;
  Erase(stream_id);
  HboneStreamEnd why =
      error_code == NGHTTP2_REFUSED_STREAM ? HboneStreamEnd::kRefusedByGoaway : HboneStreamEnd::kReset;
  Queue({EventKind::kReset, stream_id, 0, why, error_code});
}

void HboneConn::OnStreamClosed(int32_t stream_id) {
  Stream* s = Find(stream_id);
  if (s == nullptr) return;
  s->h2_closed = true;
  MaybeRetire(stream_id);
}

void HboneConn::OnGoaway(int32_t, uint32_t) {
  draining_ = true;
  Queue({EventKind::kGoaway});
}

void HboneConn::OnStreamWritable(int32_t stream_id) {
  Stream* s = Find(stream_id);
  if (s != nullptr && s->state == StreamState::kEstablished) Queue({EventKind::kWritable, stream_id});
}

// --- streams ---

size_t HboneConn::Write(StreamId id, std::span<const uint8_t> data) {
  Stream* s = Find(id);
  if (s == nullptr || s->state != StreamState::kEstablished || s->write_closed || data.empty()) return 0;
  absl::StatusOr<size_t> n = h2_.SubmitData(id, absl::MakeConstSpan(data.data(), data.size()), false);
  Pump();
  return n.ok() ? *n : 0;
}

size_t HboneConn::Read(StreamId id, std::span<uint8_t> out) {
  Stream* s = Find(id);
  if (s == nullptr || out.empty()) return 0;
  size_t n = std::min(out.size(), s->readable());
  if (n == 0) return 0;
  std::memcpy(out.data(), s->recv.data() + s->recv_pos, n);
  s->recv_pos += n;
  receive_total_ -= n;
  if (s->recv_pos == s->recv.size()) {
    s->recv.clear();
    s->recv_pos = 0;
  } else if (s->recv_pos > s->recv.size() / 2) {
    s->recv.erase(0, s->recv_pos);
    s->recv_pos = 0;
  }
  h2_.Consume(id, n);  // reopens the peer's window
  MaybeRetire(id);
  Pump();
  return n;
}

size_t HboneConn::Readable(StreamId id) const {
  const Stream* s = Find(id);
  return s == nullptr ? 0 : s->readable();
}

bool HboneConn::PeerClosed(StreamId id) const {
  const Stream* s = Find(id);
  // A retired stream was closed cleanly by both sides and fully read.
  return s == nullptr ? true : s->peer_ended && s->readable() == 0;
}

bool HboneConn::CloseWrite(StreamId id) {
  Stream* s = Find(id);
  if (s == nullptr || s->state != StreamState::kEstablished || s->write_closed) return false;
  absl::StatusOr<size_t> n = h2_.SubmitData(id, absl::Span<const uint8_t>(), /*end_stream=*/true);
  if (!n.ok()) return false;
  s->write_closed = true;
  Pump();
  return true;
}

void HboneConn::Reset(StreamId id) {
  if (Find(id) == nullptr) return;
  (void)h2_.ResetStream(id, NGHTTP2_CANCEL);  // NotFound when HTTP/2 already closed it: fine
  Erase(id);
  Pump();
}

void HboneConn::Goaway() {
  if (failed() || draining_) {
    draining_ = true;
    return;
  }
  draining_ = true;
  (void)h2_.Goaway(NGHTTP2_NO_ERROR);
  Pump();
}

// --- client ---

HboneClientConn::HboneClientConn(HboneLimits limits, HboneEvents* events)
    : HboneConn(http::Http2Role::kClient, std::move(limits), events) {}

absl::StatusOr<std::unique_ptr<HboneClientConn>> HboneClientConn::Create(const std::shared_ptr<SSL_CTX>& ctx,
                                                                         tls::SpiffeId destination,
                                                                         HboneEvents* events,
                                                                         HboneLimits limits) {
  if (events == nullptr) return absl::InvalidArgumentError("hbone client: no event handler");
  auto tls = tls::TlsSession::Client(ctx, std::move(destination), limits.tls);
  if (!tls.ok()) return tls.status();
  std::unique_ptr<HboneClientConn> conn(new HboneClientConn(std::move(limits), events));
  absl::Status st = conn->Init(*std::move(tls));
  if (!st.ok()) return st;
  return conn;
}

absl::StatusOr<StreamId> HboneClientConn::OpenStream(const SocketAddress& target,
                                                     const HboneConnectOptions& options) {
  if (failed() || draining()) return absl::FailedPreconditionError("hbone connection is going away");
  if (streams_.size() >= limits_.max_streams) {
    return absl::ResourceExhaustedError(absl::StrCat("hbone connection holds ", streams_.size(), " streams"));
  }
  if (target.port == 0 || target.ip.is_unspecified()) return absl::InvalidArgumentError("hbone: bad target");
  absl::StatusOr<int32_t> id = h2_.SubmitRequest(BuildConnectRequest(target, options), /*end_stream=*/false);
  if (!id.ok()) return id.status();
  streams_[*id].state = StreamState::kConnecting;
  Pump();
  return *id;
}

absl::StatusOr<StreamId> HboneClientConn::OpenStream(std::string_view target,
                                                     const HboneConnectOptions& options) {
  auto addr = ParseConnectAuthority(target);
  if (!addr.ok()) return addr.status();
  return OpenStream(*addr, options);
}

void HboneClientConn::OnHead(StreamId id, const http::Http2Headers& head, bool) {
  Stream* s = Find(id);
  if (s == nullptr || s->state != StreamState::kConnecting) return;
  if (head.status >= 100 && head.status < 200) return;  // informational; the final answer follows
  if (head.status == kStatusOk) {
    s->state = StreamState::kEstablished;
    Queue({EventKind::kEstablished, id});
    return;
  }
  // Any other answer (ztunnel: 400, 401, 503) ends the attempt.
  (void)h2_.ResetStream(id, NGHTTP2_CANCEL);
  Erase(id);
  Queue({EventKind::kRefused, id, head.status});
}

// --- server ---

HboneServerConn::HboneServerConn(HboneLimits limits, HboneServerPolicy policy, HboneServerEvents* events)
    : HboneConn(http::Http2Role::kServer, std::move(limits), events),
      policy_(std::move(policy)),
      server_events_(events) {}

absl::StatusOr<std::unique_ptr<HboneServerConn>> HboneServerConn::Create(const std::shared_ptr<SSL_CTX>& ctx,
                                                                         std::string trust_domain,
                                                                         HboneServerPolicy policy,
                                                                         HboneServerEvents* events,
                                                                         HboneLimits limits) {
  if (events == nullptr) return absl::InvalidArgumentError("hbone server: no event handler");
  auto tls = tls::TlsSession::Server(ctx, std::move(trust_domain), limits.tls);
  if (!tls.ok()) return tls.status();
  std::unique_ptr<HboneServerConn> conn(new HboneServerConn(std::move(limits), std::move(policy), events));
  absl::Status st = conn->Init(*std::move(tls));
  if (!st.ok()) return st;
  return conn;
}

void HboneServerConn::Answer(StreamId id, int status) {
  http::Http2Headers h;
  h.status = status;
  // RFC 9113 §8.1: after a complete response, RST_STREAM(NO_ERROR) asks a
  // client still sending to stop without calling it an error. The session
  // sends it once the answer is out, and only if the client had not ended.
  (void)h2_.SubmitResponse(id, h, /*end_stream=*/true, /*reset_after_end=*/true);
}

void HboneServerConn::OnHead(StreamId id, const http::Http2Headers& head, bool /*end_stream*/) {
  if (Find(id) != nullptr) return;  // a second head on a tunnel: ignored
  if (streams_.size() >= limits_.max_streams) {
    ++counters_.over_limit;
    (void)h2_.ResetStream(id, NGHTTP2_REFUSED_STREAM);
    return;
  }
  absl::StatusOr<HboneConnectRequest> req = ParseConnectRequest(head);
  if (!req.ok() || !policy_.serves || !policy_.serves(req->target) || !peer_id()) {
    ++counters_.bad_request;
    Answer(id, kStatusBadRequest);
    return;
  }
  if (policy_.authorize && !policy_.authorize(*peer_id(), *req)) {
    ++counters_.denied;
    Answer(id, kStatusUnauthorized);
    return;
  }
  Stream& s = streams_[id];
  s.state = StreamState::kPending;
  s.connect = std::make_unique<HboneInboundConnect>(HboneInboundConnect{*std::move(req), *peer_id()});
  Queue({EventKind::kConnect, id});
}

void HboneServerConn::DeliverConnect(StreamId id, const HboneInboundConnect& connect) {
  server_events_->OnConnect(id, connect);
}

absl::Status HboneServerConn::Accept(StreamId id) {
  Stream* s = Find(id);
  if (s == nullptr || s->state != StreamState::kPending) {
    return absl::NotFoundError(absl::StrCat("no pending CONNECT on stream ", id));
  }
  http::Http2Headers h;
  h.status = kStatusOk;
  absl::Status st = h2_.SubmitResponse(id, h, /*end_stream=*/false);
  if (!st.ok()) return st;
  s->state = StreamState::kEstablished;
  s->connect.reset();
  Pump();
  return absl::OkStatus();
}

absl::Status HboneServerConn::Refuse(StreamId id, int status) {
  Stream* s = Find(id);
  if (s == nullptr || s->state != StreamState::kPending) {
    return absl::NotFoundError(absl::StrCat("no pending CONNECT on stream ", id));
  }
  if (status < 400 || status > 599) return absl::InvalidArgumentError("refuse with a 4xx or 5xx status");
  ++counters_.refused;
  Answer(id, status);
  Erase(id);
  Pump();
  return absl::OkStatus();
}

}  // namespace ringmesh::proxy::hbone
