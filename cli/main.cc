// ringmeshctl: the node's view of ringmesh. Reads the pinned BPF maps and
// the admin endpoints of agent and proxy; needs no Kubernetes API.
#include "CLI/CLI.hpp"
#include "cli/common.h"

int main(int argc, char** argv) {
  using namespace ringmesh::ctl;
  CLI::App app{"ringmeshctl: inspect ringmesh on this node"};
  app.require_subcommand(1);
  // Global options also after the subcommand: `ringmeshctl certs -o json`.
  app.fallthrough();
  Globals g;
  app.add_option("--pin-dir", g.pin_dir, "bpffs instance directory of the agent")->capture_default_str();
  app.add_option("--proxy-admin", g.proxy_admin, "proxy admin Unix socket")->capture_default_str();
  app.add_option("--agent-status", g.agent_status, "agent status file")->capture_default_str();
  app.add_option("-o,--output", g.output, "output format")->check(CLI::IsMember({"table", "json"}));
  app.add_option("--timeout-ms", g.timeout_ms, "admin request timeout")->check(CLI::Range(1, 600000));

  int rc = 0;
  app.add_subcommand("status", "health of agent, proxy and datapath")->callback([&] { rc = RunStatus(g); });
  app.add_subcommand("workloads", "pods on this node and their enrollment")->callback([&] { rc = RunWorkloads(g); });
  app.add_subcommand("services", "services, endpoints and balancing state")->callback([&] { rc = RunServices(g); });
  app.add_subcommand("connections", "live proxied connections")->callback([&] { rc = RunConnections(g); });
  app.add_subcommand("certs", "workload certificates (mTLS identities) of this node's pods")->callback([&] {
    rc = RunCerts(g);
  });
  app.add_subcommand("policies", "AuthorizationPolicies, the pods they apply to, denials")->callback([&] {
    rc = RunPolicies(g);
  });
  auto* bpf = app.add_subcommand("bpf", "programs, links, maps, counters, fast path");
  bpf->callback([&] {
    if (bpf->get_subcommands().empty()) rc = RunBpf(g);
  });
  std::string state;
  auto* fp = bpf->add_subcommand("fastpath", "turn the sk_msg fast path on or off");
  fp->add_option("state", state)->required()->check(CLI::IsMember({"on", "off"}));
  fp->callback([&] { rc = RunBpfFastpath(g, state == "on"); });
  CLI11_PARSE(app, argc, argv);
  return rc;
}
