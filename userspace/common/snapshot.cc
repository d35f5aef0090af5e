#include "userspace/common/snapshot.h"

#include <charconv>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "userspace/common/json_fields.h"
#include "userspace/common/status_macros.h"

namespace ringmesh {

const char* ToString(FailMode m) { return m == FailMode::kClosed ? "closed" : "open"; }

const char* ToString(LbPolicy p) {
  switch (p) {
    case LbPolicy::kP2cPeakEwma: return "p2c";
    case LbPolicy::kRoundRobin: return "round_robin";
    case LbPolicy::kRandom: return "random";
    case LbPolicy::kLeastConnections: return "least_connections";
  }
  return "?";
}

const char* ToString(AppProtocol p) {
  switch (p) {
    case AppProtocol::kTcp: return "tcp";
    case AppProtocol::kHttp: return "http";
    case AppProtocol::kHttp2: return "http2";
    case AppProtocol::kGrpc: return "grpc";
  }
  return "?";
}

std::optional<FailMode> ParseFailMode(std::string_view s) {
  if (s == "open") return FailMode::kOpen;
  if (s == "closed") return FailMode::kClosed;
  return std::nullopt;
}

std::optional<LbPolicy> ParseLbPolicy(std::string_view s) {
  if (s == "p2c" || s == "p2c_peak_ewma") return LbPolicy::kP2cPeakEwma;
  if (s == "round_robin") return LbPolicy::kRoundRobin;
  if (s == "random") return LbPolicy::kRandom;
  if (s == "least_connections") return LbPolicy::kLeastConnections;
  return std::nullopt;
}

std::optional<AppProtocol> ParseAppProtocol(std::string_view s) {
  if (s == "tcp") return AppProtocol::kTcp;
  if (s == "http") return AppProtocol::kHttp;
  if (s == "http2") return AppProtocol::kHttp2;
  if (s == "grpc") return AppProtocol::kGrpc;
  return std::nullopt;
}

const char* ToString(AuthzAction a) {
  switch (a) {
    case AuthzAction::kAllow: return "ALLOW";
    case AuthzAction::kDeny: return "DENY";
    case AuthzAction::kAudit: return "AUDIT";
  }
  return "?";
}

std::optional<AuthzAction> ParseAuthzAction(std::string_view s) {
  if (s == "ALLOW") return AuthzAction::kAllow;
  if (s == "DENY") return AuthzAction::kDeny;
  if (s == "AUDIT") return AuthzAction::kAudit;
  return std::nullopt;
}

// --- AuthorizationPolicy from the Istio object --------------------------------

namespace {

using Json = nlohmann::json;

using json_fields::CheckKeys;
using json_fields::FieldError;
using json_fields::Member;
using json_fields::Quote;
using json_fields::WrongType;

absl::Status GetString(const Json& j, const std::string& path, const AuthzLimits& limits, std::string* out) {
  if (!j.is_string()) return WrongType(path, "a string", j);
  const auto& s = j.get_ref<const std::string&>();
  if (s.size() > limits.max_string_bytes) {
    return FieldError(path, absl::StrCat("longer than ", limits.max_string_bytes, " bytes"));
  }
  *out = s;
  return absl::OkStatus();
}

// A list of at most max_values_per_field values, each read by `element`.
template <typename T, typename Fn>
absl::Status GetList(const Json& j, const std::string& path, const AuthzLimits& limits, std::vector<T>* out,
                     Fn&& element) {
  if (!j.is_array()) return WrongType(path, "a list", j);
  if (j.size() > limits.max_values_per_field) {
    return FieldError(
        path, absl::StrCat(j.size(), " values, more than the limit of ", limits.max_values_per_field));
  }
  out->reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    T value{};
    RM_RETURN_IF_ERROR(element(j[i], absl::StrCat(path, "[", i, "]"), &value));
    out->push_back(std::move(value));
  }
  return absl::OkStatus();
}

absl::Status GetMatchString(const Json& j, const std::string& path, const AuthzLimits& limits,
                            std::string* out) {
  RM_RETURN_IF_ERROR(GetString(j, path, limits, out));
  if (out->empty()) return FieldError(path, "empty value");
  return absl::OkStatus();
}

// Istio writes ports as strings ("8080"); YAML and hand-written JSON often
// use numbers. Both are accepted, nothing else (istiod silently skips a bad
// port; skipping one out of a DENY would let it through).
absl::Status GetPort(const Json& j, const std::string& path, uint16_t* out) {
  uint64_t v = 0;
  if (j.is_number_unsigned()) {
    v = j.get<uint64_t>();
  } else if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
      return FieldError(path, absl::StrCat(Quote(s), " is not a port number"));
    }
  } else if (j.is_number_integer()) {
    // A JSON tree built in code holds positive numbers as signed.
    int64_t i = j.get<int64_t>();
    if (i < 1 || i > 65535) return FieldError(path, absl::StrCat(i, " is not a port (1-65535)"));
    v = static_cast<uint64_t>(i);
  } else {
    return WrongType(path, "a port number", j);
  }
  if (v < 1 || v > 65535) return FieldError(path, absl::StrCat(v, " is not a port (1-65535)"));
  *out = static_cast<uint16_t>(v);
  return absl::OkStatus();
}

