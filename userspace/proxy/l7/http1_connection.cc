#include "userspace/proxy/l7/http1_connection.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "spdlog/spdlog.h"
#include "userspace/proxy/http/http1_encoder.h"
#include "userspace/proxy/worker.h"

namespace ringmesh::proxy::l7 {

using http::Http1Framing;
using Action = http::Http1Handler::Action;

namespace {

// After the last response of a connection: how long the proxy keeps reading
// (and dropping) what the client still sends before it closes, so that
// unread bytes do not make the kernel reset the response away.
constexpr absl::Duration kLingerTime = absl::Seconds(2);

// RFC 9110 9.2.2: a request with one of these methods may be sent again
// without changing what it does.
bool IdempotentMethod(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE" || m == "PUT" || m == "DELETE";
}

UpstreamPoolOptions PoolOptions(const ProxyOptions& o) {
  return {.buffer_bytes = o.buffer_bytes,
          .connect_timeout = o.connect_timeout,
          .idle_timeout = o.http_upstream_idle_timeout,
          .max_idle_per_key = o.http_upstream_idle_per_key};
}

}  // namespace

bool ServesHttp1(const ProxyOptions& options, const RouteTable& routes, const ServiceRoute& route) {
  if (!options.l7_http || route.protocol != AppProtocol::kHttp || route.lb == nullptr) return false;
  for (size_t i = 0; i < route.lb->size(); ++i) {
    if (routes.MeshPeerOf(route.lb->endpoint(i)) != nullptr) return false;
  }
  return true;
}

Http1Connection::Http1Connection(Http1Proxy* host, uint64_t id, int fd,
                                 std::shared_ptr<const ListenerInfo> listener, SocketAddress peer,
                                 SocketAddress orig_dst, std::shared_ptr<const RouteTable> routes,
                                 const ServiceRoute* route)
    : host_(host),
      w_(host->worker()),
      id_(id),
      fd_(fd),
      listener_(std::move(listener)),
      peer_(peer),
      orig_dst_(orig_dst),
      routes_(std::move(routes)),
      route_(route),
      service_(route->Fqdn()),
      cap_(std::max<size_t>(w_->options().buffer_bytes, 1024)),
      req_parser_(http::Http1Parser::Type::kRequest, &req_events_),
      up_q_(cap_, w_->pool()),
      down_q_(cap_, w_->pool()) {
  start_ns_ = last_activity_ns_ = MonotonicNowNs();
}

Http1Connection::~Http1Connection() {
  if (AnyInFlight()) {
    spdlog::critical("http1 connection {} freed with ops in flight", id_);
    std::abort();
  }
  for (auto& [key, cell] : cells_) w_->stats().Release(cell);
}

void Http1Connection::Start() { Drive(); }

void Http1Connection::Abort(CloseReason reason) {
  if (active_) Record(ex_.resp_head_down ? ex_.status : 0, "DC");
  Close(reason, true);
}

// --- driving ----------------------------------------------------------------

void Http1Connection::Drive() {
  if (driving_) {
    again_ = true;
    return;
  }
  driving_ = true;
  do {
    again_ = false;
    if (state_ == State::kClosed) break;
    FeedRequest();
    FeedResponse();
    PumpUp();
    PumpDown();
    ArmDownRecv();
    ArmTimer();
  } while (again_ && state_ != State::kClosed);
  driving_ = false;
  if (state_ == State::kClosed) MaybeFinish();
}

void Http1Connection::FeedRequest() {
  if (state_ != State::kOpen) return;
  // One request at a time: the next waits until this one's response is done.
  if (active_ && ex_.req_complete) return;
  if (up_q_.size() >= cap_) return;  // backpressure toward the upstream
  req_parser_.Resume();
  const http::Http1FeedResult r = req_parser_.Feed(in_);
  in_.erase(0, r.consumed);
  if (state_ != State::kOpen) return;  // an event answered and is closing
  switch (r.status) {
    case http::Http1FeedStatus::kOk:
    case http::Http1FeedStatus::kPaused:
      break;
    case http::Http1FeedStatus::kClosed:
      close_after_ = true;  // that was the connection's last request
      in_.clear();
      break;
    case http::Http1FeedStatus::kUpgrade:
      // OnRequestHead answers these; a parser that still reports one gets
      // the same answer.
      if (!active_ || !ex_.resp_head_down) {
        Respond(501, "-");
      } else {
        Close(CloseReason::kNormal, true);
      }
      break;
    case http::Http1FeedStatus::kError: {
      const int status = req_parser_.error().HttpStatus();
      spdlog::debug("http1 {}: bad request: {}", id_, req_parser_.error().detail);
      if (!active_) {
        ex_ = Exchange{};
        ex_.start_ns = MonotonicNowNs();
      }
      if (active_ && ex_.resp_head_down) {
        Record(ex_.status, "DPE");
        Close(CloseReason::kDownstreamReset, true);
      } else {
        Respond(status, "DPE");
      }
      break;
    }
  }
  if (state_ != State::kOpen || !down_eof_) return;
  // (A paused parser may still hold the message's end: not before it resumed.)
  if (active_ && !ex_.req_complete && in_.empty() && r.status != http::Http1FeedStatus::kPaused) {
    // The client ended its side in the middle of its request.
    Record(0, "DC");
    Close(CloseReason::kDownstreamReset, true);
  } else if (!active_) {
    // Nothing (or only a cut-off request) left to serve.
    if (down_q_.empty() && !send_op_.in_flight()) {
      Close(CloseReason::kNormal, false);
    } else {
      state_ = State::kFlushThenClose;
    }
  }
}

void Http1Connection::FeedResponse() {
  if (state_ == State::kClosed || !active_ || ex_.up == nullptr || !ex_.connected || ex_.resp_complete)
    return;
  if (down_q_.size() >= cap_) return;  // backpressure toward downstream
  http::Http1Parser& p = *ex_.resp_parser;
  p.Resume();
  UpstreamConn* u = ex_.up;
  const http::Http1FeedResult r = p.Feed(u->in());
  if (r.consumed > 0) ex_.resp_byte = true;
  u->Consume(r.consumed);
  if (ex_.fail_status != 0) {
    UpstreamFailed(ex_.fail_status, ex_.fail_flags);
    return;
  }
  if (ex_.retry_status) {
    // A retriable status (the budget was taken when its head came): the
    // response is dropped with its connection, the request goes again.
    ReleaseEndpoint(true);
    DropUpstream(true);
    Retry();
    return;
  }
  switch (r.status) {
    case http::Http1FeedStatus::kOk:
    case http::Http1FeedStatus::kPaused:
      break;
    case http::Http1FeedStatus::kClosed:
      ex_.resp_last = true;
      break;
    case http::Http1FeedStatus::kUpgrade:
      // Never asked for (requests that switch protocols get 501).
      UpstreamFailed(502, "UPE");
      return;
    case http::Http1FeedStatus::kError:
      spdlog::debug("http1 {}: bad response from {}: {}", id_, ex_.target.ToString(), p.error().detail);
      UpstreamFailed(502, "UPE");
      return;
  }
  if (!ex_.resp_complete && ex_.up_ended && u->in().empty()) {
    // The upstream is done sending: the end of an until-close body, or a
    // response cut short.
    if (!ex_.up_error && p.Finish() == http::Http1FeedStatus::kOk && ex_.resp_complete) {
      ex_.resp_last = true;
    } else if (!ex_.resp_complete) {
      // A reused connection the server had closed: the request never
      // reached it, so it is sent again on a new one, once.
      if (ex_.reused && !ex_.resp_byte && !ex_.body_sent && !ex_.resent) {
        ex_.resent = true;
        DropUpstream(true);
        ConnectFresh();
        again_ = true;
        return;
      }
      UpstreamFailed(502, "UC", /*retryable=*/true);
      return;
    }
  }
  if (ex_.resp_complete) FinishExchange();
}

void Http1Connection::PumpUp() {
  if (state_ == State::kClosed || !active_ || ex_.up == nullptr || !ex_.connected || ex_.up_ended) return;
  UpstreamConn* u = ex_.up;
  if (u->sending()) return;
  if (ex_.head_sent < ex_.head.size()) {
    u->Send(ex_.head.data() + ex_.head_sent, ex_.head.size() - ex_.head_sent);
    return;
  }
  if (!up_q_.empty()) {
    auto front = up_q_.Front();
    u->Send(front.data(), front.size());
  }
}

void Http1Connection::PumpDown() {
  if (state_ == State::kClosed || send_op_.in_flight() || shutdown_op_.in_flight()) return;
  if (!down_q_.empty()) {
    auto front = down_q_.Front();
    w_->loop()->Send(&send_op_, fd_, front.data(), front.size());
    return;
  }
  if (state_ == State::kFlushThenClose) {
    if (down_eof_) {
      Close(CloseReason::kNormal, false);
      return;
    }
    // Everything is out: end our side, then read until the client ends its.
    state_ = State::kLinger;
    linger_deadline_ns_ = MonotonicNowNs() + absl::ToInt64Nanoseconds(kLingerTime);
    in_.clear();
    w_->loop()->ShutdownWrite(&shutdown_op_, fd_);
  }
}

void Http1Connection::ArmDownRecv() {
  if ((state_ != State::kOpen && state_ != State::kLinger) || down_eof_ || recv_op_.in_flight()) return;
  if (in_.size() >= cap_) return;  // pipelined bytes wait; resumes as they are parsed
  w_->loop()->Recv(&recv_op_, fd_, cap_ - in_.size());
}

void Http1Connection::ArmTimer() {
  if (state_ == State::kClosed) return;
  int64_t deadline;
  if (state_ == State::kLinger) {
    deadline = linger_deadline_ns_;
  } else if (active_) {
    deadline = ex_.start_ns + absl::ToInt64Nanoseconds(w_->options().http_request_timeout);
    const absl::Duration per_try = w_->options().http_per_try_timeout;
    if (per_try > absl::ZeroDuration() && !ex_.resp_head_down && ex_.try_start_ns != 0) {
      deadline = std::min(deadline, ex_.try_start_ns + absl::ToInt64Nanoseconds(per_try));
    }
  } else {
    deadline = last_activity_ns_ + absl::ToInt64Nanoseconds(w_->options().http_idle_timeout);
  }
  if (timer_op_.in_flight()) {
    // One that fires earlier re-arms for this deadline; a later one is
    // cancelled and re-armed from its completion.
    if (timer_deadline_ns_ > deadline) w_->loop()->Cancel(&timer_op_);
    return;
  }
  timer_deadline_ns_ = deadline;
  w_->loop()->StartTimer(&timer_op_, absl::Nanoseconds(std::max<int64_t>(0, deadline - MonotonicNowNs())));
}

void Http1Connection::OnTimer(int res) {
  (void)res;  // fired or cancelled: look at the deadlines either way
  const int64_t now = MonotonicNowNs();
  if (state_ == State::kLinger) {
    if (now >= linger_deadline_ns_) Close(CloseReason::kNormal, false);
  } else if (active_) {
    const absl::Duration per_try = w_->options().http_per_try_timeout;
    if (now - ex_.start_ns >= absl::ToInt64Nanoseconds(w_->options().http_request_timeout)) {
      w_->stats().Add(w_->stats().http_request_timeouts);
      UpstreamFailed(504, "UT");  // a reset once the response has begun
    } else if (per_try > absl::ZeroDuration() && !ex_.resp_head_down && ex_.try_start_ns != 0 &&
               now - ex_.try_start_ns >= absl::ToInt64Nanoseconds(per_try)) {
      w_->stats().Add(w_->stats().http_per_try_timeouts);
      UpstreamFailed(504, "UT", /*retryable=*/true);
    }
  } else if (now - last_activity_ns_ >= absl::ToInt64Nanoseconds(w_->options().http_idle_timeout)) {
    // Idle between requests, or a client that stopped reading our last answer.
    Close(CloseReason::kIdleTimeout, state_ != State::kOpen);
  }
}

// --- downstream I/O ---------------------------------------------------------

void Http1Connection::OnCompletion(IoOp* op, const Completion& c) {
  if (state_ != State::kClosed) {
    if (op == &recv_op_) {
      OnDownRecv(c);
    } else if (op == &send_op_) {
      OnDownSent(c.res);
    } else if (op == &timer_op_) {
      OnTimer(c.res);
    } else if (op == &shutdown_op_) {
      // ENOTCONN when the client already went away: the recv side says so.
    }
    Drive();
  }
  if (state_ == State::kClosed) MaybeFinish();
}

void Http1Connection::OnDownRecv(const Completion& c) {
  if (c.res > 0) {
    last_activity_ns_ = MonotonicNowNs();
    if (state_ == State::kOpen) in_.append(c.data, static_cast<size_t>(c.res));
    return;  // lingering: dropped
  }
  if (c.res == -ECANCELED) return;
  if (c.res < 0 || state_ == State::kLinger) {
    if (c.res < 0 && active_) Record(ex_.resp_head_down ? ex_.status : 0, "DC");
    if (c.res < 0) spdlog::debug("http1 {}: recv from downstream: {}", id_, std::strerror(-c.res));
    Close(c.res < 0 ? CloseReason::kDownstreamReset : CloseReason::kNormal, c.res < 0);
    return;
  }
  // A half-close: what the client sent before it is still served (Drive,
  // FeedRequest), then the connection ends.
  down_eof_ = true;
}

void Http1Connection::OnDownSent(int res) {
  if (res == -ECANCELED) return;
  if (res <= 0) {
    if (active_) Record(ex_.resp_head_down ? ex_.status : 0, "DC");
    Close(CloseReason::kDownstreamReset, true);
    return;
  }
  down_q_.Consume(static_cast<size_t>(res));
  bytes_down_ += static_cast<uint64_t>(res);
  w_->stats().Add(w_->stats().bytes_downstream, static_cast<uint64_t>(res));
  last_activity_ns_ = MonotonicNowNs();
}

// --- request events ---------------------------------------------------------

Action Http1Connection::OnRequestHead(const http::Http1Head& head) {
  ++requests_;
  active_ = true;
  ex_ = Exchange{};
  ex_.start_ns = MonotonicNowNs();
  ex_.method = head.method;
  ex_.path = head.target;
  if (!ex_.path.empty() && ex_.path[0] != '/') {
    // absolute-form ("http://host/a"): the path is what follows the authority
    size_t scheme = ex_.path.find("://");
    size_t slash = scheme == std::string::npos ? std::string::npos : ex_.path.find('/', scheme + 3);
    ex_.path = slash == std::string::npos ? "/" : ex_.path.substr(slash);
  }
  ex_.host = head.headers.Get("host").value_or("");
  ex_.req_body = head.framing == Http1Framing::kChunked ||
                 (head.framing == Http1Framing::kContentLength && head.content_length > 0);
  ex_.version_minor = head.version_minor;
  up_q_.Clear();
  req_trailers_.Clear();
  resp_trailers_.Clear();
  // HTTP/1.0 clients get one response per connection.
  if (head.version_minor == 0 || !head.keep_alive) close_after_ = true;
  if (head.upgrade || head.is_connect()) {
    Respond(501, "-");  // no protocol switch through the L7 path yet
    return Action::kPause;
  }
  if (head.headers.Count("host") > 1) {
    // RFC 9112 §3.2: a 400. Which one a policy saw and which one the app
    // reads must never differ.
    Respond(400, "DPE");
    return Action::kPause;
  }
  if (!RefreshRoute()) {
    // The service left its VIP, or its port is no longer carried here at
    // L7: closing lets the client's next connection take today's path.
    Respond(503, "NR");
    return Action::kPause;
  }
  http::Http1EncodeOptions o;
  o.framing = head.framing;
  o.content_length = head.content_length;
  ex_.req_chunked = head.framing == Http1Framing::kChunked;
  auto encoded = http::EncodeRequestHead(head.method, head.target, head.headers, o);
  if (!encoded.ok()) {
    spdlog::debug("http1 {}: request head not forwardable: {}", id_, encoded.status().ToString());
    Respond(400, "DPE");
    return Action::kPause;
  }
  ex_.head = std::move(*encoded);
  ex_.replayable = w_->options().http_retries > 0;
  route_->retry_budget->RequestStarted();
  ex_.budget_counted = true;
  StartAttempt();
  return state_ == State::kOpen ? Action::kContinue : Action::kPause;
}

bool Http1Connection::RefreshRoute() {
  const std::shared_ptr<const RouteTable>& now = w_->routes();
  if (now == nullptr || now == routes_) return true;
  const ServiceRoute* r = now->Find(orig_dst_);
  if (r == nullptr || !ServesHttp1(w_->options(), *now, *r)) return false;
  routes_ = now;
  route_ = r;
  if (std::string fqdn = r->Fqdn(); fqdn != service_) {
    for (auto& [key, cell] : cells_) w_->stats().Release(cell);
    cells_.clear();
    service_ = std::move(fqdn);
  }
  return true;
}

Action Http1Connection::OnRequestBody(std::string_view data) {
  if (ex_.local_reply) return Action::kContinue;  // (only bodiless requests are answered so)
  std::string chunk;
  if (ex_.req_chunked) {
    http::AppendChunk(data, &chunk);
    data = chunk;
  }
  up_q_.Append(data.data(), data.size());
  if (ex_.replayable) {
    if (ex_.replay.size() + data.size() > std::min(w_->options().http_retry_buffer_bytes, cap_)) {
      ex_.replayable = false;  // too big to hold for a retry
      std::string().swap(ex_.replay);
    } else {
      ex_.replay.append(data);
    }
  }
  peak_buffered_ = std::max(peak_buffered_, up_q_.size());
  return up_q_.size() >= cap_ ? Action::kPause : Action::kContinue;
}

Action Http1Connection::OnRequestComplete() {
  if (ex_.local_reply) return Action::kContinue;  // already answered; on to the next request
  if (ex_.req_chunked) {
    std::string last;
    if (!http::AppendLastChunk(req_trailers_, &last).ok()) {
      http::HeaderList none;
      last.clear();
      (void)http::AppendLastChunk(none, &last);  // trailers that may not be forwarded are dropped
    }
    up_q_.Append(last.data(), last.size());
    if (ex_.replayable) ex_.replay.append(last);  // the end of a body that fit
  }
  ex_.req_complete = true;
  return Action::kPause;  // the next request waits for this response
}

// --- upstream ---------------------------------------------------------------

void Http1Connection::StartAttempt() {
  // Another endpoint than those tried if there is one; else any (a reset
  // may be the one endpoint's passing trouble).
  size_t i = route_->lb->Pick(ex_.tried);
  if (i == LoadBalancer::kNone && !ex_.tried.empty()) i = route_->lb->Pick();
  if (i == LoadBalancer::kNone) {
    Respond(503, ex_.tried.empty() ? "UH" : "UF");
    return;
  }
  const SocketAddress target{route_->lb->endpoint(i), route_->target_port};
  const authz::Request request{ex_.method, ex_.path, ex_.host};
  if (!AuthorizedToLocalPod(*w_, routes_.get(), *listener_, peer_.ip, target, id_, &request)) {
    // Envoy's RBAC filter: "RBAC: access denied". A request without a body
    // that has not gone anywhere is over: its connection goes on.
    Respond(403, "RBAC", /*go_on=*/!ex_.req_body && ex_.tries == 0);
    return;
  }
  ++ex_.tries;
  ex_.try_start_ns = MonotonicNowNs();
  ex_.retry_status = false;
  ex_.sent_ns = 0;
  if (std::find(ex_.tried.begin(), ex_.tried.end(), i) == ex_.tried.end()) ex_.tried.push_back(i);
  ex_.endpoint = i;
  route_->lb->OnConnectStart(i);
  ex_.target = SocketAddress{route_->lb->endpoint(i), route_->target_port};
  last_endpoint_ = ex_.target.ToString();
  if (UpstreamConn* u = host_->pool().TakeIdle(UpstreamPool::Key(*listener_, ex_.target), this)) {
    Attach(u, /*reused=*/true);
    return;
  }
  ConnectFresh();
}

void Http1Connection::ConnectFresh() {
  int error = 0;
  UpstreamConn* u =
      host_->pool().Connect(*listener_, UpstreamPool::Key(*listener_, ex_.target), ex_.target, this, &error);
  if (u == nullptr) {
    spdlog::warn("http1 {}: upstream socket: {}", id_, std::strerror(-error));
    ReleaseEndpoint(false);
    Respond(503, "UF");
    return;
  }
  ex_.up = u;
  ex_.connected = false;
  ex_.reused = false;
}

void Http1Connection::Attach(UpstreamConn* u, bool reused) {
  ex_.up = u;
  ex_.connected = true;
  ex_.reused = reused;
  ex_.head_sent = 0;
  ex_.body_sent = false;
  ex_.resp_byte = false;
  ex_.up_ended = ex_.up_error = false;
  ex_.resp_parser = std::make_unique<http::Http1Parser>(http::Http1Parser::Type::kResponse, &resp_events_);
  ex_.resp_parser->ExpectResponseTo(ex_.method);
  again_ = true;
}

void Http1Connection::OnUpstreamConnected(UpstreamConn* u, int res) {
  if (state_ == State::kClosed || !active_ || u != ex_.up) return;
  if (res == 0) {
    Attach(u, /*reused=*/false);
    Drive();
    return;
  }
  spdlog::debug("http1 {}: connect to {}: {}", id_, ex_.target.ToString(), std::strerror(-res));
  w_->stats().Add(w_->stats().upstream_connect_failures);
  DropUpstream(false);
  ReleaseEndpoint(true);
  // Nothing of the request went out on this try (RetryAllowed knows
  // whether an earlier one sent it).
  if (RetryAllowed(/*went_out=*/false) && TakeRetry()) {
    Retry();
  } else {
    Respond(503, "UF");
  }
  Drive();
}

void Http1Connection::OnUpstreamData(UpstreamConn* u) {
  if (state_ == State::kClosed || !active_ || u != ex_.up) return;
  Drive();
}

void Http1Connection::OnUpstreamEnded(UpstreamConn* u, int res) {
  if (state_ == State::kClosed || !active_ || u != ex_.up) return;
  ex_.up_ended = true;
  ex_.up_error = res < 0;
  Drive();
}

void Http1Connection::OnUpstreamSent(UpstreamConn* u, int res) {
  if (state_ == State::kClosed || !active_ || u != ex_.up) return;
  if (res <= 0) {
    // EPIPE / ECONNRESET: judged like an upstream end once what it did
    // send (maybe a whole response) is parsed.
    ex_.up_ended = true;
    ex_.up_error = true;
    Drive();
    return;
  }
  size_t n = static_cast<size_t>(res);
  if (ex_.head_sent < ex_.head.size()) {
    ex_.head_sent += n;  // the head goes in sends of its own
    ex_.went_out = true;
    if (ex_.head_sent == ex_.head.size()) ex_.sent_ns = MonotonicNowNs();
  } else {
    ex_.body_sent = true;
    up_q_.Consume(n);
  }
  bytes_up_ += n;
  w_->stats().Add(w_->stats().bytes_upstream, n);
  Drive();
}

void Http1Connection::DropUpstream(bool reset) {
  if (ex_.up == nullptr) return;
  host_->pool().Discard(ex_.up, reset);
  ex_.up = nullptr;
  ex_.connected = false;
  ex_.resp_parser.reset();
}

void Http1Connection::ReleaseEndpoint(bool failed) {
  if (ex_.endpoint == LoadBalancer::kNone) return;
  if (!ex_.sample_given) {
    ex_.sample_given = true;
    route_->lb->OnResult(ex_.endpoint, absl::Nanoseconds(MonotonicNowNs() - ex_.try_start_ns), !failed);
  }
  route_->lb->OnRelease(ex_.endpoint);
  ex_.endpoint = LoadBalancer::kNone;
  ex_.sample_given = false;
}

void Http1Connection::UpstreamFailed(int status, const char* flags, bool retryable) {
  const bool went_out = ex_.head_sent > 0 || ex_.body_sent;
  ReleaseEndpoint(true);
  DropUpstream(true);
  if (ex_.resp_head_down) {
    // Part of the response is out: only a reset tells the client.
    Record(ex_.status, flags);
    EndAccounting();
    active_ = false;
    Close(CloseReason::kUpstreamReset, true);
    return;
  }
  if (retryable && RetryAllowed(went_out) && TakeRetry()) {
    Retry();
    return;
  }
  Respond(status, retryable && (ex_.retries > 0 || ex_.resent) ? "URX" : flags);
}

bool Http1Connection::RetryAllowed(bool went_out) const {
  const ProxyOptions& o = w_->options();
  if (ex_.tries > o.http_retries || ex_.resp_head_down || state_ != State::kOpen) return false;
  // Once a byte may have reached a server: only what can be sent again
  // whole and means the same the second time.
  if (went_out || ex_.went_out) {
    if (!ex_.replayable) return false;
    if (!o.http_retry_non_idempotent && !IdempotentMethod(ex_.method)) return false;
  }
  return true;
}

bool Http1Connection::TakeRetry() {
  if (!route_->retry_budget->TryStartRetry(w_->options().http_retry_budget)) {
    w_->stats().Add(w_->stats().http_retry_budget_exhausted);
    return false;
  }
  ++ex_.retries;
  w_->stats().Add(w_->stats().http_retries);
  return true;
}

void Http1Connection::Retry() {
  // The body as far as it came, from the start; the rest follows as the
  // client sends it.
  if (ex_.replayable) {
    up_q_.Clear();
    up_q_.Append(ex_.replay.data(), ex_.replay.size());
  }
  ex_.head_sent = 0;
  ex_.body_sent = false;
  StartAttempt();
  again_ = true;
}

void Http1Connection::EndAccounting() {
  if (!ex_.budget_counted) return;
  ex_.budget_counted = false;
  route_->retry_budget->RequestEnded();
  for (; ex_.retries > 0; --ex_.retries) route_->retry_budget->RetryEnded();
}

// --- response events --------------------------------------------------------

Action Http1Connection::OnResponseHead(const http::Http1Head& head) {
  if (head.interim) {
    // 100 Continue and friends go to HTTP/1.1 clients as they come.
    if (ex_.version_minor >= 1) {
      auto encoded = http::EncodeResponseHead(head.status_code, head.reason, head.headers, {});
      if (encoded.ok()) down_q_.Append(encoded->data(), encoded->size());
    }
    return Action::kContinue;
  }
  if (head.upgrade) {
    ex_.fail_status = 502;
    ex_.fail_flags = "UPE";
    return Action::kPause;
  }
  ex_.status = head.status_code;
  const std::vector<int>& retry_on = w_->options().http_retry_statuses;
  if (std::find(retry_on.begin(), retry_on.end(), head.status_code) != retry_on.end() &&
      RetryAllowed(/*went_out=*/true) && TakeRetry()) {
    ex_.retry_status = true;  // FeedResponse drops it and retries
    return Action::kPause;
  }
  if (!ex_.sample_given && ex_.endpoint != LoadBalancer::kNone) {
    // The balancer's sample: how long the endpoint took to answer, from the
    // request head on the wire to the response head. Not the connect of a
    // new connection (pooling makes that rare and it is no measure of the
    // endpoint's load), which as a peak would steer requests away for the
    // EWMA's whole decay time.
    ex_.sample_given = true;
    // A 5xx answer counts as a failure (penalty and outlier count): an
    // endpoint that fails fast must not draw requests for being fast.
    const int64_t from = ex_.sent_ns != 0 ? ex_.sent_ns : ex_.try_start_ns;
    route_->lb->OnResult(ex_.endpoint, absl::Nanoseconds(MonotonicNowNs() - from), head.status_code < 500);
  }
  http::Http1EncodeOptions o;
  switch (head.framing) {
    case Http1Framing::kNone:
      break;
    case Http1Framing::kContentLength:
      o.framing = Http1Framing::kContentLength;
      o.content_length = head.content_length;
      break;
    case Http1Framing::kChunked:
      if (ex_.version_minor >= 1) {
        o.framing = Http1Framing::kChunked;
        ex_.down_chunked = true;
      } else {
        o.framing = Http1Framing::kUntilClose;  // an HTTP/1.0 client knows no chunks
        close_after_ = true;
      }
      break;
    case Http1Framing::kUntilClose:
      o.framing = Http1Framing::kUntilClose;
      close_after_ = true;
      break;
  }
  if (!head.keep_alive) ex_.resp_last = true;
  o.connection_close = close_after_;
  auto encoded = http::EncodeResponseHead(head.status_code, head.reason, head.headers, o);
  if (!encoded.ok()) {
    spdlog::debug("http1 {}: response head not forwardable: {}", id_, encoded.status().ToString());
    ex_.fail_status = 502;
    ex_.fail_flags = "UPE";
    return Action::kPause;
  }
  down_q_.Append(encoded->data(), encoded->size());
  ex_.resp_head_down = true;
  return Action::kContinue;
}

Action Http1Connection::OnResponseBody(std::string_view data) {
  if (ex_.down_chunked) {
    std::string chunk;
    http::AppendChunk(data, &chunk);
    down_q_.Append(chunk.data(), chunk.size());
  } else {
    down_q_.Append(data.data(), data.size());
  }
  peak_buffered_ = std::max(peak_buffered_, down_q_.size());
  return down_q_.size() >= cap_ ? Action::kPause : Action::kContinue;
}

Action Http1Connection::OnResponseComplete() {
  if (ex_.resp_parser->head().interim) return Action::kContinue;  // the final response follows
  if (ex_.down_chunked) {
    std::string last;
    if (!http::AppendLastChunk(resp_trailers_, &last).ok()) {
      http::HeaderList none;
      last.clear();
      (void)http::AppendLastChunk(none, &last);
    }
    down_q_.Append(last.data(), last.size());
  }
  ex_.resp_complete = true;
  return Action::kPause;
}

void Http1Connection::FinishExchange() {
  Record(ex_.status, "-");
  ReleaseEndpoint(false);
  EndAccounting();
  // The connection carries another request only if both messages ended
  // cleanly on it: the whole request sent, nothing after the response.
  const bool request_out = ex_.req_complete && ex_.head_sent == ex_.head.size() && up_q_.empty() &&
                           ex_.up != nullptr && !ex_.up->sending();
  if (ex_.up != nullptr) {
    if (request_out && !ex_.resp_last && !ex_.up_ended && ex_.up->in().empty()) {
      host_->pool().Release(ex_.up);
      ex_.up = nullptr;
      ex_.resp_parser.reset();
    } else {
      DropUpstream(!request_out);
    }
  }
  // A response that came before the whole request: what is left of the
  // request cannot be told from a next one, so the connection ends.
  if (!ex_.req_complete) close_after_ = true;
  active_ = false;
  up_q_.Clear();
  if (close_after_ && state_ == State::kOpen) state_ = State::kFlushThenClose;
  again_ = true;
}

// --- answers, metrics, the end ----------------------------------------------

void Http1Connection::Respond(int status, const char* flags, bool go_on) {
  Record(status, flags);
  ReleaseEndpoint(status >= 502);
  EndAccounting();
  DropUpstream(true);
  active_ = false;
  up_q_.Clear();
  ex_.local_reply = go_on;
  const bool keep_alive = go_on && !close_after_;
  const std::string canned = http::CannedErrorResponse(status, keep_alive);
  down_q_.Append(canned.data(), canned.size());
  if (!keep_alive && state_ == State::kOpen) state_ = State::kFlushThenClose;
  again_ = true;
}

void Http1Connection::Record(int status, const char* flags) {
  HttpMetricCell*& cell = cells_[{status, flags}];
  if (cell == nullptr) {
    cell = w_->stats().HttpCell(listener_->workload, listener_->pod_ns, service_, status, flags);
  }
  const int64_t start = ex_.start_ns != 0 ? ex_.start_ns : MonotonicNowNs();
  cell->Observe(static_cast<double>(MonotonicNowNs() - start) / 1e6);
}

void Http1Connection::Drain() {
  if (state_ != State::kOpen) return;
  close_after_ = true;
  if (!active_ && in_.empty()) {
    state_ = State::kFlushThenClose;
    Drive();
  }
}

void Http1Connection::Close(CloseReason reason, bool reset) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  reason_ = reason;
  reset_ = reset;
  if (active_) {
    ReleaseEndpoint(false);
    EndAccounting();
    active_ = false;
  }
  DropUpstream(true);
  EventLoop* loop = w_->loop();
  loop->Cancel(&recv_op_);
  loop->Cancel(&send_op_);
  loop->Cancel(&shutdown_op_);
  loop->Cancel(&timer_op_);
  MaybeFinish();
}

