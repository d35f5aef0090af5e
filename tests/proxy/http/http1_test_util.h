// Test helpers for the HTTP/1 codec: a handler that records events as text
// (so runs compare with ==) and a driver that feeds input in given pieces,
// resuming after every pause.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "userspace/proxy/http/http1_parser.h"

namespace ringmesh::proxy::http::h1test {

inline std::string FramingName(Http1Framing f) {
  switch (f) {
    case Http1Framing::kNone:
      return "none";
    case Http1Framing::kContentLength:
      return "cl";
    case Http1Framing::kChunked:
      return "chunked";
    case Http1Framing::kUntilClose:
      return "close";
  }
  return "?";
}

inline std::string Describe(const HeaderList& h) {
  std::string s = "[";
  for (const Header& f : h) s += f.name + "=" + f.value + ";";
  return s + "]";
}

inline std::string Describe(const Http1Head& h) {
  std::string s = h.is_request ? "req " + h.method + " " + h.target
                               : "resp " + std::to_string(h.status_code) + " " + h.reason;
  s += " 1." + std::to_string(h.version_minor) + " " + FramingName(h.framing);
  if (h.framing == Http1Framing::kContentLength) s += ":" + std::to_string(h.content_length);
  s += h.keep_alive ? " ka" : " close";
  if (h.upgrade) s += " upgrade";
  if (h.expect_continue) s += " expect100";
  if (h.interim) s += " interim";
  return s + " " + Describe(h.headers);
}

class Recorder : public Http1Handler {
 public:
  explicit Recorder(bool pause_everywhere = false) : pause_(pause_everywhere) {}
  Action OnMessageBegin() override {
    events.push_back("begin");
    return Act();
  }
  Action OnHead(const Http1Head& head) override {
    events.push_back("head " + Describe(head));
    heads.push_back(head);
    return Act();
  }
  Action OnBody(std::string_view data) override {
    // Split input splits body spans; merge them so runs compare equal.
    if (!events.empty() && events.back().rfind("body ", 0) == 0) {
      events.back().append(data);
    } else {
      events.push_back("body " + std::string(data));
    }
    body_bytes += data.size();
    return Act();
  }
  void OnTrailers(const HeaderList& trailers) override { events.push_back("trailers " + Describe(trailers)); }
  Action OnMessageComplete() override {
    events.push_back("complete");
    ++completed;
    return Act();
  }

  std::vector<std::string> events;
  std::vector<Http1Head> heads;
  size_t body_bytes = 0;
  int completed = 0;

 private:
  Action Act() { return pause_ ? Action::kPause : Action::kContinue; }
  bool pause_;
};

struct RunResult {
  std::vector<std::string> events;
  Http1FeedStatus status = Http1FeedStatus::kOk;  // the last non-pause status
  size_t consumed = 0;                            // bytes of the whole input consumed
  Http1Error error;
  int completed = 0;
  size_t body_bytes = 0;
  int pauses = 0;
};

struct RunOptions {
  Http1Parser::Type type = Http1Parser::Type::kRequest;
  Http1Limits limits;
  std::vector<std::string> response_to;  // ExpectResponseTo, in order
  bool pause_everywhere = false;
  bool finish = false;  // call Finish() after the last piece
};

// Feeds `input` cut at `cuts` (ascending offsets), stopping at kUpgrade,
// kClosed or kError.
inline RunResult RunPieces(std::string_view input, const std::vector<size_t>& cuts,
                           const RunOptions& o = {}) {
  Recorder rec(o.pause_everywhere);
  Http1Parser parser(o.type, &rec, o.limits);
  for (const std::string& m : o.response_to) parser.ExpectResponseTo(m);
  RunResult out;
  size_t start = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(input.size());
  bool stopped = false;
  for (size_t end : ends) {
    std::string piece(input.substr(start, end - start));  // own copy: ASan sees overreads
    size_t off = 0;
    while (!stopped) {
      Http1FeedResult r = parser.Feed(std::string_view(piece).substr(off));
      off += r.consumed;
      out.consumed = start + off;
      if (r.status == Http1FeedStatus::kPaused) {
        ++out.pauses;
        parser.Resume();
        continue;
      }
      out.status = r.status;
      if (r.status != Http1FeedStatus::kOk) stopped = true;
      break;
    }
    if (stopped) break;
    start = end;
  }
  out.events = rec.events;
  if (!stopped && o.finish) {
    Http1FeedStatus f = parser.Finish();
    out.events = rec.events;  // Finish may complete an until-close body
    out.events.push_back(f == Http1FeedStatus::kOk ? "finish ok" : "finish error");
    if (f == Http1FeedStatus::kError) out.status = f;
  }
  out.error = parser.error();
  out.completed = rec.completed;
  out.body_bytes = rec.body_bytes;
  return out;
}

inline RunResult RunWhole(std::string_view input, const RunOptions& o = {}) {
  return RunPieces(input, {}, o);
}

}  // namespace ringmesh::proxy::http::h1test
