// Http2Session client <-> server in memory: bodies and flow control with bounded memory, trailers,
// concurrency limits, resets, graceful GOAWAY, and the "not HTTP/2" answer to a plaintext request.
#include "userspace/proxy/http/http2_session.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/proxy/http/http2_test_util.h"

namespace ringmesh::proxy::http {
namespace {

using testing::PumpOnce;
using testing::RecordingHandler;

Http2Headers Get(const std::string& path) {
  Http2Headers h;
  h.method = "GET";
  h.scheme = "http";
  h.authority = "example";
  h.path = path;
  return h;
}

Http2Headers Post(const std::string& path) {
  Http2Headers h = Get(path);
  h.method = "POST";
  h.fields = {{"content-type", "application/octet-stream"}};
  return h;
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 4096) & 0xff);
  return s;
}

// Echoes each request body into its response, consuming a request byte only once the response queue
// took it: the client's reading speed throttles the client's sending, through both windows.
class EchoServer : public RecordingHandler {
 public:
  Http2Session* session = nullptr;
  std::set<int32_t> done;

  void OnHeaders(int32_t id, const Http2Headers& h, bool end) override {
    RecordingHandler::OnHeaders(id, h, end);
    Http2Headers resp;
    resp.status = 200;
    resp.fields = {{"x-path", h.path}};
    EXPECT_TRUE(session->SubmitResponse(id, resp, false).ok());
  }

  void Step() {
    for (auto& [id, s] : streams) {
      if (s.closed || done.count(id)) continue;
      if (!s.unconsumed.empty()) {
        auto n = session->SubmitData(id, s.unconsumed, false);
        ASSERT_TRUE(n.ok()) << n.status();
        s.unconsumed.erase(0, *n);
        unconsumed_total -= *n;
        session->Consume(id, *n);
      }
      if (s.unconsumed.empty() && s.ended) {
        if (s.has_trailers) {
          EXPECT_TRUE(session->SubmitTrailers(id, s.trailers).ok());
        } else {
          EXPECT_TRUE(session->SubmitData(id, std::string_view(), true).ok());
        }
        done.insert(id);
      }
    }
  }
};

struct Pair {
  Http2Options client_options, server_options;
  RecordingHandler client_handler;
  EchoServer server_handler;
  std::unique_ptr<Http2Session> client, server;

  void Start() {
    client = std::make_unique<Http2Session>(Http2Role::kClient, client_options, &client_handler);
    server = std::make_unique<Http2Session>(Http2Role::kServer, server_options, &server_handler);
    server_handler.session = server.get();
    ASSERT_TRUE(client->Start().ok());
    ASSERT_TRUE(server->Start().ok());
  }
};

// What a session may hold: its output bound (plus one frame), its send queues, and nghttp2's own
// state, which for these tests stays well under 256 KiB (streams, HPACK tables, frame buffers).
size_t MemoryBound(const Http2Options& o, size_t streams) {
  return o.max_output_buffer + 16 * 1024 + 9 + streams * (o.max_stream_send_buffer + 1024) + 256 * 1024;
}

class BodySizeTest : public ::testing::TestWithParam<size_t> {};

