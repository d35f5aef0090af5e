// HTTP/1.1 message parser (requests or responses) on llhttp, strict enough
// to sit in front of other HTTP implementations without request smuggling:
// one framing per message or a rejection, never a guess.
//
// Bytes in, events out; no socket, no buffering of bodies. Body data is
// handed out as views into the caller's input (zero-copy). Heads are copied
// into a bounded Http1Head.
//
//   class Session : public Http1Handler { ... };
//   Http1Parser parser(Http1Parser::Type::kRequest, &session);
//   Http1FeedResult r = parser.Feed(bytes);
//   switch (r.status) {
//     case Http1FeedStatus::kOk:      break;  // all consumed, feed more later
//     case Http1FeedStatus::kPaused:  // the handler asked; later:
//       parser.Resume(); parser.Feed(bytes.substr(r.consumed)); break;
//     case Http1FeedStatus::kUpgrade: // CONNECT / Upgrade: bytes.substr(r.consumed) belong
//                                     // to the tunnel once the upstream agrees
//     case Http1FeedStatus::kClosed:  // last message of the connection
//     case Http1FeedStatus::kError:   // reply parser.error().HttpStatus(), close
//   }
//
// Strictness (beyond llhttp, which runs with every lenient flag off):
//  - bare LF and bare CR anywhere outside body data, obs-fold, whitespace
//    before the colon, empty or non-token names, CTL/NUL in values: 400;
//  - Content-Length with Transfer-Encoding, or several Content-Length
//    fields even when identical (llhttp rejects duplicates; we do not merge
//    them): 400;
//  - Transfer-Encoding other than exactly one "chunked": 501 (400 where
//    llhttp already finds the list malformed, e.g. "chunked, identity");
//    Transfer-Encoding in an HTTP/1.0 message: 400 (RFC 9112 §6.1);
//  - HTTP/1.1 requests need exactly one Host (RFC 9112 §3.2);
//  - only HTTP/1.0 and HTTP/1.1: anything else 505;
//  - chunk sizes (overflow, non-hex, whitespace) and chunk extensions
//    (bytes bounded by Http1Limits) are checked;
//  - after a message that does not keep the connection alive, nothing more
//    is parsed (kClosed): bytes after "Connection: close" are never a
//    second request.
// Response parsers report every error as an upstream protocol error (502).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "llhttp.h"
#include "userspace/proxy/http/headers.h"

namespace ringmesh::proxy::http {

// Defaults follow common servers (nginx, Envoy): 60 KiB / 100 header fields.
struct Http1Limits {
  // method + SP + target + SP + "HTTP/1.1": the request line without CRLF.
  size_t max_request_line_bytes = 8 * 1024;
  size_t max_reason_bytes = 1024;
  // Both counted as in HeaderList::bytes(): name + value lengths.
  size_t max_header_bytes = 60 * 1024;
  size_t max_headers = 100;
  size_t max_trailer_bytes = 16 * 1024;
  size_t max_trailers = 100;
  // Per chunk: extension names + values.
  size_t max_chunk_extension_bytes = 1024;
};

enum class Http1Framing {
  kNone,           // no body
  kContentLength,  // exactly content_length bytes
  kChunked,
  kUntilClose,  // responses only: the body ends when the connection does
};

enum class Http1ErrorKind {
  kNone,
  kBadMessage,           // 400
  kUriTooLong,           // 414
  kHeadersTooLarge,      // 431 (header or trailer limits)
  kNotImplemented,       // 501: a transfer coding we do not forward
  kVersionNotSupported,  // 505
};

struct Http1Error {
  Http1ErrorKind kind = Http1ErrorKind::kNone;
  bool upstream = false;  // from a response parser
  std::string detail;
  // The status to answer with: the kind's status for a request, 502 for
  // anything an upstream sent.
  int HttpStatus() const;
};

struct Http1Head {
  bool is_request = true;
  std::string method;  // requests
  std::string target;
  int status_code = 0;  // responses
  std::string reason;
  int version_minor = 1;  // HTTP/1.x
  HeaderList headers;
  Http1Framing framing = Http1Framing::kNone;
  uint64_t content_length = 0;  // kContentLength
  bool keep_alive = true;
  // The connection switches protocol after this message: an Upgrade or
  // CONNECT request (the switch happens only if the upstream agrees), a 101
  // response, or a 2xx response to CONNECT.
  bool upgrade = false;
  bool expect_continue = false;  // "Expect: 100-continue"
  bool interim = false;          // 1xx other than 101; the final response follows

