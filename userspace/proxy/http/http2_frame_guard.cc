#include "userspace/proxy/http/http2_frame_guard.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>

namespace ringmesh::proxy::http {
namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// RFC 9113 frame types and flags the guard looks at.
constexpr uint8_t kData = 0x0, kHeaders = 0x1, kRstStream = 0x3, kSettings = 0x4, kPing = 0x6,
                  kContinuation = 0x9;
constexpr uint8_t kFlagAck = 0x1, kFlagEndStream = 0x1, kFlagEndHeaders = 0x4;

}  // namespace

bool TokenBucket::Take(absl::Time now) {
  if (last_ != absl::InfinitePast() && now > last_) {
    tokens_ = std::min(burst_, tokens_ + absl::ToDoubleSeconds(now - last_) * per_second_);
  }
  last_ = now;
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

Http2FrameGuard::Http2FrameGuard(bool expect_preface, Http2GuardLimits limits,
                                 std::function<absl::Time()> clock)
    : limits_(limits),
      clock_(std::move(clock)),
      preface_seen_(expect_preface ? 0 : kPreface.size()),
      pings_(limits.ping_burst, limits.ping_per_second),
      settings_(limits.settings_burst, limits.settings_per_second) {
  if (limits_.max_header_block_bytes == 0) limits_.max_header_block_bytes = 80 * 1024;
}

size_t Http2FrameGuard::Scan(absl::Span<const uint8_t> data, Http2Abuse* abuse) {
  *abuse = Http2Abuse::kNone;
  size_t pos = 0;
  // Compared byte by byte so "GET / HTTP/1.1" fails at its first byte, not after 24 of them.
  while (preface_seen_ < kPreface.size() && pos < data.size()) {
    if (data[pos] != static_cast<uint8_t>(kPreface[preface_seen_])) {
      *abuse = Http2Abuse::kNotHttp2;
      return pos;
    }
    ++preface_seen_;
    ++pos;
  }
  while (pos < data.size()) {
    if (payload_left_ > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(payload_left_, data.size() - pos));
      payload_left_ -= n;
      pos += n;
      continue;
    }
    // A header begun in an earlier chunk was passed on already: stop at this chunk's start.
    size_t frame_start = header_have_ > 0 ? 0 : pos;
    size_t n = std::min(sizeof(header_) - header_have_, data.size() - pos);
    std::memcpy(header_ + header_have_, data.data() + pos, n);
    header_have_ += n;
    pos += n;
    if (header_have_ < sizeof(header_)) break;
    header_have_ = 0;
    uint32_t length = (uint32_t{header_[0]} << 16) | (uint32_t{header_[1]} << 8) | header_[2];
    int32_t stream_id = static_cast<int32_t>(((uint32_t{header_[5]} << 24) | (uint32_t{header_[6]} << 16) |
                                              (uint32_t{header_[7]} << 8) | header_[8]) &
                                             0x7fffffffu);
    Http2Abuse found = OnFrameHeader(header_[3], header_[4], stream_id, length);
    if (found != Http2Abuse::kNone) {
      *abuse = found;
      return frame_start;
    }
    payload_left_ = length;
  }
  return data.size();
}

Http2Abuse Http2FrameGuard::OnFrameHeader(uint8_t type, uint8_t flags, int32_t stream_id, uint32_t length) {
  // nghttp2 rejects anything but CONTINUATION inside a header block; here only the size matters.
  if (type == kHeaders || (type == kContinuation && in_header_block_)) {
    if (type == kHeaders) header_block_bytes_ = 0;
    header_block_bytes_ += length;
    in_header_block_ = !(flags & kFlagEndHeaders);
    if (header_block_bytes_ > limits_.max_header_block_bytes) return Http2Abuse::kContinuationFlood;
  }
  switch (type) {
    case kHeaders:
      empty_data_run_ = 0;
      if (stream_id > max_peer_stream_) {  // a new stream, not trailers
        max_peer_stream_ = stream_id;
        ++peer_streams_;
        if (++window_streams_ > limits_.reset_window_streams) {
          window_streams_ = 1;
          window_resets_ = 0;
        }
      }
      break;
    case kData:
      if (length == 0 && !(flags & kFlagEndStream)) {
        if (++empty_data_run_ > limits_.max_consecutive_empty_data) return Http2Abuse::kEmptyDataFlood;
      } else {
        empty_data_run_ = 0;
      }
      break;
    case kRstStream:
      if (++window_resets_ > limits_.max_resets_per_window) return Http2Abuse::kRapidReset;
      break;
    case kPing:
      if (!(flags & kFlagAck) && !pings_.Take(clock_())) return Http2Abuse::kPingFlood;
      break;
    case kSettings:
      if (!(flags & kFlagAck) && !settings_.Take(clock_())) return Http2Abuse::kSettingsFlood;
      break;
    default:
      break;
  }
  return Http2Abuse::kNone;
}

}  // namespace ringmesh::proxy::http
