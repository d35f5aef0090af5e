// ringmeshctl policies: the AuthorizationPolicies the proxy enforces, which
// of this node's pods each applies to (selector and scope), and how many
// connections and requests they have denied.
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/common.h"

namespace ringmesh::ctl {

int RunPolicies(const Globals& g) {
  auto dump = AdminGetJson(g, "/config_dump");
  if (!dump.ok()) {
    std::cerr << "ringmeshctl: " << dump.status().message() << "\n";
    return 1;
  }
  nlohmann::json out = {{"policies", dump->value("authorization_policies", nlohmann::json::array())},
                        {"denied", dump->value("authorization_denied", nlohmann::json::object())}};
  Table t({"NAMESPACE", "NAME", "ACTION", "SELECTOR", "RULES", "APPLIES_TO"});
  for (const auto& p : out["policies"]) {
    std::vector<std::string> labels;
    for (const auto& [k, v] : p.value("match_labels", std::map<std::string, std::string>{})) {
      labels.push_back(absl::StrCat(k, "=", v));
    }
    std::string rules = JsonStr(p, "rules", "0");
    if (p.value("http_rules", 0u) != 0) {
      absl::StrAppend(&rules, " (", p.value("http_rules", 0u), " on HTTP requests)");
    }
    if (p.value("dropped_l7_rules", 0u) != 0) {
      absl::StrAppend(&rules, " (", p.value("dropped_l7_rules", 0u), " with unsupported L7 fields dropped)");
    }
    const auto applies = p.value("applies_to", std::vector<std::string>{});
    t.Add({JsonStr(p, "namespace"), JsonStr(p, "name"), JsonStr(p, "action"),
           labels.empty() ? "(all)" : absl::StrJoin(labels, ","), rules,
           applies.empty() ? "(no pod on this node)" : absl::StrJoin(applies, ",")});
  }
  std::string table = out["policies"].empty() ? "no AuthorizationPolicies: every connection is allowed\n"
                                              : t.Render();
  absl::StrAppend(&table, "denied: ", JsonStr(out["denied"], "hbone", "0"), " through mTLS tunnels, ",
                  JsonStr(out["denied"], "local", "0"), " between pods of this node\n");
  return Emit(g, out, table);
}

}  // namespace ringmesh::ctl
