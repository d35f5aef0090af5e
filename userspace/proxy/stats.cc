#include "userspace/proxy/stats.h"

#include <unistd.h>

#include <cstdio>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "userspace/proxy/tls/tls_context.h"

namespace ringmesh::proxy {

const char* ToString(CloseReason r) {
  switch (r) {
#define RINGMESH_CLOSE_STR(e, s) \
  case CloseReason::e:           \
    return s;
    RINGMESH_CLOSE_REASONS(RINGMESH_CLOSE_STR)
#undef RINGMESH_CLOSE_STR
    case CloseReason::kCount:
      break;
  }
  return "?";
}

TcpMetricCell* ProxyStats::Cell(const std::string& workload, const std::string& ns,
                                const std::string& service) {
  std::lock_guard<std::mutex> lock(mu_);
  std::tuple<std::string, std::string, std::string> key{workload, ns, service};
  if (!cells_.contains(key) && cells_.size() >= kMaxTcpCells) key = {"overflow", "overflow", "overflow"};
  auto& slot = cells_[key];
  if (!slot) {
    slot = std::make_shared<TcpMetricCell>();
    slot->source_workload = std::get<0>(key);
    slot->source_workload_namespace = std::get<1>(key);
    slot->destination_service = std::get<2>(key);
  }
  slot->holders.fetch_add(1, std::memory_order_relaxed);
  return slot.get();
}

std::vector<std::shared_ptr<const TcpMetricCell>> ProxyStats::Cells() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<const TcpMetricCell>> out;
  out.reserve(cells_.size());
  for (const auto& [key, cell] : cells_) out.push_back(cell);
  return out;
}

size_t ProxyStats::PruneSources(const std::set<std::pair<std::string, std::string>>& live) {
  // Under mu_, where Cell/HttpCell take holders: a cell seen with none here
  // cannot be handed out meanwhile.
  std::lock_guard<std::mutex> lock(mu_);
  auto gone = [&](const auto& cell) {
    return cell->source_workload != "overflow" &&
           !live.contains({cell->source_workload, cell->source_workload_namespace}) &&
           cell->holders.load(std::memory_order_relaxed) == 0;
  };
  size_t n = 0;
  n += std::erase_if(cells_, [&](const auto& kv) { return gone(kv.second); });
  n += std::erase_if(http_cells_, [&](const auto& kv) { return gone(kv.second); });
  return n;
}

void HttpMetricCell::Observe(double ms) {
  requests.fetch_add(1, std::memory_order_relaxed);
  size_t i = 0;
  while (i < kIstioDurationBuckets && ms > kIstioDurationBucketsMs[i]) ++i;
  buckets[i].fetch_add(1, std::memory_order_relaxed);
  duration_us_sum.fetch_add(static_cast<uint64_t>(ms * 1000), std::memory_order_relaxed);
}

HttpMetricCell* ProxyStats::HttpCell(const std::string& workload, const std::string& ns,
                                     const std::string& service, int response_code,
                                     const std::string& flags) {
  std::lock_guard<std::mutex> lock(mu_);
  std::tuple<std::string, std::string, std::string, int, std::string> key{workload, ns, service,
                                                                          response_code, flags};
  if (!http_cells_.contains(key) && http_cells_.size() >= kMaxHttpCells) {
    key = {"overflow", "overflow", "overflow", 0, "-"};
  }
  auto& slot = http_cells_[key];
  if (!slot) {
    slot = std::make_shared<HttpMetricCell>();
    slot->source_workload = std::get<0>(key);
    slot->source_workload_namespace = std::get<1>(key);
    slot->destination_service = std::get<2>(key);
    slot->response_code = std::get<3>(key);
    slot->response_flags = std::get<4>(key);
  }
  slot->holders.fetch_add(1, std::memory_order_relaxed);
  return slot.get();
}

std::vector<std::shared_ptr<const HttpMetricCell>> ProxyStats::HttpCells() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<const HttpMetricCell>> out;
  out.reserve(http_cells_.size());
  for (const auto& [key, cell] : http_cells_) out.push_back(cell);
  return out;
}

uint64_t ProcessRssBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long long size = 0, resident = 0;
  int n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

