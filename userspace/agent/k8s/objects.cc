#include "userspace/agent/k8s/objects.h"

#include <algorithm>
#include <charconv>
#include <mutex>
#include <unordered_set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "userspace/agent/utf8.h"
#include "userspace/common/json_fields.h"

namespace ringmesh::agent::k8s {
namespace {

using json_fields::FieldError;
using json_fields::Member;
using json_fields::WrongType;

absl::Status GetString(const Json& obj, const char* key, const std::string& path, std::string* out) {
  out->clear();
  const Json* v = Member(obj, key);
  if (!v) return absl::OkStatus();
  if (!v->is_string())
    return WrongType(absl::StrCat(path, key), "a string", *v);
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::Status GetBool(const Json& obj, const char* key, const std::string& path, bool dflt, bool* out) {
  *out = dflt;
  const Json* v = Member(obj, key);
  if (!v) return absl::OkStatus();
  if (!v->is_boolean())
    return WrongType(absl::StrCat(path, key), "a boolean", *v);
  *out = v->get<bool>();
  return absl::OkStatus();
}

absl::Status GetPort(const Json& v, const std::string& path, uint16_t* out) {
  if (!v.is_number_integer()) return WrongType(path, "a port number", v);
  int64_t p = v.get<int64_t>();
  if (p < 1 || p > 65535) return FieldError(path, absl::StrCat(p, " is not a port number"));
  *out = static_cast<uint16_t>(p);
  return absl::OkStatus();
}

absl::Status GetStringMap(const Json& obj, const char* key, const std::string& path,
                          std::map<std::string, std::string>* out) {
  out->clear();
  const Json* v = Member(obj, key);
  if (!v) return absl::OkStatus();
  if (!v->is_object())
    return WrongType(absl::StrCat(path, key), "a mapping", *v);
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it.value().is_string()) {
      return WrongType(absl::StrCat(path, key, ".", it.key()), "a string", it.value());
    }
    (*out)[it.key()] = it.value().get<std::string>();
  }
  return absl::OkStatus();
}

struct Meta {
  std::string ns;
  std::string name;
  std::string uid;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
};

absl::StatusOr<Meta> ParseMeta(const Json& object, bool namespaced) {
  if (!object.is_object()) return WrongType("object", "a mapping", object);
  const Json* md = Member(object, "metadata");
  if (!md || !md->is_object()) return FieldError("metadata", "missing or not a mapping");
  Meta m;
  if (auto st = GetString(*md, "name", "metadata.", &m.name); !st.ok()) return st;
  if (m.name.empty()) return FieldError("metadata.name", "missing");
  if (auto st = GetString(*md, "namespace", "metadata.", &m.ns); !st.ok()) return st;
  if (namespaced && m.ns.empty()) return FieldError("metadata.namespace", "missing");
  if (auto st = GetString(*md, "uid", "metadata.", &m.uid); !st.ok()) return st;
  if (auto st = GetStringMap(*md, "labels", "metadata.", &m.labels); !st.ok()) return st;
  if (auto st = GetStringMap(*md, "annotations", "metadata.", &m.annotations); !st.ok()) return st;
  return m;
}

// Returns the array at `key` (empty when absent); an error when it is
// something else.
absl::StatusOr<const Json*> GetArray(const Json& obj, const char* key, const std::string& path) {
  static const Json kEmpty = Json::array();
  const Json* v = Member(obj, key);
  if (!v) return &kEmpty;
  if (!v->is_array())
    return WrongType(absl::StrCat(path, key), "a list", *v);
  return v;
}

// appProtocol (Kubernetes' field, with the values the ecosystem uses), else
// Istio's port-name convention ("http-web", "grpc"), else plain TCP.
AppProtocol ProtocolOf(const std::string& app_protocol, const std::string& port_name) {
  auto from = [](const std::string& s) -> std::optional<AppProtocol> {
    if (s == "http" || s == "HTTP") return AppProtocol::kHttp;
    if (s == "http2" || s == "HTTP2" || s == "kubernetes.io/h2c") return AppProtocol::kHttp2;
    if (s == "grpc" || s == "GRPC") return AppProtocol::kGrpc;
    return std::nullopt;
  };
  if (!app_protocol.empty()) return from(app_protocol).value_or(AppProtocol::kTcp);
  std::string prefix = port_name.substr(0, port_name.find('-'));
  return from(prefix).value_or(AppProtocol::kTcp);
}

bool IsTcp(const Json& port, const std::string& path, absl::Status* st) {
  std::string proto;
  *st = GetString(port, "protocol", path, &proto);
  return st->ok() && (proto.empty() || proto == "TCP");
}

}  // namespace

