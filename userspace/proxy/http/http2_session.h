// HTTP/2 codec: one connection's HTTP/2 state machine (nghttp2's session API on the memory interface),
// server or client role. Bytes in (`Feed`), bytes out (`PendingOutput`/`ConsumeOutput`), events to an
// `Http2Handler`; no socket, no I/O. Every buffer is bounded (Http2Options) and every abuse pattern we
// know of (rapid reset, CONTINUATION/SETTINGS/PING/empty-DATA floods, HPACK bombs, stream floods) ends
// in a GOAWAY and a counter in Http2Stats.
//
// Flow control is the consumer's: received DATA is not acknowledged (WINDOW_UPDATE) until the handler
// calls `Consume(stream, n)`, so a slow consumer stops the peer instead of growing a buffer here.
//
//   Http2Session server(Http2Role::kServer, options, &handler);
//   server.Start();
//   absl::Status st = server.Feed(bytes_from_peer);   // events go to handler
//   if (server.close_reason() == Http2CloseReason::kNotHttp2) { /* answer 400 over HTTP/1, close */ }
//   write(fd, server.PendingOutput()); server.ConsumeOutput(n_written);
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "userspace/proxy/http/http2_frame_guard.h"

namespace ringmesh::proxy::http {

enum class Http2Role { kClient, kServer };

// Request or response head. Pseudo-headers are fields; empty ones are not sent (CONNECT has no
// :scheme/:path). `fields` keeps the peer's order; names are lowercase on the wire.
struct Http2Headers {
  std::string method, scheme, authority, path;  // requests
  int status = 0;                               // responses (0 = not a response)
  std::vector<std::pair<std::string, std::string>> fields;
};

// Why the session stopped; kNone while it runs.
enum class Http2CloseReason {
  kNone,
  kNotHttp2,        // server: the client preface was not there (plaintext HTTP/1.x?)
  kProtocolError,   // peer broke the protocol; GOAWAY sent
  kAbuse,           // an abuse defence fired; GOAWAY ENHANCE_YOUR_CALM sent
  kResourceLimit,   // session memory cap reached
  kGoawayComplete,  // GOAWAY sent or received and every stream finished
};
std::string_view ToString(Http2CloseReason reason);

// Events. Called from inside Feed()/PendingOutput()/Submit*(); the handler may call back into the
// session (submit a response, consume, reset) but must not destroy it.
class Http2Handler {
 public:
  virtual ~Http2Handler() = default;
  // A request (server) or response head incl. 1xx (client).
  virtual void OnHeaders(int32_t stream_id, const Http2Headers& headers, bool end_stream) = 0;
  // Body bytes; the handler owns acknowledging them with Http2Session::Consume.
  virtual void OnData(int32_t stream_id, absl::Span<const uint8_t> data) = 0;
  virtual void OnTrailers(int32_t /*stream_id*/, const Http2Headers& /*trailers*/) {}
  // The peer ended its side (END_STREAM), after the last OnData/OnTrailers.
  virtual void OnStreamEnd(int32_t /*stream_id*/) {}
  // Reset by the peer, or by the session because of a stream error; not for ResetStream() calls.
  virtual void OnStreamReset(int32_t /*stream_id*/, uint32_t /*error_code*/) {}
  // The stream is gone (every path); its id is not valid any more.
  virtual void OnStreamClosed(int32_t /*stream_id*/) {}
  virtual void OnGoaway(int32_t /*last_stream_id*/, uint32_t /*error_code*/) {}
  // Send-queue space is free again after SubmitData accepted less than offered.
  virtual void OnStreamWritable(int32_t /*stream_id*/) {}
};

struct Http2Options {
  uint32_t max_concurrent_streams = 100;                           // advertised; peer streams above: refused
  uint32_t initial_stream_window = 256 * 1024;                     // clamped to [64 KiB, 4 MiB]
  uint32_t connection_window = 1024 * 1024;                        // raised to >= 4x the stream window
  uint32_t max_header_list_size = 64 * 1024;                       // advertised; larger: 431 / stream reset
  size_t max_stream_send_buffer = 64 * 1024;                       // SubmitData queue per stream
  size_t max_output_buffer = 256 * 1024;                           // produced, not yet taken by the caller
  size_t max_session_memory = 16 * 1024 * 1024;                    // nghttp2's own allocations
  size_t max_outbound_ack = 1000;                                  // nghttp2: queued SETTINGS/PING ACKs
  size_t max_settings_entries = 32;                                // nghttp2: entries per SETTINGS frame
  size_t max_continuations = 8;                                    // nghttp2: CONTINUATIONs per header block
  uint64_t reset_burst = 1000, reset_rate_per_second = 33;         // nghttp2's own rapid-reset bucket
  Http2GuardLimits guard;                                          // our own flood counters
  std::function<absl::Time()> clock = [] { return absl::Now(); };  // injectable for tests
};

struct Http2Stats {
  uint64_t streams_opened_by_peer = 0;
  uint64_t resets_received = 0;
  uint64_t resets_sent = 0;
  uint64_t streams_refused = 0;        // REFUSED_STREAM sent for peer streams over the limit
  uint64_t header_list_too_large = 0;  // 431 / reset for an oversized header list
  uint64_t goaway_sent = 0;
  uint64_t goaway_received = 0;
  // Abuse defences (each one ended the connection with GOAWAY).
  uint64_t rapid_reset = 0;
  uint64_t continuation_flood = 0;
  uint64_t hpack_bomb = 0;
  uint64_t settings_flood = 0;
  uint64_t ping_flood = 0;
  uint64_t empty_data_flood = 0;
  uint64_t too_many_streams = 0;
  uint64_t outbound_flood = 0;  // peer does not read our ACKs (nghttp2 max_outbound_ack)
  uint64_t protocol_errors = 0;
  uint64_t memory_limit = 0;
};

class Http2Session {
 public:
  Http2Session(Http2Role role, Http2Options options, Http2Handler* handler);
  ~Http2Session();
  Http2Session(const Http2Session&) = delete;
  Http2Session& operator=(const Http2Session&) = delete;

