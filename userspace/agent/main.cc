// ringmesh-agent: loads and pins the BPF datapath, reads the node's desired
// state and publishes snapshots to the proxy. See docs/architecture.md.
#include <signal.h>

#include <atomic>
#include <cstdlib>

#include "CLI/CLI.hpp"
#include "userspace/agent/agent.h"
#include "userspace/agent/k8s/kubernetes_source.h"
#include "userspace/common/logging.h"

namespace {
std::atomic<ringmesh::agent::Agent*> g_agent{nullptr};
void OnSignal(int) {
  if (auto* a = g_agent.load()) a->Stop();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ringmesh-agent: loads the BPF datapath and feeds the node proxy"};
  ringmesh::agent::AgentOptions opts;
  std::string node_file;
  std::string log_level = "info";
  bool uninstall = false;
  std::string fastpath = "on";
  std::string flow_control = "auto";
  std::string source = "auto";
  ringmesh::agent::k8s::KubernetesOptions ko;
  std::string cgroup_driver = "auto";
  int token_refresh_s = 60, backoff_initial_ms = 800, backoff_max_ms = 30000, connect_timeout_ms = 10000,
      stall_timeout_s = 90;
  app.add_option("--pin-dir", opts.datapath.pin_dir, "bpffs instance directory (one per node)")->required();
  app.add_option("--cgroup", opts.datapath.cgroup_path, "cgroup v2 directory whose pods are meshed");
  app.add_option("--source", source, "where pods and services come from (auto: file if --node-file is given)")
      ->check(CLI::IsMember({"auto", "file", "kubernetes"}));
  app.add_option("--node-file", node_file, "node file (YAML) with pods, services and endpoints");
  app.add_option("--node-name", ko.node_name, "this node's name (default $NODE_NAME)");
  app.add_option("--kubeconfig", ko.kubeconfig, "kubeconfig for running outside a cluster");
  app.add_option("--kube-context", ko.kubeconfig_context, "kubeconfig context");
  app.add_option("--api-server", ko.api_server, "API server URL override");
  app.add_option("--token-file", ko.token_file, "service-account token file (re-read periodically)");
  app.add_option("--ca-file", ko.ca_file, "API server CA bundle");
  app.add_option("--token-refresh-s", token_refresh_s, "token re-read period")->check(CLI::Range(1, 86400));
  app.add_option("--cgroup-driver", cgroup_driver, "kubelet cgroup driver")
      ->check(CLI::IsMember({"auto", "systemd", "cgroupfs"}));
  app.add_option("--cgroup-root", ko.cgroup_root, "cgroup v2 mount (default: detected)");
  app.add_option("--kubelet-cgroup-root", ko.kubelet_cgroup_root, "kubelet's --cgroup-root");
  app.add_option("--k8s-backoff-initial-ms", backoff_initial_ms)->check(CLI::Range(10, 600000));
  app.add_option("--k8s-backoff-max-ms", backoff_max_ms)->check(CLI::Range(10, 3600000));
  app.add_option("--k8s-connect-timeout-ms", connect_timeout_ms)->check(CLI::Range(10, 600000));
  app.add_option("--k8s-stall-timeout-s", stall_timeout_s, "reconnect a watch silent this long")
      ->check(CLI::Range(1, 3600));
  app.add_option("--k8s-max-list-bytes", ko.reflector.max_list_bytes,
                 "bytes of one list of a kind (all pages); a bigger list is refused and retried. Keep it "
                 "well under the agent's memory limit")
      ->check(CLI::Range(size_t{64} << 10, size_t{1} << 40));
  app.add_option("--k8s-max-event-bytes", ko.reflector.max_event_bytes,
                 "bytes of one watch event (parsed whole: about 7x this in memory)")
      ->check(CLI::Range(size_t{64} << 10, size_t{1} << 32));
  app.add_option("--k8s-remote-pods", ko.remote_pods,
                 "watch every pod of the cluster (compactly) to know which pod IPs of other nodes a ringmesh "
                 "proxy serves, and their identities (connections to them go through mTLS tunnels)")
      ->default_val(true);
  app.add_option("--agent-socket", opts.agent_socket, "Unix socket the proxy connects to")
      ->default_val("/run/ringmesh/agent.sock");
  app.add_option("--status-file", opts.status_file, "JSON status file read by ringmeshctl")
      ->default_val("/run/ringmesh/agent-status.json");
  app.add_option("--proxy-mark", opts.datapath.proxy_mark, "SO_MARK of the proxy's own sockets")
      ->default_val(0x539);
  app.add_option("--max-pods", opts.datapath.max_pods, "capacity of the pods map")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-opt-out-cidrs", opts.datapath.max_opt_out_cidrs, "capacity of the opt-out CIDR map")
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-orig-dst", opts.datapath.max_orig_dst, "capacity of the original-destination map")
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-sockhash", opts.datapath.max_sockhash, "capacity of the sk_msg sockhash")
      ->check(CLI::Range(1, 1 << 22));
  app.add_option(
         "--max-short-routes", opts.datapath.max_short_routes,
         "capacity of the map of service destinations whose connections are too short for the fast path "
         "(LRU: the oldest joins again)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option(
         "--max-direct-backends", opts.datapath.max_direct_backends,
         "capacity of the per-endpoint counters of connections sent straight to an endpoint of a short "
         "route (socket LB; LRU: the oldest counter starts again)")
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--fastpath", fastpath, "initial sk_msg fast path state when nothing is pinned")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--fastpath-budget-bytes", opts.datapath.fastpath_budget,
                 "bytes one socket may have sent over the sk_msg fast path that its peer has not read yet; "
                 "the write that would exceed it goes over TCP, and so does everything after it")
      ->check(CLI::Range(uint64_t{RM_MIN_FASTPATH_BUDGET}, uint64_t{1} << 40));
  app.add_option("--fastpath-flow-control", flow_control,
                 "how the budget learns what a fast-path reader took: auto (the kernel's count of the "
                 "peer's unread bytes, Linux 6.12+, else proxy credit) or proxy-credit")
      ->check(CLI::IsMember({"auto", "proxy-credit"}));
  app.add_option("--poll-interval-ms", opts.poll_interval_ms, "node file polling period")
      ->check(CLI::Range(10, 60000));
  app.add_option("--lease-timeout-ms", opts.lease_timeout_ms,
                 "take the datapath over from another agent on this pin dir silent this long")
      ->check(CLI::Range(100, 600000));
  app.add_flag("--uninstall", uninstall, "unpin every map, link and program under --pin-dir and exit");
  app.add_option("--log-level", log_level)->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  opts.datapath.fastpath = fastpath == "on";
  opts.datapath.flow_control = flow_control == "auto" ? RM_FLOW_CONTROL_AUTO : RM_FLOW_CONTROL_PROXY_CREDIT;