bool PodObject::operator==(const PodObject& o) const {
  return ns == o.ns && name == o.name && uid == o.uid && node_name == o.node_name &&
         service_account == o.service_account && qos_class == o.qos_class && phase == o.phase &&
         host_network == o.host_network && ips == o.ips && labels == o.labels && mode == o.mode &&
         fail_mode == o.fail_mode && opt_out_ports == o.opt_out_ports && opt_out_cidrs == o.opt_out_cidrs;
}

std::string ObjectKey(const Json& object) {
  const Json* md = Member(object, "metadata");
  if (!md) return "";
  const Json* name = Member(*md, "name");
  if (!name || !name->is_string()) return "";
  const Json* ns = Member(*md, "namespace");
  if (ns && ns->is_string() && !ns->get<std::string>().empty()) {
    return absl::StrCat(ns->get<std::string>(), "/", name->get<std::string>());
  }
  return name->get<std::string>();
}

std::string ResourceVersionOf(const Json& object) {
  const Json* md = Member(object, "metadata");
  const Json* rv = md ? Member(*md, "resourceVersion") : nullptr;
  return rv && rv->is_string() ? rv->get<std::string>() : "";
}

std::vector<uint16_t> ParseOptOutPorts(const std::string& value, std::vector<std::string>* warnings) {
  std::vector<uint16_t> out;
  for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    unsigned v = 0;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc() || end != part.data() + part.size() || v < 1 || v > 65535) {
      warnings->push_back(absl::StrCat(kOptOutPortsAnnotation, ": \"", part, "\" is not a port, ignored"));
      continue;
    }
    out.push_back(static_cast<uint16_t>(v));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.size() > kMaxOptOutPorts) {
    warnings->push_back(absl::StrCat(kOptOutPortsAnnotation, ": ", out.size(), " ports, only the first ",
                                     kMaxOptOutPorts, " are used"));
    out.resize(kMaxOptOutPorts);
  }
  return out;
}

std::vector<Cidr> ParseOptOutCidrs(const std::string& value, std::vector<std::string>* warnings) {
  std::vector<Cidr> out;
  for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    auto c = Cidr::Parse(std::string_view(part.data(), part.size()));
    if (!c) {
      warnings->push_back(absl::StrCat(kOptOutCidrsAnnotation, ": \"", part, "\" is not a CIDR, ignored"));
      continue;
    }
    out.push_back(*c);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.size() > kMaxOptOutCidrs) {
    warnings->push_back(absl::StrCat(kOptOutCidrsAnnotation, ": ", out.size(), " CIDRs, only the first ",
                                     kMaxOptOutCidrs, " are used"));
    out.resize(kMaxOptOutCidrs);
  }
  return out;
}

