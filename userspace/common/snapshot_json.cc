#include "userspace/common/snapshot_json.h"

#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "userspace/common/json_fields.h"
#include "userspace/common/status_macros.h"

namespace ringmesh {
namespace {

using Json = nlohmann::json;

// --- encoding -------------------------------------------------------------

Json IpsToJson(const std::vector<IpAddress>& ips) {
  Json out = Json::array();
  for (const auto& ip : ips) out.push_back(ip.ToString());
  return out;
}

Json PodToJson(const Pod& pod) {
  Json labels = Json::object();
  for (const auto& [k, v] : pod.labels) labels[k] = v;
  Json cidrs = Json::array();
  for (const auto& c : pod.opt_out_cidrs) cidrs.push_back(c.ToString());
  return Json{
      {"namespace", pod.ns},
      {"name", pod.name},
      {"uid", pod.uid},
      {"serviceAccount", pod.service_account},
      {"netns", pod.netns_path},
      {"cgroup", pod.cgroup_path},
      {"ips", IpsToJson(pod.ips)},
      {"labels", std::move(labels)},
      {"mode", pod.enrolled ? "enabled" : "disabled"},
      {"failMode", ToString(pod.fail_mode)},
      {"optOutPorts", pod.opt_out_ports},
      {"optOutCidrs", std::move(cidrs)},
      {"podId", pod.pod_id},
  };
}

Json RemotePodToJson(const RemotePod& pod) {
  return Json{
      {"namespace", pod.ns}, {"name", pod.name},          {"serviceAccount", pod.service_account},
      {"node", pod.node},    {"ips", IpsToJson(pod.ips)}, {"mode", pod.enrolled ? "enabled" : "disabled"},
  };
}

Json ServiceToJson(const Service& svc) {
  Json ports = Json::array();
  for (const auto& p : svc.ports) {
    ports.push_back(Json{{"name", p.name},
                         {"port", p.port},
                         {"targetPort", p.target_port},
                         {"protocol", ToString(p.protocol)}});
  }
  Json endpoints = Json::array();
  for (const auto& e : svc.endpoints) {
    endpoints.push_back(Json{{"ip", e.ip.ToString()}, {"ready", e.ready}, {"pod", e.pod}});
  }
  return Json{
      {"namespace", svc.ns},       {"name", svc.name},       {"vips", IpsToJson(svc.vips)},
      {"ports", std::move(ports)}, {"lb", ToString(svc.lb)}, {"endpoints", std::move(endpoints)},
  };
}

Json StringsToJson(const std::vector<std::string>& v) { return Json(v); }

Json CidrsToJson(const std::vector<Cidr>& v) {
  Json out = Json::array();
  for (const auto& c : v) out.push_back(c.ToString());
  return out;
}

// Only the fields that are set, so that a policy reads like its source.
Json PolicyToJson(const AuthorizationPolicy& p) {
  Json rules = Json::array();
  for (const AuthzRule& r : p.rules) {
    Json from = Json::array();
    for (const AuthzSource& s : r.from) {
      Json e = Json::object();
      if (!s.principals.empty()) e["principals"] = StringsToJson(s.principals);
      if (!s.not_principals.empty()) e["notPrincipals"] = StringsToJson(s.not_principals);
      if (!s.namespaces.empty()) e["namespaces"] = StringsToJson(s.namespaces);
      if (!s.not_namespaces.empty()) e["notNamespaces"] = StringsToJson(s.not_namespaces);
      if (!s.ip_blocks.empty()) e["ipBlocks"] = CidrsToJson(s.ip_blocks);
      if (!s.not_ip_blocks.empty()) e["notIpBlocks"] = CidrsToJson(s.not_ip_blocks);
      from.push_back(std::move(e));
    }
    Json to = Json::array();
    for (const AuthzOperation& o : r.to) {
      Json e = Json::object();
      if (!o.ports.empty()) e["ports"] = o.ports;
      if (!o.not_ports.empty()) e["notPorts"] = o.not_ports;
      for (const AuthzOperationStrings& f : kAuthzOperationStrings) {
        if (!(o.*f.field).empty()) e[f.key] = StringsToJson(o.*f.field);
      }
      to.push_back(std::move(e));
    }
    Json rule = Json::object();
    if (!from.empty()) rule["from"] = std::move(from);
    if (!to.empty()) rule["to"] = std::move(to);
    rules.push_back(std::move(rule));
  }
  Json labels = Json::object();
  for (const auto& [k, v] : p.match_labels) labels[k] = v;
  Json out{{"namespace", p.ns},
           {"name", p.name},
           {"action", ToString(p.action)},
           {"matchLabels", std::move(labels)},
           {"rules", std::move(rules)}};
  if (p.dropped_l7_rules != 0) out["droppedL7Rules"] = p.dropped_l7_rules;
  return out;
}

// --- decoding -------------------------------------------------------------

using json_fields::CheckKeys;  // an old reader never silently ignores a newer writer's field
using json_fields::Child;
using json_fields::FieldError;
using json_fields::Index;
using json_fields::Quote;
using json_fields::WrongType;

// Required fields fail when absent; optional ones leave *out untouched.
const Json* Field(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

absl::Status Required(const Json& obj, const std::string& path, const char* key) {
  if (!obj.contains(key)) return FieldError(Child(path, key), "required field missing");
  return absl::OkStatus();
}

absl::Status GetString(const Json& j, const std::string& path, std::string* out) {
  if (!j.is_string()) return WrongType(path, "a string", j);
  *out = j.get<std::string>();
  return absl::OkStatus();
}

absl::Status GetBool(const Json& j, const std::string& path, bool* out) {
  if (!j.is_boolean()) return WrongType(path, "a boolean", j);
  *out = j.get<bool>();
  return absl::OkStatus();
}

absl::Status GetUint(const Json& j, const std::string& path, uint64_t max, uint64_t* out) {
  if (!j.is_number_unsigned()) {
    if (j.is_number_integer()) return FieldError(path, absl::StrCat(j.get<int64_t>(), " is negative"));
    return WrongType(path, "an unsigned integer", j);
  }
  uint64_t v = j.get<uint64_t>();
  if (v > max) return FieldError(path, absl::StrCat(v, " is out of range (at most ", max, ")"));
  *out = v;
  return absl::OkStatus();
}

absl::Status GetPort(const Json& j, const std::string& path, uint16_t* out) {
  if (!j.is_number_unsigned() && !j.is_number_integer()) return WrongType(path, "a port number", j);
  bool in_range = j.is_number_unsigned() && j.get<uint64_t>() >= 1 && j.get<uint64_t>() <= 65535;
  if (!in_range) return FieldError(path, absl::StrCat(j.dump(), " is not a port (1-65535)"));
  *out = static_cast<uint16_t>(j.get<uint64_t>());
  return absl::OkStatus();
}

absl::Status GetIp(const Json& j, const std::string& path, IpAddress* out) {
  if (!j.is_string()) return WrongType(path, "an IP address string", j);
  const auto& s = j.get_ref<const std::string&>();
  auto ip = IpAddress::Parse(s);
  if (!ip) return FieldError(path, absl::StrCat(Quote(s), " is not an IP address"));
  *out = *ip;
  return absl::OkStatus();
}

absl::Status GetCidr(const Json& j, const std::string& path, Cidr* out) {
  if (!j.is_string()) return WrongType(path, "a CIDR string", j);
  const auto& s = j.get_ref<const std::string&>();
  auto cidr = Cidr::Parse(s);
  if (!cidr) return FieldError(path, absl::StrCat(Quote(s), " is not a CIDR"));
  *out = *cidr;
  return absl::OkStatus();
}

template <typename T, typename Fn>
absl::Status GetArray(const Json& j, const std::string& path, std::vector<T>* out, Fn&& element) {
  if (!j.is_array()) return WrongType(path, "a list", j);
  out->clear();
  out->reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    T value{};
    if (auto st = element(j[i], Index(path, i), &value); !st.ok()) return st;
    out->push_back(std::move(value));
  }
  return absl::OkStatus();
}

template <typename E>
absl::Status GetEnum(const Json& j, const std::string& path, std::optional<E> (*parse)(std::string_view),
                     std::initializer_list<absl::string_view> allowed, E* out) {
  if (!j.is_string()) return WrongType(path, "a string", j);
  const auto& s = j.get_ref<const std::string&>();
  auto v = parse(s);
  // ParseLbPolicy also accepts aliases; the wire only carries canonical names.
  bool canonical = false;
  for (auto a : allowed) canonical = canonical || a == s;
  if (!v || !canonical) {
    return FieldError(path, absl::StrCat("unknown value ", Quote(s), " (expected one of ",
                                         absl::StrJoin(allowed, ", "), ")"));
  }
  *out = *v;
  return absl::OkStatus();
}

absl::Status GetMode(const Json& v, const std::string& p, bool* enrolled) {
  if (!v.is_string()) return WrongType(p, "a string", v);
  const auto& s = v.get_ref<const std::string&>();
  if (s != "enabled" && s != "disabled") {
    return FieldError(p, absl::StrCat("unknown value ", Quote(s), " (expected one of enabled, disabled)"));
  }
  *enrolled = s == "enabled";
  return absl::OkStatus();
}

absl::Status DecodePod(const Json& j, const std::string& path, Pod* pod) {
  RM_RETURN_IF_ERROR(CheckKeys(j, path,
                               {"namespace", "name", "uid", "serviceAccount", "netns", "cgroup", "ips",
                                "labels", "mode", "failMode", "optOutPorts", "optOutCidrs", "podId"}));
  RM_RETURN_IF_ERROR(Required(j, path, "namespace"));
  RM_RETURN_IF_ERROR(Required(j, path, "name"));
  for (const auto& [key, v] : j.items()) {
    std::string p = Child(path, key);
    if (key == "namespace") {
      RM_RETURN_IF_ERROR(GetString(v, p, &pod->ns));
    } else if (key == "name") {
      RM_RETURN_IF_ERROR(GetString(v, p, &pod->name));
    } else if (key == "uid") {
      RM_RETURN_IF_ERROR(GetString(v, p, &pod->uid));
    } else if (key == "serviceAccount") {
      RM_RETURN_IF_ERROR(GetString(v, p, &pod->service_account));
    } else if (key == "netns") {
      RM_RETURN_IF_ERROR(GetString(v, p, &pod->netns_path));
    } else if (key == "cgroup") {
      RM_RETURN_IF_ERROR(GetString(v, p, &pod->cgroup_path));
    } else if (key == "ips") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &pod->ips, GetIp));
    } else if (key == "labels") {
      if (!v.is_object()) return WrongType(p, "a mapping", v);
      pod->labels.clear();
      for (const auto& [lk, lv] : v.items()) {
        RM_RETURN_IF_ERROR(GetString(lv, Child(p, lk), &pod->labels[lk]));
      }
    } else if (key == "mode") {
      RM_RETURN_IF_ERROR(GetMode(v, p, &pod->enrolled));
    } else if (key == "failMode") {
      RM_RETURN_IF_ERROR(GetEnum(v, p, ParseFailMode, {"open", "closed"}, &pod->fail_mode));
    } else if (key == "optOutPorts") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &pod->opt_out_ports, GetPort));
    } else if (key == "optOutCidrs") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &pod->opt_out_cidrs, GetCidr));
    } else if (key == "podId") {
      uint64_t id = 0;
      RM_RETURN_IF_ERROR(GetUint(v, p, std::numeric_limits<uint32_t>::max(), &id));
      pod->pod_id = static_cast<uint32_t>(id);
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeRemotePod(const Json& j, const std::string& path, RemotePod* pod) {
  RM_RETURN_IF_ERROR(CheckKeys(j, path, {"namespace", "name", "serviceAccount", "node", "ips", "mode"}));
  RM_RETURN_IF_ERROR(Required(j, path, "namespace"));
  RM_RETURN_IF_ERROR(Required(j, path, "name"));
  RM_RETURN_IF_ERROR(Required(j, path, "node"));
  for (const auto& [key, v] : j.items()) {
    std::string p = Child(path, key);
    if (key == "namespace") {
      RM_RETURN_IF_ERROR(GetString(v, p, &pod->ns));
    } else if (key == "name") {
      RM_RETURN_IF_ERROR(GetString(v, p, &pod->name));
    } else if (key == "serviceAccount") {
      RM_RETURN_IF_ERROR(GetString(v, p, &pod->service_account));
    } else if (key == "node") {
      RM_RETURN_IF_ERROR(GetString(v, p, &pod->node));
    } else if (key == "ips") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &pod->ips, GetIp));
    } else if (key == "mode") {
      RM_RETURN_IF_ERROR(GetMode(v, p, &pod->enrolled));
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeServicePort(const Json& j, const std::string& path, ServicePort* port) {
  RM_RETURN_IF_ERROR(CheckKeys(j, path, {"name", "port", "targetPort", "protocol"}));
  RM_RETURN_IF_ERROR(Required(j, path, "port"));
  RM_RETURN_IF_ERROR(GetPort(j["port"], Child(path, "port"), &port->port));
  port->target_port = port->port;
  if (const Json* v = Field(j, "name")) RM_RETURN_IF_ERROR(GetString(*v, Child(path, "name"), &port->name));
  if (const Json* v = Field(j, "targetPort")) {
    RM_RETURN_IF_ERROR(GetPort(*v, Child(path, "targetPort"), &port->target_port));
  }
  if (const Json* v = Field(j, "protocol")) {
    RM_RETURN_IF_ERROR(GetEnum(*v, Child(path, "protocol"), ParseAppProtocol,
                               {"tcp", "http", "http2", "grpc"}, &port->protocol));
  }
  return absl::OkStatus();
}

absl::Status DecodeEndpoint(const Json& j, const std::string& path, Endpoint* ep) {
  RM_RETURN_IF_ERROR(CheckKeys(j, path, {"ip", "ready", "pod"}));
  RM_RETURN_IF_ERROR(Required(j, path, "ip"));
  RM_RETURN_IF_ERROR(GetIp(j["ip"], Child(path, "ip"), &ep->ip));
  if (const Json* v = Field(j, "ready")) RM_RETURN_IF_ERROR(GetBool(*v, Child(path, "ready"), &ep->ready));
  if (const Json* v = Field(j, "pod")) RM_RETURN_IF_ERROR(GetString(*v, Child(path, "pod"), &ep->pod));
  return absl::OkStatus();
}

absl::Status DecodeService(const Json& j, const std::string& path, Service* svc) {
  RM_RETURN_IF_ERROR(CheckKeys(j, path, {"namespace", "name", "vips", "ports", "lb", "endpoints"}));
  RM_RETURN_IF_ERROR(Required(j, path, "namespace"));
  RM_RETURN_IF_ERROR(Required(j, path, "name"));
  for (const auto& [key, v] : j.items()) {
    std::string p = Child(path, key);
    if (key == "namespace") {
      RM_RETURN_IF_ERROR(GetString(v, p, &svc->ns));
    } else if (key == "name") {
      RM_RETURN_IF_ERROR(GetString(v, p, &svc->name));
    } else if (key == "vips") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &svc->vips, GetIp));
    } else if (key == "ports") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &svc->ports, DecodeServicePort));
    } else if (key == "lb") {
      RM_RETURN_IF_ERROR(
          GetEnum(v, p, ParseLbPolicy, {"p2c", "round_robin", "random", "least_connections"}, &svc->lb));
    } else if (key == "endpoints") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &svc->endpoints, DecodeEndpoint));
    }
  }
  return absl::OkStatus();
}

