// Fuzzes the Kubernetes object parsers (userspace/agent/k8s/objects.h), the
// agent's trust boundary towards the API server: ParseService,
// ParseEndpointSlice, ParseNamespace, ParsePod, ObjectKey, ResourceVersionOf
// and the annotation lists ParseOptOutPorts / ParseOptOutCidrs.
//
// Input: JSON text as the API server sends it, parsed the way the reflector
// does (nlohmann, no exceptions). Every parser gets the document itself, and,
// when the document is a list ({"items": [...]}) or a watch event
// ({"type": ..., "object": {...}}), every item / the event's object. An input
// of several lines is also taken as a watch stream, one event per line. (The
// reflector's own line framing is a lambda inside Reflector::Watch, reachable
// only through libcurl, so it is not fuzzed here.) The raw input also goes to
// the two annotation-list parsers.
//
// Properties:
//   - no crash, no exception (the parsers promise never to throw);
//   - serialising the JSON and parsing it again gives the same result from
//     every parser (same object, same "not for us", same error message), so
//     nothing depends on how the API server happened to format a number;
//   - accepted objects are consistent: names present, ObjectKey agrees with
//     them, ports in 1..65535, a Service port's target is a number or a name
//     but never both, an EndpointSlice's endpoints share one address family,
//     a Pod's opt-out lists are sorted, unique and within their bounds, its
//     mode matches its label;
//   - the annotation lists round-trip: the accepted values written back as a
//     list parse to the same values with no warning.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "userspace/agent/k8s/objects.h"
#include "userspace/common/snapshot_json.h"

namespace {

using namespace ringmesh;              // NOLINT
using namespace ringmesh::agent::k8s;  // NOLINT

void Check(bool ok, const char* what, const std::string& detail = "") {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n%s\n", what, detail.c_str());
    std::abort();
  }
}

template <typename T>
bool SameResult(const absl::StatusOr<std::optional<T>>& a, const absl::StatusOr<std::optional<T>>& b) {
  if (a.ok() != b.ok()) return false;
  if (!a.ok()) return a.status() == b.status();
  return *a == *b;
}

template <typename T>
std::string Describe(const absl::StatusOr<std::optional<T>>& r) {
  if (!r.ok()) return r.status().ToString();
  return r->has_value() ? "an object" : "not for us";
}


void CheckPorts(const std::vector<uint16_t>& ports, const std::string& value) {
  Check(std::is_sorted(ports.begin(), ports.end()), "opt-out ports not sorted", value);
  Check(std::adjacent_find(ports.begin(), ports.end()) == ports.end(), "opt-out ports not unique", value);
  Check(ports.size() <= kMaxOptOutPorts, "too many opt-out ports", value);
  Check(ports.empty() || ports.front() >= 1, "opt-out port 0", value);
  std::string text;
  for (uint16_t p : ports) text += std::to_string(p) + ",";
  std::vector<std::string> again_warnings;
  Check(ParseOptOutPorts(text, &again_warnings) == ports && again_warnings.empty(),
        "opt-out ports do not round-trip", text);
}

void CheckCidrs(const std::vector<Cidr>& cidrs, const std::string& value) {
  Check(std::is_sorted(cidrs.begin(), cidrs.end()), "opt-out CIDRs not sorted", value);
  Check(std::adjacent_find(cidrs.begin(), cidrs.end()) == cidrs.end(), "opt-out CIDRs not unique", value);
  Check(cidrs.size() <= kMaxOptOutCidrs, "too many opt-out CIDRs", value);
  std::string text;
  for (const Cidr& c : cidrs) text += c.ToString() + " , ";
  std::vector<std::string> again_warnings;
  Check(ParseOptOutCidrs(text, &again_warnings) == cidrs && again_warnings.empty(),
        "opt-out CIDRs do not round-trip", text);
}

std::string Key(const std::string& ns, const std::string& name) {
  return ns.empty() ? name : ns + "/" + name;
}

void CheckService(const Json& j, const ServiceObject& s) {
  Check(!s.ns.empty() && !s.name.empty(), "Service without namespace/name");
  Check(ObjectKey(j) == Key(s.ns, s.name), "Service key", ObjectKey(j));
  Check(!s.vips.empty(), "Service without a VIP");
  for (const auto& p : s.ports) {
    Check(p.port >= 1, "Service port 0");
    Check((p.target_port == 0) == !p.target_port_name.empty(),
          "Service targetPort both or neither number and name", p.target_port_name);
  }
}

void CheckSlice(const Json& j, const EndpointSliceObject& s) {
  Check(!s.ns.empty() && !s.name.empty() && !s.service.empty(),
        "EndpointSlice without namespace/name/service");
  Check(ObjectKey(j) == Key(s.ns, s.name), "EndpointSlice key", ObjectKey(j));
  for (const auto& p : s.ports) Check(p.port >= 1, "EndpointSlice port 0");
  for (const auto& e : s.endpoints) {
    Check(e.ip.is_v4() == s.endpoints.front().ip.is_v4(), "EndpointSlice mixes address families");
    Check(e.pod.empty() || e.pod.find('/') != std::string::npos, "endpoint pod not <ns>/<name>", e.pod);
  }
}

