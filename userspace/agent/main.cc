// ringmesh-agent: loads and pins the BPF datapath, reads the node's desired
// state and publishes snapshots to the proxy. See docs/architecture.md.
#include <signal.h>

#include <atomic>
#include <cstdlib>

#include "CLI/CLI.hpp"
#include "userspace/common/logging.h"
#include "userspace/agent/agent.h"

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
  app.add_option("--pin-dir", opts.datapath.pin_dir, "bpffs instance directory (one per node)")->required();
  app.add_option("--cgroup", opts.datapath.cgroup_path, "cgroup v2 directory whose pods are meshed");
  app.add_option("--node-file", node_file, "node file (YAML) with pods, services and endpoints");
  app.add_option("--agent-socket", opts.agent_socket, "Unix socket the proxy connects to")
      ->default_val("/run/ringmesh/agent.sock");
  app.add_option("--status-file", opts.status_file, "JSON status file read by ringmeshctl")
      ->default_val("/run/ringmesh/agent-status.json");
  app.add_option("--proxy-mark", opts.datapath.proxy_mark, "SO_MARK of the proxy's own sockets")
      ->default_val(0x539);
  app.add_option("--max-pods", opts.datapath.max_pods, "capacity of the pods map")->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-opt-out-cidrs", opts.datapath.max_opt_out_cidrs, "capacity of the opt-out CIDR map")
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-orig-dst", opts.datapath.max_orig_dst, "capacity of the original-destination map")
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-sockhash", opts.datapath.max_sockhash, "capacity of the sk_msg sockhash")
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--fastpath", fastpath, "initial sk_msg fast path state when nothing is pinned")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--poll-interval-ms", opts.poll_interval_ms, "node file polling period")
      ->check(CLI::Range(10, 60000));
  app.add_flag("--uninstall", uninstall, "unpin every map, link and program under --pin-dir and exit");
  app.add_option("--log-level", log_level)->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  opts.datapath.fastpath = fastpath == "on";

  if (uninstall) {
    auto st = ringmesh::bpf::Datapath::Uninstall(opts.datapath.pin_dir);
    if (!st.ok()) {
      spdlog::error("uninstall: {}", st.message());
      return 1;
    }
    spdlog::info("removed {}", opts.datapath.pin_dir);
    return 0;
  }
  if (opts.datapath.cgroup_path.empty() || node_file.empty()) {
    spdlog::error("--cgroup and --node-file are required (or --uninstall)");
    return 2;
  }

  ringmesh::agent::Agent agent(opts, std::make_unique<ringmesh::agent::NodeFileSource>(node_file));
  if (auto st = agent.Start(); !st.ok()) {
    spdlog::error("start: {}", st.message());
    return 1;
  }
  g_agent.store(&agent);
  struct sigaction sa{};
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
