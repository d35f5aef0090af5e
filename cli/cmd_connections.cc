// ringmeshctl connections: live proxied connections: who (source pod), where
// to (original destination, service, chosen endpoint), how much, how old.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "cli/common.h"

namespace ringmesh::ctl {

int RunConnections(const Globals& g) {
  auto conns = AdminGetJson(g, "/connections");
  if (!conns.ok()) {
    std::cerr << "ringmeshctl: " << conns.status().message() << "\n";
    return 1;
  }
  nlohmann::json list = conns->is_array() ? *conns : conns->value("connections", nlohmann::json::array());
  Table t({"ID", "SOURCE_POD", "ORIGINAL_DST", "SERVICE", "ENDPOINT", "BYTES_UP", "BYTES_DOWN", "AGE", "STATE"});
  for (const auto& c : list) {
    std::string src = JsonStr(c, "source_pod");
    if (src.empty() && c.contains("source_namespace")) {
      src = absl::StrCat(JsonStr(c, "source_namespace"), "/", JsonStr(c, "source_name"));
    }
    t.Add({JsonStr(c, "id"), src, JsonStr(c, "original_destination", JsonStr(c, "orig_dst")),
           JsonStr(c, "service", "-"), JsonStr(c, "endpoint", "-"), HumanBytes(c.value("bytes_up", 0ull)),
           HumanBytes(c.value("bytes_down", 0ull)), HumanAge(c.value("age_ms", 0ull)),
           // "spliced": the two pods write straight to each other; the bytes include theirs.
           c.value("spliced", false) ? JsonStr(c, "state") + ",spliced" : JsonStr(c, "state")});
  }
  return Emit(g, list, t.Render());
}

}  // namespace ringmesh::ctl