absl::StatusOr<std::optional<ServiceObject>> ParseService(const Json& object) {
  auto meta = ParseMeta(object, /*namespaced=*/true);
  if (!meta.ok()) return meta.status();
  // Another proxy implementation owns this Service (kube-proxy skips it too).
  if (meta->labels.count(kServiceProxyNameLabel)) return std::optional<ServiceObject>();
  const Json* spec = Member(object, "spec");
  if (!spec || !spec->is_object()) return FieldError("spec", "missing or not a mapping");
  std::string type;
  if (auto st = GetString(*spec, "type", "spec.", &type); !st.ok()) return st;
  if (type == "ExternalName") return std::optional<ServiceObject>();  // DNS only, no VIP

  ServiceObject svc;
  svc.ns = meta->ns;
  svc.name = meta->name;
  std::vector<std::string> ips;
  auto cluster_ips = GetArray(*spec, "clusterIPs", "spec.");
  if (!cluster_ips.ok()) return cluster_ips.status();
  for (size_t i = 0; i < (*cluster_ips)->size(); ++i) {
    const Json& v = (**cluster_ips)[i];
    if (!v.is_string()) return FieldError(absl::StrCat("spec.clusterIPs[", i, "]"), "expected a string");
    ips.push_back(v.get<std::string>());
  }
  if (ips.empty()) {
    std::string ip;
    if (auto st = GetString(*spec, "clusterIP", "spec.", &ip); !st.ok()) return st;
    if (!ip.empty()) ips.push_back(ip);
  }
  // Headless Services (clusterIP None) have no VIP to intercept: clients
  // resolve the pods' own IPs through DNS and connect to them directly.
  if (ips.empty() || ips[0] == "None") return std::optional<ServiceObject>();
  for (size_t i = 0; i < ips.size(); ++i) {
    auto ip = IpAddress::Parse(ips[i]);
    if (!ip)
      return FieldError(absl::StrCat("spec.clusterIPs[", i, "]"), absl::StrCat("\"", ips[i], "\" is not an IP"));
    svc.vips.push_back(*ip);
  }

  auto ports = GetArray(*spec, "ports", "spec.");
  if (!ports.ok()) return ports.status();
  for (size_t i = 0; i < (*ports)->size(); ++i) {
    const Json& p = (**ports)[i];
    std::string path = absl::StrCat("spec.ports[", i, "].");
    if (!p.is_object()) return FieldError(path, "expected a mapping");
    absl::Status st;
    if (!IsTcp(p, path, &st)) {
      if (!st.ok()) return st;
      continue;  // UDP/SCTP: not proxied, the connect hook only handles TCP
    }
    ServiceObject::Port port;
    if (auto s = GetString(p, "name", path, &port.name); !s.ok()) return s;
    const Json* num = Member(p, "port");
    if (!num) return FieldError(absl::StrCat(path, "port"), "missing");
    if (auto s = GetPort(*num, absl::StrCat(path, "port"), &port.port); !s.ok()) return s;
    const Json* target = Member(p, "targetPort");
    if (!target) {
      port.target_port = port.port;
    } else if (target->is_string()) {
      port.target_port_name = target->get<std::string>();
      unsigned v = 0;
      auto [end, ec] = std::from_chars(port.target_port_name.data(),
                                       port.target_port_name.data() + port.target_port_name.size(), v);
      if (ec == std::errc() && end == port.target_port_name.data() + port.target_port_name.size() && v >= 1 &&
          v <= 65535) {
        port.target_port = static_cast<uint16_t>(v);
        port.target_port_name.clear();
      } else if (port.target_port_name.empty()) {
        port.target_port = port.port;
      }
    } else if (auto s = GetPort(*target, absl::StrCat(path, "targetPort"), &port.target_port); !s.ok()) {
      return s;
    }
    std::string app;
    if (auto s = GetString(p, "appProtocol", path, &app); !s.ok()) return s;
    port.protocol = ProtocolOf(app, port.name);
    svc.ports.push_back(std::move(port));
  }
  return std::optional<ServiceObject>(std::move(svc));
}