bool Http1Connection::AnyInFlight() const {
  return recv_op_.in_flight() || send_op_.in_flight() || shutdown_op_.in_flight() || timer_op_.in_flight();
}

void Http1Connection::MaybeFinish() {
  if (finished_ || state_ != State::kClosed || AnyInFlight() || driving_) return;
  finished_ = true;
  if (reset_) {
    linger lg{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  }
  w_->loop()->Close(fd_);
  fd_ = -1;
  up_q_.Clear();
  down_q_.Clear();
  w_->stats().Closed(reason_);
  Http1Proxy* host = host_;
  w_->loop()->Defer([host, this] { host->Destroy(this); });
}

ConnectionInfo Http1Connection::Info() const {
  ConnectionInfo info = DownstreamInfo(id_, w_->id(), *listener_, peer_, orig_dst_, route_, start_ns_);
  info.endpoint = last_endpoint_;
  info.bytes_up = bytes_up_;
  info.bytes_down = bytes_down_;
  switch (state_) {
    case State::kOpen:
      info.state = active_ ? "http1_request" : "http1_idle";
      break;
    case State::kFlushThenClose:
    case State::kLinger:
      info.state = "http1_closing";
      break;
    case State::kClosed:
      info.state = "closing";
      break;
  }
  info.buffered_up = up_q_.size() + in_.size();
  info.buffered_down = down_q_.size();
  info.peak_buffered = peak_buffered_;
  info.buffer_cap = cap_;
  info.requests = requests_;
  info.protocol = "http1";
  return info;
}

// --- the worker's L7 side ---------------------------------------------------

Http1Proxy::Http1Proxy(Worker* worker) : worker_(worker), pool_(worker, PoolOptions(worker->options())) {}

Http1Proxy::~Http1Proxy() {
  if (!conns_.empty()) {
    spdlog::critical("http1 proxy freed with {} connection(s) left", conns_.size());
    std::abort();
  }
}

void Http1Proxy::Adopt(uint64_t id, int fd, std::shared_ptr<const ListenerInfo> listener,
                       const SocketAddress& peer, const SocketAddress& orig_dst,
                       std::shared_ptr<const RouteTable> routes, const ServiceRoute* route) {
  auto conn = std::make_unique<Http1Connection>(this, id, fd, std::move(listener), peer, orig_dst,
                                                std::move(routes), route);
  Http1Connection* c = conn.get();
  conns_[id] = std::move(conn);
  worker_->stats().connections_active.fetch_add(1, std::memory_order_relaxed);
  worker_->stats().Add(worker_->stats().http_connections);
  c->Start();
}

void Http1Proxy::AbortAll(CloseReason reason) {
  std::vector<Http1Connection*> all;
  all.reserve(conns_.size());
  for (auto& [id, c] : conns_) all.push_back(c.get());
  for (Http1Connection* c : all) c->Abort(reason);
  pool_.CloseIdle();
}

void Http1Proxy::Drain() {
  std::vector<Http1Connection*> all;
  all.reserve(conns_.size());
  for (auto& [id, c] : conns_) all.push_back(c.get());
  for (Http1Connection* c : all) c->Drain();
}

void Http1Proxy::AppendInfo(std::vector<ConnectionInfo>* out) const {
  for (const auto& [id, c] : conns_) out->push_back(c->Info());
}

void Http1Proxy::Destroy(Http1Connection* c) {
  if (conns_.erase(c->id()) > 0) worker_->stats().connections_active.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace ringmesh::proxy::l7