TEST_P(BodySizeTest, EchoWithSlowConsumerStaysBounded) {
  Pair p;
  for (Http2Options* o : {&p.client_options, &p.server_options}) {
    o->initial_stream_window = 64 * 1024;
    o->connection_window = 256 * 1024;
    o->max_stream_send_buffer = 32 * 1024;
    o->max_output_buffer = 64 * 1024;
  }
  p.Start();
  const std::string body = Pattern(GetParam());
  auto id = p.client->SubmitRequest(Post("/echo"), body.empty());
  ASSERT_TRUE(id.ok()) << id.status();
  size_t sent = 0;
  bool ended = body.empty();
  for (int round = 0; round < 200000 && !p.client_handler.streams[*id].closed; ++round) {
    if (!ended) {
      auto n = p.client->SubmitData(*id, std::string_view(body).substr(sent), true);
      ASSERT_TRUE(n.ok()) << n.status();
      sent += *n;
      ended = sent == body.size();
    }
    p.server_handler.Step();
    p.client_handler.Drain(*p.client, 16 * 1024);  // the slow consumer
    PumpOnce(*p.client, *p.server, 32 * 1024);
    // Every buffer is bounded by configuration, not by the body size.
    ASSERT_LE(p.server_handler.max_unconsumed_stream, p.server_options.initial_stream_window);
    ASSERT_LE(p.client_handler.max_unconsumed_stream, p.client_options.initial_stream_window);
    ASSERT_LE(p.client->send_buffered(*id), p.client_options.max_stream_send_buffer);
    ASSERT_LE(p.server->send_buffered(*id), p.server_options.max_stream_send_buffer);
    ASSERT_LE(p.client->MemoryUsage(), MemoryBound(p.client_options, 1));
    ASSERT_LE(p.server->MemoryUsage(), MemoryBound(p.server_options, 1));
  }
  p.client_handler.Drain(*p.client);
  const auto& log = p.client_handler.streams[*id];
  ASSERT_TRUE(log.closed);
  EXPECT_TRUE(log.ended);
  EXPECT_EQ(log.reset_code, -1);
  EXPECT_EQ(log.head.status, 200);
  ASSERT_EQ(log.body.size(), body.size());
  EXPECT_TRUE(log.body == body);
  EXPECT_EQ(p.server_handler.streams[*id].head.method, "POST");
  EXPECT_EQ(p.server_handler.streams[*id].head.path, "/echo");
  EXPECT_EQ(p.client->open_streams(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Sizes, BodySizeTest, ::testing::Values(0, 1, 1 << 20, 16 << 20));

TEST(Http2Session, TrailersBothWays) {
  Pair p;
  p.Start();
  auto id = p.client->SubmitRequest(Post("/t"), false);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(p.client->SubmitData(*id, std::string_view("hello"), false).ok());
  Http2Headers trailers;
  trailers.fields = {{"x-checksum", "abc"}, {"grpc-status", "0"}};
  ASSERT_TRUE(p.client->SubmitTrailers(*id, trailers).ok());
  EXPECT_FALSE(p.client->SubmitData(*id, std::string_view("late"), false).ok());
  for (int i = 0; i < 100 && !p.client_handler.streams[*id].closed; ++i) {
    p.server_handler.Step();
    p.client_handler.Drain(*p.client);
    PumpOnce(*p.client, *p.server);
  }
  p.client_handler.Drain(*p.client);
  const auto& server_log = p.server_handler.streams[*id];
  ASSERT_TRUE(server_log.has_trailers);
  EXPECT_EQ(server_log.trailers.fields, trailers.fields);
  const auto& log = p.client_handler.streams[*id];
  EXPECT_EQ(log.body, "hello");
  ASSERT_TRUE(log.has_trailers);
  EXPECT_EQ(log.trailers.fields, trailers.fields);
  EXPECT_TRUE(log.ended);
}

TEST(Http2Session, ConnectRequestKeepsOnlyAuthority) {
  Pair p;
  p.Start();
  Http2Headers h;
  h.method = "CONNECT";
  h.authority = "10.0.0.7:8080";
  h.fields = {{"Connection", "keep-alive"}, {"x-b3", "1"}};  // connection-specific: dropped
  auto id = p.client->SubmitRequest(h, false);
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 20; ++i) PumpOnce(*p.client, *p.server);
  const auto& got = p.server_handler.streams[*id].head;
  EXPECT_EQ(got.method, "CONNECT");
  EXPECT_EQ(got.authority, "10.0.0.7:8080");
  EXPECT_TRUE(got.path.empty());
  EXPECT_EQ(got.fields, (std::vector<std::pair<std::string, std::string>>{{"x-b3", "1"}}));
}

// Responds to at most `per_round` open requests a round, so streams pile up to the limit.
class SlowResponder : public RecordingHandler {
 public:
  Http2Session* session = nullptr;
  size_t max_open = 0;
  std::deque<int32_t> waiting;
  void OnHeaders(int32_t id, const Http2Headers& h, bool end) override {
    RecordingHandler::OnHeaders(id, h, end);
    waiting.push_back(id);
  }
  void Step(size_t per_round) {
    max_open = std::max(max_open, session->open_streams());
    for (size_t i = 0; i < per_round && !waiting.empty(); ++i) {
      int32_t id = waiting.front();
      waiting.pop_front();
      Http2Headers resp;
      resp.status = 200;
      resp.fields = {{"x-path", streams[id].head.path}};
      EXPECT_TRUE(session->SubmitResponse(id, resp, true).ok());
    }
  }
};

class ConcurrencyTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ConcurrencyTest, TwoHundredRequestsNoLoss) {
  Http2Options server_options;
  server_options.max_concurrent_streams = GetParam();
  RecordingHandler client_handler;
  SlowResponder server_handler;
  Http2Session client(Http2Role::kClient, {}, &client_handler);
  Http2Session server(Http2Role::kServer, server_options, &server_handler);
  server_handler.session = &server;
  ASSERT_TRUE(client.Start().ok());
  ASSERT_TRUE(server.Start().ok());

