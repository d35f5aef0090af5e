// One HBONE connection (HTTP/2 CONNECT over mTLS, as ztunnel speaks it):
// a TlsSession with an Http2Session on top, client or server role, bytes in
// and bytes out. The event loop does socket I/O only:
//
//   auto conn = HboneClientConn::Create(cred->client_ctx, dst_id, &events);
//   auto id = (*conn)->OpenStream(SocketAddress{dst_ip, 8080}, {.source_ip = src_ip});
//   on readable:  n = read(fd); taken = conn->FeedWire(bytes);  (keep the rest, retry later)
//                 at EOF: conn->FeedEof();
//   on writable:  n = conn->TakeWire(buf); write(fd, buf, n);   (while conn->PendingWire())
//   events (HboneEvents): OnEstablished(id) → conn->Write(id, app_bytes) ...; OnData(id) → conn->Read(id,
//   buf) conn->Finished() → close the socket.
//
// Backpressure, end to end. Ciphertext out is capped by TlsSessionLimits::max_pending_wire; when the
// caller does not TakeWire, HTTP/2 output stops (Http2Options::max_output_buffer), streams' send
// queues are no longer drained, and Write accepts 0 (Http2Options::max_stream_send_buffer per stream)
// until OnWritable. Inbound, a stream's bytes wait in its receive buffer until Read, and the peer's
// window is only reopened by Read (HTTP/2 flow control), so a consumer that does not read closes its
// stream window (Http2Options::initial_stream_window) and, together with others, the connection
// window (Http2Options::connection_window). Ciphertext in is capped by max_pending_input (FeedWire
// takes less). Bound on buffered bytes, see HboneConn::Buffered():
//   tls pending wire   <= max_pending_wire + 16 KiB (one record's slack)
//   receive buffers    <= connection_window (sum over streams)
//   h2 send queues     <= max_stream_send_buffer per open stream
//   nghttp2 memory     <= max_session_memory
//
// Events are queued while bytes are processed and delivered at the end of the public call that
// caused them (never from inside the TLS or HTTP/2 code), so a handler may call any method of the
// connection, except destroy it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "userspace/common/ip.h"
#include "userspace/proxy/hbone/hbone_request.h"
#include "userspace/proxy/http/http2_session.h"
#include "userspace/proxy/tls/tls_session.h"

namespace ringmesh::proxy::hbone {

using StreamId = int32_t;

// Why a connection ended badly (a counter each).
enum class HboneConnError : uint8_t {
  kNone,
  kTls,            // handshake or record failure; tls_error() says which (SAN mismatch, trust domain, ...)
  kNotHttp2,       // the TLS peer does not speak HTTP/2 (no client preface)
  kHttp2Protocol,  // protocol error, abuse defence or memory cap; http2_close_reason() says which
  kPeerClosed,     // the transport ended before the HTTP/2 session did
};
const char* HboneConnErrorName(HboneConnError e);

// How a stream ended without both sides finishing.
enum class HboneStreamEnd : uint8_t {
  kReset,             // RST_STREAM from the peer (code in the event)
  kRefusedByGoaway,   // the peer went away before processing it (REFUSED_STREAM): safe to retry elsewhere
  kConnectionFailed,  // the whole connection failed
};

// Answers a server sends (ztunnel's): anything else is a client-side typed failure too.
inline constexpr int kStatusOk = 200;
inline constexpr int kStatusBadRequest = 400;    // not CONNECT, malformed authority, not served here
inline constexpr int kStatusUnauthorized = 401;  // denied by policy
inline constexpr int kStatusUpstreamFailed = 503;

struct HboneLimits {
  tls::TlsSessionLimits tls;
  http::Http2Options http2;  // windows, send queues, output buffer, abuse limits
  // Streams this side keeps per connection, including closed ones whose bytes were not yet read;
  // the server refuses (REFUSED_STREAM) CONNECTs above it, the client's OpenStream fails.
  size_t max_streams = 100;
};

class HboneEvents {
 public:
  virtual ~HboneEvents() = default;
  // Client: the server answered 200; Write may be called.
  virtual void OnEstablished(StreamId /*id*/) {}
  // Client: the server answered `status` (not 200). The stream is gone.
  virtual void OnRefused(StreamId /*id*/, int /*status*/) {}
  // Read(id) has bytes (edge: once per batch of new bytes).
  virtual void OnData(StreamId /*id*/) {}
  // The peer half-closed (END_STREAM): after the buffered bytes, Read returns 0 and PeerClosed(id).
  virtual void OnPeerHalfClosed(StreamId /*id*/) {}
  // The stream is gone without a clean finish; its unread bytes are dropped.
  virtual void OnReset(StreamId /*id*/, HboneStreamEnd /*why*/, uint32_t /*h2_error_code*/) {}
  // Write accepted less than offered earlier; there is room again.
  virtual void OnWritable(StreamId /*id*/) {}
  // Both sides finished and every byte was read: the id is no longer valid.
  virtual void OnClosed(StreamId /*id*/) {}
  // The peer sent GOAWAY: no new streams on this connection (the pool stops using it).
  virtual void OnGoaway() {}
  // The connection failed; every stream got OnReset(kConnectionFailed) first.
  virtual void OnConnectionError(HboneConnError /*error*/) {}
};

// A CONNECT that passed the server's checks, waiting for Accept or Refuse.
struct HboneInboundConnect {
  HboneConnectRequest request;
  tls::SpiffeId peer;  // the client's verified identity
};

class HboneServerEvents : public HboneEvents {
 public:
  // Connect the app, then answer with HboneServerConn::Accept(id) or Refuse(id, 503) (now or later).
  virtual void OnConnect(StreamId id, const HboneInboundConnect& connect) = 0;
};

// What the server checks before OnConnect.
struct HboneServerPolicy {
  // Whether this server serves the target (an address of the pod behind this listener); a target it
  // does not serve gets 400. Unset: every target is refused (fail closed).
  std::function<bool(const SocketAddress& target)> serves;
  // Authorization (AuthorizationPolicy, L4): false gets 401. Unset: allowed (Istio's default with no
  // policy).
  std::function<bool(const tls::SpiffeId& peer, const HboneConnectRequest& request)> authorize;
};

// Bytes held by one connection (for the bounds above and per-pod accounting).
struct HboneBuffered {
  size_t tls_pending_wire = 0;
  size_t receive = 0;    // stream bytes not yet Read
  size_t h2_send = 0;    // stream bytes accepted by Write, not yet framed
  size_t h2_memory = 0;  // Http2Session::MemoryUsage (nghttp2 + its queues)
  size_t total() const { return tls_pending_wire + receive + h2_memory; }
};

// The part both roles share. Not thread-safe: one event-loop thread owns it.
class HboneConn : private http::Http2Handler {
 public:
  virtual ~HboneConn();
  HboneConn(const HboneConn&) = delete;
  HboneConn& operator=(const HboneConn&) = delete;

