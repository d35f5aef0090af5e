// Data-plane counters: why connections closed (one counter per reason, the
// data plane's error values), byte and connection totals, and the Istio
// TCP metrics per (source workload, destination service). Workers bump
// relaxed atomics; the admin thread reads them.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace ringmesh::proxy {

// X(enum, metric label)
#define RINGMESH_CLOSE_REASONS(X)                                           \
  X(kNormal, "normal")                    /* both directions finished */    \
  X(kDownstreamReset, "downstream_reset") /* client reset or errored */     \
  X(kUpstreamReset, "upstream_reset")     /* server reset or errored */     \
  X(kConnectFailed, "upstream_connect_failed")                              \
  X(kConnectTimeout, "upstream_connect_timeout")                            \
  X(kIdleTimeout, "idle_timeout")                                           \
  X(kOrigDstMiss, "orig_dst_miss")    /* no original destination known */   \
  X(kNoEndpoint, "no_ready_endpoint") /* service without ready endpoints */ \
  X(kOverloaded, "overloaded")        /* worker at --max-connections */     \
  X(kSocketError, "socket_error")     /* local socket() / setns failures */ \
  X(kDenied, "denied")                /* an AuthorizationPolicy said no */  \
  X(kDrain, "drain_timeout")          /* still open at the drain deadline */

enum class CloseReason : uint8_t {
#define RINGMESH_CLOSE_ENUM(e, s) e,
  RINGMESH_CLOSE_REASONS(RINGMESH_CLOSE_ENUM)
#undef RINGMESH_CLOSE_ENUM
      kCount
};
inline constexpr size_t kCloseReasonCount = static_cast<size_t>(CloseReason::kCount);
const char* ToString(CloseReason r);

// Istio's TCP metrics for one label set. A connection holds its cell
// (ProxyStats::Cell counts it in `holders`, ProxyStats::Release lets go), so
// it keeps a plain pointer; cells of source workloads that left the node
// are freed once nothing holds them (ProxyStats::PruneSources).
struct TcpMetricCell {
  std::string source_workload;
  std::string source_workload_namespace;
  // "<name>.<ns>.svc.cluster.local", or "unknown" for a destination that
  // is no service (one label value however many addresses pods reach).
  std::string destination_service;
  std::atomic<int64_t> holders{0};
  std::atomic<uint64_t> opened{0};
  std::atomic<uint64_t> closed{0};
  std::atomic<uint64_t> sent_bytes{0};      // proxy -> destination (request direction)
  std::atomic<uint64_t> received_bytes{0};  // destination -> proxy (response direction)
};

// Istio's HTTP metrics (istio_requests_total and the
// istio_request_duration_milliseconds histogram) for one label set; held
// and freed like the TCP cells.
inline constexpr double kIstioDurationBucketsMs[] = {0.5,   1,      5,      10,      25,     50,    100,
                                                     250,   500,    1000,   2500,    5000,   10000, 30000,
                                                     60000, 300000, 600000, 1800000, 3600000};
inline constexpr size_t kIstioDurationBuckets = std::size(kIstioDurationBucketsMs);
struct HttpMetricCell {
  std::string source_workload;
  std::string source_workload_namespace;
  std::string destination_service;
  int response_code = 0;
  std::string response_flags;  // Envoy's: "-", UF, UH, UT, UC, UPE, URX, DPE, DC
  std::atomic<int64_t> holders{0};
  std::atomic<uint64_t> requests{0};
  // Non-cumulative per bucket (rendered cumulative); the last is +Inf.
  std::array<std::atomic<uint64_t>, kIstioDurationBuckets + 1> buckets{};
  std::atomic<uint64_t> duration_us_sum{0};
  void Observe(double ms);
};

inline constexpr size_t kTlsReasonSlots = 16;