  std::deque<std::string> queue;
  for (int i = 0; i < 200; ++i) queue.push_back("/r" + std::to_string(i));
  std::map<int32_t, std::string> in_flight;
  std::map<std::string, int> answered;
  size_t refusals = 0, retries = 0;
  for (int round = 0; round < 10000 && answered.size() < 200; ++round) {
    while (!queue.empty()) {
      auto id = client.SubmitRequest(Get(queue.front()), true);
      if (!id.ok()) {
        ASSERT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted) << id.status();
        ++refusals;
        break;
      }
      in_flight[*id] = queue.front();
      queue.pop_front();
    }
    server_handler.Step(7);
    PumpOnce(client, server);
    for (int32_t id : client_handler.closed) {
      auto& log = client_handler.streams[id];
      if (log.reset_code == NGHTTP2_REFUSED_STREAM) {  // refused by the server: safe to retry
        queue.push_back(in_flight[id]);
        ++retries;
      } else {
        ASSERT_EQ(log.head.status, 200);
        ASSERT_EQ(log.head.fields.at(0).second, in_flight[id]);
        ++answered[in_flight[id]];
      }
      in_flight.erase(id);
    }
    client_handler.closed.clear();
  }
  ASSERT_EQ(answered.size(), 200u);
  for (const auto& [path, n] : answered) EXPECT_EQ(n, 1) << path;
  EXPECT_GT(refusals, 0u);  // the client hit the limit and held requests back
  EXPECT_LE(server_handler.max_open, GetParam());
  // Before the server's SETTINGS arrive the client assumes 100 streams; a smaller server limit
  // refuses the surplus (REFUSED_STREAM) instead of failing the connection.
  if (GetParam() < 100) {
    EXPECT_GT(retries, 0u);
    EXPECT_EQ(server.stats().streams_refused, retries);
  }
  EXPECT_EQ(server.close_reason(), Http2CloseReason::kNone);
}

INSTANTIATE_TEST_SUITE_P(Limits, ConcurrencyTest, ::testing::Values(100u, 10u));

TEST(Http2Session, ResetFromEitherSide) {
  Pair p;
  p.Start();
  auto a = p.client->SubmitRequest(Post("/a"), false);
  auto b = p.client->SubmitRequest(Post("/b"), false);
  auto c = p.client->SubmitRequest(Post("/c"), false);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (int i = 0; i < 10; ++i) PumpOnce(*p.client, *p.server);
  ASSERT_TRUE(p.client->ResetStream(*a, NGHTTP2_CANCEL).ok());
  ASSERT_TRUE(p.server->ResetStream(*b, NGHTTP2_REFUSED_STREAM).ok());
  ASSERT_TRUE(p.client->SubmitData(*c, std::string_view("c-body"), true).ok());
  for (int i = 0; i < 20; ++i) {
    p.server_handler.Step();
    p.client_handler.Drain(*p.client);
    PumpOnce(*p.client, *p.server);
  }
  EXPECT_EQ(p.server_handler.streams[*a].reset_code, NGHTTP2_CANCEL);
  EXPECT_TRUE(p.server_handler.streams[*a].closed);
  EXPECT_EQ(p.client_handler.streams[*a].reset_code, -1);  // our own reset is not echoed back
  EXPECT_TRUE(p.client_handler.streams[*a].closed);
  EXPECT_EQ(p.client_handler.streams[*b].reset_code, NGHTTP2_REFUSED_STREAM);
  EXPECT_TRUE(p.client_handler.streams[*b].closed);
  EXPECT_EQ(p.client_handler.streams[*c].body, "c-body");  // unaffected
  EXPECT_EQ(p.client_handler.streams[*c].reset_code, -1);
  EXPECT_EQ(p.server->stats().resets_received, 1u);
  EXPECT_EQ(p.client->stats().resets_received, 1u);
  EXPECT_EQ(p.client->open_streams(), 0u);
  EXPECT_EQ(p.server->open_streams(), 0u);
}

