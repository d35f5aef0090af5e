#include "userspace/proxy/http/http2_session.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "userspace/proxy/http/http2_session_internal.h"

namespace ringmesh::proxy::http {

using http2_internal::Nv;
using http2_internal::NvList;

namespace {

constexpr uint32_t kMinStreamWindow = 64 * 1024;
constexpr uint32_t kMaxStreamWindow = 4 * 1024 * 1024;
constexpr uint32_t kMaxWindow = (1u << 31) - 1;
// A peer that was told SETTINGS_MAX_HEADER_LIST_SIZE and still sends a header list this many times
// larger is decompressing a bomb at us, not making a mistake: the connection goes, not the stream.
constexpr size_t kHpackBombFactor = 2;

Http2GuardLimits GuardLimits(const Http2Options& options) {
  Http2GuardLimits limits = options.guard;
  if (limits.max_header_block_bytes == 0)
    limits.max_header_block_bytes = options.max_header_list_size + 16 * 1024;
  return limits;
}

}  // namespace

std::string_view ToString(Http2CloseReason reason) {
  switch (reason) {
    case Http2CloseReason::kNone:
      return "none";
    case Http2CloseReason::kNotHttp2:
      return "not_http2";
    case Http2CloseReason::kProtocolError:
      return "protocol_error";
    case Http2CloseReason::kAbuse:
      return "abuse";
    case Http2CloseReason::kResourceLimit:
      return "resource_limit";
    case Http2CloseReason::kGoawayComplete:
      return "goaway_complete";
  }
  return "unknown";
}

// nghttp2 C callbacks, forwarding to the session (user_data).
struct Http2Session::Callbacks {
  static Http2Session* Self(void* ud) { return static_cast<Http2Session*>(ud); }

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* ud) {
    Http2Session* self = Self(ud);
    int32_t id = frame->hd.stream_id;
    Stream* s = self->FindStream(id);
    if (s == nullptr) {
      if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
      auto owned = std::make_unique<Stream>();
      owned->id = id;
      s = owned.get();
      self->streams_.emplace(id, std::move(owned));
      ++self->stats_.streams_opened_by_peer;
    }
    s->head = Http2Headers{};
    s->head_bytes = 0;
    s->head_too_large = false;
    return 0;
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t, void* ud) {
    Http2Session* self = Self(ud);
    Stream* s = self->FindStream(frame->hd.stream_id);
    if (s == nullptr) return 0;
    // RFC 9113 6.5.2: a field costs its name, value and 32 bytes.
    s->head_bytes += namelen + valuelen + 32;
    const size_t limit = self->options_.max_header_list_size;
    if (s->head_bytes > limit * kHpackBombFactor) {
      self->Fail(Http2CloseReason::kAbuse, NGHTTP2_ENHANCE_YOUR_CALM, &self->stats_.hpack_bomb);
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (s->head_bytes > limit || s->head_too_large) {
      // Keep decoding (HPACK state is connection-wide) but keep nothing.
      s->head_too_large = true;
      s->head.fields.clear();
      return 0;
    }
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    Http2Headers& h = s->head;
    if (n == ":method")
      h.method = v;
    else if (n == ":scheme")
      h.scheme = v;
    else if (n == ":authority")
      h.authority = v;
    else if (n == ":path")
      h.path = v;
    else if (n == ":status")
      (void)absl::SimpleAtoi(absl::string_view(v.data(), v.size()), &h.status);
    else
      h.fields.emplace_back(n, v);
    return 0;
  }

  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* ud) {
    Http2Session* self = Self(ud);
    const int32_t id = frame->hd.stream_id;
    const bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    Stream* s = id != 0 ? self->FindStream(id) : nullptr;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (s == nullptr || s->rejected) break;
        if (s->head_too_large) {
          self->RejectOversizedHead(s);
          break;
        }
        if (s->final_head_seen) {
          self->handler_->OnTrailers(id, s->head);
        } else {
          // 1xx heads are informational; the final one follows.
          if (s->head.status == 0 || s->head.status >= 200) s->final_head_seen = true;
          self->handler_->OnHeaders(id, s->head, end_stream);
        }
        s->head = Http2Headers{};
        if (end_stream) self->handler_->OnStreamEnd(id);
        break;
      case NGHTTP2_DATA:
        if (s != nullptr && !s->rejected && end_stream) self->handler_->OnStreamEnd(id);
        break;
      case NGHTTP2_RST_STREAM:
        ++self->stats_.resets_received;
        if (s != nullptr && !s->rejected && !s->reset_notified) {
          s->reset_notified = true;
          self->handler_->OnStreamReset(id, frame->rst_stream.error_code);
        }
        break;
      case NGHTTP2_GOAWAY:
        self->goaway_received_ = true;
        ++self->stats_.goaway_received;
        self->handler_->OnGoaway(frame->goaway.last_stream_id, frame->goaway.error_code);
        break;
      default:
        break;
    }
    return 0;
  }

  static int OnDataChunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data, size_t len,
                         void* ud) {
    Http2Session* self = Self(ud);
    Stream* s = self->FindStream(id);
    if (s == nullptr || s->rejected) {
      // Nobody will consume these: give the window back now.
      nghttp2_session_consume(session, id, len);
      return 0;
    }
    self->handler_->OnData(id, absl::MakeConstSpan(data, len));
    return 0;
  }

  static int OnStreamClose(nghttp2_session*, int32_t id, uint32_t error_code, void* ud) {
    Http2Session* self = Self(ud);
    auto it = self->streams_.find(id);
    if (it == self->streams_.end()) return 0;
    std::unique_ptr<Stream> s = std::move(it->second);
    self->streams_.erase(it);
    self->send_buffered_total_ -= s->queued();
    if (s->rejected) return 0;
    if (error_code != NGHTTP2_NO_ERROR && !s->reset_notified) self->handler_->OnStreamReset(id, error_code);
    self->handler_->OnStreamClosed(id);
    return 0;
  }

  static int OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* ud) {
    Http2Session* self = Self(ud);
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      Stream* s = self->FindStream(frame->hd.stream_id);
      if (s != nullptr && s->reset_after_end) {
        s->reset_after_end = false;
        self->reset_after_sent_.push_back(s->id);
      }
    } else if (frame->hd.type == NGHTTP2_RST_STREAM) {
      ++self->stats_.resets_sent;
      const bool peer_stream =
          (frame->hd.stream_id % 2 == 1) == nghttp2_session_check_server_session(session);
      if (frame->rst_stream.error_code == NGHTTP2_REFUSED_STREAM && peer_stream) {
        ++self->stats_.streams_refused;
      }
    } else if (frame->hd.type == NGHTTP2_GOAWAY) {
      ++self->stats_.goaway_sent;
      if (self->close_reason_ == Http2CloseReason::kNone && !self->goaway_submitted_) {
        self->ClassifyLibraryGoaway(frame->goaway);
      }
    }
    return 0;
  }

  static ssize_t ReadData(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source*, void* ud) {
    Http2Session* self = Self(ud);
    Stream* s = self->FindStream(id);
    if (s == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const bool was_full = s->queued() >= self->options_.max_stream_send_buffer;
    size_t n = std::min(length, s->queued());
    std::memcpy(buf, s->send.data() + s->send_pos, n);
    s->send_pos += n;
    self->send_buffered_total_ -= n;
    if (s->send_pos == s->send.size()) {
      s->send.clear();
      s->send_pos = 0;
    } else if (s->send_pos > s->send.size() / 2) {
      s->send.erase(0, s->send_pos);
      s->send_pos = 0;
    }
    if (s->want_writable && (was_full || n > 0)) self->writable_.push_back(id);
    if (s->queued() == 0) {
      if (s->end_queued) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (s->trailers_pending) {
          *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
          s->trailers_pending = false;
          NvList nv;
          nv.Build(s->trailers, /*pseudo=*/false);
          if (nghttp2_submit_trailer(session, id, nv.nva.data(), nv.nva.size()) != 0) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
          }
        }
      } else if (n == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
      }
    }
    return static_cast<ssize_t>(n);
  }
};