  bool is_connect() const { return method == "CONNECT"; }
};

// Events of one parser. Returning kPause stops Feed() right after the
// event (Http1FeedStatus::kPaused); call Resume() and feed the rest.
class Http1Handler {
 public:
  enum class Action { kContinue, kPause };
  virtual ~Http1Handler() = default;
  virtual Action OnMessageBegin() { return Action::kContinue; }
  virtual Action OnHead(const Http1Head& head) = 0;
  // A view into the bytes given to Feed(); valid during the call only.
  virtual Action OnBody(std::string_view data) = 0;
  // Chunked messages with a non-empty trailer section, before completion.
  virtual void OnTrailers(const HeaderList& trailers) { (void)trailers; }
  virtual Action OnMessageComplete() = 0;
};

enum class Http1FeedStatus {
  kOk,       // everything consumed; feed more when it arrives
  kPaused,   // the handler paused; Resume() then feed the unconsumed rest
  kUpgrade,  // the message ended and the protocol switches: the unconsumed rest is not HTTP/1
  kClosed,   // the message ended and was the connection's last; the rest is ignored
  kError,    // see error(); the parser stays in this state
};

struct Http1FeedResult {
  size_t consumed = 0;
  Http1FeedStatus status = Http1FeedStatus::kOk;
};

class Http1Parser {
 public:
  enum class Type { kRequest, kResponse };

  // `handler` must outlive the parser.
  Http1Parser(Type type, Http1Handler* handler, const Http1Limits& limits = {});
  Http1Parser(const Http1Parser&) = delete;
  Http1Parser& operator=(const Http1Parser&) = delete;

  // Parses as much of `data` as it can. Empty input is allowed (after
  // Resume() it delivers events that were pending).
  Http1FeedResult Feed(std::string_view data);
  void Resume();
  // The peer closed its side. kOk if that ends the stream cleanly (between
  // messages, or the end of an until-close body, which completes here);
  // kError if a message was cut short.
  Http1FeedStatus Finish();

  // Response parsers: the method of the request the next response answers
  // (HEAD has no body, 2xx to CONNECT opens a tunnel). One per request sent,
  // in order; a response without one is taken to answer a GET. The queue
  // holds one entry per request in flight: the session bounds pipelining.
  void ExpectResponseTo(std::string_view method);

  // After kUpgrade on a request whose upgrade the upstream refused: parse
  // the following bytes as HTTP/1 again.
  void ResumeAfterRefusedUpgrade();

  const Http1Error& error() const { return error_; }
  // The current (or last) message's head.
  const Http1Head& head() const { return head_; }

 private:
  enum class State { kRunning, kPaused, kUpgraded, kClosed, kError };
  enum class Phase { kIdle, kHead, kBody, kTrailers };

  // llhttp callbacks, one static trampoline per event (see .cc).
  friend struct Http1Callbacks;
  int OnMessageBegin();
  int OnMethod(std::string_view s);
  int OnUrl(std::string_view s);
  int OnStatus(std::string_view s);
  int OnHeaderField(std::string_view s);
  int OnHeaderValue(std::string_view s);
  int OnHeaderValueComplete();
  int CheckFieldBytes();
  int OnHeadersComplete();
  int OnBody(std::string_view s);
  int OnChunkHeader();
  int OnChunkExtension(std::string_view s);
  int OnMessageComplete();

  // Records our own error; returns the llhttp code that stops parsing.
  int Fail(Http1ErrorKind kind, std::string detail);
  Http1FeedResult SetError(Http1ErrorKind kind, std::string detail, size_t consumed);
  // Checks line endings and obs-fold of bytes outside body data, up to and
  // including the first LF; returns how many bytes to hand to llhttp.
  bool ScanLine(std::string_view data, size_t& n);
  bool ValidateHead();
  int DecideResponseBody();

  const Type type_;
  Http1Handler* const handler_;
  const Http1Limits limits_;
  llhttp_t parser_;
  State state_ = State::kRunning;
  Phase phase_ = Phase::kIdle;
  Http1Error error_;
  Http1Head head_;
  HeaderList trailers_;
  std::string field_name_;
  std::string field_value_;
  std::deque<std::string> response_to_;
  // Body bytes llhttp must consume before the next line (known from
  // Content-Length and chunk sizes), so lines are checked apart from data.
  uint64_t data_remaining_ = 0;
  char prev_byte_ = '\n';  // the byte before the next one fed, for CR/LF checks
  size_t chunk_extension_bytes_ = 0;
  bool closing_ = false;               // paused in OnMessageComplete because the connection ends
  bool pause_after_complete_ = false;  // the handler paused a head without body
};

std::string_view ToString(Http1ErrorKind kind);

}  // namespace ringmesh::proxy::http
