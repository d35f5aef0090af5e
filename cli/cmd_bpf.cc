// ringmeshctl bpf: programs and links, maps with fill and capacity, every
// decision counter, and the sk_msg fast-path switch.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "cli/common.h"
#include "userspace/bpf/inspect.h"
#include "userspace/bpf/pinned_maps.h"

namespace ringmesh::ctl {

int RunBpf(const Globals& g) {
  auto maps = bpf::PinnedMaps::Open(g.pin_dir);
  if (!maps.ok()) {
    std::cerr << "ringmeshctl: " << maps.status().message() << "\n";
    return 1;
  }
  nlohmann::json j;
  j["pin_dir"] = g.pin_dir;
  j["fastpath_enabled"] = maps->FastpathEnabled();
  j["fastpath_budget_bytes"] = maps->FastpathBudget();
  const uint32_t fc = maps->FlowControl();
  const char* fc_name = fc == RM_FLOW_CONTROL_AUTO           ? "auto"
                        : fc == RM_FLOW_CONTROL_PROXY_CREDIT ? "proxy-credit"
                                                             : "unknown";
  j["fastpath_flow_control"] = fc_name;
  std::string out = absl::StrCat("pin dir:   ", g.pin_dir, "\nfast path: ", maps->FastpathEnabled() ? "on" : "off",
                                 " (budget ", maps->FastpathBudget(), " bytes unread per socket, flow control ",
                                 fc_name, ")\n\nLINKS\n");
  auto links = bpf::DescribeLinks(g.pin_dir);
  if (!links.ok()) {
    std::cerr << "ringmeshctl: " << links.status().message() << "\n";
    return 1;
  }
  Table lt({"PIN", "LINK", "PROG", "PROG_NAME", "ATTACH", "CGROUP_ID"});
  j["links"] = nlohmann::json::array();
  for (const auto& l : *links) {
    lt.Add({l.pin, absl::StrCat(l.link_id), absl::StrCat(l.prog_id), l.prog_name, l.attach,
            l.cgroup_id ? absl::StrCat(l.cgroup_id) : "-"});
    j["links"].push_back({{"pin", l.pin},
                          {"link_id", l.link_id},
                          {"prog_id", l.prog_id},
                          {"prog_name", l.prog_name},
                          {"attach", l.attach},
                          {"cgroup_id", l.cgroup_id}});
  }
  out += lt.Render();

  auto ms = bpf::DescribeMaps(*maps);
  if (!ms.ok()) {
    std::cerr << "ringmeshctl: " << ms.status().message() << "\n";
    return 1;
  }
  out += "\nMAPS\n";
  Table mt({"MAP", "TYPE", "ENTRIES", "MAX", "FILL"});
  j["maps"] = nlohmann::json::array();
  for (const auto& m : *ms) {
    std::string fill = "-";
    if (m.entries && m.max_entries) {
      fill = absl::StrCat(*m.entries * 100 / m.max_entries, "%");
    }
    mt.Add({m.name, m.type, m.entries ? absl::StrCat(*m.entries) : "-", absl::StrCat(m.max_entries), fill});
    nlohmann::json mj = {{"name", m.name}, {"type", m.type}, {"max_entries", m.max_entries}};
    mj["entries"] = m.entries ? nlohmann::json(*m.entries) : nlohmann::json();
    j["maps"].push_back(mj);
  }
  out += mt.Render();

  auto counters = maps->ReadCounters();
  if (!counters.ok()) {
    std::cerr << "ringmeshctl: " << counters.status().message() << "\n";
    return 1;
  }
  out += "\nCOUNTERS\n";
  Table ct({"COUNTER", "VALUE"});
  j["counters"] = nlohmann::json::object();
  for (int i = 0; i < RM_CTR_MAX; ++i) {
    ct.Add({bpf::CounterName(i), absl::StrCat((*counters)[i])});
    j["counters"][bpf::CounterName(i)] = (*counters)[i];
  }
  out += ct.Render();
  return Emit(g, j, out);
}

int RunBpfFastpath(const Globals& g, bool on) {
  auto maps = bpf::PinnedMaps::Open(g.pin_dir);
  if (!maps.ok()) {
    std::cerr << "ringmeshctl: " << maps.status().message() << "\n";
    return 1;
  }
  if (auto st = maps->SetFastpath(on); !st.ok()) {
    std::cerr << "ringmeshctl: " << st.message() << "\n";
    return 1;
  }
  return Emit(g, {{"fastpath_enabled", on}}, absl::StrCat("fast path ", on ? "on" : "off", "\n"));
}

}  // namespace ringmesh::ctl