nghttp2_data_provider Http2Session::DataProvider() {
  nghttp2_data_provider provider{};
  provider.read_callback = &Callbacks::ReadData;
  return provider;
}

Http2Session::Http2Session(Http2Role role, Http2Options options, Http2Handler* handler)
    : role_(role),
      options_(std::move(options)),
      handler_(handler),
      guard_(role == Http2Role::kServer, GuardLimits(options_), options_.clock) {
  options_.initial_stream_window =
      std::clamp(options_.initial_stream_window, kMinStreamWindow, kMaxStreamWindow);
  options_.connection_window = static_cast<uint32_t>(std::clamp<uint64_t>(
      options_.connection_window, uint64_t{4} * options_.initial_stream_window, kMaxWindow));
  options_.max_output_buffer = std::max<size_t>(options_.max_output_buffer, 16 * 1024);

  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_option* opt = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
    init_status_ = absl::ResourceExhaustedError("nghttp2: out of memory");
    nghttp2_session_callbacks_del(cbs);
    return;
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &Callbacks::OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Callbacks::OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Callbacks::OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Callbacks::OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Callbacks::OnStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &Callbacks::OnFrameSend);

  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
  nghttp2_option_set_max_outbound_ack(opt, options_.max_outbound_ack);
  nghttp2_option_set_max_settings(opt, options_.max_settings_entries);
  nghttp2_option_set_max_continuations(opt, options_.max_continuations);
  nghttp2_option_set_stream_reset_rate_limit(opt, options_.reset_burst, options_.reset_rate_per_second);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
  nghttp2_option_set_max_send_header_block_length(opt, options_.max_header_list_size);
  nghttp2_option_set_no_closed_streams(opt, 1);

  nghttp2_mem mem{this, &Malloc, &Free, &Calloc, &Realloc};
  int rv = role_ == Http2Role::kServer ? nghttp2_session_server_new3(&session_, cbs, this, opt, &mem)
                                       : nghttp2_session_client_new3(&session_, cbs, this, opt, &mem);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) init_status_ = absl::ResourceExhaustedError(absl::StrCat("nghttp2: ", nghttp2_strerror(rv)));
}

