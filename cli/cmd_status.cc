// ringmeshctl status: is each part of the node's mesh alive and in step?
// Agent (status file + pid), proxy (admin readiness), datapath (pins).
#include <signal.h>

#include <chrono>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "cli/common.h"
#include "userspace/bpf/pinned_maps.h"

namespace ringmesh::ctl {

int RunStatus(const Globals& g) {
  nlohmann::json j;
  std::string out;
  bool healthy = true;

  auto agent = ReadAgentStatus(g);
  nlohmann::json aj;
  if (!agent.ok()) {
    aj = {{"state", "unknown"}, {"error", std::string(agent.status().message())}};
    healthy = false;
  } else {
    int pid = agent->value("pid", 0);
    bool alive = pid > 0 && kill(pid, 0) == 0;
    aj = *agent;
    aj["state"] = alive ? "running" : "not running";
    healthy &= alive && JsonStr(*agent, "last_error").empty();
  }
  j["agent"] = aj;
  out += absl::StrCat("agent:     ", JsonStr(aj, "state"));
  if (aj.contains("generation")) out += absl::StrCat(", generation ", JsonStr(aj, "generation"));
  if (aj.contains("source")) out += absl::StrCat(", ", JsonStr(aj, "source"));
  if (std::string h = JsonStr(aj, "source_health"); !h.empty() && h != "ok" && h != "synced") {
    out += absl::StrCat("\n  source: ", h);
    healthy = false;
  }
  if (!JsonStr(aj, "last_error").empty()) out += absl::StrCat("\n  last error: ", JsonStr(aj, "last_error"));
  if (!JsonStr(aj, "error").empty()) out += absl::StrCat("\n  ", JsonStr(aj, "error"));
  out += "\n";

  auto ready = AdminGet(g, "/healthz/ready");
  nlohmann::json pj;
  pj["ready"] = ready.ok();
  if (!ready.ok()) pj["error"] = std::string(ready.status().message());
  auto dump = AdminGetJson(g, "/config_dump");
  if (dump.ok()) {
    pj["generation"] = dump->value("generation", nlohmann::json());
    if (dump->contains("io_backend")) pj["io_backend"] = (*dump)["io_backend"];
  }
  healthy &= ready.ok();
  j["proxy"] = pj;
  out += absl::StrCat("proxy:     ", ready.ok() ? "ready" : "not ready");
  if (pj.contains("generation")) out += absl::StrCat(", generation ", JsonStr(pj, "generation"));
  if (pj.contains("io_backend")) out += absl::StrCat(", io ", JsonStr(pj, "io_backend"));
  if (!ready.ok()) out += absl::StrCat("\n  ", ready.status().message());
  out += "\n";

  auto maps = bpf::PinnedMaps::Open(g.pin_dir);
  nlohmann::json dj;
  dj["pin_dir"] = g.pin_dir;
  if (!maps.ok()) {
    dj["loaded"] = false;
    dj["error"] = std::string(maps.status().message());
    healthy = false;
    out += absl::StrCat("datapath:  not loaded (", maps.status().message(), ")\n");
  } else {
    dj["loaded"] = true;
    dj["fastpath_enabled"] = maps->FastpathEnabled();
    auto c = maps->ReadCounters();
    if (c.ok()) dj["redirected"] = (*c)[RM_CTR_REDIRECTED];
    out += absl::StrCat("datapath:  loaded at ", g.pin_dir, ", fast path ", maps->FastpathEnabled() ? "on" : "off",
                        c.ok() ? absl::StrCat(", ", (*c)[RM_CTR_REDIRECTED], " connections redirected") : "", "\n");
  }
  j["datapath"] = dj;
  j["healthy"] = healthy;
  Emit(g, j, out);
  return healthy ? 0 : 3;
}

}  // namespace ringmesh::ctl