TEST(Http2Session, GracefulGoaway) {
  Pair p;
  p.Start();
  std::vector<int32_t> early;
  for (int i = 0; i < 3; ++i) {
    auto id = p.client->SubmitRequest(Post("/in-flight"), false);
    ASSERT_TRUE(id.ok());
    early.push_back(*id);
  }
  for (int i = 0; i < 10; ++i) PumpOnce(*p.client, *p.server);
  ASSERT_EQ(p.server->open_streams(), 3u);
  ASSERT_TRUE(p.server->Goaway(NGHTTP2_NO_ERROR).ok());
  (void)p.server->PendingOutput();  // the GOAWAY is on its way: from now on new streams are ignored
  // Sent before the client saw the GOAWAY: above last_stream_id, so refused, not processed.
  auto late = p.client->SubmitRequest(Post("/late"), true);
  ASSERT_TRUE(late.ok());
  for (int i = 0; i < 10; ++i) PumpOnce(*p.client, *p.server);
  EXPECT_EQ(p.client_handler.goaway_last, early.back());
  EXPECT_EQ(p.client_handler.goaway_code, NGHTTP2_NO_ERROR);
  EXPECT_EQ(p.client_handler.streams[*late].reset_code, NGHTTP2_REFUSED_STREAM);
  EXPECT_EQ(p.server_handler.streams.count(*late), 0u);
  auto refused = p.client->SubmitRequest(Post("/after"), true);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  // The in-flight streams still finish.
  for (int32_t id : early) ASSERT_TRUE(p.client->SubmitData(id, std::string_view("x"), true).ok());
  for (int i = 0; i < 50 && !(p.client->Finished() && p.server->Finished()); ++i) {
    p.server_handler.Step();
    p.client_handler.Drain(*p.client);
    PumpOnce(*p.client, *p.server);
  }
  p.client_handler.Drain(*p.client);
  for (int32_t id : early) {
    EXPECT_EQ(p.client_handler.streams[id].head.status, 200);
    EXPECT_EQ(p.client_handler.streams[id].body, "x");
    EXPECT_TRUE(p.client_handler.streams[id].ended);
  }
  EXPECT_TRUE(p.server->Finished());
  EXPECT_TRUE(p.client->Finished());
  EXPECT_EQ(p.server->close_reason(), Http2CloseReason::kGoawayComplete);
  EXPECT_EQ(p.server->stats().goaway_sent, 1u);
  EXPECT_EQ(p.client->stats().goaway_received, 1u);
}

TEST(Http2Session, AdvertisesLimitsAndConnectionWindow) {
  RecordingHandler h;
  Http2Options options;
  options.initial_stream_window = 1024;  // below the floor: raised to 64 KiB
  options.connection_window = 0;         // below 4x the stream window: raised
  Http2Session server(Http2Role::kServer, options, &h);
  ASSERT_TRUE(server.Start().ok());
  std::map<uint16_t, uint32_t> settings;
  int64_t connection_increment = -1;
  for (const auto& f : testing::ParseFrames(server.TakeOutput())) {
    auto u = [&](size_t i, int n) {
      uint32_t v = 0;
      for (int k = 0; k < n; ++k) v = (v << 8) | static_cast<uint8_t>(f.payload[i + k]);
      return v;
    };
    if (f.type == NGHTTP2_SETTINGS) {
      for (size_t i = 0; i + 6 <= f.payload.size(); i += 6) settings[u(i, 2)] = u(i + 2, 4);
    }
    if (f.type == NGHTTP2_WINDOW_UPDATE && f.stream_id == 0) connection_increment = u(0, 4);
  }
  EXPECT_EQ(settings[NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS], 100u);
  EXPECT_EQ(settings[NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE], 64u * 1024);
  EXPECT_EQ(settings[NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE], 64u * 1024);
  // The connection window starts at 65535: the update brings it to 4x the stream window.
  EXPECT_EQ(connection_increment, 4 * 64 * 1024 - 65535);
}

TEST(Http2Session, PlaintextHttp1IsNotHttp2) {
  for (std::string input : {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "G", "PRI * HTTP/1.1\r\n"}) {
    RecordingHandler h;
    Http2Session server(Http2Role::kServer, {}, &h);
    ASSERT_TRUE(server.Start().ok());
    absl::Status st = server.Feed(input);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << input;
    EXPECT_EQ(server.close_reason(), Http2CloseReason::kNotHttp2);
    EXPECT_TRUE(server.PendingOutput().empty());
    EXPECT_TRUE(server.Finished());
    EXPECT_FALSE(server.Feed(std::string_view("more")).ok());
  }
}

