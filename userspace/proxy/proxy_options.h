// Tunables of the proxy data plane (set from ringmesh-proxy's flags).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "userspace/proxy/event_loop.h"
#include "userspace/proxy/lb.h"
#include "userspace/proxy/retry_budget.h"

namespace ringmesh::proxy {

struct ProxyOptions {
  int workers = 1;
  IoBackend backend = IoBackend::kAuto;
  // Per direction per connection: a side whose unsent bytes reach this stops
  // being read (backpressure).
  size_t buffer_bytes = 64 * 1024;
  absl::Duration connect_timeout = absl::Seconds(5);
  absl::Duration idle_timeout = absl::Hours(1);
  // SO_MARK on upstream sockets so the BPF hooks (and policy routing) can
  // tell the proxy's own traffic apart.
  uint32_t proxy_mark = 0x539;
  // Mesh mode (the BPF hooks redirect pods' connects): an upstream socket
  // SO_MARK cannot be set on is closed and its connect fails (an unmarked
  // connect would come back to the proxy). Otherwise the failure is only
  // counted (plain proxy mode, tests without CAP_NET_ADMIN).
  bool require_mark = false;
  // An upstream connection to an enrolled pod on this node joins the sk_msg
  // fast path too (proxy -> server leg), when the fast path is on.
  bool fastpath_upstream = true;
  // With both legs of a connection between two pods of this node on the
  // fast path, the proxy leaves its data path after this many forwards
  // (rm_splice; 0 = never): the two apps' writes then go straight to each
  // other. Short connections (connect, one exchange, close) never pay for
  // setting it up.
  int splice_after_forwards = 3;
  // A spliced connection's writer outrunning its reader: the proxy holds
  // its own writes into that reader while it has 3/4 of the fast-path
  // budget unread, and looks again after this long (rm_unread_args in
  // abi.h). Only for connections that have moved kSpliceHoldAfterBytes.
  // Each further look in a row waits twice as long, at most
  // kSpliceHoldStepMax; a reader that has not made room for splice_hold_max
  // is given up on: the proxy writes, its socket goes over TCP for good and
  // TCP's flow control holds everyone from then on (no more polling).
  absl::Duration splice_hold = absl::Microseconds(50);
  absl::Duration splice_hold_max = absl::Seconds(1);
  static constexpr absl::Duration kSpliceHoldStepMax = absl::Milliseconds(10);
  static constexpr uint64_t kSpliceHoldAfterBytes = uint64_t{1} << 20;
  // Receive buffer of the proxy's two sockets once a connection is spliced
  // (0: the kernel's autotuning). A writer that has fallen back to TCP may
  // go around the proxy again only once the proxy has forwarded all it
  // sent, TCP buffers included: a small window lets the proxy catch up
  // within one pause of the writer (see docs/benchmarks.md, S1).
  int splice_rcvbuf = 512 << 10;
  // A route whose connections average fewer forwards than this is short:
  // its connections stay off the fast path on both legs (rm_short_dst).
  int long_route_forwards() const { return splice_after_forwards > 0 ? splice_after_forwards : 3; }
  // Socket LB: a short route whose ready endpoints are all enrolled pods of
  // this node (at most 8) lets connect() send this many connections
  // straight to one of its endpoints, chosen at random, without the proxy;
  // then kDirectRejudge connections come through the proxy, which judges
  // the route on them and renews the allowance (or, if they have grown
  // long, ends it). 0: every connection goes through the proxy. The agent's
  // fast-path kill switch turns it off too.
  uint32_t direct_connects = 1024;
  static constexpr uint32_t kDirectRejudge = 16;
  // Total connect attempts per connection to a service (first try plus
  // retries on other endpoints).
  int connect_attempts = 2;
  // Per worker; connections beyond it are accepted and reset at once.
  size_t max_connections_per_worker = 65536;
  // Artificial delay before each forward (benchmark self-check); 0 = off.
  absl::Duration forward_delay = absl::ZeroDuration();
  int listen_backlog = 1024;
  // Keep a duplicate of each pod listening socket for a successor proxy
  // (--handover-socket, handover.h); off, none is held.
  bool listener_handover = false;
  // Writes net.ipv4.tcp_migrate_req=1 into every enrolled pod's network
  // namespace (--set-tcp-migrate-req): connections queued on a listening
  // socket that closes then move to another socket of its SO_REUSEPORT
  // group instead of being reset. Off by default: it is the tenant's sysctl,
  // and the handover (--handover-socket) passes the listening sockets
  // themselves, so none closes with connections queued. Only a restart
  // without a handover, beside a proxy still listening, gains from it.
  bool set_tcp_migrate_req = false;
  // Upstream sockets are made inside the source pod's namespace, which takes
  // two setns() calls around socket(); a worker that needs one for a pod
  // makes this many at once and keeps the rest for the next connections
  // (1 = no spares). Spares of a pod unused for `spare_socket_idle` are
  // closed, and so are those of a pod that is gone.
  int upstream_socket_batch = 8;
  absl::Duration spare_socket_idle = absl::Seconds(10);
  // An outbound mTLS tunnel with no stream for this long is closed
  // (GOAWAY).
  absl::Duration tunnel_idle = absl::Minutes(5);
  // L7 (l7/): connections to routes whose protocol is http are served per
  // request (HTTP/1.1, per-request balancing, pooled upstream connections);
  // off, they stay L4 like every other route.
  bool l7_http = true;
  // A request without its complete response this long after its head: 504
  // (or a reset once the response has begun).
  absl::Duration http_request_timeout = absl::Seconds(15);
  // A downstream keep-alive connection with no request for this long is closed.
  absl::Duration http_idle_timeout = absl::Seconds(60);
  // Idle upstream keep-alive connections, per (source pod, endpoint): at most
  // this many, each for at most this long (below common servers' keep-alive
  // timeouts, e.g. Node's 5 s, so the proxy closes first).
  size_t http_upstream_idle_per_key = 16;
  absl::Duration http_upstream_idle_timeout = absl::Seconds(4);
  // Retries of a request (beyond its first try; Istio's default is 2) on
  // another endpoint where possible, for: a failed connect (any method:
  // nothing was sent), a reset or close before the response head, and a
  // response status in `http_retry_statuses` (that response is dropped).
  // The last two only for idempotent methods (RFC 9110 9.2.2) unless
  // `http_retry_non_idempotent`, and only while the request body sent so
  // far is held whole (at most `http_retry_buffer_bytes`, not above
  // buffer_bytes). Every retry takes one from the route's budget.
  int http_retries = 2;
  std::vector<int> http_retry_statuses = {503};
  bool http_retry_non_idempotent = false;
  size_t http_retry_buffer_bytes = 64 * 1024;
  RetryBudgetOptions http_retry_budget;
  // One try without its response head this long: the next try (if a retry
  // is allowed) or 504. 0: only the request timeout.
  absl::Duration http_per_try_timeout = absl::ZeroDuration();
  LbOptions lb;
  EventLoopOptions loop;
};

}  // namespace ringmesh::proxy
