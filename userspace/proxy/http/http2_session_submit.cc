// Http2Session actions: requests, responses, body data, trailers, resets, GOAWAY, consumption.
#include "absl/strings/str_cat.h"
#include "userspace/proxy/http/http2_session.h"
#include "userspace/proxy/http/http2_session_internal.h"

namespace ringmesh::proxy::http {

using http2_internal::NvList;

absl::Status Http2Session::SubmitHeaders(int32_t stream_id, const Http2Headers& headers, bool end_stream,
                                         int32_t* new_stream_id) {
  NvList nv;
  nv.Build(headers, /*pseudo=*/true);
  // The body, if any, is read from the stream's send queue by Callbacks::ReadData.
  nghttp2_data_provider provider = DataProvider();
  nghttp2_data_provider* dp = end_stream ? nullptr : &provider;
  if (new_stream_id != nullptr) {
    int32_t id = nghttp2_submit_request(session_, nullptr, nv.nva.data(), nv.nva.size(), dp, nullptr);
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("nghttp2 request: ", nghttp2_strerror(id)));
    *new_stream_id = id;
    auto s = std::make_unique<Stream>();
    s->id = id;
    streams_.emplace(id, std::move(s));
    stream_id = id;
  } else {
    int rv = nghttp2_submit_response(session_, stream_id, nv.nva.data(), nv.nva.size(), dp);
    if (rv != 0) return absl::InvalidArgumentError(absl::StrCat("nghttp2 response: ", nghttp2_strerror(rv)));
  }
  Stream* s = FindStream(stream_id);
  s->head_submitted = true;
  s->has_provider = !end_stream;
  return absl::OkStatus();
}

absl::StatusOr<int32_t> Http2Session::SubmitRequest(const Http2Headers& headers, bool end_stream) {
  if (role_ != Http2Role::kClient) return absl::FailedPreconditionError("SubmitRequest on a server session");
  if (!init_status_.ok()) return init_status_;
  if (goaway_received_ || goaway_submitted_ || close_reason_ != Http2CloseReason::kNone) {
    return absl::FailedPreconditionError("http2 connection is going away");
  }
  // nghttp2 would queue requests above the peer's limit without bound; refuse instead so the caller
  // decides (queue with its own bound, or use another connection).
  uint32_t limit = nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  if (streams_.size() >= limit) {
    return absl::ResourceExhaustedError(absl::StrCat("peer allows ", limit, " concurrent streams"));
  }
  int32_t id = 0;
  absl::Status st = SubmitHeaders(0, headers, end_stream, &id);
  if (!st.ok()) return st;
  return id;
}

absl::Status Http2Session::SubmitResponse(int32_t stream_id, const Http2Headers& headers, bool end_stream,
                                          bool reset_after_end) {
  if (role_ != Http2Role::kServer) return absl::FailedPreconditionError("SubmitResponse on a client session");
  Stream* s = FindStream(stream_id);
  if (s == nullptr || s->rejected) return absl::NotFoundError(absl::StrCat("no stream ", stream_id));
  if (s->head_submitted) return absl::FailedPreconditionError("response already submitted");
  absl::Status st = SubmitHeaders(stream_id, headers, end_stream, nullptr);
  // Acted on in Callbacks::OnFrameSend when the END_STREAM frame goes out.
  if (st.ok()) s->reset_after_end = reset_after_end;
  return st;
}

absl::StatusOr<size_t> Http2Session::SubmitData(int32_t stream_id, absl::Span<const uint8_t> data,
                                                bool end_stream) {
  Stream* s = FindStream(stream_id);
  if (s == nullptr || s->rejected) return absl::NotFoundError(absl::StrCat("no stream ", stream_id));
  if (!s->has_provider) return absl::FailedPreconditionError("stream head ended the stream or is not sent");
  if (s->end_queued) return absl::FailedPreconditionError("stream already ended");
  size_t room = options_.max_stream_send_buffer - std::min(options_.max_stream_send_buffer, s->queued());
  size_t n = std::min(room, data.size());
  s->send.append(reinterpret_cast<const char*>(data.data()), n);
  send_buffered_total_ += n;
  if (n < data.size()) {
    s->want_writable = true;
  } else if (end_stream) {
    s->end_queued = true;
  }
  if (s->deferred && (n > 0 || s->end_queued)) {
    s->deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  return n;
}

absl::Status Http2Session::SubmitTrailers(int32_t stream_id, const Http2Headers& trailers) {
  Stream* s = FindStream(stream_id);
  if (s == nullptr || s->rejected) return absl::NotFoundError(absl::StrCat("no stream ", stream_id));
  if (!s->has_provider || s->end_queued) return absl::FailedPreconditionError("stream already ended");
  s->trailers = trailers;
  s->trailers_pending = true;
  s->end_queued = true;
  if (s->deferred) {
    s->deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  return absl::OkStatus();
}

absl::Status Http2Session::ResetStream(int32_t stream_id, uint32_t error_code) {
  Stream* s = FindStream(stream_id);
  if (s == nullptr || s->rejected) return absl::NotFoundError(absl::StrCat("no stream ", stream_id));
  s->reset_notified = true;  // the handler asked for it; no OnStreamReset echo
  int rv = nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
  if (rv != 0) return absl::InternalError(absl::StrCat("nghttp2 rst: ", nghttp2_strerror(rv)));
  return absl::OkStatus();
}

absl::Status Http2Session::Goaway(uint32_t error_code, int32_t last_stream_id) {
  if (!init_status_.ok()) return init_status_;
  if (last_stream_id < 0) {
    // A client has no peer-initiated streams (push is off); a server keeps what it has started.
    last_stream_id = role_ == Http2Role::kServer ? nghttp2_session_get_last_proc_stream_id(session_) : 0;
  }
  int rv = nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, last_stream_id, error_code, nullptr, 0);
  if (rv != 0) return absl::InternalError(absl::StrCat("nghttp2 goaway: ", nghttp2_strerror(rv)));
  goaway_submitted_ = true;
  return absl::OkStatus();
}

void Http2Session::Consume(int32_t stream_id, size_t n) {
  if (session_ == nullptr || stream_id <= 0 || n == 0) return;
  // Fails only for a stream nghttp2 has forgotten, after the connection window was credited.
  (void)nghttp2_session_consume(session_, stream_id, n);
}

}  // namespace ringmesh::proxy::http