TEST(Http2Session, PrefaceAcrossChunksIsAccepted) {
  RecordingHandler h;
  Http2Session server(Http2Role::kServer, {}, &h);
  ASSERT_TRUE(server.Start().ok());
  std::string bytes = testing::ClientPreface() + testing::Frame(NGHTTP2_SETTINGS, 0, 0, "");
  for (char c : bytes) ASSERT_TRUE(server.Feed(std::string_view(&c, 1)).ok());
  EXPECT_EQ(server.close_reason(), Http2CloseReason::kNone);
  EXPECT_FALSE(server.PendingOutput().empty());  // our SETTINGS and the ACK
}

TEST(Http2Session, OversizedHeaderListAnswered431) {
  Pair p;
  p.client_options.max_header_list_size = 256 * 1024;  // the client may send it; the server refuses
  p.Start();
  Http2Headers big = Get("/big");
  big.fields = {{"x-big", std::string(70 * 1024, 'a')}};
  auto id = p.client->SubmitRequest(big, true);
  ASSERT_TRUE(id.ok());
  auto ok_id = p.client->SubmitRequest(Get("/small"), true);
  ASSERT_TRUE(ok_id.ok());
  for (int i = 0; i < 20; ++i) {
    p.server_handler.Step();
    PumpOnce(*p.client, *p.server);
  }
  EXPECT_EQ(p.client_handler.streams[*id].head.status, 431);
  EXPECT_EQ(p.server_handler.streams.count(*id), 0u);  // never reached the handler
  EXPECT_EQ(p.server->stats().header_list_too_large, 1u);
  EXPECT_EQ(p.client_handler.streams[*ok_id].head.status, 200);
  EXPECT_EQ(p.server->close_reason(), Http2CloseReason::kNone);
}

// Client events in arrival order, to check that an answer arrives before the stream's reset.
class OrderedLog : public RecordingHandler {
 public:
  std::vector<std::string> events;
  void OnHeaders(int32_t id, const Http2Headers& h, bool end) override {
    RecordingHandler::OnHeaders(id, h, end);
    events.push_back(absl::StrCat(id, " headers ", h.status));
  }
  void OnData(int32_t id, absl::Span<const uint8_t> d) override {
    RecordingHandler::OnData(id, d);
    events.push_back(absl::StrCat(id, " data"));
  }
  void OnStreamEnd(int32_t id) override {
    RecordingHandler::OnStreamEnd(id);
    events.push_back(absl::StrCat(id, " end"));
  }
  void OnStreamReset(int32_t id, uint32_t code) override {
    RecordingHandler::OnStreamReset(id, code);
    events.push_back(absl::StrCat(id, " reset ", code));
  }
  void OnStreamClosed(int32_t id) override {
    RecordingHandler::OnStreamClosed(id);
    events.push_back(absl::StrCat(id, " closed"));
  }
};

// The request is still open (no END_STREAM) when the server refuses its head: RFC 9113 8.1 lets the
// server send its complete answer and then RST_STREAM(NO_ERROR); the 431 must not be lost to the
// reset.
TEST(Http2Session, OversizedHeaderListOnOpenStreamAnswered431ThenReset) {
  Http2Options client_options, server_options;
  client_options.max_header_list_size = 256 * 1024;  // the client may send it; the server refuses
  OrderedLog client_handler;
  RecordingHandler server_handler;
  Http2Session client(Http2Role::kClient, client_options, &client_handler);
  Http2Session server(Http2Role::kServer, server_options, &server_handler);
  ASSERT_TRUE(client.Start().ok());
  ASSERT_TRUE(server.Start().ok());
  Http2Headers big = Post("/big");
  big.fields.push_back({"x-big", std::string(70 * 1024, 'a')});
  auto id = client.SubmitRequest(big, /*end_stream=*/false);
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 20; ++i) PumpOnce(client, server);

  const std::string head = absl::StrCat(*id, " headers 431");
  const std::string reset = absl::StrCat(*id, " reset ", NGHTTP2_NO_ERROR);
  const std::string closed = absl::StrCat(*id, " closed");
  auto at = [&](const std::string& e) {
    return std::find(client_handler.events.begin(), client_handler.events.end(), e) -
           client_handler.events.begin();
  };
  const std::string log = absl::StrJoin(client_handler.events, "; ");
  ASSERT_LT(at(head), std::ssize(client_handler.events)) << "no 431 before the stream ended: " << log;
  EXPECT_LT(at(head), at(reset)) << log;
  EXPECT_LT(at(reset), at(closed)) << log;
  EXPECT_TRUE(client_handler.streams[*id].ended);  // the 431 carried END_STREAM
  EXPECT_EQ(server_handler.streams.count(*id), 0u);
  EXPECT_EQ(server.stats().header_list_too_large, 1u);
  EXPECT_EQ(server.stats().resets_sent, 1u);
  EXPECT_EQ(client.open_streams(), 0u);
  EXPECT_EQ(server.open_streams(), 0u);
  EXPECT_EQ(server.close_reason(), Http2CloseReason::kNone);
}

