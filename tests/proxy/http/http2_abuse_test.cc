// Abuse defences of Http2Session, driven by raw frames built here: each flood must end in a GOAWAY
// with the right code, move its counter, and leave the session's memory bounded.
#include <gtest/gtest.h>

#include "tests/proxy/http/http2_test_util.h"
#include "userspace/proxy/http/http2_session.h"

namespace ringmesh::proxy::http {
namespace {

using testing::ClientPreface;
using testing::Frame;
using testing::GoawayCode;
using testing::RecordingHandler;
using testing::RequestBlock;

constexpr uint8_t kEndStream = NGHTTP2_FLAG_END_STREAM, kEndHeaders = NGHTTP2_FLAG_END_HEADERS;

// A server whose clock never moves, so token buckets only hold their burst.
class AbuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.clock = [] { return absl::UnixEpoch(); };
  }
  void Start() {
    server_ = std::make_unique<Http2Session>(Http2Role::kServer, options_, &handler_);
    ASSERT_TRUE(server_->Start().ok());
    output_ = server_->TakeOutput();
  }
  // Feeds in pieces the way a socket would, draining output unless told not to.
  void Feed(const std::string& bytes, bool read_output = true) {
    for (size_t pos = 0; pos < bytes.size(); pos += 16 * 1024) {
      (void)server_->Feed(std::string_view(bytes).substr(pos, 16 * 1024));
      max_memory_ = std::max(max_memory_, server_->MemoryUsage());
      if (read_output) output_ += server_->TakeOutput();
    }
    output_ += server_->TakeOutput();
  }
  // Independent of how much the peer sent (each flood is several times this): a few streams, the
  // HPACK tables and frame buffers. Measured peaks are 25-45 KiB.
  void ExpectBoundedMemory() { EXPECT_LE(max_memory_, 128u * 1024) << "peak " << max_memory_; }

  Http2Options options_;
  RecordingHandler handler_;
  std::unique_ptr<Http2Session> server_;
  std::string output_;
  size_t max_memory_ = 0;
};

std::string Opening() { return ClientPreface() + Frame(NGHTTP2_SETTINGS, 0, 0, ""); }

std::string Rst(int32_t id) { return Frame(NGHTTP2_RST_STREAM, 0, id, testing::U32(NGHTTP2_CANCEL)); }