  // Ciphertext from the socket; returns how much was taken (keep the rest and offer it again after
  // TakeWire/Read made progress).
  size_t FeedWire(std::span<const uint8_t> ciphertext);
  // The socket reached EOF.
  void FeedEof();
  size_t PendingWire() const;
  // Ciphertext to send.
  size_t TakeWire(std::span<uint8_t> out);

  // Stream bytes to the peer; returns how many were accepted (0 when the stream is not established,
  // was write-closed, or its send queue is full: wait for OnWritable).
  size_t Write(StreamId id, std::span<const uint8_t> data);
  // Stream bytes from the peer; 0 when none are buffered.
  size_t Read(StreamId id, std::span<uint8_t> out);
  size_t Readable(StreamId id) const;
  // The peer half-closed and every byte was read (TCP: read() == 0).
  bool PeerClosed(StreamId id) const;
  // END_STREAM after the bytes already accepted: shutdown(SHUT_WR). False for an unknown stream,
  // one not established or already closed for writing.
  bool CloseWrite(StreamId id);
  // RST_STREAM(CANCEL); the id is invalid afterwards (no event).
  void Reset(StreamId id);
  // Graceful close: GOAWAY, streams in flight finish, no new ones; then TLS close_notify.
  void Goaway();

  bool handshake_done() const { return tls_->handshake_done(); }
  const std::optional<tls::SpiffeId>& peer_id() const { return tls_->peer_id(); }
  bool failed() const { return error_ != HboneConnError::kNone; }
  HboneConnError error() const { return error_; }
  tls::TlsError tls_error() const { return tls_->error(); }
  http::Http2CloseReason http2_close_reason() const { return h2_.close_reason(); }
  // GOAWAY sent or received: no new streams.
  bool draining() const { return draining_; }
  // Nothing more will be sent or received: close the socket. Bytes already buffered for streams can
  // still be Read.
  bool Finished() const;
  size_t active_streams() const { return streams_.size(); }
  bool HasStream(StreamId id) const { return streams_.contains(id); }
  HboneBuffered Buffered() const;
  const http::Http2Stats& http2_stats() const { return h2_.stats(); }
  const HboneLimits& limits() const { return limits_; }

 protected:
  enum class StreamState : uint8_t { kConnecting, kPending, kEstablished };
  struct Stream {
    StreamState state = StreamState::kConnecting;
    std::string recv;
    size_t recv_pos = 0;
    bool peer_ended = false;
    bool write_closed = false;
    bool h2_closed = false;
    bool data_event_queued = false;
    bool retiring = false;  // OnClosed queued; erased when it is delivered (after earlier events)
    std::unique_ptr<HboneInboundConnect> connect;  // server, until answered
    size_t readable() const { return recv.size() - recv_pos; }
  };
  enum class EventKind : uint8_t {
    kEstablished,
    kRefused,
    kData,
    kPeerHalfClosed,
    kReset,
    kWritable,
    kClosed,
    kGoaway,
    kConnectionError,
    kConnect,
  };
  struct Event {
    EventKind kind;
    StreamId id = 0;
    int status = 0;
    HboneStreamEnd end = HboneStreamEnd::kReset;
    uint32_t code = 0;
  };

