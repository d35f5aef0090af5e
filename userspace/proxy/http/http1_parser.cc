#include "userspace/proxy/http/http1_parser.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace ringmesh::proxy::http {
namespace {

constexpr uint64_t kUntilClose = std::numeric_limits<uint64_t>::max();
// The request line around method and target: two SP and "HTTP/1.1".
constexpr size_t kRequestLineOverhead = 10;

Http1Parser* Self(llhttp_t* p) { return static_cast<Http1Parser*>(p->data); }

}  // namespace

// Trampolines from llhttp's C callbacks into the parser.
struct Http1Callbacks {
  static int MessageBegin(llhttp_t* p) { return Self(p)->OnMessageBegin(); }
  static int Method(llhttp_t* p, const char* at, size_t n) { return Self(p)->OnMethod({at, n}); }
  static int Url(llhttp_t* p, const char* at, size_t n) { return Self(p)->OnUrl({at, n}); }
  static int Status(llhttp_t* p, const char* at, size_t n) { return Self(p)->OnStatus({at, n}); }
  static int Field(llhttp_t* p, const char* at, size_t n) { return Self(p)->OnHeaderField({at, n}); }
  static int Value(llhttp_t* p, const char* at, size_t n) { return Self(p)->OnHeaderValue({at, n}); }
  static int ValueComplete(llhttp_t* p) { return Self(p)->OnHeaderValueComplete(); }
  static int HeadersComplete(llhttp_t* p) { return Self(p)->OnHeadersComplete(); }
  static int Body(llhttp_t* p, const char* at, size_t n) { return Self(p)->OnBody({at, n}); }
  static int ChunkHeader(llhttp_t* p) { return Self(p)->OnChunkHeader(); }
  static int ChunkExtension(llhttp_t* p, const char* at, size_t n) {
    return Self(p)->OnChunkExtension({at, n});
  }
  static int MessageComplete(llhttp_t* p) { return Self(p)->OnMessageComplete(); }

  static const llhttp_settings_t* Get() {
    static const llhttp_settings_t settings = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);
      s.on_message_begin = MessageBegin;
      s.on_method = Method;
      s.on_url = Url;
      s.on_status = Status;
      s.on_header_field = Field;
      s.on_header_value = Value;
      s.on_header_value_complete = ValueComplete;
      s.on_headers_complete = HeadersComplete;
      s.on_body = Body;
      s.on_chunk_header = ChunkHeader;
      s.on_chunk_extension_name = ChunkExtension;
      s.on_chunk_extension_value = ChunkExtension;
      s.on_message_complete = MessageComplete;
      return s;
    }();
    return &settings;
  }
};

int Http1Error::HttpStatus() const {
  if (kind == Http1ErrorKind::kNone) return 0;
  if (upstream) return 502;
  switch (kind) {
    case Http1ErrorKind::kNone:
    case Http1ErrorKind::kBadMessage:
      return 400;
    case Http1ErrorKind::kUriTooLong:
      return 414;
    case Http1ErrorKind::kHeadersTooLarge:
      return 431;
    case Http1ErrorKind::kNotImplemented:
      return 501;
    case Http1ErrorKind::kVersionNotSupported:
      return 505;
  }
  return 400;
}

std::string_view ToString(Http1ErrorKind kind) {
  switch (kind) {
    case Http1ErrorKind::kNone:
      return "none";
    case Http1ErrorKind::kBadMessage:
      return "bad_message";
    case Http1ErrorKind::kUriTooLong:
      return "uri_too_long";
    case Http1ErrorKind::kHeadersTooLarge:
      return "headers_too_large";
    case Http1ErrorKind::kNotImplemented:
      return "not_implemented";
    case Http1ErrorKind::kVersionNotSupported:
      return "version_not_supported";
  }
  return "unknown";
}

