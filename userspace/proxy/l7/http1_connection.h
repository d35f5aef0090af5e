// HTTP/1.1 on the proxy's data path: one downstream connection of a route
// whose protocol is http, served request by request. Each request picks its
// own endpoint with the route's LoadBalancer (the request's latency is the
// balancer's sample) and travels on a pooled keep-alive upstream connection
// of the source pod (upstream_pool.h). Requests of one downstream
// connection are served one at a time, in order: the parser pauses after
// each message and pipelined bytes wait in the bounded receive buffer.
//
// Bodies stream both ways through bounded queues (a parser pauses while
// the queue toward the other side is full; no body is ever held whole),
// re-framed by the encoder (Content-Length, chunked with trailers, until
// close). Errors the proxy answers itself, each counted in the golden
// metrics with Envoy's response flags: malformed request -> the parser's
// status (DPE), no endpoint -> 503 (UH), connect failures -> 503 (UF),
// upstream reset or protocol error before the response head -> 502 (UC /
// UPE; URX once retries were made), request timeout -> 504 (UT). Upgrade
// and CONNECT are answered 501: this slice forwards no protocol switch.
//
// Retries (ProxyOptions::http_retries and what follows it): a failed
// connect, a reset before the response head, a per-try timeout and a
// retriable status are tried again on another endpoint while the policy,
// the request (idempotent, its body still held whole: Exchange::replay) and
// the route's RetryBudget allow; a dead reused keep-alive connection is
// resent on a fresh one once without counting as a retry (the request
// never reached a server).
//
// Lifetime as Connection's: owned by the worker's Http1Proxy; Abort()
// cancels every op, the object frees itself once the final completions
// arrived.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "userspace/common/ip.h"
#include "userspace/proxy/byte_queue.h"
#include "userspace/proxy/connection.h"
#include "userspace/proxy/event_loop.h"
#include "userspace/proxy/http/http1_parser.h"
#include "userspace/proxy/l7/upstream_pool.h"
#include "userspace/proxy/orig_dst.h"
#include "userspace/proxy/proxy_options.h"
#include "userspace/proxy/route_table.h"
#include "userspace/proxy/stats.h"

namespace ringmesh::proxy {
class Worker;
}

namespace ringmesh::proxy::l7 {

class Http1Proxy;

// Whether connections to `route` are served by the L7 proxy: L7 on, the
// route's protocol is http, and no endpoint is a mesh pod of another node
// (those are reached through an mTLS tunnel, which only the L4 path does).
bool ServesHttp1(const ProxyOptions& options, const RouteTable& routes, const ServiceRoute& route);

class Http1Connection final : public IoHandler, public UpstreamOwner {
 public:
  Http1Connection(Http1Proxy* host, uint64_t id, int fd, std::shared_ptr<const ListenerInfo> listener,
                  SocketAddress peer, SocketAddress orig_dst, std::shared_ptr<const RouteTable> routes,
                  const ServiceRoute* route);
  ~Http1Connection();
  Http1Connection(const Http1Connection&) = delete;
  Http1Connection& operator=(const Http1Connection&) = delete;

  void Start();
  void Abort(CloseReason reason);
  // The proxy drains (a successor serves the listeners now): end where no
  // request is lost. Idle between requests with nothing received: a
  // graceful close now. Otherwise the current response carries
  // "connection: close" and the connection ends after it.
  void Drain();
  uint64_t id() const { return id_; }
  ConnectionInfo Info() const;

  void OnCompletion(IoOp* op, const Completion& c) override;
  void OnUpstreamConnected(UpstreamConn* u, int res) override;
  void OnUpstreamData(UpstreamConn* u) override;
  void OnUpstreamEnded(UpstreamConn* u, int res) override;
  void OnUpstreamSent(UpstreamConn* u, int res) override;

 private:
  enum class State : uint8_t { kOpen, kFlushThenClose, kLinger, kClosed };

  // The parsers' events, one handler per direction.
  class RequestEvents final : public http::Http1Handler {
   public:
    explicit RequestEvents(Http1Connection* c) : c_(c) {}
    Action OnHead(const http::Http1Head& head) override { return c_->OnRequestHead(head); }
    Action OnBody(std::string_view data) override { return c_->OnRequestBody(data); }
    void OnTrailers(const http::HeaderList& t) override { c_->req_trailers_ = t; }
    Action OnMessageComplete() override { return c_->OnRequestComplete(); }