  // Queues our SETTINGS (and the client preface) and the connection WINDOW_UPDATE.
  absl::Status Start();

  // Peer bytes. Errors: InvalidArgument when the peer is not speaking HTTP/2 (close_reason()
  // kNotHttp2: answer 400 over HTTP/1 or close); FailedPrecondition once a protocol error, abuse or
  // the memory cap ended the connection (send PendingOutput(), it holds the GOAWAY, then close).
  // After a clean GOAWAY end, further bytes are dropped without error.
  absl::Status Feed(absl::Span<const uint8_t> data);
  absl::Status Feed(std::string_view data) {
    return Feed(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
  }

  // Bytes to send; produced lazily, at most about max_output_buffer of them.
  absl::Span<const uint8_t> PendingOutput();
  void ConsumeOutput(size_t n);
  std::string TakeOutput();  // PendingOutput() copied and consumed

  // Client only. Refused (ResourceExhausted) at the peer's MAX_CONCURRENT_STREAMS, FailedPrecondition
  // after GOAWAY.
  absl::StatusOr<int32_t> SubmitRequest(const Http2Headers& headers, bool end_stream);
  // Server only. With reset_after_end the answer is final for the whole stream: once its last frame
  // (END_STREAM on the HEADERS, the last DATA or the trailers) has been serialized, a peer still
  // sending its request is sent RST_STREAM(NO_ERROR) (RFC 9113 8.1: a complete response before the
  // request is complete, e.g. a refusal). Not sooner: nghttp2 drops anything queued on a stream
  // after its RST_STREAM, the answer included. The handler sees only OnStreamClosed.
  absl::Status SubmitResponse(int32_t stream_id, const Http2Headers& headers, bool end_stream,
                              bool reset_after_end = false);
  // Appends to the stream's send queue; returns how many bytes fit (all or part of `data`). With
  // end_stream the stream ends once everything accepted so far is sent (only if all of `data` fit).
  absl::StatusOr<size_t> SubmitData(int32_t stream_id, absl::Span<const uint8_t> data, bool end_stream);
  absl::StatusOr<size_t> SubmitData(int32_t stream_id, std::string_view data, bool end_stream) {
    return SubmitData(stream_id,
                      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size()),
                      end_stream);
  }
  // Ends the stream with trailers after the queued data.
  absl::Status SubmitTrailers(int32_t stream_id, const Http2Headers& trailers);
  absl::Status ResetStream(int32_t stream_id, uint32_t error_code);
  // Graceful: streams up to last_stream_id (default: the last one the peer opened) still complete.
  absl::Status Goaway(uint32_t error_code, int32_t last_stream_id = -1);
  // The handler is done with `n` bytes received on the stream: lets the peer send more. Call it for
  // every byte OnData gave, also after the stream closed, or the connection window shrinks for good.
  void Consume(int32_t stream_id, size_t n);