Http1Parser::Http1Parser(Type type, Http1Handler* handler, const Http1Limits& limits)
    : type_(type), handler_(handler), limits_(limits) {
  // Every lenient flag stays at llhttp's default: off.
  llhttp_init(&parser_, type == Type::kRequest ? HTTP_REQUEST : HTTP_RESPONSE, Http1Callbacks::Get());
  parser_.data = this;
}

Http1FeedResult Http1Parser::Feed(std::string_view data) {
  switch (state_) {
    case State::kRunning:
      break;
    case State::kPaused:
      return {0, Http1FeedStatus::kPaused};
    case State::kUpgraded:
      return {0, Http1FeedStatus::kUpgrade};
    case State::kClosed:
      return {0, Http1FeedStatus::kClosed};
    case State::kError:
      return {0, Http1FeedStatus::kError};
  }
  // llhttp needs a valid pointer even for no bytes; an empty execute still
  // delivers an event left pending by a pause.
  static constexpr char kNoBytes[1] = {0};
  size_t pos = 0;
  do {
    const char* base = data.empty() ? kNoBytes : data.data() + pos;
    size_t n = data.size() - pos;
    const bool body_data = data_remaining_ > 0;
    if (body_data) {
      n = static_cast<size_t>(std::min<uint64_t>(n, data_remaining_));
    } else if (n > 0 && !ScanLine(data.substr(pos), n)) {
      return {pos, Http1FeedStatus::kError};
    }
    llhttp_errno_t err = llhttp_execute(&parser_, base, n);
    if (err == HPE_OK) {
      // After body data, the next byte starts a line (a chunk's CRLF or the next message).
      if (n > 0) prev_byte_ = body_data ? '\n' : base[n - 1];
      pos += n;
      continue;
    }
    const size_t used = static_cast<size_t>(llhttp_get_error_pos(&parser_) - base);
    if (used > 0 && !body_data) prev_byte_ = base[used - 1];
    if (used > 0 && body_data) prev_byte_ = '\n';
    if (err == HPE_PAUSED) {
      state_ = closing_ ? State::kClosed : State::kPaused;
      return {pos + used, closing_ ? Http1FeedStatus::kClosed : Http1FeedStatus::kPaused};
    }
    if (err == HPE_PAUSED_UPGRADE) {
      state_ = State::kUpgraded;
      return {pos + used, Http1FeedStatus::kUpgrade};
    }
    if (error_.kind != Http1ErrorKind::kNone) {
      state_ = State::kError;
      return {pos + used, Http1FeedStatus::kError};
    }
    const char* reason = llhttp_get_error_reason(&parser_);
    // Everything llhttp itself rejects is a malformed message; the finer kinds
    // (limits, versions, codings) are decided in our callbacks.
    return SetError(Http1ErrorKind::kBadMessage,
                    std::string(llhttp_errno_name(err)) + ": " + (reason ? reason : ""), pos + used);
  } while (pos < data.size());
  return {data.size(), Http1FeedStatus::kOk};
}

void Http1Parser::Resume() {
  if (state_ != State::kPaused) return;
  llhttp_resume(&parser_);
  state_ = State::kRunning;
}

void Http1Parser::ResumeAfterRefusedUpgrade() {
  if (state_ != State::kUpgraded || type_ != Type::kRequest) return;
  llhttp_resume_after_upgrade(&parser_);
  state_ = State::kRunning;
}

Http1FeedStatus Http1Parser::Finish() {
  switch (state_) {
    case State::kError:
      return Http1FeedStatus::kError;
    case State::kUpgraded:
    case State::kClosed:
      return Http1FeedStatus::kOk;
    case State::kPaused:
      llhttp_resume(&parser_);
      state_ = State::kRunning;
      break;
    case State::kRunning:
      break;
  }
  llhttp_errno_t err = llhttp_finish(&parser_);
  if (err == HPE_OK || err == HPE_PAUSED) {
    state_ = State::kClosed;
    return Http1FeedStatus::kOk;
  }
  if (error_.kind == Http1ErrorKind::kNone)
    SetError(Http1ErrorKind::kBadMessage, "connection closed mid-message", 0);
  state_ = State::kError;
  return Http1FeedStatus::kError;
}