class ProxyStats {
 public:
  void Add(std::atomic<uint64_t>& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
  void Closed(CloseReason r) { Add(closed_[static_cast<size_t>(r)]); }
  uint64_t closed(CloseReason r) const {
    return closed_[static_cast<size_t>(r)].load(std::memory_order_relaxed);
  }

  // The cell of a label set, held until Release. At most kMaxTcpCells
  // label sets (kMaxHttpCells for HTTP, whose response_code comes from
  // upstreams); beyond that, one cell labelled "overflow".
  static constexpr size_t kMaxTcpCells = 4096;
  static constexpr size_t kMaxHttpCells = 4096;
  TcpMetricCell* Cell(const std::string& workload, const std::string& ns, const std::string& service);
  HttpMetricCell* HttpCell(const std::string& workload, const std::string& ns, const std::string& service,
                           int response_code, const std::string& flags);
  void Release(TcpMetricCell* cell) { cell->holders.fetch_sub(1, std::memory_order_relaxed); }
  void Release(HttpMetricCell* cell) { cell->holders.fetch_sub(1, std::memory_order_relaxed); }
  // Frees the cells whose source (workload, namespace) is not in `live` and
  // that nothing holds: a pod's series end some time after its last pod
  // left the node, instead of piling up for the proxy's lifetime. Returns
  // how many were freed.
  size_t PruneSources(const std::set<std::pair<std::string, std::string>>& live);
  // All cells, for rendering; they stay valid while the vector lives.
  std::vector<std::shared_ptr<const TcpMetricCell>> Cells() const;
  std::vector<std::shared_ptr<const HttpMetricCell>> HttpCells() const;

  std::atomic<uint64_t> connections_total{0};
  std::atomic<int64_t> connections_active{0};
  std::atomic<uint64_t> bytes_upstream{0};    // downstream -> upstream
  std::atomic<uint64_t> bytes_downstream{0};  // upstream -> downstream
  std::atomic<uint64_t> orig_dst_miss{0};
  std::atomic<uint64_t> upstream_connect_failures{0};
  std::atomic<uint64_t> overloaded{0};
  std::atomic<uint64_t> sockhash_add_failures{0};
  // Connections whose data path the proxy left (rm_splice), and the bytes
  // their two pods then sent straight to each other (counted at the end).
  std::atomic<uint64_t> spliced_connections{0};
  std::atomic<uint64_t> spliced_bytes{0};
  std::atomic<uint64_t> splice_holds{0};
  std::atomic<uint64_t> splice_hold_timeouts{0};
  std::atomic<uint64_t> drained_from_listen_queue{0};
  // L7: downstream connections served per request (l7/), and requests that
  // hit the request timeout.
  std::atomic<uint64_t> http_connections{0};
  std::atomic<uint64_t> http_request_timeouts{0};
  // L7 retries made, retries the route's budget refused, tries that hit
  // --http-per-try-timeout-ms.
  std::atomic<uint64_t> http_retries{0};
  std::atomic<uint64_t> http_retry_budget_exhausted{0};
  std::atomic<uint64_t> http_per_try_timeouts{0};
  // Unconnected upstream sockets kept ready per pod namespace (gauge).
  std::atomic<int64_t> upstream_spare_sockets{0};
  // Upstream sockets SO_MARK could not be set on (socket_mark.h).
  std::atomic<uint64_t> upstream_mark_failures{0};
  // Inbound HBONE (mTLS tunnels on <pod IP>:15008).
  std::atomic<uint64_t> hbone_inbound_connections{0};
  // Connections an AuthorizationPolicy denied at the destination side:
  // CONNECTs of inbound tunnels (answered 401) and, between pods of this
  // node, connections (reset) and HTTP requests (answered 403).
  std::atomic<uint64_t> authz_denied_hbone{0};
  std::atomic<uint64_t> authz_denied_local{0};
  std::atomic<uint64_t> hbone_streams{0};         // CONNECTs that passed the checks
  std::atomic<uint64_t> hbone_no_certificate{0};  // the pod had no certificate to answer with
  std::atomic<uint64_t> hbone_handshake_timeouts{0};
  std::atomic<uint64_t> hbone_protocol_failures{0};  // not HTTP/2, protocol errors, abuse
  // Outbound HBONE (connections to mesh pods of other nodes).
  std::atomic<uint64_t> hbone_outbound_streams{0};
  std::atomic<uint64_t> hbone_outbound_tunnels{0};
  std::atomic<uint64_t> hbone_outbound_tls_failures{0};
  // Handshakes refused, by tls::TlsError (index; rendered with its name).
  std::array<std::atomic<uint64_t>, kTlsReasonSlots> hbone_tls_failures{};

 private:
  std::array<std::atomic<uint64_t>, kCloseReasonCount> closed_{};
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, std::string>, std::shared_ptr<TcpMetricCell>> cells_;
  using HttpKey = std::tuple<std::string, std::string, std::string, int, std::string>;
  std::map<HttpKey, std::shared_ptr<HttpMetricCell>> http_cells_;
};

// Prometheus text exposition of `stats` plus process RSS.
std::string RenderMetrics(const ProxyStats& stats);
uint64_t ProcessRssBytes();

}  // namespace ringmesh::proxy