// An address alone is a host block (/32 or /128), as istiod reads ipBlocks.
absl::Status GetIpBlock(const Json& j, const std::string& path, Cidr* out) {
  if (!j.is_string()) return WrongType(path, "an IP address or CIDR string", j);
  const auto& s = j.get_ref<const std::string&>();
  std::optional<Cidr> cidr;
  if (s.find('/') != std::string::npos) {
    cidr = Cidr::Parse(s);
  } else if (auto ip = IpAddress::Parse(s)) {
    cidr = Cidr::Parse(absl::StrCat(s, ip->is_v4() ? "/32" : "/128"));
  }
  if (!cidr) return FieldError(path, absl::StrCat(Quote(s), " is not an IP address or CIDR"));
  *out = *cidr;
  return absl::OkStatus();
}

bool NonEmptyList(const Json& obj, const char* key) {
  const Json* v = Member(obj, key);
  return v && (!v->is_array() || !v->empty());
}

// A list-of-strings field of a source and where it goes.
struct StringField {
  const char* key;
  std::vector<std::string>* out;
};

// Reads the L4 fields of a source; sets *l7 when it has any of the L7 ones
// (not implemented), whose values are checked for type only.
absl::Status ParseSource(const Json& j, const std::string& path, const AuthzLimits& limits, AuthzSource* src,
                         bool* l7) {
  RM_RETURN_IF_ERROR(CheckKeys(j, path,
                               {"principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks",
                                "notIpBlocks", "requestPrincipals", "notRequestPrincipals", "remoteIpBlocks",
                                "notRemoteIpBlocks", "serviceAccounts", "notServiceAccounts"}));
  auto strings = [&](const Json& v, const std::string& p, std::string* out) {
    return GetMatchString(v, p, limits, out);
  };
  for (const StringField& f :
       {StringField{"principals", &src->principals}, StringField{"notPrincipals", &src->not_principals},
        StringField{"namespaces", &src->namespaces}, StringField{"notNamespaces", &src->not_namespaces}}) {
    if (const Json* v = Member(j, f.key))
      RM_RETURN_IF_ERROR(GetList(*v, path + "." + f.key, limits, f.out, strings));
  }
  if (const Json* v = Member(j, "ipBlocks")) {
    RM_RETURN_IF_ERROR(GetList(*v, path + ".ipBlocks", limits, &src->ip_blocks, GetIpBlock));
  }
  if (const Json* v = Member(j, "notIpBlocks")) {
    RM_RETURN_IF_ERROR(GetList(*v, path + ".notIpBlocks", limits, &src->not_ip_blocks, GetIpBlock));
  }
  // serviceAccounts (Istio 1.25+) is L4, but not implemented here yet:
  // refusing it is safer than ignoring it.
  for (const char* key : {"serviceAccounts", "notServiceAccounts"}) {
    if (NonEmptyList(j, key))
      return FieldError(path + "." + key, "not supported by ringmesh; use principals");
  }
  for (const char* key :
       {"requestPrincipals", "notRequestPrincipals", "remoteIpBlocks", "notRemoteIpBlocks"}) {
    if (const Json* v = Member(j, key)) {
      std::vector<std::string> ignored;
      RM_RETURN_IF_ERROR(GetList(*v, path + "." + key, limits, &ignored, strings));
      *l7 = *l7 || !ignored.empty();
    }
  }
  return absl::OkStatus();
}