   private:
    Http1Connection* c_;
  };
  class ResponseEvents final : public http::Http1Handler {
   public:
    explicit ResponseEvents(Http1Connection* c) : c_(c) {}
    Action OnHead(const http::Http1Head& head) override { return c_->OnResponseHead(head); }
    Action OnBody(std::string_view data) override { return c_->OnResponseBody(data); }
    void OnTrailers(const http::HeaderList& t) override { c_->resp_trailers_ = t; }
    Action OnMessageComplete() override { return c_->OnResponseComplete(); }

   private:
    Http1Connection* c_;
  };

  // One request and its response.
  struct Exchange {
    int64_t start_ns = 0;
    std::string method;
    std::string path;  // the request target in origin form ("/a?b"), for authorization
    std::string host;  // the Host header
    bool req_body = false;      // the request has a body (chunked, or a length > 0)
    bool local_reply = false;   // answered by the proxy; the rest of the request is let go
    int version_minor = 1;
    bool req_chunked = false;
    bool req_complete = false;
    std::string head;  // the encoded request head
    size_t head_sent = 0;
    int64_t sent_ns = 0;     // when the head was out on the connection that answered
    bool body_sent = false;  // a body byte went to the current upstream connection
    size_t endpoint = LoadBalancer::kNone;
    std::vector<size_t> tried;
    SocketAddress target;
    UpstreamConn* up = nullptr;
    bool connected = false;
    bool reused = false;
    bool resent = false;          // sent again on a fresh connection: the reused one was dead
    int tries = 0;                // endpoints picked: the first try and the retries
    int retries = 0;              // retries made, each holding one of the route's budget
    bool budget_counted = false;  // counted in the route's requests in flight
    bool retry_status = false;    // the response is dropped and the request retried
    bool went_out = false;        // a byte of the request went out on some try
    int64_t try_start_ns = 0;
    // The request body as sent (encoded), for a retry: held while it fits
    // http_retry_buffer_bytes; past that the request is not retried once
    // a byte of it went out.
    std::string replay;
    bool replayable = true;
    bool up_ended = false;  // EOF or error from the upstream connection
    bool up_error = false;  // a reset or send error rather than a clean EOF
    bool sample_given = false;
    std::unique_ptr<http::Http1Parser> resp_parser;
    bool resp_byte = false;       // a response byte arrived on the current connection
    bool resp_head_down = false;  // a final response head went downstream
    bool resp_complete = false;
    bool resp_last = false;  // the upstream connection ends after this response
    bool down_chunked = false;
    int status = 0;
    int fail_status = 0;  // set by a response event: fail the exchange after Feed returns
    const char* fail_flags = "-";
  };

  http::Http1Handler::Action OnRequestHead(const http::Http1Head& head);
  http::Http1Handler::Action OnRequestBody(std::string_view data);
  http::Http1Handler::Action OnRequestComplete();
  http::Http1Handler::Action OnResponseHead(const http::Http1Head& head);
  http::Http1Handler::Action OnResponseBody(std::string_view data);
  http::Http1Handler::Action OnResponseComplete();

  // Runs the connection forward after any event: parses what it can, sends
  // what is queued, arms receives. Re-entrant calls only mark it to run again.
  void Drive();
  void FeedRequest();
  void FeedResponse();
  void PumpUp();
  void PumpDown();
  void ArmDownRecv();
  void ArmTimer();
  void OnTimer(int res);
  void OnDownRecv(const Completion& c);
  void OnDownSent(int res);