void Http1Parser::ExpectResponseTo(std::string_view method) { response_to_.emplace_back(method); }

bool Http1Parser::ScanLine(std::string_view data, size_t& n) {
  // llhttp (8.x, even in strict mode) accepts a bare LF ending the start
  // line, the empty line and the last chunk, and passes obs-fold through as
  // one value. One parser accepting what the next one splits differently is
  // what smuggling is made of, so lines are checked here before llhttp
  // sees them, and llhttp gets at most one line at a time.
  char prev = prev_byte_;
  for (size_t i = 0; i < data.size(); ++i) {
    const char c = data[i];
    if (prev == '\r' && c != '\n') {
      SetError(Http1ErrorKind::kBadMessage, "bare CR", 0);
      return false;
    }
    if (c == '\n') {
      if (prev != '\r') {
        SetError(Http1ErrorKind::kBadMessage, "bare LF", 0);
        return false;
      }
      n = i + 1;
      return true;
    }
    // No line of a head, chunk size or trailer may start with whitespace:
    // that is obs-fold (RFC 9112 §5.2) or a field hidden from the parser.
    if (prev == '\n' && (c == ' ' || c == '\t')) {
      SetError(Http1ErrorKind::kBadMessage, "obs-fold or line starting with whitespace", 0);
      return false;
    }
    prev = c;
  }
  n = data.size();
  return true;
}

int Http1Parser::Fail(Http1ErrorKind kind, std::string detail) {
  if (error_.kind == Http1ErrorKind::kNone) {
    error_.kind = kind;
    error_.detail = std::move(detail);
    error_.upstream = type_ == Type::kResponse;
  }
  return HPE_USER;
}

Http1FeedResult Http1Parser::SetError(Http1ErrorKind kind, std::string detail, size_t consumed) {
  Fail(kind, std::move(detail));
  state_ = State::kError;
  return {consumed, Http1FeedStatus::kError};
}

int Http1Parser::OnMessageBegin() {
  phase_ = Phase::kHead;
  head_ = Http1Head{};
  head_.is_request = type_ == Type::kRequest;
  trailers_.Clear();
  field_name_.clear();
  field_value_.clear();
  chunk_extension_bytes_ = 0;
  data_remaining_ = 0;
  pause_after_complete_ = false;
  return handler_->OnMessageBegin() == Http1Handler::Action::kPause ? HPE_PAUSED : 0;
}

int Http1Parser::OnMethod(std::string_view s) {
  head_.method.append(s);
  if (head_.method.size() + head_.target.size() + kRequestLineOverhead > limits_.max_request_line_bytes) {
    return Fail(Http1ErrorKind::kUriTooLong, "request line too long");
  }
  return 0;
}

int Http1Parser::OnUrl(std::string_view s) {
  head_.target.append(s);
  if (head_.method.size() + head_.target.size() + kRequestLineOverhead > limits_.max_request_line_bytes) {
    return Fail(Http1ErrorKind::kUriTooLong, "request line too long");
  }
  return 0;
}

int Http1Parser::OnStatus(std::string_view s) {
  head_.reason.append(s);
  if (head_.reason.size() > limits_.max_reason_bytes)
    return Fail(Http1ErrorKind::kBadMessage, "reason too long");
  return 0;
}

int Http1Parser::OnHeaderField(std::string_view s) {
  field_name_.append(s);
  return CheckFieldBytes();
}

int Http1Parser::OnHeaderValue(std::string_view s) {
  field_value_.append(s);
  return CheckFieldBytes();
}