absl::Status ParseOperation(const Json& j, const std::string& path, const AuthzLimits& limits,
                            AuthzOperation* op) {
  RM_RETURN_IF_ERROR(CheckKeys(
      j, path, {"ports", "notPorts", "hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"}));
  if (const Json* v = Member(j, "ports"))
    RM_RETURN_IF_ERROR(GetList(*v, path + ".ports", limits, &op->ports, GetPort));
  if (const Json* v = Member(j, "notPorts")) {
    RM_RETURN_IF_ERROR(GetList(*v, path + ".notPorts", limits, &op->not_ports, GetPort));
  }
  for (const AuthzOperationStrings& f : kAuthzOperationStrings) {
    if (const Json* v = Member(j, f.key)) {
      RM_RETURN_IF_ERROR(GetList(*v, path + "." + f.key, limits, &(op->*f.field),
                                 [&](const Json& e, const std::string& p, std::string* out) {
                                   return GetMatchString(e, p, limits, out);
                                 }));
    }
  }
  return absl::OkStatus();
}

// Keys istiod evaluates at L4 in `when`; ringmesh does not implement them
// yet and refuses them rather than guess.
bool IsL4WhenKey(std::string_view key) {
  return key == "source.ip" || key == "source.namespace" || key == "source.principal" ||
         key == "destination.ip" || key == "destination.port";
}

// One rule. Returns false in *keep when the rule must be dropped (see the
// L7 paragraph in snapshot.h).
absl::Status ParseRule(const Json& j, const std::string& path, AuthzAction action, const AuthzLimits& limits,
                       AuthzRule* rule, bool* keep) {
  *keep = true;
  RM_RETURN_IF_ERROR(CheckKeys(j, path, {"from", "to", "when"}));
  bool l7 = false;
  if (const Json* from = Member(j, "from")) {
    const std::string p = path + ".from";
    if (!from->is_array()) return WrongType(p, "a list", *from);
    if (from->size() > limits.max_entries_per_rule) {
      return FieldError(
          p, absl::StrCat(from->size(), " entries, more than the limit of ", limits.max_entries_per_rule));
    }
    for (size_t i = 0; i < from->size(); ++i) {
      const std::string ep = absl::StrCat(p, "[", i, "]");
      RM_RETURN_IF_ERROR(CheckKeys((*from)[i], ep, {"source"}));
      const Json* source = Member((*from)[i], "source");
      if (!source) return FieldError(ep + ".source", "required field missing");
      AuthzSource src;
      bool entry_l7 = false;
      RM_RETURN_IF_ERROR(ParseSource(*source, ep + ".source", limits, &src, &entry_l7));
      if (src.empty() && !entry_l7) return FieldError(ep + ".source", "must not be empty");
      l7 = l7 || entry_l7;
      rule->from.push_back(std::move(src));
    }
  }
  if (const Json* to = Member(j, "to")) {
    const std::string p = path + ".to";
    if (!to->is_array()) return WrongType(p, "a list", *to);
    if (to->size() > limits.max_entries_per_rule) {
      return FieldError(
          p, absl::StrCat(to->size(), " entries, more than the limit of ", limits.max_entries_per_rule));
    }
    for (size_t i = 0; i < to->size(); ++i) {
      const std::string ep = absl::StrCat(p, "[", i, "]");
      RM_RETURN_IF_ERROR(CheckKeys((*to)[i], ep, {"operation"}));
      const Json* operation = Member((*to)[i], "operation");
      if (!operation) return FieldError(ep + ".operation", "required field missing");
      AuthzOperation op;
      RM_RETURN_IF_ERROR(ParseOperation(*operation, ep + ".operation", limits, &op));
      if (op.empty()) return FieldError(ep + ".operation", "must not be empty");
      rule->to.push_back(std::move(op));
    }
  }
  if (const Json* when = Member(j, "when")) {
    const std::string p = path + ".when";
    if (!when->is_array()) return WrongType(p, "a list", *when);
    if (when->size() > limits.max_entries_per_rule) {
      return FieldError(
          p, absl::StrCat(when->size(), " entries, more than the limit of ", limits.max_entries_per_rule));
    }
    for (size_t i = 0; i < when->size(); ++i) {
      const std::string cp = absl::StrCat(p, "[", i, "]");
      const Json& cond = (*when)[i];
      RM_RETURN_IF_ERROR(CheckKeys(cond, cp, {"key", "values", "notValues"}));
      const Json* key = Member(cond, "key");
      if (!key) return FieldError(cp + ".key", "required field missing");
      std::string key_str;
      RM_RETURN_IF_ERROR(GetString(*key, cp + ".key", limits, &key_str));
      if (IsL4WhenKey(key_str)) {
        return FieldError(cp + ".key", absl::StrCat(Quote(key_str),
                                                    " is not supported by ringmesh yet; use from/to fields"));
      }
      for (const char* k : {"values", "notValues"}) {
        if (const Json* v = Member(cond, k)) {
          std::vector<std::string> ignored;
          RM_RETURN_IF_ERROR(GetList(*v, cp + "." + k, limits, &ignored,
                                     [&](const Json& e, const std::string& ep, std::string* out) {
                                       return GetString(e, ep, limits, out);
                                     }));
        }
      }
      // An L7 condition: istiod drops the rule from ALLOW; in DENY it
      // becomes a clause with an empty match, which ztunnel never matches,
      // so the rule never denies. Both amount to dropping the rule.
      *keep = false;
    }
  }
  // istiod (handleRule): "L7 policies never match for ALLOW"; AUDIT is
  // treated like ALLOW (it must not mark what it cannot see). In DENY the
  // source's L7 fields are simply gone from the entries parsed above.
  // (Operation L7 fields are kept: the Authorizer applies that rule itself.)
  if (l7 && action != AuthzAction::kDeny) *keep = false;
  return absl::OkStatus();
}