void CheckNamespace(const Json& j, const NamespaceObject& n) {
  Check(!n.name.empty(), "Namespace without a name");
  std::string key = ObjectKey(j);
  Check(key == n.name || (key.size() > n.name.size() && key.ends_with("/" + n.name)), "Namespace key", key);
  const Json& md = j.at("metadata");
  auto label = md.find("labels");
  std::string want;
  if (label != md.end() && label->is_object() && label->contains(kModeLabel)) {
    want = (*label)[kModeLabel].get<std::string>();
  }
  Check(n.mode == want, "Namespace mode does not match its label", n.mode);
}

void CheckPod(const Json& j, const PodObject& p) {
  Check(!p.ns.empty() && !p.name.empty() && !p.uid.empty(), "Pod without namespace/name/uid");
  Check(ObjectKey(j) == Key(p.ns, p.name), "Pod key", ObjectKey(j));
  auto label = p.labels.find(kModeLabel);
  PodMode want = PodMode::kInherit;
  if (label != p.labels.end() && label->second == "enabled") want = PodMode::kEnabled;
  if (label != p.labels.end() && label->second == "disabled") want = PodMode::kDisabled;
  Check(p.mode == want, "Pod mode does not match its label");
  CheckPorts(p.opt_out_ports, "");
  CheckCidrs(p.opt_out_cidrs, "");
}

// Every parser on one object; `again` is the same object after a
// dump/parse round trip (nullptr when the harness skipped it).
void ParseObject(const Json& j, const Json* again) {
  auto svc = ParseService(j);
  auto slice = ParseEndpointSlice(j);
  auto ns = ParseNamespace(j);
  auto pod = ParsePod(j);
  std::string key = ObjectKey(j);
  std::string rv = ResourceVersionOf(j);
  if (svc.ok() && *svc) CheckService(j, **svc);
  if (slice.ok() && *slice) CheckSlice(j, **slice);
  if (ns.ok() && *ns) CheckNamespace(j, **ns);
  if (pod.ok() && *pod) CheckPod(j, **pod);
  if (!again) return;
  Check(SameResult(svc, ParseService(*again)), "Service differs after a JSON round trip", Describe(svc));
  Check(SameResult(slice, ParseEndpointSlice(*again)), "EndpointSlice differs after a JSON round trip",
        Describe(slice));
  Check(SameResult(ns, ParseNamespace(*again)), "Namespace differs after a JSON round trip", Describe(ns));
  auto pod2 = ParsePod(*again);
  Check(SameResult(pod, pod2), "Pod differs after a JSON round trip", Describe(pod));
  if (pod.ok() && *pod)
    Check((*pod)->warnings == (*pod2)->warnings, "Pod warnings differ after a round trip");
  Check(key == ObjectKey(*again), "ObjectKey differs after a JSON round trip", key);
  Check(rv == ResourceVersionOf(*again), "resourceVersion differs after a JSON round trip", rv);
}

// A document: an object, a list of them, or a watch event.
void ParseDocument(std::string_view text) {
  Json doc = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return;
  Json again;
  const bool round_trip = ringmesh::JsonNestingDepth(text) <= 64;
  if (round_trip) {
    const std::string dumped = doc.dump();  // must not throw: the reflector dumps what it parsed
    again = Json::parse(dumped, nullptr, false);
    Check(!again.is_discarded() && again == doc, "dump() does not parse back to the same JSON", dumped);
  }
  ParseObject(doc, round_trip ? &again : nullptr);
  if (!doc.is_object()) return;
  if (auto items = doc.find("items"); items != doc.end() && items->is_array()) {
    for (size_t i = 0; i < items->size(); ++i)
      ParseObject((*items)[i], round_trip ? &again["items"][i] : nullptr);
  }
  auto type = doc.find("type");
  auto object = doc.find("object");
  if (type != doc.end() && type->is_string() && object != doc.end() && object->is_object()) {
    ParseObject(*object, round_trip ? &again["object"] : nullptr);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  ParseDocument(text);
  // A watch stream: one event per line.
  if (size_t nl = text.find('\n'); nl != std::string_view::npos && nl + 1 < text.size()) {
    for (size_t start = 0; start < text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string_view::npos) end = text.size();
      if (end > start) ParseDocument(text.substr(start, end - start));
      start = end + 1;
    }
  }

  std::string value(text);
  std::vector<std::string> warnings;
  auto ports = ParseOptOutPorts(value, &warnings);
  CheckPorts(ports, value);
  warnings.clear();
  auto cidrs = ParseOptOutCidrs(value, &warnings);
  CheckCidrs(cidrs, value);
  return 0;
}