absl::StatusOr<std::optional<EndpointSliceObject>> ParseEndpointSlice(const Json& object) {
  auto meta = ParseMeta(object, /*namespaced=*/true);
  if (!meta.ok()) return meta.status();
  auto svc_label = meta->labels.find(kServiceNameLabel);
  if (svc_label == meta->labels.end() || svc_label->second.empty()) {
    return std::optional<EndpointSliceObject>();  // not managed for a Service
  }
  std::string address_type;
  if (auto st = GetString(object, "addressType", "", &address_type); !st.ok()) return st;
  if (address_type == "FQDN") return std::optional<EndpointSliceObject>();
  if (address_type != "IPv4" && address_type != "IPv6") {
    return FieldError("addressType", absl::StrCat("\"", address_type, "\" is not IPv4, IPv6 or FQDN"));
  }

  EndpointSliceObject slice;
  slice.ns = meta->ns;
  slice.name = meta->name;
  slice.service = svc_label->second;
  auto ports = GetArray(object, "ports", "");
  if (!ports.ok()) return ports.status();
  for (size_t i = 0; i < (*ports)->size(); ++i) {
    const Json& p = (**ports)[i];
    std::string path = absl::StrCat("ports[", i, "].");
    if (!p.is_object()) return FieldError(path, "expected a mapping");
    absl::Status st;
    if (!IsTcp(p, path, &st)) {
      if (!st.ok()) return st;
      continue;
    }
    EndpointSliceObject::Port port;
    if (auto s = GetString(p, "name", path, &port.name); !s.ok()) return s;
    const Json* num = Member(p, "port");
    if (!num) continue;  // "all ports": not something a VIP:port mapping can use
    if (auto s = GetPort(*num, absl::StrCat(path, "port"), &port.port); !s.ok()) return s;
    slice.ports.push_back(std::move(port));
  }

  auto endpoints = GetArray(object, "endpoints", "");
  if (!endpoints.ok()) return endpoints.status();
  for (size_t i = 0; i < (*endpoints)->size(); ++i) {
    const Json& e = (**endpoints)[i];
    std::string path = absl::StrCat("endpoints[", i, "].");
    if (!e.is_object()) return FieldError(path, "expected a mapping");
    auto addrs = GetArray(e, "addresses", path);
    if (!addrs.ok()) return addrs.status();
    if ((*addrs)->empty() || !(**addrs)[0].is_string())
      return FieldError(absl::StrCat(path, "addresses"), "missing");
    EndpointSliceObject::Endpoint ep;
    auto ip = IpAddress::Parse((**addrs)[0].get<std::string>());
    if (!ip || ip->is_v4() != (address_type == "IPv4")) {
      return FieldError(absl::StrCat(path, "addresses[0]"), absl::StrCat("\"", (**addrs)[0].get<std::string>(),
                                                                  "\" is not an ", address_type, " address"));
    }
    ep.ip = *ip;
    if (const Json* cond = Member(e, "conditions")) {
      if (!cond->is_object()) return FieldError(absl::StrCat(path, "conditions"), "expected a mapping");
      std::string cpath = absl::StrCat(path, "conditions.");
      // The API documents nil ready/serving as "interpret as ready" and nil
      // terminating as "not terminating".
      if (auto s = GetBool(*cond, "ready", cpath, true, &ep.ready); !s.ok()) return s;
      if (auto s = GetBool(*cond, "serving", cpath, true, &ep.serving); !s.ok()) return s;
      if (auto s = GetBool(*cond, "terminating", cpath, false, &ep.terminating); !s.ok()) return s;
    }
    if (const Json* ref = Member(e, "targetRef")) {
      std::string kind, ns, name;
      if (auto s = GetString(*ref, "kind", path + "targetRef.", &kind); !s.ok()) return s;
      if (auto s = GetString(*ref, "namespace", path + "targetRef.", &ns); !s.ok()) return s;
      if (auto s = GetString(*ref, "name", path + "targetRef.", &name); !s.ok()) return s;
      if (kind == "Pod") ep.pod = absl::StrCat(ns.empty() ? slice.ns : ns, "/", name);
    }
    slice.endpoints.push_back(std::move(ep));
  }
  return std::optional<EndpointSliceObject>(std::move(slice));
}

absl::StatusOr<std::optional<NamespaceObject>> ParseNamespace(const Json& object) {
  auto meta = ParseMeta(object, /*namespaced=*/false);
  if (!meta.ok()) return meta.status();
  NamespaceObject ns;
  ns.name = meta->name;
  if (auto it = meta->labels.find(kModeLabel); it != meta->labels.end()) ns.mode = it->second;
  return std::optional<NamespaceObject>(std::move(ns));
}