int Http1Parser::CheckFieldBytes() {
  const bool trailer = phase_ != Phase::kHead;
  const HeaderList& list = trailer ? trailers_ : head_.headers;
  const size_t max = trailer ? limits_.max_trailer_bytes : limits_.max_header_bytes;
  if (list.bytes() + field_name_.size() + field_value_.size() > max) {
    return Fail(Http1ErrorKind::kHeadersTooLarge, trailer ? "trailers too large" : "headers too large");
  }
  return 0;
}

int Http1Parser::OnHeaderValueComplete() {
  const bool trailer = phase_ != Phase::kHead;
  HeaderList& list = trailer ? trailers_ : head_.headers;
  std::string_view value = TrimOws(field_value_);
  // llhttp lets a space before the colon and an empty name through.
  if (!IsValidHeaderName(field_name_)) return Fail(Http1ErrorKind::kBadMessage, "invalid field name");
  if (!IsValidHeaderValue(value)) return Fail(Http1ErrorKind::kBadMessage, "invalid field value");
  if (list.size() + 1 > (trailer ? limits_.max_trailers : limits_.max_headers)) {
    return Fail(Http1ErrorKind::kHeadersTooLarge, trailer ? "too many trailers" : "too many headers");
  }
  // Framing and routing fields in trailers would be a second, late head
  // for whoever merges trailers into headers (RFC 9110 §6.5.1).
  if (trailer &&
      (EqualsIgnoreCase(field_name_, "content-length") ||
       EqualsIgnoreCase(field_name_, "transfer-encoding") || EqualsIgnoreCase(field_name_, "host"))) {
    return Fail(Http1ErrorKind::kBadMessage, "framing field in trailers");
  }
  list.Add(field_name_, value);
  field_name_.clear();
  field_value_.clear();
  return 0;
}

bool Http1Parser::ValidateHead() {
  const HeaderList& h = head_.headers;
  if (parser_.http_major != 1 || parser_.http_minor > 1) {
    Fail(Http1ErrorKind::kVersionNotSupported, "HTTP version not supported");
    return false;
  }
  head_.version_minor = parser_.http_minor;
  const size_t content_lengths = h.Count("content-length");
  const std::vector<std::string_view> te = h.GetAll("transfer-encoding");
  if (content_lengths > 1) {
    Fail(Http1ErrorKind::kBadMessage, "several Content-Length fields");
    return false;
  }
  if (content_lengths > 0 && !te.empty()) {
    Fail(Http1ErrorKind::kBadMessage, "Content-Length with Transfer-Encoding");
    return false;
  }
  if (!te.empty()) {
    if (head_.version_minor == 0) {
      Fail(Http1ErrorKind::kBadMessage, "Transfer-Encoding in HTTP/1.0");
      return false;
    }
    if (te.size() != 1 || !EqualsIgnoreCase(te[0], "chunked")) {
      Fail(Http1ErrorKind::kNotImplemented, "transfer coding other than chunked");
      return false;
    }
  }
  if (head_.is_request) {
    const size_t hosts = h.Count("host");
    if (hosts > 1 || (hosts == 0 && head_.version_minor == 1)) {
      Fail(Http1ErrorKind::kBadMessage, "HTTP/1.1 request needs exactly one Host");
      return false;
    }
    std::optional<std::string_view> expect = h.Get("expect");
    head_.expect_continue = expect && EqualsIgnoreCase(*expect, "100-continue");
  }
  if (!te.empty()) {
    head_.framing = Http1Framing::kChunked;
  } else if (content_lengths > 0) {
    head_.framing = Http1Framing::kContentLength;
    head_.content_length = parser_.content_length;
  }
  return true;
}

