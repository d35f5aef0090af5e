// ringmesh-proxy: the node's shared transparent proxy. In mesh mode it
// takes snapshots from the agent (--agent-socket) and original destinations
// from the pinned BPF maps (--bpf-pin-dir). With no pin dir it is a plain
// L4 proxy from --listen to --static-destination, used by tests and
// benchmarks.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"
#include "userspace/common/ip.h"
#include "userspace/proxy/admin.h"
#include "userspace/proxy/agent_client.h"
#include "userspace/proxy/orig_dst.h"
#include "userspace/proxy/proxy_core.h"
#include "userspace/proxy/socket_mark.h"

#ifdef RINGMESH_PROXY_HAVE_BPF
#include "userspace/bpf/pinned_maps.h"
#endif

namespace {

using ringmesh::SocketAddress;
namespace rp = ringmesh::proxy;

int Main(int argc, char** argv) {
  CLI::App app{"ringmesh node proxy"};
  int workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::string io_backend = "auto";
  std::string admin_socket;
  std::string admin_socket_group;
  int admin_port = 0;
  std::string agent_socket;
  std::string bpf_pin_dir;
  std::string static_destination;
  std::vector<std::string> listen;
  std::string proxy_mark = "0x539";
  bool set_tcp_migrate_req = false;
  size_t buffer_bytes = 64 * 1024;
  int64_t connect_timeout_ms = 5000;
  int64_t idle_timeout_ms = 3600 * 1000;
  int64_t drain_timeout_ms = 5000;
  size_t max_connections = 65536;
  int connect_attempts = 2;
  int64_t delay_us = 0;
  int upstream_socket_batch = 8;
  int64_t spare_socket_idle_ms = 10000;
  std::string log_level = "info";

  app.add_option("--workers", workers, "Data-plane threads (default: number of CPUs)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--io-backend", io_backend, "auto|io_uring|epoll")
      ->check(CLI::IsMember({"auto", "io_uring", "epoll"}));
  app.add_option("--admin-socket", admin_socket, "Unix socket path of the admin API (mode 0600)");
  app.add_option("--admin-socket-group", admin_socket_group,
                 "Group allowed to use the admin socket (mode 0660)");
  app.add_option("--admin-port", admin_port, "Admin API on 127.0.0.1:PORT (0 = off)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--agent-socket", agent_socket, "Agent's snapshot socket");
  app.add_option("--bpf-pin-dir", bpf_pin_dir,
                 "Pinned BPF maps of this node (empty: no BPF, plain-proxy mode)");
  app.add_option("--static-destination", static_destination, "Plain mode: forward everything to IP:PORT");
  app.add_option("--listen", listen, "Plain mode: listen on IP:PORT (repeatable)");
  app.add_option("--proxy-mark", proxy_mark, "SO_MARK of upstream sockets");
  std::string fastpath_upstream = "on";
  app.add_option("--fastpath-upstream", fastpath_upstream,
                 "upstream connections to enrolled pods on this node join the sk_msg fast path (on|off)")
      ->check(CLI::IsMember({"on", "off"}));
  int splice_after_forwards = 3;
  uint32_t direct_connects = rp::ProxyOptions{}.direct_connects;
  app.add_option("--splice-after-forwards", splice_after_forwards,
                 "leave the data path of a connection between two pods of this node after this many forwards "
                 "(both legs on the fast path; 0 = never)")
      ->check(CLI::Range(0, 1 << 20));
  int splice_hold_us = 50;
  app.add_option(
         "--splice-hold-us", splice_hold_us,
         "a spliced connection whose reader has most of the fast-path budget unread: the proxy holds its "
         "writes to that reader and looks again after this many microseconds")
      ->check(CLI::Range(1, 1000000));
  int splice_hold_max_ms = 1000;
  app.add_option(
         "--splice-hold-max-ms", splice_hold_max_ms,
         "stop holding writes for a reader that has not made room for this long (its leg then goes over "
         "TCP for good)")
      ->check(CLI::Range(1, 3600000));
  int splice_rcvbuf = rp::ProxyOptions{}.splice_rcvbuf;
  app.add_option("--splice-rcvbuf-bytes", splice_rcvbuf,
                 "receive buffer of the proxy's sockets of a spliced connection (0 = kernel autotuning)")
      ->check(CLI::Range(0, 64 << 20));
  app.add_option("--direct-connects", direct_connects,
                 "socket LB: connections of a short route between pods of this node that connect() may send "
                 "straight to an endpoint before the proxy sees the route again (0 = all through the proxy)")
      ->check(CLI::Range(0u, 1u << 30));
  app.add_option("--buffer-bytes", buffer_bytes, "Per-direction buffer cap per connection")
      ->check(CLI::Range(size_t{1}, size_t{64} << 20));
  app.add_option("--connect-timeout-ms", connect_timeout_ms, "Upstream connect timeout")
      ->check(CLI::PositiveNumber);
  app.add_option("--idle-timeout-ms", idle_timeout_ms, "Idle connection timeout")->check(CLI::PositiveNumber);
  app.add_option("--drain-timeout-ms", drain_timeout_ms, "Drain deadline on SIGTERM")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-connections", max_connections, "Per worker; excess is accepted and reset")
      ->check(CLI::Range(size_t{1}, size_t{1} << 24));
  app.add_option("--connect-attempts", connect_attempts, "Connect attempts per connection to a service")
      ->check(CLI::Range(1, 16));
  app.add_option("--upstream-socket-batch", upstream_socket_batch,
                 "Upstream sockets made per trip into a pod namespace; the rest wait as spares (1 = none)")
      ->check(CLI::Range(1, 64));
  app.add_option("--spare-socket-idle-ms", spare_socket_idle_ms,
                 "Close a pod's spare upstream sockets unused this long")
      ->check(CLI::PositiveNumber);
  app.add_option("--delay-us", delay_us,
                 "Artificial delay before each forward (benchmark self-check; no splice then)")
      ->check(CLI::NonNegativeNumber);
  bool l7 = true;
  int64_t http_request_timeout_ms = 15000;
  app.add_option("--l7", l7, "Serve http routes per request (HTTP/1.1); false: L4 like the rest");
  app.add_option("--http-request-timeout-ms", http_request_timeout_ms,
                 "L7: a request without its complete response this long gets 504")
      ->check(CLI::PositiveNumber);
  const rp::ProxyOptions l7_defaults;
  int http_retries = l7_defaults.http_retries;
  std::vector<int> http_retry_statuses = l7_defaults.http_retry_statuses;
  bool http_retry_non_idempotent = false;
  size_t http_retry_buffer_bytes = l7_defaults.http_retry_buffer_bytes;
  double retry_budget_percent = l7_defaults.http_retry_budget.ratio * 100;
  int retry_budget_min = l7_defaults.http_retry_budget.min_concurrent;
  int64_t http_per_try_timeout_ms = 0;
  app.add_option("--http-retries", http_retries, "L7: retries per request beyond the first try")
      ->check(CLI::Range(0, 10));
  app.add_option("--http-retry-statuses", http_retry_statuses,
                 "L7: response statuses that are retried (comma-separated; default 503)")
      ->delimiter(',')
      ->check(CLI::Range(100, 599));
  app.add_option("--http-retry-non-idempotent", http_retry_non_idempotent,
                 "L7: also retry POST/PATCH/... after the request went out");
  app.add_option("--http-retry-buffer-bytes", http_retry_buffer_bytes,
                 "L7: request bodies up to this size are kept for a retry (at most --buffer-bytes)");
  app.add_option("--http-retry-budget-percent", retry_budget_percent,
                 "L7: retries in flight per route, as a share of its requests in flight")
      ->check(CLI::Range(0.0, 100.0));
  app.add_option("--http-retry-budget-min", retry_budget_min,
                 "L7: retries in flight per route allowed anyway")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--http-per-try-timeout-ms", http_per_try_timeout_ms,
                 "L7: a try without its response head this long is retried or gets 504 (0: off)")
      ->check(CLI::NonNegativeNumber);
  int outlier_failures = l7_defaults.lb.eject_after_failures;
  int64_t outlier_ejection_ms = absl::ToInt64Milliseconds(l7_defaults.lb.ejection_time);
  int outlier_max_percent = l7_defaults.lb.max_ejected_percent;
  app.add_option("--outlier-consecutive-failures", outlier_failures,
                 "Eject an endpoint after this many failures in a row (connect, reset, 5xx; 0: never)")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--outlier-ejection-ms", outlier_ejection_ms,
                 "Base ejection time, times the number of ejections")
      ->check(CLI::PositiveNumber);
  app.add_option("--outlier-max-ejected-percent", outlier_max_percent,
                 "At most this share of a service's endpoints ejected at once")
      ->check(CLI::Range(0, 100));
  std::string handover_socket, take_over_from;
  app.add_option(
      "--handover-socket", handover_socket,
      "Unix socket on which a successor proxy takes over the pod listening sockets (restart without drops)");
  app.add_flag(
      "--set-tcp-migrate-req", set_tcp_migrate_req,
      "Write net.ipv4.tcp_migrate_req=1 into every enrolled pod's netns (changes the tenants' sysctl; "
      "only a restart without --handover-socket gains from it)");
  app.add_option("--take-over-from", take_over_from,
                 "a running proxy's --handover-socket: listen on its sockets instead of opening new ones");
  // Workload identities (mTLS): off unless a CA is given.
  ringmesh::proxy::tls::WorkloadIdentityOptions identity;
  int64_t cert_ttl_s = absl::ToInt64Seconds(identity.ttl);
  app.add_option("--trust-domain", identity.trust_domain, "SPIFFE trust domain of this cluster's identities");
  auto* ca_cert =
      app.add_option("--ca-cert", identity.ca_cert_path,
                     "PEM certificate of the CA that issues this node's workload certificates "
                     "(an intermediate or a root; e.g. from a Secret). Unset: no workload certificates");
  app.add_option("--ca-key", identity.ca_key_path, "PEM private key of --ca-cert")->needs(ca_cert);
  app.add_option("--ca-chain", identity.ca_chain_path, "PEM certificates above --ca-cert (optional)")
      ->needs(ca_cert);
  app.add_option(
         "--trust-bundle", identity.trust_bundle_path,
         "PEM roots peers' certificates must chain to, several allowed, reloaded when the file changes "
         "(default: --ca-cert)")
      ->needs(ca_cert);
  app.add_option("--cert-ttl-s", cert_ttl_s, "Lifetime of workload certificates; renewed at half-life")
      ->check(CLI::Range(int64_t{2}, int64_t{365} * 86400));
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error");
  CLI11_PARSE(app, argc, argv);

  // Logs go to stderr; stdout stays free for anything a caller may parse.
  spdlog::set_default_logger(spdlog::stderr_color_mt("ringmesh-proxy"));
  spdlog::set_level(spdlog::level::from_str(log_level));

  rp::ProxyOptions options;
  options.workers = workers;
  options.backend = *rp::ParseIoBackend(io_backend);
  options.buffer_bytes = buffer_bytes;
  options.fastpath_upstream = fastpath_upstream == "on";
  options.splice_after_forwards = splice_after_forwards;
  options.splice_hold = absl::Microseconds(splice_hold_us);
  options.splice_hold_max = absl::Milliseconds(splice_hold_max_ms);
  options.splice_rcvbuf = splice_rcvbuf;
  options.direct_connects = direct_connects;
  options.listener_handover = !handover_socket.empty();
  options.set_tcp_migrate_req = set_tcp_migrate_req;
  options.connect_timeout = absl::Milliseconds(connect_timeout_ms);
  options.idle_timeout = absl::Milliseconds(idle_timeout_ms);
  options.max_connections_per_worker = max_connections;
  options.connect_attempts = connect_attempts;
  options.forward_delay = absl::Microseconds(delay_us);
  options.upstream_socket_batch = upstream_socket_batch;
  options.spare_socket_idle = absl::Milliseconds(spare_socket_idle_ms);
  options.l7_http = l7;
  options.http_request_timeout = absl::Milliseconds(http_request_timeout_ms);
  options.http_retries = http_retries;
  options.http_retry_statuses = http_retry_statuses;
  options.http_retry_non_idempotent = http_retry_non_idempotent;
  options.http_retry_buffer_bytes = http_retry_buffer_bytes;
  options.http_retry_budget.ratio = retry_budget_percent / 100;
  options.http_retry_budget.min_concurrent = retry_budget_min;
  options.http_per_try_timeout = absl::Milliseconds(http_per_try_timeout_ms);
  options.lb.eject_after_failures = outlier_failures;
  options.lb.ejection_time = absl::Milliseconds(outlier_ejection_ms);
  options.lb.max_ejected_percent = outlier_max_percent;
  try {
    options.proxy_mark = static_cast<uint32_t>(std::stoul(proxy_mark, nullptr, 0));
  } catch (const std::exception&) {
    spdlog::error("--proxy-mark: not a number: {}", proxy_mark);
    return 2;
  }

  // Signals are taken synchronously by this thread; every thread started
  // below inherits the mask, so none of them is interrupted.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::shared_ptr<rp::OrigDstResolver> resolver;
