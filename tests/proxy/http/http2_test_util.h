// Test helpers for the HTTP/2 codec: recording handlers, an echo server, a pump moving bytes between
// two sessions in memory, and raw frame builders for abuse tests.
#pragma once

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "userspace/proxy/http/http2_session.h"

namespace ringmesh::proxy::http::testing {

inline std::string Frame(uint8_t type, uint8_t flags, int32_t stream_id, std::string_view payload) {
  std::string f;
  uint32_t len = static_cast<uint32_t>(payload.size());
  f.push_back(static_cast<char>(len >> 16));
  f.push_back(static_cast<char>(len >> 8));
  f.push_back(static_cast<char>(len));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  for (int shift : {24, 16, 8, 0}) f.push_back(static_cast<char>(static_cast<uint32_t>(stream_id) >> shift));
  f.append(payload);
  return f;
}

inline std::string U32(uint32_t v) {
  std::string s;
  for (int shift : {24, 16, 8, 0}) s.push_back(static_cast<char>(v >> shift));
  return s;
}

inline std::string ClientPreface() { return std::string(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN); }

// HPACK-encodes a header list with nghttp2's own deflater (no indexing: every block stands alone).
inline std::string Hpack(const std::vector<std::pair<std::string, std::string>>& fields) {
  nghttp2_hd_deflater* raw = nullptr;
  EXPECT_EQ(nghttp2_hd_deflate_new(&raw, 4096), 0);
  std::unique_ptr<nghttp2_hd_deflater, decltype(&nghttp2_hd_deflate_del)> deflater(raw,
                                                                                   &nghttp2_hd_deflate_del);
  std::vector<nghttp2_nv> nva;
  for (const auto& [n, v] : fields) {
    nva.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                   reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                   NGHTTP2_NV_FLAG_NO_INDEX});
  }
  std::string out(nghttp2_hd_deflate_bound(raw, nva.data(), nva.size()), '\0');
  ssize_t n =
      nghttp2_hd_deflate_hd(raw, reinterpret_cast<uint8_t*>(out.data()), out.size(), nva.data(), nva.size());
  EXPECT_GE(n, 0);
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

inline std::string RequestBlock(const std::string& path = "/") {
  return Hpack({{":method", "GET"}, {":scheme", "http"}, {":authority", "example"}, {":path", path}});
}

struct WireFrame {
  uint8_t type, flags;
  int32_t stream_id;
  std::string payload;
};

// Splits bytes a session produced into frames (skipping a client preface).
inline std::vector<WireFrame> ParseFrames(std::string_view bytes) {
  if (bytes.substr(0, NGHTTP2_CLIENT_MAGIC_LEN) == ClientPreface())
    bytes.remove_prefix(NGHTTP2_CLIENT_MAGIC_LEN);
  std::vector<WireFrame> frames;
  while (bytes.size() >= 9) {
    auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])); };
    uint32_t len = (b(0) << 16) | (b(1) << 8) | b(2);
    if (bytes.size() < 9 + len) break;
    int32_t id = static_cast<int32_t>(((b(5) << 24) | (b(6) << 16) | (b(7) << 8) | b(8)) & 0x7fffffffu);
    frames.push_back(
        {static_cast<uint8_t>(b(3)), static_cast<uint8_t>(b(4)), id, std::string(bytes.substr(9, len))});
    bytes.remove_prefix(9 + len);
  }
  return frames;
}

// The error code of the first GOAWAY in `bytes`, or -1.
inline int64_t GoawayCode(std::string_view bytes) {
  for (const WireFrame& f : ParseFrames(bytes)) {
    if (f.type == NGHTTP2_GOAWAY && f.payload.size() >= 8) {
      auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(f.payload[i])); };
      return (b(4) << 24) | (b(5) << 16) | (b(6) << 8) | b(7);
    }
  }
  return -1;
}

// Records every event; holds received body bytes unconsumed until Drain() (a consumer that decides
// when the peer may send more).
class RecordingHandler : public Http2Handler {
 public:
  struct StreamLog {
    Http2Headers head;
    std::string body;        // consumed so far
    std::string unconsumed;  // received, not yet consumed
    Http2Headers trailers;
    bool has_trailers = false;
    bool ended = false;
    bool closed = false;
    int64_t reset_code = -1;
  };

  void OnHeaders(int32_t id, const Http2Headers& h, bool) override {
    streams[id].head = h;
    heads.push_back(id);
  }
  void OnData(int32_t id, absl::Span<const uint8_t> d) override {
    streams[id].unconsumed.append(reinterpret_cast<const char*>(d.data()), d.size());
    unconsumed_total += d.size();
    max_unconsumed_total = std::max(max_unconsumed_total, unconsumed_total);
    max_unconsumed_stream = std::max(max_unconsumed_stream, streams[id].unconsumed.size());
  }
  void OnTrailers(int32_t id, const Http2Headers& t) override {
    streams[id].trailers = t;
    streams[id].has_trailers = true;
  }
  void OnStreamEnd(int32_t id) override { streams[id].ended = true; }
  void OnStreamReset(int32_t id, uint32_t code) override { streams[id].reset_code = code; }
  void OnStreamClosed(int32_t id) override {
    streams[id].closed = true;
    closed.push_back(id);
  }
  void OnGoaway(int32_t last, uint32_t code) override {
    goaway_last = last;
    goaway_code = code;
  }

  // Consumes up to `budget` bytes (all streams), acknowledging them to the session.
  size_t Drain(Http2Session& session, size_t budget = SIZE_MAX) {
    size_t total = 0;
    for (auto& [id, s] : streams) {
      size_t n = std::min(budget - total, s.unconsumed.size());
      if (n == 0) continue;
      s.body.append(s.unconsumed, 0, n);
      s.unconsumed.erase(0, n);
      unconsumed_total -= n;
      session.Consume(id, n);
      total += n;
    }
    return total;
  }

  std::map<int32_t, StreamLog> streams;
  std::vector<int32_t> heads, closed;
  size_t unconsumed_total = 0, max_unconsumed_total = 0, max_unconsumed_stream = 0;
  int64_t goaway_last = -1, goaway_code = -1;
};

// Moves up to `max_chunk` bytes each way per round; true if anything moved.
inline bool PumpOnce(Http2Session& a, Http2Session& b, size_t max_chunk = 64 * 1024) {
  bool moved = false;
  for (auto [from, to] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
    auto out = from->PendingOutput();
    size_t n = std::min(out.size(), max_chunk);
    if (n == 0) continue;
    std::string chunk(reinterpret_cast<const char*>(out.data()), n);
    from->ConsumeOutput(n);
    (void)to->Feed(chunk);
    moved = true;
  }
  return moved;
}

}  // namespace ringmesh::proxy::http::testing
