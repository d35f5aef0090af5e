// Abuse detection for inbound HTTP/2 bytes, before nghttp2 sees them. It only follows the framing
// (client preface, then 9-byte frame headers and skipped payloads), so it stays in step with nghttp2
// without decoding anything, and can stop a flood at the frame that crosses a limit instead of after
// nghttp2 has spent memory or CPU on it. nghttp2's own limits (max_continuations, max_settings,
// max_outbound_ack, its reset token bucket) stay on behind it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/time/time.h"
#include "absl/types/span.h"

namespace ringmesh::proxy::http {

enum class Http2Abuse {
  kNone,
  kNotHttp2,           // server: bytes where the client preface should be are something else
  kContinuationFlood,  // one header block (HEADERS + CONTINUATIONs) larger than the limit
  kPingFlood,
  kSettingsFlood,
  kEmptyDataFlood,  // DATA frames without payload or END_STREAM, back to back
  kRapidReset,      // CVE-2023-44487: streams opened and reset by the peer
};

struct Http2GuardLimits {
  // Encoded bytes across HEADERS + CONTINUATION. HPACK makes a legitimate block smaller than the
  // decoded list it carries, so the list limit plus some slack; Http2Session fills in 0 that way.
  size_t max_header_block_bytes = 0;
  // Token buckets: `burst` frames at once, refilled at `per_second`.
  uint32_t ping_burst = 100, ping_per_second = 10;
  uint32_t settings_burst = 50, settings_per_second = 5;
  uint32_t max_consecutive_empty_data = 10;
  // Rapid reset: within every window of this many peer-opened streams, at most this many RST_STREAMs
  // from the peer.
  uint32_t reset_window_streams = 200;
  uint32_t max_resets_per_window = 100;
};

// Minimal token bucket (tokens refill continuously up to `burst`).
class TokenBucket {
 public:
  TokenBucket(uint32_t burst, uint32_t per_second) : burst_(burst), per_second_(per_second), tokens_(burst) {}
  bool Take(absl::Time now);

 private:
  double burst_, per_second_, tokens_;
  absl::Time last_ = absl::InfinitePast();
};

class Http2FrameGuard {
 public:
  Http2FrameGuard(bool expect_preface, Http2GuardLimits limits, std::function<absl::Time()> clock);

  // Scans the next chunk of peer bytes. Returns how many of them may go to nghttp2: all of them, or,
  // when `*abuse` is set, those before the offending frame (or the preface mismatch).
  size_t Scan(absl::Span<const uint8_t> data, Http2Abuse* abuse);

  // The peer opened a stream (for the rapid-reset window).
  uint64_t peer_streams() const { return peer_streams_; }

 private:
  Http2Abuse OnFrameHeader(uint8_t type, uint8_t flags, int32_t stream_id, uint32_t length);

  Http2GuardLimits limits_;
  std::function<absl::Time()> clock_;
  size_t preface_seen_;  // bytes of the client preface matched so far
  uint8_t header_[9];
  size_t header_have_ = 0;
  uint64_t payload_left_ = 0;
  // Header block in progress.
  bool in_header_block_ = false;
  uint64_t header_block_bytes_ = 0;
  TokenBucket pings_, settings_;
  uint32_t empty_data_run_ = 0;
  int32_t max_peer_stream_ = 0;
  uint64_t peer_streams_ = 0;
  uint32_t window_streams_ = 0, window_resets_ = 0;
};

}  // namespace ringmesh::proxy::http