  if (uninstall) {
    auto st = ringmesh::bpf::Datapath::Uninstall(opts.datapath.pin_dir);
    if (!st.ok()) {
      spdlog::error("uninstall: {}", st.message());
      return 1;
    }
    spdlog::info("removed {}", opts.datapath.pin_dir);
    return 0;
  }
  if (opts.datapath.cgroup_path.empty()) {
    spdlog::error("--cgroup is required (or --uninstall)");
    return 2;
  }
  if (source == "auto") source = node_file.empty() ? "kubernetes" : "file";
  std::unique_ptr<ringmesh::agent::EndpointSource> src;
  if (source == "file") {
    if (node_file.empty()) {
      spdlog::error("--source file needs --node-file");
      return 2;
    }
    src = std::make_unique<ringmesh::agent::NodeFileSource>(node_file);
  } else {
    auto driver = ringmesh::agent::k8s::ParseCgroupDriver(cgroup_driver);
    ko.cgroup_driver = *driver;  // CLI11 already checked the value
    ko.token_refresh = std::chrono::seconds(token_refresh_s);
    ko.reflector.backoff_initial = std::chrono::milliseconds(backoff_initial_ms);
    ko.reflector.backoff_max = std::chrono::milliseconds(backoff_max_ms);
    ko.reflector.connect_timeout = std::chrono::milliseconds(connect_timeout_ms);
    ko.reflector.stall_timeout = std::chrono::seconds(stall_timeout_s);
    auto k = ringmesh::agent::k8s::KubernetesSource::Create(ko);
    if (!k.ok()) {
      spdlog::error("kubernetes source: {}", k.status().message());
      return 2;
    }
    src = std::move(*k);
  }

  ringmesh::agent::Agent agent(opts, std::move(src));
  if (auto st = agent.Start(); !st.ok()) {
    spdlog::error("start: {}", st.message());
    return 1;
  }
  g_agent.store(&agent);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  auto st = agent.Run();
  g_agent.store(nullptr);
  if (!st.ok()) {
    spdlog::error("{}", st.message());
    return 1;
  }
  // Pins stay: the datapath keeps working while no agent runs.
  spdlog::info("agent stopped; datapath stays pinned in {}", opts.datapath.pin_dir);
  return 0;
}