int Http1Parser::DecideResponseBody() {
  head_.status_code = parser_.status_code;
  std::string method = "GET";
  const bool final_response = head_.status_code >= 200 || head_.status_code == 101;
  if (final_response && !response_to_.empty()) {
    method = std::move(response_to_.front());
    response_to_.pop_front();
  }
  if (!final_response) {
    head_.interim = true;
    head_.framing = Http1Framing::kNone;
    return 1;
  }
  const bool tunnel = head_.status_code == 101 ||
                      (method == "CONNECT" && head_.status_code >= 200 && head_.status_code < 300);
  if (tunnel) {
    head_.upgrade = true;
    head_.keep_alive = false;  // the connection never returns to HTTP/1
    head_.framing = Http1Framing::kNone;
    return 2;
  }
  if (method == "HEAD" || head_.status_code == 204 || head_.status_code == 304) {
    // The head may still carry Content-Length (the size a GET would have).
    head_.framing = Http1Framing::kNone;
    return 1;
  }
  if (head_.framing == Http1Framing::kNone && !head_.headers.Has("content-length")) {
    head_.framing = Http1Framing::kUntilClose;
    head_.keep_alive = false;
  }
  return 0;
}

int Http1Parser::OnHeadersComplete() {
  if (!ValidateHead()) return -1;
  // HTTP-level persistence (RFC 9112 §9.3); llhttp_should_keep_alive would
  // also say "no" for a bodiless response it cannot know is bodiless (HEAD).
  head_.keep_alive = parser_.http_minor == 1 ? (parser_.flags & F_CONNECTION_CLOSE) == 0
                                             : (parser_.flags & F_CONNECTION_KEEP_ALIVE) != 0;
  int ret = 0;
  if (head_.is_request) {
    head_.upgrade = parser_.upgrade != 0;
    if (head_.is_connect()) head_.framing = Http1Framing::kNone;
  } else {
    ret = DecideResponseBody();
  }
  if (ret == 0) {
    if (head_.framing == Http1Framing::kContentLength) data_remaining_ = head_.content_length;
    if (head_.framing == Http1Framing::kUntilClose) data_remaining_ = kUntilClose;
  }
  phase_ = Phase::kBody;
  if (handler_->OnHead(head_) == Http1Handler::Action::kPause) {
    // llhttp cannot both skip a body (1) or switch protocol (2) and pause;
    // a message without a body completes right away, so pause there.
    if (ret == 0) return HPE_PAUSED;
    pause_after_complete_ = true;
  }
  return ret;
}

int Http1Parser::OnBody(std::string_view s) {
  // llhttp closes an open span with zero bytes when resumed by an empty
  // Feed; that is no event (and pausing on it again would never progress).
  if (s.empty()) return 0;
  if (data_remaining_ != kUntilClose) data_remaining_ -= std::min<uint64_t>(data_remaining_, s.size());
  return handler_->OnBody(s) == Http1Handler::Action::kPause ? HPE_PAUSED : 0;
}

int Http1Parser::OnChunkHeader() {
  chunk_extension_bytes_ = 0;
  data_remaining_ = parser_.content_length;
  if (parser_.content_length == 0) phase_ = Phase::kTrailers;
  return 0;
}

int Http1Parser::OnChunkExtension(std::string_view s) {
  chunk_extension_bytes_ += s.size();
  if (chunk_extension_bytes_ > limits_.max_chunk_extension_bytes) {
    return Fail(Http1ErrorKind::kBadMessage, "chunk extensions too long");
  }
  return 0;
}

int Http1Parser::OnMessageComplete() {
  if (!trailers_.empty()) handler_->OnTrailers(trailers_);
  phase_ = Phase::kIdle;
  data_remaining_ = 0;
  const bool pause = handler_->OnMessageComplete() == Http1Handler::Action::kPause || pause_after_complete_;
  pause_after_complete_ = false;
  // Loose llhttp would skip what follows a last message silently; stop
  // instead, so the caller sees where the connection's last message ended.
  if (!head_.keep_alive && !head_.interim && !head_.upgrade) {
    closing_ = true;
    return HPE_PAUSED;
  }
  return pause ? HPE_PAUSED : 0;
}

}  // namespace ringmesh::proxy::http