  HboneConn(http::Http2Role role, HboneLimits limits, HboneEvents* events);
  absl::Status Init(std::unique_ptr<tls::TlsSession> tls);

  Stream* Find(StreamId id);
  const Stream* Find(StreamId id) const;
  // Drops the stream, giving its unread bytes' window back.
  void Erase(StreamId id);
  void Queue(Event e) { events_.push_back(e); }
  // Moves bytes between the layers until nothing moves, then delivers events.
  void Pump();
  void Dispatch();
  void Fail(HboneConnError error);

  // Role-specific heads (Http2Handler::OnHeaders lands here).
  virtual void OnHead(StreamId id, const http::Http2Headers& head, bool end_stream) = 0;
  // Server: OnConnect; other events are shared.
  virtual void DeliverConnect(StreamId /*id*/, const HboneInboundConnect& /*connect*/) {}

  HboneLimits limits_;
  HboneEvents* events_sink_;
  http::Http2Session h2_;
  absl::flat_hash_map<StreamId, Stream> streams_;

 private:
  // http::Http2Handler: HTTP/2 events become stream state and queued events.
  void OnHeaders(int32_t stream_id, const http::Http2Headers& headers, bool end_stream) override;
  void OnData(int32_t stream_id, absl::Span<const uint8_t> data) override;
  void OnStreamEnd(int32_t stream_id) override;
  void OnStreamReset(int32_t stream_id, uint32_t error_code) override;
  void OnStreamClosed(int32_t stream_id) override;
  void OnGoaway(int32_t last_stream_id, uint32_t error_code) override;
  void OnStreamWritable(int32_t stream_id) override;

  void MoveBytes(bool* progress);
  void CheckState();
  void MaybeRetire(StreamId id);

  std::unique_ptr<tls::TlsSession> tls_;
  std::vector<uint8_t> buf_;
  std::deque<Event> events_;
  HboneConnError error_ = HboneConnError::kNone;
  bool draining_ = false;
  bool h2_dead_ = false;       // no more bytes into the HTTP/2 session
  bool tls_shutdown_ = false;  // close_notify queued
  bool pumping_ = false;
  bool dispatching_ = false;
  size_t receive_total_ = 0;
};

class HboneClientConn : public HboneConn {
 public:
  // `ctx` presents the source identity (CertStore's client_ctx); the server must be `destination`.
  static absl::StatusOr<std::unique_ptr<HboneClientConn>> Create(const std::shared_ptr<SSL_CTX>& ctx,
                                                                 tls::SpiffeId destination,
                                                                 HboneEvents* events,
                                                                 HboneLimits limits = {});

  // Sends CONNECT for `target` (queued until the handshake is done). FailedPrecondition when the
  // connection failed or is draining, ResourceExhausted at max_streams or the peer's limit.
  absl::StatusOr<StreamId> OpenStream(const SocketAddress& target, const HboneConnectOptions& options = {});
  // `target` as "ip:port" / "[v6]:port".
  absl::StatusOr<StreamId> OpenStream(std::string_view target, const HboneConnectOptions& options = {});

 private:
  HboneClientConn(HboneLimits limits, HboneEvents* events);
  void OnHead(StreamId id, const http::Http2Headers& head, bool end_stream) override;
};

class HboneServerConn : public HboneConn {
 public:
  // `ctx` presents the server's identity (CertStore's server_ctx); clients must be of `trust_domain`.
  static absl::StatusOr<std::unique_ptr<HboneServerConn>> Create(const std::shared_ptr<SSL_CTX>& ctx,
                                                                 std::string trust_domain,
                                                                 HboneServerPolicy policy,
                                                                 HboneServerEvents* events,
                                                                 HboneLimits limits = {});

  // Answers a pending CONNECT with 200: the tunnel is open both ways.
  absl::Status Accept(StreamId id);
  // Answers a pending CONNECT with `status` (4xx/5xx, e.g. 503 when the app could not be reached)
  // and ends the stream.
  absl::Status Refuse(StreamId id, int status);

  struct Counters {
    uint64_t bad_request = 0;  // 400
    uint64_t denied = 0;       // 401
    uint64_t refused = 0;      // Refuse() calls
    uint64_t over_limit = 0;   // REFUSED_STREAM above max_streams
  };
  const Counters& counters() const { return counters_; }

 private:
  HboneServerConn(HboneLimits limits, HboneServerPolicy policy, HboneServerEvents* events);
  void OnHead(StreamId id, const http::Http2Headers& head, bool end_stream) override;
  void DeliverConnect(StreamId id, const HboneInboundConnect& connect) override;
  void Answer(StreamId id, int status);

  HboneServerPolicy policy_;
  HboneServerEvents* server_events_;
  Counters counters_;
};

}  // namespace ringmesh::proxy::hbone
