// ringmeshctl services: services with their endpoints and each endpoint's
// balancing state (readiness, active connections, latency estimate, picks),
// what the proxy judged the route's connections to be (long, short, or
// short with socket LB: connect() goes straight to an endpoint), and the
// connections that went straight to each endpoint.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/common.h"

namespace ringmesh::ctl {

namespace {
std::string Ms(const nlohmann::json& e) {
  if (!e.contains("ewma_ms") || !e["ewma_ms"].is_number()) return "-";
  char buf[32];
  snprintf(buf, sizeof(buf), "%.3f", e["ewma_ms"].get<double>());
  return buf;
}
}  // namespace

// One row per endpoint of each (service, port) route the proxy holds.
int RunServices(const Globals& g) {
  auto dump = AdminGetJson(g, "/config_dump");
  if (!dump.ok()) {
    std::cerr << "ringmeshctl: " << dump.status().message() << "\n";
    return 1;
  }
  auto services = dump->value("services", nlohmann::json::array());
  Table t({"SERVICE", "VIPS", "PORT", "LB", "CONNS", "ENDPOINT", "READY", "ACTIVE", "EWMA_MS", "PICKS", "DIRECT",
           "FAILURES", "EJECTED"});
  for (const auto& s : services) {
    std::string name = absl::StrCat(JsonStr(s, "namespace"), "/", JsonStr(s, "name"));
    std::vector<std::string> vips;
    for (const auto& v : s.value("vips", nlohmann::json::array())) vips.push_back(v.get<std::string>());
    std::string port = absl::StrCat(JsonStr(s, "port"), "->", JsonStr(s, "target_port"), "/", JsonStr(s, "protocol"));
    std::string conns = JsonStr(s, "connections", "-");
    if (s.value("socket_lb", false)) conns += "+socket-lb";
    auto eps = s.value("endpoints", nlohmann::json::array());
    if (eps.empty()) {
      t.Add({name, absl::StrJoin(vips, ","), port, JsonStr(s, "lb"), conns, "(none)"});
      continue;
    }
    bool first = true;
    for (const auto& e : eps) {
      t.Add({first ? name : "", first ? absl::StrJoin(vips, ",") : "", first ? port : "", first ? JsonStr(s, "lb") : "",
             first ? conns : "", JsonStr(e, "ip"), JsonStr(e, "ready", "true"), JsonStr(e, "active_connections", "0"),
             Ms(e), JsonStr(e, "picks", "0"), JsonStr(e, "direct_connections", "-"), JsonStr(e, "connect_failures", "0"),
             JsonStr(e, "ejected", "false")});
      first = false;
    }
  }
  return Emit(g, services, t.Render());
}

}  // namespace ringmesh::ctl