  void StartAttempt();
  // Whether the retry policy lets the current request be tried again:
  // `went_out` says whether a byte of it may have reached a server.
  bool RetryAllowed(bool went_out) const;
  // Takes one retry from the route's budget (counted either way).
  bool TakeRetry();
  // Sends the request again (its body from `replay`) to a new endpoint.
  void Retry();
  // The exchange leaves the route's count of requests (and retries) in flight.
  void EndAccounting();
  void ConnectFresh();
  void Attach(UpstreamConn* u, bool reused);
  void DropUpstream(bool reset);
  // The upstream failed before the response completed; `retryable`: the
  // failure is one the retry policy covers (reset, per-try timeout).
  void UpstreamFailed(int status, const char* flags, bool retryable = false);
  void FinishExchange();
  // Each request takes the newest snapshot's route, so a kept-alive
  // connection (clients pool them for hours) follows endpoint changes and
  // AuthorizationPolicies. False: the VIP has no route served here at L7.
  bool RefreshRoute();
  // Answers the current request (or a malformed one) with a canned error
  // and closes once it is sent. With `go_on`, for a request that is whole
  // in its head (no body) and was never sent upstream, the connection
  // carries on with the next request instead (Envoy's local replies).
  void Respond(int status, const char* flags, bool go_on = false);
  void Record(int status, const char* flags);
  void ReleaseEndpoint(bool failed);
  void Close(CloseReason reason, bool reset);
  bool AnyInFlight() const;
  void MaybeFinish();

  Http1Proxy* host_;
  Worker* w_;
  uint64_t id_;
  int fd_;
  std::shared_ptr<const ListenerInfo> listener_;
  SocketAddress peer_;
  SocketAddress orig_dst_;
  std::shared_ptr<const RouteTable> routes_;
  const ServiceRoute* route_;
  std::string service_;  // destination_service label
  size_t cap_;
  State state_ = State::kOpen;
  CloseReason reason_ = CloseReason::kNormal;
  bool reset_ = false;
  bool finished_ = false;

  RequestEvents req_events_{this};
  ResponseEvents resp_events_{this};
  http::Http1Parser req_parser_;
  std::string in_;  // received from downstream, not parsed yet
  bool down_eof_ = false;
  bool close_after_ = false;  // close downstream once the current response is out
  ByteQueue up_q_;            // request body toward the upstream
  ByteQueue down_q_;          // responses toward downstream
  http::HeaderList req_trailers_;
  http::HeaderList resp_trailers_;
  bool active_ = false;  // an exchange is in progress
  Exchange ex_;

  bool driving_ = false;
  bool again_ = false;

  IoOp recv_op_{this, OpType::kRecv};
  IoOp send_op_{this, OpType::kSend};
  IoOp shutdown_op_{this, OpType::kShutdown};
  IoOp timer_op_{this, OpType::kTimer};
  int64_t timer_deadline_ns_ = 0;  // of the timer in flight
  int64_t last_activity_ns_;
  int64_t linger_deadline_ns_ = 0;
  int64_t start_ns_;

  uint64_t requests_ = 0;
  uint64_t bytes_up_ = 0;
  uint64_t bytes_down_ = 0;
  size_t peak_buffered_ = 0;
  std::string last_endpoint_;
  // Metric cells by (status, flags): looked up once per connection.
  std::map<std::pair<int, std::string>, HttpMetricCell*> cells_;
};

// The L7 side of one worker: its HTTP/1 connections and upstream pool.
class Http1Proxy {
 public:
  explicit Http1Proxy(Worker* worker);
  ~Http1Proxy();
  Http1Proxy(const Http1Proxy&) = delete;
  Http1Proxy& operator=(const Http1Proxy&) = delete;

  // Takes over an accepted connection whose route ServesHttp1.
  void Adopt(uint64_t id, int fd, std::shared_ptr<const ListenerInfo> listener, const SocketAddress& peer,
             const SocketAddress& orig_dst, std::shared_ptr<const RouteTable> routes,
             const ServiceRoute* route);
  void AbortAll(CloseReason reason);
  // Http1Connection::Drain on each.
  void Drain();
  void AppendInfo(std::vector<ConnectionInfo>* out) const;
  size_t connections() const { return conns_.size(); }
  // Nothing left whose ops could be in flight.
  bool empty() const { return conns_.empty() && pool_.empty(); }
  UpstreamPool& pool() { return pool_; }
  Worker* worker() { return worker_; }
  void Destroy(Http1Connection* c);

 private:
  Worker* worker_;
  UpstreamPool pool_;
  std::unordered_map<uint64_t, std::unique_ptr<Http1Connection>> conns_;
};

}  // namespace ringmesh::proxy::l7
