// Http1 encoder: heads, chunked framing and canned errors, each checked by
// parsing the output back with Http1Parser.
#include "userspace/proxy/http/http1_encoder.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/proxy/http/http1_test_util.h"

namespace ringmesh::proxy::http {
namespace {

using h1test::RunOptions;
using h1test::RunWhole;

HeaderList Fields() {
  HeaderList h;
  h.Add("Host", "svc.ns");
  h.Add("Accept", "*/*");
  h.Add("X-Multi", "a");
  h.Add("x-multi", "b, c");
  return h;
}

TEST(Http1Encoder, ChunkedRequestRoundTrip) {
  HeaderList in = Fields();
  in.Add("Transfer-Encoding", "gzip");   // dropped: the caller chose the framing
  in.Add("Content-Length", "999");       // dropped likewise
  in.Add("Connection", "close, X-Hop");  // hop-by-hop
  in.Add("X-Hop", "1");
  auto head = EncodeRequestHead("POST", "/upload?x=1", in, {.framing = Http1Framing::kChunked});
  ASSERT_TRUE(head.ok()) << head.status();
  std::string wire = *head;
  AppendChunk("hello ", &wire);
  AppendChunk("", &wire);  // no-op, must not end the body
  AppendChunk(std::string(300, 'z'), &wire);
  HeaderList trailers;
  trailers.Add("grpc-status", "0");
  ASSERT_TRUE(AppendLastChunk(trailers, &wire).ok());

  h1test::RunResult r = RunWhole(wire);
  ASSERT_EQ(r.status, Http1FeedStatus::kOk) << r.error.detail << "\n" << wire;
  HeaderList want = Fields();
  want.Add("transfer-encoding", "chunked");
  std::vector<std::string> events = {
      "begin", "head req POST /upload?x=1 1.1 chunked ka " + h1test::Describe(want),
      "body hello " + std::string(300, 'z'), "trailers [grpc-status=0;]", "complete"};
  EXPECT_EQ(r.events, events);
}

TEST(Http1Encoder, ContentLengthResponseRoundTrip) {
  auto head =
      EncodeResponseHead(200, "OK", Fields(), {.framing = Http1Framing::kContentLength, .content_length = 4});
  ASSERT_TRUE(head.ok());
  RunOptions o;
  o.type = Http1Parser::Type::kResponse;
  h1test::RunResult r = RunWhole(*head + "body", o);
  ASSERT_EQ(r.completed, 1) << r.error.detail;
  HeaderList want = Fields();
  want.Add("content-length", "4");
  EXPECT_EQ(r.events[1], "head resp 200 OK 1.1 cl:4 ka " + h1test::Describe(want));
  EXPECT_EQ(r.body_bytes, 4u);
}

TEST(Http1Encoder, UntilCloseAndConnectionClose) {
  auto head = EncodeResponseHead(200, "OK", {}, {.framing = Http1Framing::kUntilClose});
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(*head, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
  auto req = EncodeRequestHead("GET", "/", Fields(), {.connection_close = true});
  ASSERT_TRUE(req.ok());
  h1test::RunResult r = RunWhole(*req);
  EXPECT_EQ(r.status, Http1FeedStatus::kClosed);
  EXPECT_FALSE(EncodeRequestHead("GET", "/", {}, {.framing = Http1Framing::kUntilClose}).ok());
}

TEST(Http1Encoder, HeadResponseKeepsContentLength) {
  HeaderList h;
  h.Add("Content-Length", "1234");
  auto head = EncodeResponseHead(200, "OK", h, {});
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(*head, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
  auto no_content = EncodeResponseHead(204, "No Content", h, {});
  ASSERT_TRUE(no_content.ok());
  EXPECT_EQ(*no_content, "HTTP/1.1 204 No Content\r\n\r\n");
  EXPECT_FALSE(EncodeResponseHead(204, "", {}, {.framing = Http1Framing::kChunked}).ok());
}

TEST(Http1Encoder, UpgradeForwarded) {
  HeaderList h;
  h.Add("Host", "x");
  h.Add("Connection", "Upgrade");
  h.Add("Upgrade", "websocket");
  auto head = EncodeRequestHead("GET", "/ws", h, {.upgrade = true});
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(*head, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nconnection: upgrade\r\n\r\n");
  h1test::RunResult r = RunWhole(*head + "tail");
  EXPECT_EQ(r.status, Http1FeedStatus::kUpgrade);
}

TEST(Http1Encoder, RefusesInjection) {
  HeaderList crlf;
  crlf.Add("X", "a\r\nTransfer-Encoding: chunked");
  EXPECT_FALSE(EncodeRequestHead("GET", "/", crlf, {}).ok());
  HeaderList bad_name;
  bad_name.Add("X Y", "a");
  EXPECT_FALSE(EncodeRequestHead("GET", "/", bad_name, {}).ok());
  EXPECT_FALSE(EncodeRequestHead("GE T", "/", {}, {}).ok());
  EXPECT_FALSE(EncodeRequestHead("GET", "/a b", {}, {}).ok());
  EXPECT_FALSE(EncodeRequestHead("GET", "/a\r\nX: y", {}, {}).ok());
  EXPECT_FALSE(EncodeRequestHead("GET", "", {}, {}).ok());
  EXPECT_FALSE(EncodeResponseHead(200, "OK\r\nX: y", {}, {}).ok());
  EXPECT_FALSE(EncodeResponseHead(99, "", {}, {}).ok());
  HeaderList framing_trailer;
  framing_trailer.Add("Content-Length", "5");
  std::string out;
  EXPECT_FALSE(AppendLastChunk(framing_trailer, &out).ok());
  EXPECT_TRUE(out.empty());
}

TEST(Http1Encoder, ChunkSizesInHex) {
  std::string out;
  AppendChunk(std::string(255, 'a'), &out);
  EXPECT_EQ(out.substr(0, 4), "ff\r\n");
  EXPECT_EQ(out.size(), 4u + 255 + 2);
}

TEST(Http1Encoder, CannedErrorsParseAsClosingResponses) {
  for (int status : {400, 413, 414, 431, 500, 501, 502, 503, 504, 505}) {
    SCOPED_TRACE(status);
    std::string wire = CannedErrorResponse(status);
    RunOptions o;
    o.type = Http1Parser::Type::kResponse;
    h1test::RunResult r = RunWhole(wire + "ignored", o);
    EXPECT_EQ(r.status, Http1FeedStatus::kClosed) << r.error.detail;
    ASSERT_EQ(r.completed, 1);
    EXPECT_EQ(r.events[1].rfind("head resp " + std::to_string(status) + " ", 0), 0u) << r.events[1];
    EXPECT_GT(r.body_bytes, 0u);
    EXPECT_EQ(r.consumed, wire.size());
  }
  EXPECT_EQ(CannedErrorResponse(418).substr(0, 12), "HTTP/1.1 500");
}

}  // namespace
}  // namespace ringmesh::proxy::http