// A server that refuses every request with 413 and a body, as a complete answer that ends the
// stream: SubmitResponse(..., reset_after_end=true).
class RefusingServer : public RecordingHandler {
 public:
  Http2Session* session = nullptr;
  bool with_body = true;
  void OnHeaders(int32_t id, const Http2Headers& h, bool end) override {
    RecordingHandler::OnHeaders(id, h, end);
    Http2Headers resp;
    resp.status = 413;
    EXPECT_TRUE(session->SubmitResponse(id, resp, /*end_stream=*/!with_body, /*reset_after_end=*/true).ok());
    if (with_body) {
      EXPECT_TRUE(session->SubmitData(id, std::string_view("too large"), /*end_stream=*/false).ok());
      EXPECT_TRUE(session->SubmitTrailers(id, Http2Headers{.fields = {{"x-why", "size"}}}).ok());
    }
  }
};

struct RefusalRun {
  OrderedLog client_handler;
  RefusingServer server_handler;
  std::unique_ptr<Http2Session> client, server;
  int32_t id = 0;

  void Run(bool with_body, bool request_ended) {
    client = std::make_unique<Http2Session>(Http2Role::kClient, Http2Options{}, &client_handler);
    server = std::make_unique<Http2Session>(Http2Role::kServer, Http2Options{}, &server_handler);
    server_handler.session = server.get();
    server_handler.with_body = with_body;
    ASSERT_TRUE(client->Start().ok());
    ASSERT_TRUE(server->Start().ok());
    auto submitted = client->SubmitRequest(Post("/upload"), request_ended);
    ASSERT_TRUE(submitted.ok());
    id = *submitted;
    if (!request_ended) {
      ASSERT_TRUE(client->SubmitData(id, std::string_view("part"), false).ok());
    }
    for (int i = 0; i < 20; ++i) {
      client_handler.Drain(*client);
      server_handler.Drain(*server);
      PumpOnce(*client, *server);
    }
  }
  std::string Log() const { return absl::StrJoin(client_handler.events, "; "); }
};

TEST(Http2Session, ResponseWithResetAfterEndArrivesWholeThenResets) {
  for (bool with_body : {false, true}) {
    SCOPED_TRACE(with_body ? "with body and trailers" : "head only");
    RefusalRun r;
    r.Run(with_body, /*request_ended=*/false);
    const std::string id = absl::StrCat(r.id);
    std::vector<std::string> want = {id + " headers 413"};
    if (with_body) want.push_back(id + " data");
    want.insert(want.end(), {id + " end", id + " reset 0", id + " closed"});
    EXPECT_EQ(r.Log(), absl::StrJoin(want, "; "));
    EXPECT_EQ(r.client_handler.streams[r.id].body, with_body ? "too large" : "");
    EXPECT_EQ(r.client_handler.streams[r.id].has_trailers, with_body);
    EXPECT_EQ(r.server->stats().resets_sent, 1u);
    // The server's handler chose the reset: it is told the stream closed, not that it was reset.
    EXPECT_TRUE(r.server_handler.streams[r.id].closed);
    EXPECT_EQ(r.server_handler.streams[r.id].reset_code, -1);
    EXPECT_EQ(r.client->open_streams(), 0u);
    EXPECT_EQ(r.server->open_streams(), 0u);
  }
}

TEST(Http2Session, ResetAfterEndIsNotSentWhenThePeerHadEnded) {
  RefusalRun r;
  r.Run(/*with_body=*/true, /*request_ended=*/true);
  const std::string id = absl::StrCat(r.id);
  EXPECT_EQ(r.Log(), absl::StrJoin({id + " headers 413", id + " data", id + " end", id + " closed"}, "; "));
  EXPECT_EQ(r.server->stats().resets_sent, 0u);
  EXPECT_EQ(r.client->stats().resets_received, 0u);
  EXPECT_EQ(r.server->open_streams(), 0u);
}

}  // namespace
}  // namespace ringmesh::proxy::http
