// ringmeshctl services: services with their endpoints and each endpoint's
// balancing state (readiness, active connections, latency estimate, picks).
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/common.h"

namespace ringmesh::ctl {

int RunServices(const Globals& g) {
  auto dump = AdminGetJson(g, "/config_dump");
  if (!dump.ok()) {
    std::cerr << "ringmeshctl: " << dump.status().message() << "\n";
    return 1;
  }
  auto services = dump->value("services", nlohmann::json::array());
  Table t({"SERVICE", "VIPS", "PORTS", "LB", "ENDPOINT", "READY", "ACTIVE", "EWMA_MS", "PICKS"});
  for (const auto& s : services) {
    std::string name = absl::StrCat(JsonStr(s, "namespace"), "/", JsonStr(s, "name"));
    std::vector<std::string> vips, ports;
    for (const auto& v : s.value("vips", nlohmann::json::array())) vips.push_back(v.get<std::string>());
    for (const auto& p : s.value("ports", nlohmann::json::array())) {
      ports.push_back(absl::StrCat(JsonStr(p, "port"), "->", JsonStr(p, "target_port"), "/", JsonStr(p, "protocol")));
    }
    auto eps = s.value("endpoints", nlohmann::json::array());
    if (eps.empty()) {
      t.Add({name, absl::StrJoin(vips, ","), absl::StrJoin(ports, ","), JsonStr(s, "lb"), "(none)"});
      continue;
    }
    bool first = true;
    for (const auto& e : eps) {
      t.Add({first ? name : "", first ? absl::StrJoin(vips, ",") : "", first ? absl::StrJoin(ports, ",") : "",
             first ? JsonStr(s, "lb") : "", JsonStr(e, "ip"), JsonStr(e, "ready"), JsonStr(e, "active", "0"),
             JsonStr(e, "ewma_ms", "-"), JsonStr(e, "picks", "0")});
      first = false;
    }
  }
  return Emit(g, services, t.Render());
}

}  // namespace ringmesh::ctl
