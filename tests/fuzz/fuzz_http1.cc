// Fuzzes the HTTP/1 codec (Http1Parser on llhttp, and Http1 encoder).
// Input: one flag byte, then the byte stream. Flag bit 0: parse as responses
// (else requests); bits 1-2: the method the responses answer (GET, HEAD,
// CONNECT, POST), which decides bodies and tunnels.
//
// Properties:
//   - no crash, no read outside the pieces fed (each is a fresh heap copy);
//   - incremental parsing is invisible: whole, one byte at a time (inputs up
//     to 4 KiB), a few pseudo-random splits (derived from the input, so a
//     finding reproduces), and a handler pausing at every event all give the
//     same events and the same outcome (error or not, and where parsing
//     stopped when it did not fail);
//   - every completed message, encoded again with the encoder, parses back
//     to the same head (method, target, status, reason, framing, end-to-end
//     fields, keep-alive), body and trailers.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "tests/proxy/http/http1_test_util.h"
#include "userspace/proxy/http/headers.h"
#include "userspace/proxy/http/http1_encoder.h"
#include "userspace/proxy/http/http1_parser.h"

namespace {

using namespace ringmesh::proxy::http;  // NOLINT: a harness, not a library

void Check(bool ok, const char* what, const std::string& detail = {}) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n%s\n", what, detail.c_str());
    std::abort();
  }
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& e : v) s += e + "\n";
  return s;
}

// Lines are checked before llhttp sees them, so when a line is bad, a
// split feed may already have let llhttp start the message ("begin") that a
// whole feed rejects first. Nothing else can differ: heads, bodies and
// completions all end on an LF, which is checked before it is fed.
std::vector<std::string> Comparable(std::vector<std::string> events, bool failed) {
  if (failed && !events.empty() && events.back() == "begin") events.pop_back();
  return events;
}

// One completed message, kept for re-encoding.
struct Message {
  Http1Head head;
  std::string body;
  HeaderList trailers;
};

class Collector : public Http1Handler {
 public:
  Action OnHead(const Http1Head& head) override {
    current_ = Message{head, {}, {}};
    return Action::kContinue;
  }
  Action OnBody(std::string_view data) override {
    current_.body.append(data);
    return Action::kContinue;
  }
  void OnTrailers(const HeaderList& t) override { current_.trailers = t; }
  Action OnMessageComplete() override {
    messages.push_back(std::move(current_));
    return Action::kContinue;
  }
  std::vector<Message> messages;

 private:
  Message current_;
};

// End-to-end fields: what survives a proxy hop.
HeaderList EndToEnd(const HeaderList& h) {
  HeaderList out = h;
  RemoveHopByHopHeaders(out);
  out.Remove("content-length");
  return out;
}

std::string Compare(const Message& a, const Message& b) {
  std::string diff;
  auto field = [&](const char* name, bool same) {
    if (!same) diff += std::string(name) + " differs; ";
  };
  field("method", a.head.method == b.head.method);
  field("target", a.head.target == b.head.target);
  field("status", a.head.status_code == b.head.status_code);
  field("reason", a.head.reason == b.head.reason);
  field("framing", a.head.framing == b.head.framing);
  field("content_length",
        a.head.framing != Http1Framing::kContentLength || a.head.content_length == b.head.content_length);
  field("keep_alive", a.head.keep_alive == b.head.keep_alive);
  field("headers", EndToEnd(a.head.headers) == EndToEnd(b.head.headers));
  field("body", a.body == b.body);
  field("trailers", a.trailers == b.trailers);
  return diff.empty()
             ? diff
             : diff + "\nfirst:  " + h1test::Describe(a.head) + "\nsecond: " + h1test::Describe(b.head);
}