Http2Session::~Http2Session() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

absl::Status Http2Session::Start() {
  if (!init_status_.ok()) return init_status_;
  std::vector<nghttp2_settings_entry> iv = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, options_.initial_stream_window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, options_.max_header_list_size},
  };
  if (role_ == Http2Role::kClient) iv.push_back({NGHTTP2_SETTINGS_ENABLE_PUSH, 0});
  int rv = nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv.data(), iv.size());
  if (rv == 0)
    rv = nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, options_.connection_window);
  if (rv != 0) return absl::InternalError(absl::StrCat("nghttp2 settings: ", nghttp2_strerror(rv)));
  return absl::OkStatus();
}

absl::Status Http2Session::Feed(absl::Span<const uint8_t> data) {
  if (!init_status_.ok()) return init_status_;
  if (stopped_reading_) return ClosedStatus();
  Http2Abuse abuse = Http2Abuse::kNone;
  size_t ok = guard_.Scan(data, &abuse);
  if (ok > 0) {
    receiving_ = true;
    ssize_t rv = nghttp2_session_mem_recv(session_, data.data(), ok);
    receiving_ = false;
    if (rv < 0) HandleNghttp2Error(static_cast<int>(rv));
  }
  if (abuse == Http2Abuse::kNotHttp2 && close_reason_ == Http2CloseReason::kNone) {
    // Not an HTTP/2 peer: no GOAWAY, nothing of ours is worth sending.
    close_reason_ = Http2CloseReason::kNotHttp2;
    stopped_reading_ = true;
    output_.clear();
    output_pos_ = 0;
    return absl::InvalidArgumentError("not http2: client preface expected");
  }
  if (abuse != Http2Abuse::kNone) OnGuardViolation(abuse);
  CheckFinished();
  return ClosedStatus();
}