bool IsPodUid(std::string_view uid) {
  if (uid.size() != 36) return false;
  for (size_t i = 0; i < uid.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (uid[i] != '-') return false;
    } else if (!absl::ascii_isxdigit(static_cast<unsigned char>(uid[i]))) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::optional<PodObject>> ParsePod(const Json& object) {
  auto meta = ParseMeta(object, /*namespaced=*/true);
  if (!meta.ok()) return meta.status();
  if (meta->uid.empty()) return FieldError("metadata.uid", "missing");
  if (!IsPodUid(meta->uid)) {
    return FieldError("metadata.uid", absl::StrCat("\"", Utf8Preview(meta->uid, 64), "\" is not a UUID"));
  }
  PodObject pod;
  pod.ns = meta->ns;
  pod.name = meta->name;
  pod.uid = meta->uid;
  pod.labels = meta->labels;
  if (const Json* spec = Member(object, "spec")) {
    if (!spec->is_object()) return FieldError("spec", "expected a mapping");
    if (auto st = GetString(*spec, "nodeName", "spec.", &pod.node_name); !st.ok()) return st;
    if (auto st = GetString(*spec, "serviceAccountName", "spec.", &pod.service_account); !st.ok()) return st;
    if (auto st = GetBool(*spec, "hostNetwork", "spec.", false, &pod.host_network); !st.ok()) return st;
  }
  if (const Json* status = Member(object, "status")) {
    if (!status->is_object()) return FieldError("status", "expected a mapping");
    if (auto st = GetString(*status, "phase", "status.", &pod.phase); !st.ok()) return st;
    if (auto st = GetString(*status, "qosClass", "status.", &pod.qos_class); !st.ok()) return st;
    auto ips = GetArray(*status, "podIPs", "status.");
    if (!ips.ok()) return ips.status();
    std::vector<std::string> texts;
    for (size_t i = 0; i < (*ips)->size(); ++i) {
      std::string ip;
      std::string path = absl::StrCat("status.podIPs[", i, "].");
      if (auto st = GetString((**ips)[i], "ip", path, &ip); !st.ok()) return st;
      if (!ip.empty()) texts.push_back(ip);
    }
    if (texts.empty()) {
      std::string ip;
      if (auto st = GetString(*status, "podIP", "status.", &ip); !st.ok()) return st;
      if (!ip.empty()) texts.push_back(ip);
    }
    for (const auto& t : texts) {
      auto ip = IpAddress::Parse(t);
      if (!ip) return FieldError("status.podIPs", absl::StrCat("\"", t, "\" is not an IP"));
      pod.ips.push_back(*ip);
    }
  }

  if (auto it = meta->labels.find(kModeLabel); it != meta->labels.end()) {
    if (it->second == "enabled") {
      pod.mode = PodMode::kEnabled;
    } else if (it->second == "disabled") {
      pod.mode = PodMode::kDisabled;
    } else {
      pod.warnings.push_back(absl::StrCat(kModeLabel, ": \"", it->second,
                                          "\" is not enabled or disabled; the namespace decides"));
    }
  }
  const auto& ann = meta->annotations;
  if (auto it = ann.find(kOptOutPortsAnnotation); it != ann.end()) {
    pod.opt_out_ports = ParseOptOutPorts(it->second, &pod.warnings);
  }
  if (auto it = ann.find(kOptOutCidrsAnnotation); it != ann.end()) {
    pod.opt_out_cidrs = ParseOptOutCidrs(it->second, &pod.warnings);
  }
  if (auto it = ann.find(kFailModeAnnotation); it != ann.end()) {
    auto mode = ParseFailMode(it->second);
    if (mode) {
      pod.fail_mode = *mode;
    } else {
      pod.warnings.push_back(
          absl::StrCat(kFailModeAnnotation, ": \"", it->second, "\" is not open or closed; using open"));
    }
  }
  return std::optional<PodObject>(std::move(pod));
}

const std::string* Intern(std::string_view s) {
  static std::mutex mu;
  // Node-based: the strings never move, so the pointers stay valid.
  static auto* pool = new std::unordered_set<std::string>();
  std::lock_guard lock(mu);
  if (auto it = pool->find(std::string(s)); it != pool->end()) return &*it;
  if (pool->size() >= kMaxInterned) return nullptr;
  return &*pool->emplace(s).first;
}

absl::StatusOr<std::optional<RemotePodObject>> ParseRemotePod(const Json& object) {
  auto pod = ParsePod(object);
  if (!pod.ok()) return pod.status();
  if (!*pod) return std::optional<RemotePodObject>();
  const PodObject& p = **pod;
  if (p.host_network || p.ips.empty() || p.phase == "Succeeded" || p.phase == "Failed") {
    return std::optional<RemotePodObject>();
  }
  RemotePodObject out;
  out.ns = Intern(p.ns);
  out.service_account = Intern(p.service_account.empty() ? "default" : p.service_account);
  out.node = Intern(p.node_name);
  if (!out.ns || !out.service_account || !out.node) {
    return absl::ResourceExhaustedError("too many distinct namespaces, service accounts and nodes");
  }
  for (const IpAddress& ip : p.ips) {
    if (out.ip_count == out.ips.size()) break;
    out.ips[out.ip_count++] = ip;
  }
  out.mode = p.mode;
  return std::optional<RemotePodObject>(out);
}

absl::StatusOr<std::optional<AuthorizationPolicy>> ParseAuthorizationPolicy(const Json& object,
                                                                            const AuthzLimits& limits) {
  return ParseIstioAuthorizationPolicy(object, limits);
}

}  // namespace ringmesh::agent::k8s