void CheckReencoding(const Message& m, bool response, const std::string& method) {
  if (m.head.version_minor != 1) return;  // we always write HTTP/1.1; 1.0 framing rules differ
  Http1EncodeOptions o;
  o.framing = m.head.framing;
  o.content_length = m.head.content_length;
  o.connection_close = !m.head.keep_alive;
  absl::StatusOr<std::string> head =
      response ? EncodeResponseHead(m.head.status_code, m.head.reason, m.head.headers, o)
               : EncodeRequestHead(m.head.method, m.head.target, m.head.headers, o);
  if (!head.ok()) return;  // the encoder may be stricter than what it was given; never looser
  std::string wire = *head;
  if (m.head.framing == Http1Framing::kChunked) {
    AppendChunk(m.body, &wire);
    Check(AppendLastChunk(m.trailers, &wire).ok(), "parsed trailers not encodable");
  } else {
    wire += m.body;
  }
  Collector again;
  Http1Parser parser(response ? Http1Parser::Type::kResponse : Http1Parser::Type::kRequest, &again);
  parser.ExpectResponseTo(method);
  Http1FeedResult r = parser.Feed(wire);
  if (r.status == Http1FeedStatus::kOk && m.head.framing == Http1Framing::kUntilClose) parser.Finish();
  Check(r.status != Http1FeedStatus::kError && again.messages.size() == 1,
        "re-encoded message does not parse", parser.error().detail + "\n" + wire);
  Check(r.consumed == wire.size(), "re-encoded message leaves bytes over", wire);
  std::string diff = Compare(m, again.messages[0]);
  Check(diff.empty(), "re-encoded message parses differently", diff + "\n" + wire);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool response = data[0] & 1;
  static const char* kMethods[] = {"GET", "HEAD", "CONNECT", "POST"};
  const std::string method = kMethods[(data[0] >> 1) & 3];
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);

  h1test::RunOptions opts;
  opts.type = response ? Http1Parser::Type::kResponse : Http1Parser::Type::kRequest;
  opts.response_to.assign(8, method);
  // Small limits so the fuzzer reaches them.
  opts.limits.max_header_bytes = 512;
  opts.limits.max_headers = 8;
  opts.limits.max_request_line_bytes = 256;
  opts.limits.max_trailer_bytes = 128;
  opts.limits.max_trailers = 4;
  opts.limits.max_chunk_extension_bytes = 32;
  const h1test::RunResult whole = h1test::RunWhole(in, opts);

  std::vector<std::vector<size_t>> splits;
  if (in.size() <= 4096) {
    std::vector<size_t> every;
    for (size_t i = 1; i < in.size(); ++i) every.push_back(i);
    splits.push_back(std::move(every));
  }
  std::mt19937_64 rng(std::hash<std::string_view>{}(in));
  for (int k = 0; k < 3 && in.size() > 1; ++k) {
    std::vector<size_t> cuts;
    std::uniform_int_distribution<size_t> step(1, k == 0 ? 3 : in.size());
    for (size_t off = step(rng); off < in.size(); off += step(rng)) cuts.push_back(off);
    splits.push_back(std::move(cuts));
  }
  for (size_t i = 0; i <= splits.size(); ++i) {
    h1test::RunOptions o = opts;
    o.pause_everywhere = i == splits.size();
    const h1test::RunResult split = h1test::RunPieces(in,
                                                      i < splits.size() ? splits[i]
                                                      : splits.empty()  ? std::vector<size_t>{}
                                                                        : splits[0],
                                                      o);
    const bool failed = whole.status == Http1FeedStatus::kError;
    Check(Comparable(split.events, failed) == Comparable(whole.events, failed),
          "split parse gives other events",
          "whole:\n" + Join(whole.events) + "split:\n" + Join(split.events));
    Check((split.status == Http1FeedStatus::kError) == failed, "split parse ends otherwise",
          whole.error.detail + " | " + split.error.detail);
    if (!failed)
      Check(split.status == whole.status && split.consumed == whole.consumed, "split parse stops elsewhere");
  }

  // Re-encode every completed message.
  Collector collector;
  Http1Parser parser(opts.type, &collector, opts.limits);
  for (int i = 0; i < 8; ++i) parser.ExpectResponseTo(method);
  Http1FeedResult r = parser.Feed(in);
  if (r.status == Http1FeedStatus::kOk) parser.Finish();
  for (const Message& m : collector.messages) CheckReencoding(m, response, method);
  return 0;
}