namespace {

std::string Escape(const std::string& v) {
  return absl::StrReplaceAll(v, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
}

void Metric(std::string& out, const char* name, const char* type, const char* help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

}  // namespace

std::string RenderMetrics(const ProxyStats& s) {
  auto load = [](const auto& a) { return a.load(std::memory_order_relaxed); };
  std::string out;
  Metric(out, "ringmesh_proxy_connections_active", "gauge", "Proxied connections currently open.");
  absl::StrAppend(&out, "ringmesh_proxy_connections_active ", load(s.connections_active), "\n");
  Metric(out, "ringmesh_proxy_connections_total", "counter", "Connections accepted.");
  absl::StrAppend(&out, "ringmesh_proxy_connections_total ", load(s.connections_total), "\n");
  Metric(out, "ringmesh_proxy_connections_closed_total", "counter", "Connections closed, by reason.");
  for (size_t i = 0; i < kCloseReasonCount; ++i) {
    auto r = static_cast<CloseReason>(i);
    absl::StrAppend(&out, "ringmesh_proxy_connections_closed_total{reason=\"", ToString(r), "\"} ",
                    s.closed(r), "\n");
  }
  Metric(out, "ringmesh_proxy_bytes_total", "counter", "Bytes forwarded, by direction.");
  absl::StrAppend(&out, "ringmesh_proxy_bytes_total{direction=\"upstream\"} ", load(s.bytes_upstream), "\n");
  absl::StrAppend(&out, "ringmesh_proxy_bytes_total{direction=\"downstream\"} ", load(s.bytes_downstream),
                  "\n");
  Metric(out, "ringmesh_proxy_orig_dst_miss_total", "counter",
         "Accepted connections without an original destination.");
  absl::StrAppend(&out, "ringmesh_proxy_orig_dst_miss_total ", load(s.orig_dst_miss), "\n");
  Metric(out, "ringmesh_proxy_upstream_connect_failures_total", "counter",
         "Failed upstream connect attempts.");
  absl::StrAppend(&out, "ringmesh_proxy_upstream_connect_failures_total ", load(s.upstream_connect_failures),
                  "\n");
  Metric(out, "ringmesh_proxy_overloaded_total", "counter", "Connections reset at --max-connections.");
  absl::StrAppend(&out, "ringmesh_proxy_overloaded_total ", load(s.overloaded), "\n");
  Metric(out, "ringmesh_proxy_sockhash_add_failures_total", "counter",
         "Accepted sockets that stayed off the sk_msg fast path.");
  absl::StrAppend(&out, "ringmesh_proxy_sockhash_add_failures_total ", load(s.sockhash_add_failures), "\n");
  Metric(
      out, "ringmesh_proxy_spliced_connections_total", "counter",
      "Connections between two pods of this node whose data path the proxy left (--splice-after-forwards).");
  absl::StrAppend(&out, "ringmesh_proxy_spliced_connections_total ", load(s.spliced_connections), "\n");
  Metric(out, "ringmesh_proxy_listen_queue_drained_total", "counter",
         "Connections taken from a listening socket's queue as it was removed (no accept wake-up was lost).");
  absl::StrAppend(&out, "ringmesh_proxy_listen_queue_drained_total ", load(s.drained_from_listen_queue),
                  "\n");
  Metric(out, "ringmesh_proxy_spliced_bytes_total", "counter",
         "Bytes those pods sent straight to each other (also in the byte totals).");
  absl::StrAppend(&out, "ringmesh_proxy_spliced_bytes_total ", load(s.spliced_bytes), "\n");
  Metric(out, "ringmesh_proxy_splice_holds_total", "counter",
         "Writes into a spliced connection's reader the proxy held because that reader had most of the "
         "fast-path "
         "budget unread");
  absl::StrAppend(&out, "ringmesh_proxy_splice_holds_total ", load(s.splice_holds), "\n");
  Metric(out, "ringmesh_proxy_splice_hold_timeouts_total", "counter",
         "Spliced readers that made no room for --splice-hold-max-ms: the proxy stopped waiting and that leg "
         "went "
         "over TCP for good");
  absl::StrAppend(&out, "ringmesh_proxy_splice_hold_timeouts_total ", load(s.splice_hold_timeouts), "\n");
  Metric(out, "ringmesh_proxy_http_connections_total", "counter",
         "Connections of http routes served per request by the L7 proxy.");
  absl::StrAppend(&out, "ringmesh_proxy_http_connections_total ", load(s.http_connections), "\n");
  Metric(out, "ringmesh_proxy_http_request_timeouts_total", "counter",
         "HTTP requests without their complete response within --http-request-timeout-ms.");
  absl::StrAppend(&out, "ringmesh_proxy_http_request_timeouts_total ", load(s.http_request_timeouts), "\n");
  Metric(out, "ringmesh_proxy_authz_denied_total", "counter",
         "Connections denied by an AuthorizationPolicy at the destination side, by path (an inbound mTLS "
         "tunnel's CONNECT answered 401; between two pods of this node, a connection reset or an HTTP request "
         "answered 403).");
  absl::StrAppend(&out, "ringmesh_proxy_authz_denied_total{path=\"hbone\"} ", load(s.authz_denied_hbone),
                  "\n");
  absl::StrAppend(&out, "ringmesh_proxy_authz_denied_total{path=\"local\"} ", load(s.authz_denied_local),
                  "\n");
  Metric(out, "ringmesh_proxy_http_retries_total", "counter",
         "HTTP requests tried again (connect failure, reset, or a status in --http-retry-statuses).");
  absl::StrAppend(&out, "ringmesh_proxy_http_retries_total ", load(s.http_retries), "\n");
  Metric(out, "ringmesh_proxy_http_retry_budget_exhausted_total", "counter",
         "HTTP retries not made because the route's retry budget was spent (--http-retry-budget-*).");
  absl::StrAppend(&out, "ringmesh_proxy_http_retry_budget_exhausted_total ",
                  load(s.http_retry_budget_exhausted), "\n");
  Metric(out, "ringmesh_proxy_http_per_try_timeouts_total", "counter",
         "HTTP tries without a response head within --http-per-try-timeout-ms.");
  absl::StrAppend(&out, "ringmesh_proxy_http_per_try_timeouts_total ", load(s.http_per_try_timeouts), "\n");
  Metric(out, "ringmesh_proxy_upstream_spare_sockets", "gauge",
         "Unconnected upstream sockets made ahead in pod namespaces (--upstream-socket-batch).");
  absl::StrAppend(&out, "ringmesh_proxy_upstream_spare_sockets ", load(s.upstream_spare_sockets), "\n");
  Metric(out, "ringmesh_proxy_upstream_mark_failures_total", "counter",
         "Upstream sockets SO_MARK (--proxy-mark) could not be set on; in mesh mode their connect fails.");
  absl::StrAppend(&out, "ringmesh_proxy_upstream_mark_failures_total ", load(s.upstream_mark_failures), "\n");

  Metric(out, "ringmesh_hbone_inbound_connections_total", "counter",
         "mTLS tunnel connections accepted on <pod IP>:15008.");
  absl::StrAppend(&out, "ringmesh_hbone_inbound_connections_total ", load(s.hbone_inbound_connections), "\n");
  Metric(out, "ringmesh_hbone_inbound_streams_total", "counter",
         "CONNECT streams that passed the checks (target served here, authorized).");
  absl::StrAppend(&out, "ringmesh_hbone_inbound_streams_total ", load(s.hbone_streams), "\n");
  Metric(out, "ringmesh_hbone_inbound_failures_total", "counter",
         "Inbound tunnels that ended badly, by reason (TLS handshake refusals by their reason).");
  absl::StrAppend(&out, "ringmesh_hbone_inbound_failures_total{reason=\"no_certificate\"} ",
                  load(s.hbone_no_certificate), "\n");
  absl::StrAppend(&out, "ringmesh_hbone_inbound_failures_total{reason=\"handshake_timeout\"} ",
                  load(s.hbone_handshake_timeouts), "\n");
  absl::StrAppend(&out, "ringmesh_hbone_inbound_failures_total{reason=\"protocol\"} ",
                  load(s.hbone_protocol_failures), "\n");
  for (size_t i = 1; i < kTlsReasonSlots; ++i) {
    const char* name = tls::TlsErrorName(static_cast<tls::TlsError>(i));
    if (std::string_view(name) == "unknown") continue;
    absl::StrAppend(&out, "ringmesh_hbone_inbound_failures_total{reason=\"tls_", name, "\"} ",
                    load(s.hbone_tls_failures[i]), "\n");
  }

  Metric(out, "ringmesh_hbone_outbound_streams_total", "counter",
         "Connections to mesh pods of other nodes sent as CONNECT streams through an mTLS tunnel.");
  absl::StrAppend(&out, "ringmesh_hbone_outbound_streams_total ", load(s.hbone_outbound_streams), "\n");
  Metric(out, "ringmesh_hbone_outbound_tunnels_total", "counter",
         "mTLS tunnel connections opened to other nodes' proxies (pooled per source identity, destination "
         "identity and destination IP).");
  absl::StrAppend(&out, "ringmesh_hbone_outbound_tunnels_total ", load(s.hbone_outbound_tunnels), "\n");
  Metric(out, "ringmesh_hbone_outbound_tls_failures_total", "counter",
         "Outbound tunnels whose TLS handshake failed (the far end's identity or chain was refused, or it "
         "refused ours).");
  absl::StrAppend(&out, "ringmesh_hbone_outbound_tls_failures_total ", load(s.hbone_outbound_tls_failures),
                  "\n");

  const auto cells = s.Cells();
  struct Family {
    const char* name;
    const char* help;
    const std::atomic<uint64_t> TcpMetricCell::*field;
  };
  const Family families[] = {
      {"istio_tcp_connections_opened_total", "TCP connections opened.", &TcpMetricCell::opened},
      {"istio_tcp_connections_closed_total", "TCP connections closed.", &TcpMetricCell::closed},
      {"istio_tcp_sent_bytes_total", "Bytes sent to the destination.", &TcpMetricCell::sent_bytes},
      {"istio_tcp_received_bytes_total", "Bytes received from the destination.",
       &TcpMetricCell::received_bytes},
  };
  for (const Family& f : families) {
    Metric(out, f.name, "counter", f.help);
    for (const auto& c : cells) {
      absl::StrAppend(&out, f.name, "{reporter=\"source\",source_workload=\"", Escape(c->source_workload),
                      "\",source_workload_namespace=\"", Escape(c->source_workload_namespace),
                      "\",destination_service=\"", Escape(c->destination_service), "\"} ",
                      load(c.get()->*f.field), "\n");
    }
  }
  const auto http_cells = s.HttpCells();
  auto http_labels = [](const std::shared_ptr<const HttpMetricCell>& c) {
    return absl::StrCat("reporter=\"source\",source_workload=\"", Escape(c->source_workload),
                        "\",source_workload_namespace=\"", Escape(c->source_workload_namespace),
                        "\",destination_service=\"", Escape(c->destination_service), "\",response_code=\"",
                        c->response_code, "\",request_protocol=\"http\",response_flags=\"",
                        Escape(c->response_flags), "\"");
  };
  Metric(out, "istio_requests_total", "counter", "HTTP requests, by response code and flags.");
  for (const auto& c : http_cells) {
    absl::StrAppend(&out, "istio_requests_total{", http_labels(c), "} ", load(c->requests), "\n");
  }
  Metric(out, "istio_request_duration_milliseconds", "histogram",
         "HTTP request duration, from the request head to the response's end.");
  for (const auto& c : http_cells) {
    const std::string labels = http_labels(c);
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= kIstioDurationBuckets; ++i) {
      cumulative += load(c->buckets[i]);
      const std::string le = i < kIstioDurationBuckets ? absl::StrCat(kIstioDurationBucketsMs[i]) : "+Inf";
      absl::StrAppend(&out, "istio_request_duration_milliseconds_bucket{", labels, ",le=\"", le, "\"} ",
                      cumulative, "\n");
    }
    absl::StrAppend(&out, "istio_request_duration_milliseconds_sum{", labels, "} ",
                    static_cast<double>(load(c->duration_us_sum)) / 1000.0, "\n");
    absl::StrAppend(&out, "istio_request_duration_milliseconds_count{", labels, "} ", cumulative, "\n");
  }
  Metric(out, "ringmesh_proxy_rss_bytes", "gauge", "Resident set size of the proxy process.");
  absl::StrAppend(&out, "ringmesh_proxy_rss_bytes ", ProcessRssBytes(), "\n");
  return out;
}

}  // namespace ringmesh::proxy