  // Nothing more will be read or written: close the connection once PendingOutput() is empty.
  bool Finished() const;
  Http2CloseReason close_reason() const { return close_reason_; }
  const Http2Stats& stats() const { return stats_; }
  size_t open_streams() const { return streams_.size(); }
  // Bytes held for this connection: nghttp2's allocations plus our queues.
  size_t MemoryUsage() const;
  size_t nghttp2_memory() const { return nghttp2_bytes_; }
  size_t send_buffered(int32_t stream_id) const;

 private:
  struct Stream;
  struct Callbacks;

  Stream* FindStream(int32_t id);
  void FillOutput();
  void Fail(Http2CloseReason reason, uint32_t goaway_code, uint64_t* counter);
  absl::Status SubmitHeaders(int32_t stream_id, const Http2Headers& headers, bool end_stream,
                             int32_t* new_stream_id);
  void OnGuardViolation(Http2Abuse abuse);
  void HandleNghttp2Error(int rv);
  void ClassifyLibraryGoaway(const nghttp2_goaway& goaway);
  void RejectOversizedHead(Stream* s);
  void SubmitResetsAfterEnd();
  void CheckFinished();
  absl::Status ClosedStatus() const;
  // Reads a stream's body from its send queue (defined next to the other nghttp2 callbacks).
  static nghttp2_data_provider DataProvider();

  static void* Malloc(size_t size, void* self);
  static void Free(void* ptr, void* self);
  static void* Calloc(size_t n, size_t size, void* self);
  static void* Realloc(void* ptr, size_t size, void* self);

  Http2Role role_;
  Http2Options options_;
  Http2Handler* handler_;
  nghttp2_session* session_ = nullptr;
  Http2FrameGuard guard_;
  Http2Stats stats_;
  Http2CloseReason close_reason_ = Http2CloseReason::kNone;
  bool goaway_received_ = false;
  bool goaway_submitted_ = false;
  bool stopped_reading_ = false;  // GOAWAY on an error, or not HTTP/2: peer bytes are dropped
  bool filling_ = false;
  bool receiving_ = false;  // inside nghttp2_session_mem_recv
  absl::Status init_status_;
  std::vector<int32_t> writable_;  // streams to tell OnStreamWritable after serializing
  // Streams whose final frame (reset_after_end) was just serialized: RST_STREAM(NO_ERROR) is
  // submitted right after nghttp2_session_mem_send returns, outside nghttp2's frame-sent handling.
  std::vector<int32_t> reset_after_sent_;
  std::string output_;
  size_t output_pos_ = 0;
  size_t nghttp2_bytes_ = 0;
  size_t send_buffered_total_ = 0;
  absl::flat_hash_map<int32_t, std::unique_ptr<Stream>> streams_;
};

}  // namespace ringmesh::proxy::http