absl::Status Http2Session::ClosedStatus() const {
  switch (close_reason_) {
    case Http2CloseReason::kNone:
    case Http2CloseReason::kGoawayComplete:  // a clean end: late bytes are dropped, not an error
      return absl::OkStatus();
    case Http2CloseReason::kNotHttp2:
      return absl::InvalidArgumentError("not http2: client preface expected");
    default:
      return absl::FailedPreconditionError(
          absl::StrCat("http2 session closed: ", std::string(ToString(close_reason_))));
  }
}

void Http2Session::OnGuardViolation(Http2Abuse abuse) {
  uint64_t* counter = nullptr;
  switch (abuse) {
    case Http2Abuse::kContinuationFlood:
      counter = &stats_.continuation_flood;
      break;
    case Http2Abuse::kPingFlood:
      counter = &stats_.ping_flood;
      break;
    case Http2Abuse::kSettingsFlood:
      counter = &stats_.settings_flood;
      break;
    case Http2Abuse::kEmptyDataFlood:
      counter = &stats_.empty_data_flood;
      break;
    case Http2Abuse::kRapidReset:
      counter = &stats_.rapid_reset;
      break;
    case Http2Abuse::kNone:
    case Http2Abuse::kNotHttp2:
      return;
  }
  Fail(Http2CloseReason::kAbuse, NGHTTP2_ENHANCE_YOUR_CALM, counter);
}

void Http2Session::HandleNghttp2Error(int rv) {
  switch (rv) {
    case NGHTTP2_ERR_FLOODED:  // the peer does not read the ACKs we owe it
      Fail(Http2CloseReason::kAbuse, NGHTTP2_ENHANCE_YOUR_CALM, &stats_.outbound_flood);
      break;
    case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
      Fail(Http2CloseReason::kAbuse, NGHTTP2_ENHANCE_YOUR_CALM, &stats_.continuation_flood);
      break;
    case NGHTTP2_ERR_NOMEM:
      Fail(Http2CloseReason::kResourceLimit, NGHTTP2_INTERNAL_ERROR, &stats_.memory_limit);
      break;
    case NGHTTP2_ERR_CALLBACK_FAILURE:  // only after Fail()
      break;
    default:
      Fail(Http2CloseReason::kProtocolError, NGHTTP2_PROTOCOL_ERROR, &stats_.protocol_errors);
      break;
  }
  stopped_reading_ = true;
}

void Http2Session::Fail(Http2CloseReason reason, uint32_t goaway_code, uint64_t* counter) {
  if (close_reason_ != Http2CloseReason::kNone && close_reason_ != Http2CloseReason::kGoawayComplete) return;
  close_reason_ = reason;
  ++*counter;
  stopped_reading_ = true;
  nghttp2_session_terminate_session(session_, goaway_code);
}

void Http2Session::ClassifyLibraryGoaway(const nghttp2_goaway& goaway) {
  absl::string_view debug(reinterpret_cast<const char*>(goaway.opaque_data), goaway.opaque_data_len);
  // nghttp2 names its reason only in the GOAWAY debug data.
  if (absl::StrContains(debug, "max concurrent streams exceeded")) {
    close_reason_ = Http2CloseReason::kAbuse;
    ++stats_.too_many_streams;
  } else if (absl::StrContains(debug, "too many setting entries")) {
    close_reason_ = Http2CloseReason::kAbuse;
    ++stats_.settings_flood;
  } else if (goaway.error_code == NGHTTP2_INTERNAL_ERROR && debug.empty() &&
             stats_.resets_received >= options_.reset_burst) {
    // nghttp2's reset token bucket (the backstop behind our guard) says nothing; its bucket can only
    // be empty after `reset_burst` resets.
    close_reason_ = Http2CloseReason::kAbuse;
    ++stats_.rapid_reset;
  } else if (goaway.error_code != NGHTTP2_NO_ERROR) {
    close_reason_ = Http2CloseReason::kProtocolError;
    ++stats_.protocol_errors;
  }
}

