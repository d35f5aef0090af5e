// ringmeshctl workloads: the node's pods as the proxy serves them (listener,
// identity) joined with what the datapath enforces (pods map entry, flags).
#include <iostream>
#include <map>

#include <bpf/bpf.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/common.h"
#include "userspace/bpf/pinned_maps.h"

namespace ringmesh::ctl {
namespace {

// pod_id -> flags from the pinned pods map; empty when not loaded.
std::map<uint32_t, uint32_t> DatapathPods(const Globals& g) {
  std::map<uint32_t, uint32_t> out;
  auto maps = bpf::PinnedMaps::Open(g.pin_dir);
  if (!maps.ok()) return out;
  int fd = maps->map_fd(RM_MAP_PODS);
  uint64_t key, next;
  uint64_t* prev = nullptr;
  for (int i = 0; i < (1 << 20) && bpf_map_get_next_key(fd, prev, &next) == 0; ++i) {
    rm_pod_info info{};
    if (bpf_map_lookup_elem(fd, &next, &info) == 0) out[info.pod_id] = info.flags;
    key = next;
    prev = &key;
  }
  return out;
}

}  // namespace

int RunWorkloads(const Globals& g) {
  auto dump = AdminGetJson(g, "/config_dump");
  if (!dump.ok()) {
    std::cerr << "ringmeshctl: " << dump.status().message() << "\n";
    return 1;
  }
  auto dp = DatapathPods(g);
  nlohmann::json pods = nlohmann::json::array();
  Table t({"NAMESPACE", "NAME", "POD_ID", "IPS", "SERVICE_ACCOUNT", "LISTENER", "DATAPATH"});
  for (auto p : dump->value("pods", nlohmann::json::array())) {
    uint32_t id = p.value("pod_id", 0u);
    std::string datapath = "not enrolled";
    if (auto it = dp.find(id); id != 0 && it != dp.end()) {
      datapath = (it->second & RM_POD_FAIL_CLOSED) ? "enrolled, fail-closed" : "enrolled, fail-open";
    }
    p["datapath"] = datapath;
    std::vector<std::string> ips;
    for (const auto& ip : p.value("ips", nlohmann::json::array())) ips.push_back(ip.get<std::string>());
    std::vector<std::string> listeners;
    for (const auto& l : p.value("listeners", nlohmann::json::array())) listeners.push_back(l.get<std::string>());
    std::string listener = listeners.empty() ? JsonStr(p, "state", "-") : absl::StrJoin(listeners, ",");
    if (!JsonStr(p, "error").empty()) listener = absl::StrCat("error: ", JsonStr(p, "error"));
    t.Add({JsonStr(p, "namespace"), JsonStr(p, "name"), absl::StrCat(id), absl::StrJoin(ips, ","),
           JsonStr(p, "service_account"), listener, datapath});
    pods.push_back(p);
  }
  return Emit(g, pods, t.Render());
}

}  // namespace ringmesh::ctl
