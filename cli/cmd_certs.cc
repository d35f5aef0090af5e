// ringmeshctl certs: the workload certificates the proxy holds, one per
// identity of this node's pods: who uses it, its serial, when it expires,
// when it renews and whether the last issue or renewal failed.
#include <iostream>

#include "absl/strings/str_join.h"
#include "cli/common.h"

namespace ringmesh::ctl {

int RunCerts(const Globals& g) {
  auto certs = AdminGetJson(g, "/certs");
  if (!certs.ok()) {
    std::cerr << "ringmeshctl: " << certs.status().message() << "\n";
    return 1;
  }
  if (!certs->value("enabled", false)) {
    if (g.output == "json") return Emit(g, *certs, "");
    std::cout << "workload certificates are off (the proxy was started without --ca-cert)\n";
    return 0;
  }
  const nlohmann::json list = certs->value("identities", nlohmann::json::array());
  Table t({"IDENTITY", "PODS", "STATE", "SERIAL", "NOT_AFTER", "RENEW_AT", "RENEWALS", "ISSUER"});
  for (const auto& c : list) {
    std::vector<std::string> pods = c.value("pods", std::vector<std::string>{});
    std::string state = JsonStr(c, "state");
    if (!JsonStr(c, "last_error").empty()) state += " (" + JsonStr(c, "last_error") + ")";
    std::string serial = JsonStr(c, "serial", "-");
    if (serial.size() > 16) serial = serial.substr(0, 16) + "...";
    t.Add({JsonStr(c, "identity"), absl::StrJoin(pods, ","), state, serial, JsonStr(c, "not_after", "-"),
           JsonStr(c, "renew_at", "-"), JsonStr(c, "renewals", "0"), JsonStr(c, "issuer")});
  }
  return Emit(g, *certs, t.Render());
}

}  // namespace ringmesh::ctl