TEST_F(AbuseTest, RapidReset) {
  Start();
  std::string bytes = Opening();
  for (int32_t id = 1; id < 2 * 5000; id += 2) {
    bytes += Frame(NGHTTP2_HEADERS, kEndHeaders, id, RequestBlock()) + Rst(id);
  }
  Feed(bytes);
  EXPECT_EQ(GoawayCode(output_), NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_EQ(server_->stats().rapid_reset, 1u);
  EXPECT_EQ(server_->close_reason(), Http2CloseReason::kAbuse);
  EXPECT_LE(server_->stats().streams_opened_by_peer, options_.guard.max_resets_per_window + 1);
  ExpectBoundedMemory();
}

TEST_F(AbuseTest, RapidResetNghttp2Backstop) {
  // Our window off; nghttp2's own token bucket (reset_burst, then reset_rate_per_second) catches it.
  options_.guard.max_resets_per_window = 1000000;
  options_.reset_burst = 50;
  options_.reset_rate_per_second = 1;
  Start();
  std::string bytes = Opening();
  for (int32_t id = 1; id < 2 * 500; id += 2) {
    bytes += Frame(NGHTTP2_HEADERS, kEndHeaders, id, RequestBlock()) + Rst(id);
  }
  Feed(bytes);
  EXPECT_EQ(GoawayCode(output_), NGHTTP2_INTERNAL_ERROR);  // nghttp2's choice of code
  EXPECT_EQ(server_->stats().rapid_reset, 1u);
  EXPECT_EQ(server_->close_reason(), Http2CloseReason::kAbuse);
  ExpectBoundedMemory();
}

TEST_F(AbuseTest, ResetsBelowTheRateAreFine) {
  options_.max_concurrent_streams = 2000;
  Start();
  std::string bytes = Opening();
  // One in four streams cancelled: well under the default limit of half a window.
  for (int32_t id = 1; id < 2 * 1000; id += 2) {
    bytes += Frame(NGHTTP2_HEADERS, kEndHeaders | kEndStream, id, RequestBlock());
    if (id % 8 == 1) bytes += Rst(id);
  }
  Feed(bytes);
  EXPECT_EQ(server_->stats().rapid_reset, 0u);
  EXPECT_EQ(GoawayCode(output_), -1);
}

TEST_F(AbuseTest, ContinuationFloodOverByteLimit) {
  options_.max_continuations = 1000;  // so our byte limit, not nghttp2's frame count, fires
  Start();
  std::vector<std::pair<std::string, std::string>> fields = {
      {":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/"}};
  for (int i = 0; i < 40; ++i) fields.emplace_back("x-f" + std::to_string(i), std::string(4000, 'v'));
  std::string block = testing::Hpack(fields);
  ASSERT_GT(block.size(), options_.max_header_list_size + 32 * 1024);
  std::string bytes = Opening();
  const size_t kFragment = 8 * 1024;
  bytes += Frame(NGHTTP2_HEADERS, kEndStream, 1, block.substr(0, kFragment));
  for (size_t pos = kFragment; pos < block.size(); pos += kFragment) {
    bool last = pos + kFragment >= block.size();
    bytes += Frame(NGHTTP2_CONTINUATION, last ? kEndHeaders : 0, 1, block.substr(pos, kFragment));
  }
  Feed(bytes);
  EXPECT_EQ(GoawayCode(output_), NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_EQ(server_->stats().continuation_flood, 1u);
  EXPECT_TRUE(handler_.heads.empty());
  ExpectBoundedMemory();
}

TEST_F(AbuseTest, ContinuationFloodOfTinyFrames) {
  Start();
  std::string block = RequestBlock();
  std::string bytes = Opening() + Frame(NGHTTP2_HEADERS, 0, 1, block.substr(0, 1));
  // Empty CONTINUATIONs never end the block: nghttp2's frame count (max_continuations) fires.
  for (int i = 0; i < 10000; ++i) bytes += Frame(NGHTTP2_CONTINUATION, 0, 1, "");
  Feed(bytes);
  EXPECT_EQ(GoawayCode(output_), NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_EQ(server_->stats().continuation_flood, 1u);
  ExpectBoundedMemory();
}

TEST_F(AbuseTest, HpackBomb) {
  Start();
  // :method GET, :scheme http, :path / (static), :authority "a", then "x-bomb: <4000 x 'a'>" added to
  // the dynamic table (index 62) and referenced again with one byte each: ~4 KiB on the wire that
  // decodes to megabytes.
  std::string block =
      "\x82\x86\x84\x41\x01"
      "a";
  block += "\x40\x06x-bomb\x7f\xa1\x1e";
  block += std::string(4000, 'a');
  block += std::string(1000, '\xbe');
  Feed(Opening() + Frame(NGHTTP2_HEADERS, kEndHeaders | kEndStream, 1, block));
  EXPECT_EQ(GoawayCode(output_), NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_EQ(server_->stats().hpack_bomb, 1u);
  EXPECT_TRUE(handler_.heads.empty());
  ExpectBoundedMemory();
}

TEST_F(AbuseTest, SettingsFlood) {
  Start();
  std::string bytes = Opening();
  for (int i = 0; i < 10000; ++i) bytes += Frame(NGHTTP2_SETTINGS, 0, 0, "");
  Feed(bytes);
  EXPECT_EQ(GoawayCode(output_), NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_EQ(server_->stats().settings_flood, 1u);
  ExpectBoundedMemory();
}

TEST_F(AbuseTest, SettingsWithTooManyEntries) {
  Start();
  std::string entries;
  for (int i = 0; i < 40; ++i) entries += std::string("\x00\x04", 2) + testing::U32(65535);
  Feed(Opening() + Frame(NGHTTP2_SETTINGS, 0, 0, entries));
  EXPECT_EQ(GoawayCode(output_), NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_EQ(server_->stats().settings_flood, 1u);
}

TEST_F(AbuseTest, PingFlood) {
  Start();
  std::string bytes = Opening();
  for (int i = 0; i < 10000; ++i) bytes += Frame(NGHTTP2_PING, 0, 0, "12345678");
  Feed(bytes);
  EXPECT_EQ(GoawayCode(output_), NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_EQ(server_->stats().ping_flood, 1u);
  ExpectBoundedMemory();
}

TEST_F(AbuseTest, PingsNotReadBackFlood) {
  // A peer that sends PINGs slowly enough for the bucket but never reads the ACKs: they pile up
  // in nghttp2's queue until max_outbound_ack.
  options_.guard.ping_burst = 1000000;
  options_.max_outbound_ack = 100;
  options_.max_output_buffer = 16 * 1024;
  Start();
  std::string bytes = Opening();
  for (int i = 0; i < 10000; ++i) bytes += Frame(NGHTTP2_PING, 0, 0, "12345678");
  Feed(bytes, /*read_output=*/false);
  EXPECT_EQ(server_->stats().outbound_flood, 1u);
  EXPECT_EQ(server_->close_reason(), Http2CloseReason::kAbuse);
  EXPECT_EQ(GoawayCode(output_ + server_->TakeOutput()), NGHTTP2_ENHANCE_YOUR_CALM);
  ExpectBoundedMemory();
}

TEST_F(AbuseTest, EmptyDataFlood) {
  Start();
  std::string bytes = Opening() + Frame(NGHTTP2_HEADERS, kEndHeaders, 1, RequestBlock());
  for (int i = 0; i < 10000; ++i) bytes += Frame(NGHTTP2_DATA, 0, 1, "");
  Feed(bytes);
  EXPECT_EQ(GoawayCode(output_), NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_EQ(server_->stats().empty_data_flood, 1u);
  ExpectBoundedMemory();
}

TEST_F(AbuseTest, StreamsOverTheLimitRefusedThenGoaway) {
  options_.max_concurrent_streams = 10;
  Start();
  // Before the client acknowledged our SETTINGS: the surplus is refused stream by stream.
  std::string bytes = Opening();
  int32_t id = 1;
  for (int i = 0; i < 20; ++i, id += 2) bytes += Frame(NGHTTP2_HEADERS, kEndHeaders, id, RequestBlock());
  Feed(bytes);
  EXPECT_EQ(server_->stats().streams_refused, 10u);
  EXPECT_EQ(handler_.heads.size(), 10u);
  EXPECT_EQ(GoawayCode(output_), -1);
  // Once it has acknowledged them, going on is a connection error.
  std::string more = Frame(NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, "");
  for (int i = 0; i < 20; ++i, id += 2) more += Frame(NGHTTP2_HEADERS, kEndHeaders, id, RequestBlock());
  Feed(more);
  EXPECT_EQ(GoawayCode(output_), NGHTTP2_PROTOCOL_ERROR);
  EXPECT_EQ(server_->stats().too_many_streams, 1u);
  EXPECT_EQ(server_->close_reason(), Http2CloseReason::kAbuse);
  ExpectBoundedMemory();
}

TEST_F(AbuseTest, SessionMemoryCap) {
  options_.max_session_memory = 64 * 1024;
  options_.max_concurrent_streams = 100000;
  Start();
  std::string bytes = Opening();
  for (int32_t id = 1; id < 2 * 3000; id += 2)
    bytes += Frame(NGHTTP2_HEADERS, kEndHeaders, id, RequestBlock());
  Feed(bytes);
  EXPECT_EQ(server_->stats().memory_limit, 1u);
  EXPECT_EQ(server_->close_reason(), Http2CloseReason::kResourceLimit);
  EXPECT_LE(server_->nghttp2_memory(), options_.max_session_memory + 4096);
}

TEST_F(AbuseTest, GarbageAfterPrefaceIsProtocolError) {
  Start();
  Feed(ClientPreface() + std::string(100, '\xff'));
  EXPECT_NE(server_->close_reason(), Http2CloseReason::kNone);
  EXPECT_TRUE(server_->Finished() || !server_->PendingOutput().empty());
}

}  // namespace
}  // namespace ringmesh::proxy::http