absl::Status GetNonEmptyString(const Json& j, const std::string& path, std::string* out) {
  RM_RETURN_IF_ERROR(GetString(j, path, out));
  if (out->empty()) return FieldError(path, "empty value");
  return absl::OkStatus();
}

absl::Status DecodeAuthzSource(const Json& j, const std::string& path, AuthzSource* s) {
  RM_RETURN_IF_ERROR(CheckKeys(
      j, path, {"principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks"}));
  for (const auto& [key, v] : j.items()) {
    std::string p = Child(path, key);
    if (key == "principals") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &s->principals, GetNonEmptyString));
    } else if (key == "notPrincipals") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &s->not_principals, GetNonEmptyString));
    } else if (key == "namespaces") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &s->namespaces, GetNonEmptyString));
    } else if (key == "notNamespaces") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &s->not_namespaces, GetNonEmptyString));
    } else if (key == "ipBlocks") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &s->ip_blocks, GetCidr));
    } else if (key == "notIpBlocks") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &s->not_ip_blocks, GetCidr));
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeAuthzOperation(const Json& j, const std::string& path, AuthzOperation* o) {
  RM_RETURN_IF_ERROR(CheckKeys(
      j, path, {"ports", "notPorts", "hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"}));
  if (const Json* v = Field(j, "ports"))
    RM_RETURN_IF_ERROR(GetArray(*v, Child(path, "ports"), &o->ports, GetPort));
  if (const Json* v = Field(j, "notPorts")) {
    RM_RETURN_IF_ERROR(GetArray(*v, Child(path, "notPorts"), &o->not_ports, GetPort));
  }
  for (const AuthzOperationStrings& f : kAuthzOperationStrings) {
    if (const Json* v = Field(j, f.key)) {
      RM_RETURN_IF_ERROR(GetArray(*v, Child(path, f.key), &(o->*f.field), GetNonEmptyString));
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeAuthzRule(const Json& j, const std::string& path, AuthzRule* r) {
  RM_RETURN_IF_ERROR(CheckKeys(j, path, {"from", "to"}));
  if (const Json* v = Field(j, "from")) {
    RM_RETURN_IF_ERROR(GetArray(*v, Child(path, "from"), &r->from, DecodeAuthzSource));
  }
  if (const Json* v = Field(j, "to"))
    RM_RETURN_IF_ERROR(GetArray(*v, Child(path, "to"), &r->to, DecodeAuthzOperation));
  return absl::OkStatus();
}

// The limits are checked on the JSON sizes before any vector is built, so
// a hostile snapshot cannot make the decoder allocate past them.
absl::Status CheckAuthzJsonSizes(const Json& j, const std::string& path, const AuthzLimits& limits) {
  auto over = [&](const std::string& p, size_t n, size_t max) {
    return FieldError(p, absl::StrCat(n, " values, more than the limit of ", max));
  };
  const Json* rules = Field(j, "rules");
  if (rules == nullptr || !rules->is_array()) return absl::OkStatus();  // the decoder reports types
  if (rules->size() > limits.max_rules_per_policy) {
    return over(Child(path, "rules"), rules->size(), limits.max_rules_per_policy);
  }
  for (size_t i = 0; i < rules->size(); ++i) {
    const Json& rule = (*rules)[i];
    if (!rule.is_object()) continue;
    for (const char* list : {"from", "to"}) {
      const Json* entries = Field(rule, list);
      if (entries == nullptr || !entries->is_array()) continue;
      std::string lp = Child(Index(Child(path, "rules"), i), list);
      if (entries->size() > limits.max_entries_per_rule) {
        return over(lp, entries->size(), limits.max_entries_per_rule);
      }
      for (size_t k = 0; k < entries->size(); ++k) {
        if (!(*entries)[k].is_object()) continue;
        for (const auto& [key, values] : (*entries)[k].items()) {
          if (values.is_array() && values.size() > limits.max_values_per_field) {
            return over(Child(Index(lp, k), key), values.size(), limits.max_values_per_field);
          }
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeAuthorizationPolicy(const Json& j, const std::string& path, const AuthzLimits& limits,
                                       AuthorizationPolicy* p) {
  RM_RETURN_IF_ERROR(
      CheckKeys(j, path, {"namespace", "name", "action", "matchLabels", "rules", "droppedL7Rules"}));
  RM_RETURN_IF_ERROR(Required(j, path, "namespace"));
  RM_RETURN_IF_ERROR(Required(j, path, "name"));
  RM_RETURN_IF_ERROR(CheckAuthzJsonSizes(j, path, limits));
  for (const auto& [key, v] : j.items()) {
    std::string pp = Child(path, key);
    if (key == "namespace") {
      RM_RETURN_IF_ERROR(GetNonEmptyString(v, pp, &p->ns));
    } else if (key == "name") {
      RM_RETURN_IF_ERROR(GetNonEmptyString(v, pp, &p->name));
    } else if (key == "action") {
      RM_RETURN_IF_ERROR(GetEnum(v, pp, ParseAuthzAction, {"ALLOW", "DENY", "AUDIT"}, &p->action));
    } else if (key == "matchLabels") {
      if (!v.is_object()) return WrongType(pp, "a mapping", v);
      if (v.size() > limits.max_match_labels) {
        return FieldError(
            pp, absl::StrCat(v.size(), " labels, more than the limit of ", limits.max_match_labels));
      }
      p->match_labels.clear();
      for (const auto& [lk, lv] : v.items())
        RM_RETURN_IF_ERROR(GetString(lv, Child(pp, lk), &p->match_labels[lk]));
    } else if (key == "rules") {
      RM_RETURN_IF_ERROR(GetArray(v, pp, &p->rules, DecodeAuthzRule));
    } else if (key == "droppedL7Rules") {
      uint64_t n = 0;
      RM_RETURN_IF_ERROR(GetUint(v, pp, std::numeric_limits<uint32_t>::max(), &n));
      p->dropped_l7_rules = static_cast<uint32_t>(n);
    }
  }
  return absl::OkStatus();
}

// nlohmann's parser keeps its own stack, but a 64 MiB "[[[[..." would still
// build tens of millions of nested values. One linear pass bounds it first.
absl::Status CheckDepth(std::string_view text) {
  if (JsonNestingDepth(text) > static_cast<size_t>(kMaxSnapshotJsonDepth)) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot JSON is nested deeper than ", kMaxSnapshotJsonDepth, " levels"));
  }
  return absl::OkStatus();
}

}  // namespace

nlohmann::json SnapshotToJson(const Snapshot& snapshot, uint16_t schema) {
  Json pods = Json::array();
  for (const auto& pod : snapshot.pods) pods.push_back(PodToJson(pod));
  Json services = Json::array();
  for (const auto& svc : snapshot.services) services.push_back(ServiceToJson(svc));
  Json out{{"generation", snapshot.generation},
           {"outboundPort", snapshot.outbound_port},
           {"pods", std::move(pods)},
           {"services", std::move(services)}};
  // The later fields are also left out when empty, so that a snapshot
  // without them encodes exactly as in schema 1.
  if (schema >= kJsonRemotePodsSince && !snapshot.remote_pods.empty()) {
    Json remote = Json::array();
    for (const auto& pod : snapshot.remote_pods) remote.push_back(RemotePodToJson(pod));
    out["remotePods"] = std::move(remote);
  }
  if (schema >= kJsonAuthorizationPoliciesSince && !snapshot.authorization_policies.empty()) {
    Json policies = Json::array();
    for (const auto& p : snapshot.authorization_policies) policies.push_back(PolicyToJson(p));
    out["authorizationPolicies"] = std::move(policies);
  }
  return out;
}

absl::StatusOr<Snapshot> SnapshotFromJson(const nlohmann::json& json, const AuthzLimits& authz_limits) {
  const std::string root = "$";
  RM_RETURN_IF_ERROR(CheckKeys(
      json, root, {"generation", "outboundPort", "pods", "services", "remotePods", "authorizationPolicies"}));
  Snapshot s;
  for (const auto& [key, v] : json.items()) {
    std::string p = Child(root, key);
    if (key == "generation") {
      RM_RETURN_IF_ERROR(GetUint(v, p, std::numeric_limits<uint64_t>::max(), &s.generation));
    } else if (key == "outboundPort") {
      RM_RETURN_IF_ERROR(GetPort(v, p, &s.outbound_port));
    } else if (key == "pods") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &s.pods, DecodePod));
    } else if (key == "services") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &s.services, DecodeService));
    } else if (key == "remotePods") {
      RM_RETURN_IF_ERROR(GetArray(v, p, &s.remote_pods, DecodeRemotePod));
    } else if (key == "authorizationPolicies") {
      if (v.is_array() && v.size() > authz_limits.max_policies) {
        return FieldError(
            p, absl::StrCat(v.size(), " policies, more than the limit of ", authz_limits.max_policies));
      }
      RM_RETURN_IF_ERROR(GetArray(v, p, &s.authorization_policies,
                                  [&](const Json& e, const std::string& ep, AuthorizationPolicy* out) {
                                    return DecodeAuthorizationPolicy(e, ep, authz_limits, out);
                                  }));
    }
  }
  return s;
}

absl::StatusOr<std::string> EncodeSnapshotJson(const Snapshot& snapshot, int indent, uint16_t schema) {
  try {
    return SnapshotToJson(snapshot, schema)
        .dump(indent, ' ', /*ensure_ascii=*/false, Json::error_handler_t::strict);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot cannot be encoded as JSON: ", e.what()));
  }
}

absl::StatusOr<Snapshot> DecodeSnapshotJson(std::string_view text, const AuthzLimits& authz_limits) {
  RM_RETURN_IF_ERROR(CheckDepth(text));
  Json json;
  try {
    json = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot JSON: ", e.what()));
  }
  return SnapshotFromJson(json, authz_limits);
}

size_t JsonNestingDepth(std::string_view text) {
  size_t depth = 0, max = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max = std::max(max, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return max;
}

}  // namespace ringmesh