void Http2Session::RejectOversizedHead(Stream* s) {
  ++stats_.header_list_too_large;
  s->rejected = true;
  s->head = Http2Headers{};
  if (role_ == Http2Role::kServer && !s->final_head_seen) {
    // The 431 that an HTTP/1 server would send, then stop the request body if there is one (the
    // reset waits for the 431 to be serialized; see SubmitResetsAfterEnd).
    nghttp2_nv status = Nv(":status", "431");
    if (nghttp2_submit_response(session_, s->id, &status, 1, nullptr) == 0) {
      s->reset_after_end = true;
    } else {
      nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    }
    return;
  }
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
  handler_->OnStreamReset(s->id, NGHTTP2_INTERNAL_ERROR);
  handler_->OnStreamClosed(s->id);
}

absl::Span<const uint8_t> Http2Session::PendingOutput() {
  FillOutput();
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(output_.data()) + output_pos_,
                             output_.size() - output_pos_);
}

void Http2Session::ConsumeOutput(size_t n) {
  output_pos_ += std::min(n, output_.size() - output_pos_);
  if (output_pos_ == output_.size()) {
    output_.clear();
    output_pos_ = 0;
  }
  FillOutput();
}

std::string Http2Session::TakeOutput() {
  FillOutput();
  std::string out = output_.substr(output_pos_);
  ConsumeOutput(out.size());
  return out;
}

void Http2Session::FillOutput() {
  // nghttp2 must not serialize from inside its own callbacks; the caller asks again after Feed().
  if (filling_ || receiving_ || session_ == nullptr || close_reason_ == Http2CloseReason::kNotHttp2) return;
  filling_ = true;
  if (output_pos_ > 0 && output_pos_ > output_.size() / 2) {
    output_.erase(0, output_pos_);
    output_pos_ = 0;
  }
  // Stop at the bound: what nghttp2 has not serialized yet stays in its (bounded) queue.
  while (output_.size() - output_pos_ < options_.max_output_buffer) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      HandleNghttp2Error(static_cast<int>(n));
      break;
    }
    if (n > 0) output_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    if (!reset_after_sent_.empty()) {
      SubmitResetsAfterEnd();
      continue;  // serialize the resets now, behind the answers they follow
    }
    if (n == 0) break;
  }
  filling_ = false;
  std::vector<int32_t> writable = std::move(writable_);
  writable_.clear();
  for (int32_t id : writable) {
    Stream* s = FindStream(id);
    if (s == nullptr || !s->want_writable) continue;
    s->want_writable = false;
    handler_->OnStreamWritable(id);
  }
  CheckFinished();
}

void Http2Session::SubmitResetsAfterEnd() {
  std::vector<int32_t> ids = std::move(reset_after_sent_);
  reset_after_sent_.clear();
  for (int32_t id : ids) {
    Stream* s = FindStream(id);
    // Gone, or the peer had ended too: our END_STREAM closed the stream, nothing to stop.
    if (s == nullptr || nghttp2_session_get_stream_remote_close(session_, id) != 0) continue;
    s->reset_notified = true;  // our own choice: no OnStreamReset
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
  }
}

void Http2Session::CheckFinished() {
  if (session_ == nullptr) return;
  if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
    stopped_reading_ = true;
    if (close_reason_ == Http2CloseReason::kNone) close_reason_ = Http2CloseReason::kGoawayComplete;
  }
}

bool Http2Session::Finished() const {
  if (close_reason_ == Http2CloseReason::kNotHttp2 || session_ == nullptr) return true;
  return !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_) &&
         output_pos_ == output_.size();
}

Http2Session::Stream* Http2Session::FindStream(int32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

}  // namespace ringmesh::proxy::http