#ifdef RINGMESH_PROXY_HAVE_BPF
  std::unique_ptr<ringmesh::bpf::PinnedMaps> maps;
#endif
  if (bpf_pin_dir.empty()) {
    auto dst = SocketAddress::Parse(static_destination);
    if (!dst || listen.empty()) {
      spdlog::error("without --bpf-pin-dir, --static-destination IP:PORT and --listen IP:PORT are required");
      return 2;
    }
    resolver = std::make_shared<rp::StaticOrigDstResolver>(*dst);
  } else {
    // Mesh mode: the hooks redirect pods' connects, and only the mark keeps
    // the proxy's own upstream connects from being redirected to itself.
    if (absl::Status st = rp::ProbeSocketMark(options.proxy_mark); !st.ok()) {
      spdlog::error("mesh mode: {}", std::string(st.message()));
      return 1;
    }
    options.require_mark = true;
#ifdef RINGMESH_PROXY_HAVE_BPF
    auto opened = ringmesh::bpf::PinnedMaps::Open(bpf_pin_dir);
    if (!opened.ok()) {
      spdlog::error("opening pinned maps in {}: {}", bpf_pin_dir, opened.status().ToString());
      return 1;
    }
    maps = std::make_unique<ringmesh::bpf::PinnedMaps>(std::move(*opened));
    // What a previous proxy told the datapath about short routes (and the
    // endpoints it armed for socket LB) is its view, not this one's.
    maps->ClearShortRoutes();
    resolver = std::make_shared<rp::BpfOrigDstResolver>(maps.get());
#else
    spdlog::error("this build has no BPF support");
    return 2;
#endif
  }

  auto core = rp::ProxyCore::Create(options, resolver);
  if (!core.ok()) {
    spdlog::error("starting proxy: {}", core.status().ToString());
    return 1;
  }
  if (!identity.ca_cert_path.empty()) {
    if (identity.ca_key_path.empty()) {
      spdlog::error("--ca-cert needs --ca-key");
      return 2;
    }
    identity.ttl = absl::Seconds(cert_ttl_s);
    auto ids = ringmesh::proxy::tls::WorkloadIdentities::Start(identity);
    if (!ids.ok()) {
      spdlog::error("workload certificates: {}", ids.status().ToString());
      return 1;
    }
    spdlog::info("workload certificates: trust domain {}, lifetime {} s", identity.trust_domain, cert_ttl_s);
    (*core)->SetWorkloadIdentities(std::move(*ids));
  }
  for (const std::string& l : listen) {
    auto addr = SocketAddress::Parse(l);
    if (!addr) {
      spdlog::error("--listen: bad address {}", l);
      return 2;
    }
    auto bound = (*core)->AddListener(*addr);
    if (!bound.ok()) {
      spdlog::error("listen {}: {}", l, bound.status().ToString());
      return 1;
    }
    spdlog::info("listening on {}", bound->ToString());
  }

  if (!take_over_from.empty()) {
    // Before the first snapshot, so its pods listen on these sockets. A
    // predecessor that is not there is not an error: new sockets join the
    // SO_REUSEPORT group of whatever still listens.
    auto inherited = rp::TakeOverListeners(take_over_from, 5000);
    if (inherited.ok()) {
      size_t n = 0;
      for (const auto& [key, fds] : *inherited) n += fds.size();
      spdlog::info("took over {} listening socket(s) in {} set(s) from {}", n, inherited->size(),
                   take_over_from);
      (*core)->Inherit(std::move(*inherited));
    } else {
      spdlog::warn("no listeners taken over from {}: {}", take_over_from, inherited.status().ToString());
    }
  }
  std::unique_ptr<rp::HandoverServer> handover;
  if (!handover_socket.empty()) {
    auto h = rp::HandoverServer::Start(handover_socket, [c = core->get()] { return c->HandoverSets(); });
    if (!h.ok()) {
      spdlog::error("handover socket: {}", h.status().ToString());
      return 1;
    }
    handover = std::move(*h);
  }

  std::unique_ptr<rp::AdminServer> admin;
  if (!admin_socket.empty() || admin_port != 0) {
    auto a = rp::AdminServer::Start(
        {.unix_path = admin_socket, .unix_group = admin_socket_group, .tcp_port = admin_port}, core->get());
    if (!a.ok()) {
      spdlog::error("admin: {}", a.status().ToString());
      return 1;
    }
    admin = std::move(*a);
  }

  std::unique_ptr<rp::AgentClient> agent;
  if (!agent_socket.empty()) {
    agent =
        std::make_unique<rp::AgentClient>(rp::AgentClient::Options{.socket_path = agent_socket}, core->get());
    agent->Start();
  }

  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("signal {}: draining (deadline {} ms)", sig, drain_timeout_ms);
  if (agent) agent->Stop();
  bool clean = (*core)->Drain(absl::Milliseconds(drain_timeout_ms));
  handover.reset();
  if (admin) admin->Stop();
  (*core)->Stop();
  core->reset();
  spdlog::info("stopped{}", clean ? "" : " (connections reset at the drain deadline)");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