// Kubernetes object names: bounded, printable, no '/' (they form "ns/name").
absl::Status GetObjectName(const Json& j, const std::string& path, const AuthzLimits& limits,
                           std::string* out) {
  RM_RETURN_IF_ERROR(GetString(j, path, limits, out));
  if (out->empty()) return FieldError(path, "must not be empty");
  if (out->size() > 253) return FieldError(path, "longer than 253 characters");
  for (char c : *out) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    if (!ok) return FieldError(path, absl::StrCat(Quote(*out), " is not a Kubernetes object name"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<AuthorizationPolicy>> ParseIstioAuthorizationPolicy(const nlohmann::json& object,
                                                                                 const AuthzLimits& limits) {
  if (!object.is_object()) return WrongType("$", "a mapping", object);
  AuthorizationPolicy policy;
  const Json* metadata = Member(object, "metadata");
  if (!metadata) return FieldError("metadata", "required field missing");
  if (!metadata->is_object()) return WrongType("metadata", "a mapping", *metadata);
  const Json* v = Member(*metadata, "namespace");
  if (!v) return FieldError("metadata.namespace", "required field missing");
  RM_RETURN_IF_ERROR(GetObjectName(*v, "metadata.namespace", limits, &policy.ns));
  if (!(v = Member(*metadata, "name"))) return FieldError("metadata.name", "required field missing");
  RM_RETURN_IF_ERROR(GetObjectName(*v, "metadata.name", limits, &policy.name));

  // A policy without spec is `spec: {}`: ALLOW with no rules, allow-nothing.
  const Json* spec = Member(object, "spec");
  if (!spec) return policy;
  RM_RETURN_IF_ERROR(
      CheckKeys(*spec, "spec", {"selector", "action", "rules", "provider", "targetRef", "targetRefs"}));
  if ((v = Member(*spec, "action"))) {
    if (!v->is_string()) return WrongType("spec.action", "a string", *v);
    const auto& s = v->get_ref<const std::string&>();
    if (s == "CUSTOM") return std::nullopt;  // ext-authz: waypoints only
    auto action = ParseAuthzAction(s);
    if (!action) {
      return FieldError("spec.action", absl::StrCat("unknown value ", Quote(s),
                                                    " (expected one of ALLOW, DENY, AUDIT, CUSTOM)"));
    }
    policy.action = *action;
  }
  // Bound to a waypoint or gateway: not the node proxy's to enforce.
  if (NonEmptyList(*spec, "targetRef") || NonEmptyList(*spec, "targetRefs")) return std::nullopt;
  if ((v = Member(*spec, "selector"))) {
    RM_RETURN_IF_ERROR(CheckKeys(*v, "spec.selector", {"matchLabels"}));
    if (const Json* labels = Member(*v, "matchLabels")) {
      const std::string p = "spec.selector.matchLabels";
      if (!labels->is_object()) return WrongType(p, "a mapping", *labels);
      if (labels->size() > limits.max_match_labels) {
        return FieldError(
            p, absl::StrCat(labels->size(), " labels, more than the limit of ", limits.max_match_labels));
      }
      for (const auto& [key, value] : labels->items()) {
        if (key.empty() || key.size() > limits.max_string_bytes) {
          return FieldError(p, absl::StrCat("bad label key ", Quote(key)));
        }
        RM_RETURN_IF_ERROR(GetString(value, absl::StrCat(p, ".", key), limits, &policy.match_labels[key]));
      }
    }
  }
  if ((v = Member(*spec, "rules"))) {
    if (!v->is_array()) return WrongType("spec.rules", "a list", *v);
    if (v->size() > limits.max_rules_per_policy) {
      return FieldError("spec.rules", absl::StrCat(v->size(), " rules, more than the limit of ",
                                                   limits.max_rules_per_policy));
    }
    for (size_t i = 0; i < v->size(); ++i) {
      AuthzRule rule;
      bool keep = true;
      RM_RETURN_IF_ERROR(
          ParseRule((*v)[i], absl::StrCat("spec.rules[", i, "]"), policy.action, limits, &rule, &keep));
      if (keep) {
        policy.rules.push_back(std::move(rule));
      } else {
        ++policy.dropped_l7_rules;
      }
    }
  }
  return policy;
}

absl::Status CheckAuthzLimits(const AuthorizationPolicy& policy, const AuthzLimits& limits) {
  auto too_many = [](std::string_view field, size_t n, size_t max) {
    return FieldError(std::string(field), absl::StrCat(n, " values, more than the limit of ", max));
  };
  if (policy.match_labels.size() > limits.max_match_labels) {
    return too_many("selector.matchLabels", policy.match_labels.size(), limits.max_match_labels);
  }
  if (policy.rules.size() > limits.max_rules_per_policy) {
    return too_many("rules", policy.rules.size(), limits.max_rules_per_policy);
  }
  for (size_t r = 0; r < policy.rules.size(); ++r) {
    const AuthzRule& rule = policy.rules[r];
    const std::string rp = absl::StrCat("rules[", r, "]");
    if (rule.from.size() > limits.max_entries_per_rule) {
      return too_many(rp + ".from", rule.from.size(), limits.max_entries_per_rule);
    }
    if (rule.to.size() > limits.max_entries_per_rule) {
      return too_many(rp + ".to", rule.to.size(), limits.max_entries_per_rule);
    }
    for (size_t i = 0; i < rule.from.size(); ++i) {
      const AuthzSource& s = rule.from[i];
      const std::string p = absl::StrCat(rp, ".from[", i, "].source");
      for (size_t n : {s.principals.size(), s.not_principals.size(), s.namespaces.size(),
                       s.not_namespaces.size(), s.ip_blocks.size(), s.not_ip_blocks.size()}) {
        if (n > limits.max_values_per_field) return too_many(p, n, limits.max_values_per_field);
      }
    }
    for (size_t i = 0; i < rule.to.size(); ++i) {
      const AuthzOperation& o = rule.to[i];
      const std::string p = absl::StrCat(rp, ".to[", i, "].operation");
      for (size_t n : {o.ports.size(), o.not_ports.size()}) {
        if (n > limits.max_values_per_field) return too_many(p, n, limits.max_values_per_field);
      }
      for (const AuthzOperationStrings& f : kAuthzOperationStrings) {
        const size_t n = (o.*f.field).size();
        if (n > limits.max_values_per_field) return too_many(p, n, limits.max_values_per_field);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace ringmesh
