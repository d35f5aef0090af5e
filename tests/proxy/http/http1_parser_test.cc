// Http1Parser: events, incremental parsing, pipelining, interim responses,
// bodiless responses, protocol switches, backpressure and limits.
#include "userspace/proxy/http/http1_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/proxy/http/http1_test_util.h"

namespace ringmesh::proxy::http {
namespace {

using h1test::RunOptions;
using h1test::RunPieces;
using h1test::RunResult;
using h1test::RunWhole;
using Type = Http1Parser::Type;

RunOptions Response(std::vector<std::string> methods = {}) {
  RunOptions o;
  o.type = Type::kResponse;
  o.response_to = std::move(methods);
  return o;
}

struct Case {
  const char* name;
  std::string input;
  RunOptions options;
};

std::vector<Case> SplitCases() {
  return {
      {"get", "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n", {}},
      {"post_cl", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world", {}},
      {"chunked_trailers",
       "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc\r\nX-Two: 2\r\n\r\n",
       {}},
      {"pipelined",
       "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
       "GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /4 HTTP/1.1\r\n\r\n",
       {}},
      {"expect_continue",
       "PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata",
       {}},
      {"http10", "GET / HTTP/1.0\r\n\r\n", {}},
      {"response_cl", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Response({"GET"})},
      {"response_interim",
       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"
       "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
       Response({"PUT"})},
      {"response_head_204_304",
       "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200 OK\r\nX: no-length\r\n\r\n"
       "HTTP/1.1 204 No Content\r\n\r\n"
       "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
       Response({"HEAD", "HEAD", "GET", "GET", "GET"})},
      {"response_until_close", "HTTP/1.1 200 OK\r\n\r\nstream until the end",
       [] {
         RunOptions o = Response({"GET"});
         o.finish = true;
         return o;
       }()},
      {"websocket",
       "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
       {}},
      {"connect", "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\x16\x03\x01", {}},
      {"response_101",
       "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nTAIL",
       Response({"GET"})},
      {"response_connect_200", "HTTP/1.1 200 Connection established\r\n\r\nTAIL", Response({"CONNECT"})},
  };
}

// Every split point, byte-at-a-time, and with the handler pausing at every
// event: the same events, the same end state and the same bytes consumed.
TEST(Http1Parser, SplitsAndPausesGiveIdenticalEvents) {
  for (const Case& c : SplitCases()) {
    SCOPED_TRACE(c.name);
    RunResult whole = RunWhole(c.input, c.options);
    EXPECT_NE(whole.status, Http1FeedStatus::kError) << whole.error.detail;
    EXPECT_GT(whole.completed, 0);
    for (size_t cut = 0; cut <= c.input.size(); ++cut) {
      RunResult split = RunPieces(c.input, {cut}, c.options);
      ASSERT_EQ(split.events, whole.events) << "cut at " << cut;
      ASSERT_EQ(split.status, whole.status) << "cut at " << cut;
      ASSERT_EQ(split.consumed, whole.consumed) << "cut at " << cut;
    }
    std::vector<size_t> every;
    for (size_t i = 1; i < c.input.size(); ++i) every.push_back(i);
    RunResult bytes = RunPieces(c.input, every, c.options);
    EXPECT_EQ(bytes.events, whole.events);
    EXPECT_EQ(bytes.consumed, whole.consumed);
    RunOptions paused = c.options;
    paused.pause_everywhere = true;
    RunResult p = RunPieces(c.input, every, paused);
    EXPECT_EQ(p.events, whole.events);
    EXPECT_EQ(p.consumed, whole.consumed);
    EXPECT_GT(p.pauses, 0);
  }
}

TEST(Http1Parser, PipelinedRequestsAndConnectionClose) {
  const std::string in = SplitCases()[3].input;
  RunResult r = RunWhole(in);
  EXPECT_EQ(r.completed, 3);
  EXPECT_EQ(r.status, Http1FeedStatus::kClosed);
  // The request after "Connection: close" is left unconsumed, never parsed.
  EXPECT_EQ(in.substr(r.consumed), "GET /4 HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.events[1], "head req GET /1 1.1 none ka [Host=x;]");
  EXPECT_EQ(r.events[5], "body abc");
}

TEST(Http1Parser, ChunkedWithTrailers) {
  RunResult r = RunWhole(SplitCases()[2].input);
  ASSERT_EQ(r.status, Http1FeedStatus::kOk);
  std::vector<std::string> want = {"begin",
                                   "head req POST /c 1.1 chunked ka [Host=x;Transfer-Encoding=chunked;]",
                                   "body hello world", "trailers [X-Sum=abc;X-Two=2;]", "complete"};
  EXPECT_EQ(r.events, want);
}

TEST(Http1Parser, ExpectContinueSurfaced) {
  RunResult r = RunWhole(SplitCases()[4].input);
  ASSERT_GE(r.events.size(), 2u);
  EXPECT_NE(r.events[1].find(" expect100 "), std::string::npos) << r.events[1];
}

TEST(Http1Parser, InterimResponsesThenFinal) {
  RunResult r = RunWhole(SplitCases()[7].input, Response({"PUT"}));
  ASSERT_EQ(r.status, Http1FeedStatus::kOk);
  ASSERT_EQ(r.completed, 3);
  EXPECT_EQ(r.events[1], "head resp 100 Continue 1.1 none ka interim []");
  EXPECT_EQ(r.events[4], "head resp 103 Early Hints 1.1 none ka interim [Link=</s>;]");
  EXPECT_EQ(r.events[7], "head resp 201 Created 1.1 chunked ka [Transfer-Encoding=chunked;]");
  EXPECT_EQ(r.events[8], "body abc");
}

TEST(Http1Parser, HeadAnd204And304HaveNoBody) {
  RunResult r = RunWhole(SplitCases()[8].input, Response({"HEAD", "HEAD", "GET", "GET", "GET"}));
  ASSERT_EQ(r.status, Http1FeedStatus::kOk) << r.error.detail;
  EXPECT_EQ(r.completed, 5);
  EXPECT_EQ(r.body_bytes, 2u);  // only the last response's "ok"
  // A HEAD response without Content-Length still keeps the connection.
  EXPECT_EQ(r.events[4], "head resp 200 OK 1.1 none ka [X=no-length;]");
  EXPECT_EQ(r.events.back(), "complete");
}

TEST(Http1Parser, UntilCloseBodyEndsAtFinish) {
  RunOptions o = Response({"GET"});
  o.finish = true;
  RunResult r = RunWhole("HTTP/1.1 200 OK\r\n\r\nstream", o);
  std::vector<std::string> want = {"begin", "head resp 200 OK 1.1 close close []", "body stream", "complete",
                                   "finish ok"};
  EXPECT_EQ(r.events, want);
}

TEST(Http1Parser, FinishMidMessageIsAnError) {
  RunOptions o;
  o.finish = true;
  RunResult r = RunWhole("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", o);
  EXPECT_EQ(r.status, Http1FeedStatus::kError);
  EXPECT_EQ(r.completed, 0);
  EXPECT_EQ(r.error.HttpStatus(), 400);
}

TEST(Http1Parser, UpgradeAndConnectHandBackTheTail) {
  const std::vector<Case> cases = SplitCases();
  for (int i : {10, 11, 12, 13}) {
    const Case& c = cases[i];
    SCOPED_TRACE(c.name);
    RunResult r = RunWhole(c.input, c.options);
    EXPECT_EQ(r.status, Http1FeedStatus::kUpgrade) << r.error.detail;
    EXPECT_EQ(r.completed, 1);
    EXPECT_NE(r.events[1].find(" upgrade "), std::string::npos) << r.events[1];
    const std::string tail = c.input.substr(r.consumed);
    EXPECT_TRUE(tail == "\x81\x05hello" || tail == "\x16\x03\x01" || tail == "TAIL") << tail;
  }
}

TEST(Http1Parser, RefusedUpgradeContinuesAsHttp) {
  h1test::Recorder rec;
  Http1Parser parser(Type::kRequest, &rec);
  const std::string in =
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nGET /next "
      "HTTP/1.1\r\nHost: "
      "x\r\n\r\n";
  Http1FeedResult r = parser.Feed(in);
  ASSERT_EQ(r.status, Http1FeedStatus::kUpgrade);
  parser.ResumeAfterRefusedUpgrade();
  Http1FeedResult r2 = parser.Feed(std::string_view(in).substr(r.consumed));
  EXPECT_EQ(r2.status, Http1FeedStatus::kOk);
  EXPECT_EQ(rec.completed, 2);
  EXPECT_EQ(rec.heads.back().target, "/next");
}

// Backpressure: a pause stops right after the event, consumed says where,
// and nothing more happens until Resume().
TEST(Http1Parser, PauseStopsAtTheEvent) {
  class PauseOnHead : public h1test::Recorder {
   public:
    Action OnHead(const Http1Head& head) override {
      Recorder::OnHead(head);
      return Action::kPause;
    }
  } rec;
  Http1Parser parser(Type::kRequest, &rec);
  const std::string head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
  const std::string in = head + "abc";
  Http1FeedResult r = parser.Feed(in);
  EXPECT_EQ(r.status, Http1FeedStatus::kPaused);
  EXPECT_EQ(r.consumed, head.size());
  EXPECT_EQ(rec.body_bytes, 0u);
  EXPECT_EQ(parser.Feed(std::string_view(in).substr(r.consumed)).status, Http1FeedStatus::kPaused);
  EXPECT_EQ(rec.body_bytes, 0u);
  parser.Resume();
  r = parser.Feed(std::string_view(in).substr(r.consumed));
  EXPECT_EQ(r.status, Http1FeedStatus::kOk);
  EXPECT_EQ(rec.body_bytes, 3u);
  EXPECT_EQ(rec.completed, 1);
}

std::string RequestWithHeaderBytes(size_t header_bytes) {
  // One field "X-Fill: <v>": name 6 bytes + value; plus "Host: x" = 5 bytes.
  return "GET / HTTP/1.1\r\nHost: x\r\nX-Fill: " + std::string(header_bytes - 5 - 6, 'v') + "\r\n\r\n";
}

TEST(Http1Parser, HeaderBytesLimitExactlyAtTheBoundary) {
  RunOptions o;
  o.limits.max_header_bytes = 1000;
  RunResult ok = RunWhole(RequestWithHeaderBytes(1000), o);
  EXPECT_EQ(ok.completed, 1) << ok.error.detail;
  RunResult over = RunWhole(RequestWithHeaderBytes(1001), o);
  EXPECT_EQ(over.status, Http1FeedStatus::kError);
  EXPECT_EQ(over.error.kind, Http1ErrorKind::kHeadersTooLarge);
  EXPECT_EQ(over.error.HttpStatus(), 431);
  // The default is 60 KiB.
  EXPECT_EQ(RunWhole(RequestWithHeaderBytes(60 * 1024)).completed, 1);
  EXPECT_EQ(RunWhole(RequestWithHeaderBytes(60 * 1024 + 1)).error.HttpStatus(), 431);
}

std::string RequestWithFields(int n) {
  std::string s = "GET / HTTP/1.1\r\nHost: x\r\n";
  for (int i = 1; i < n; ++i) s += "X-" + std::to_string(i) + ": v\r\n";
  return s + "\r\n";
}

TEST(Http1Parser, HeaderCountLimitExactlyAtTheBoundary) {
  EXPECT_EQ(RunWhole(RequestWithFields(100)).completed, 1);
  RunResult over = RunWhole(RequestWithFields(101));
  EXPECT_EQ(over.error.kind, Http1ErrorKind::kHeadersTooLarge);
  EXPECT_EQ(over.error.HttpStatus(), 431);
}

TEST(Http1Parser, RequestLineLimitExactlyAtTheBoundary) {
  RunOptions o;
  o.limits.max_request_line_bytes = 100;
  // "GET " + target + " HTTP/1.1" = 13 + target.
  auto req = [](size_t line) {
    return "GET /" + std::string(line - 14, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n";
  };
  EXPECT_EQ(RunWhole(req(100), o).completed, 1);
  RunResult over = RunWhole(req(101), o);
  EXPECT_EQ(over.error.kind, Http1ErrorKind::kUriTooLong);
  EXPECT_EQ(over.error.HttpStatus(), 414);
}

TEST(Http1Parser, TrailerLimitsExactlyAtTheBoundary) {
  RunOptions o;
  o.limits.max_trailer_bytes = 50;
  o.limits.max_trailers = 2;
  auto req = [](size_t trailer_bytes, int count) {
    std::string s = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n";
    for (int i = 1; i < count; ++i) s += "T" + std::to_string(i) + ": v\r\n";
    size_t used = static_cast<size_t>(count - 1) * 3;  // "Tn" + "v"
    return s + "X: " + std::string(trailer_bytes - used - 1, 't') + "\r\n\r\n";
  };
  EXPECT_EQ(RunWhole(req(50, 2), o).completed, 1);
  EXPECT_EQ(RunWhole(req(51, 2), o).error.HttpStatus(), 431);
  EXPECT_EQ(RunWhole(req(30, 3), o).error.HttpStatus(), 431);
}

TEST(Http1Parser, ChunkExtensionLimit) {
  RunOptions o;
  o.limits.max_chunk_extension_bytes = 10;
  auto req = [](size_t ext) {
    return "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;" + std::string(ext - 1, 'e') +
           "=v\r\na\r\n0\r\n\r\n";
  };
  EXPECT_EQ(RunWhole(req(10), o).completed, 1);
  RunResult over = RunWhole(req(11), o);
  EXPECT_EQ(over.status, Http1FeedStatus::kError);
  EXPECT_EQ(over.completed, 0);
}

TEST(Http1Parser, ResponseErrorsAreUpstreamErrors) {
  RunResult r = RunWhole("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", Response());
  EXPECT_EQ(r.status, Http1FeedStatus::kError);
  EXPECT_TRUE(r.error.upstream);
  EXPECT_EQ(r.error.HttpStatus(), 502);
  RunResult big = RunWhole("HTTP/1.1 200 OK\r\nX: " + std::string(70000, 'a') + "\r\n\r\n", Response());
  EXPECT_EQ(big.error.kind, Http1ErrorKind::kHeadersTooLarge);
  EXPECT_EQ(big.error.HttpStatus(), 502);
}

TEST(Http1Parser, ErrorsAreSticky) {
  h1test::Recorder rec;
  Http1Parser parser(Type::kRequest, &rec);
  EXPECT_EQ(parser.Feed("GET / HTTP/1.1\nHost: x\r\n\r\n").status, Http1FeedStatus::kError);
  EXPECT_EQ(parser.Feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, Http1FeedStatus::kError);
  EXPECT_EQ(parser.Finish(), Http1FeedStatus::kError);
  EXPECT_EQ(rec.completed, 0);
}

}  // namespace
}  // namespace ringmesh::proxy::http
