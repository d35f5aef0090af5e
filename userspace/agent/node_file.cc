#include "userspace/agent/node_file.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <cstring>
#include <initializer_list>
#include <istream>
#include <map>
#include <nlohmann/json.hpp>
#include <streambuf>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bpf/include/ringmesh/abi.h"
#include "userspace/common/status_macros.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::agent {

static_assert(kMaxOptOutPorts == RM_MAX_OPT_OUT_PORTS, "opt-out ports must fit the BPF pod value");

namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// --- YAML -> small tree ------------------------------------------------------
//
// We build our own tree from yaml-cpp's parser events instead of using
// YAML::Load: it lets us refuse aliases (a few lines of `*a` can otherwise
// expand to billions of nodes when walked), refuse a second document instead
// of silently ignoring it, bound the node count, and keep every node's line.

struct YNode {
  enum class Kind : uint8_t { kNull, kScalar, kSeq, kMap };
  Kind kind = Kind::kNull;
  bool plain = false;  // unquoted, untagged scalar: may be a number or boolean
  int line = 0;        // 1-based
  std::string value;
  std::vector<YNode> children;  // kSeq: items; kMap: key, value, key, value, ...
};

struct YamlFailure {
  int line;
  int column;
  std::string message;
};

class TreeBuilder : public YAML::EventHandler {
 public:
  YNode& root() { return root_; }

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ > 1)
      throw YamlFailure{mark.line + 1, mark.column + 1, "only one YAML document is allowed"};
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { Add(mark, YNode::Kind::kNull); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    throw YamlFailure{mark.line + 1, mark.column + 1, "YAML aliases (*name) are not supported"};
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t,
                const std::string& value) override {
    YNode& n = Add(mark, YNode::Kind::kScalar);
    n.plain = tag == "?";
    n.value = value;
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    open_.push_back(&Add(mark, YNode::Kind::kSeq));
  }
  void OnSequenceEnd() override { open_.pop_back(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    open_.push_back(&Add(mark, YNode::Kind::kMap));
  }
  void OnMapEnd() override { open_.pop_back(); }

 private:
  // Pointers in open_ stay valid: only the innermost open node gets new
  // children, and no open node lives in that node's child vector.
  YNode& Add(const YAML::Mark& mark, YNode::Kind kind) {
    if (++nodes_ > kMaxYamlNodes) {
      throw YamlFailure{mark.line + 1, mark.column + 1,
                        absl::StrCat("more than ", kMaxYamlNodes, " YAML nodes")};
    }
    YNode* n = &root_;
    if (!open_.empty()) n = &open_.back()->children.emplace_back();
    n->kind = kind;
    n->line = mark.line + 1;
    return *n;
  }

  YNode root_;
  std::vector<YNode*> open_;
  size_t nodes_ = 0;
  int documents_ = 0;
};

// Reads the text in place; YAML::Parser wants an istream.
class ViewStreamBuf : public std::streambuf {
 public:
  explicit ViewStreamBuf(std::string_view text) {
    char* p = const_cast<char*>(text.data());
    setg(p, p, p + text.size());
  }
};

// --- validation helpers --------------------------------------------------------

bool IsValidUtf8NoControl(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMinForLen[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLen[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    if (cp >= 0x80 && cp < 0xa0) return false;  // C1 controls
    i += len;
  }
  return true;
}

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z'); }

// RFC 1123 label, as Kubernetes checks namespaces and service names.
bool IsDnsLabel(std::string_view s) {
  if (s.empty() || s.size() > 63 || !IsLowerAlnum(s.front()) || !IsLowerAlnum(s.back())) return false;
  for (char c : s) {
    if (!IsLowerAlnum(c) && c != '-') return false;
  }
  return true;
}

// RFC 1123 subdomain, as Kubernetes checks pod and service account names.
bool IsDnsSubdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  for (;;) {
    size_t dot = s.find('.', start);
    if (!IsDnsLabel(s.substr(start, dot - start))) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// Label values and the name part of label keys: [A-Za-z0-9._-], alphanumeric
// at both ends, at most 63.
bool IsLabelName(std::string_view s) {
  if (s.empty() || s.size() > 63 || !IsAlnum(s.front()) || !IsAlnum(s.back())) return false;
  for (char c : s) {
    if (!IsAlnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

bool IsLabelKey(std::string_view s) {
  size_t slash = s.find('/');
  if (slash == std::string_view::npos) return IsLabelName(s);
  return IsDnsSubdomain(s.substr(0, slash)) && IsLabelName(s.substr(slash + 1));
}

std::string Quote(std::string_view s) {
  constexpr size_t kMax = 80;
  return absl::StrCat("\"", absl::CHexEscape(AV(s.substr(0, kMax))), s.size() > kMax ? "...\"" : "\"");
}

const char* KindName(const YNode& n) {
  switch (n.kind) {
    case YNode::Kind::kNull:
      return "nothing";
    case YNode::Kind::kScalar:
      return n.plain ? "a scalar" : "a quoted string";
    case YNode::Kind::kSeq:
      return "a list";
    case YNode::Kind::kMap:
      return "a mapping";
  }
  return "?";
}

std::string Child(std::string_view path, std::string_view field) {
  return path.empty() ? std::string(field) : absl::StrCat(AV(path), ".", AV(field));
}
std::string Index(std::string_view path, size_t i) { return absl::StrCat(AV(path), "[", i, "]"); }

// --- conversion ------------------------------------------------------------------

class Converter {
 public:
  Converter(std::string_view file, const NodeFileOptions& options) : file_(file), options_(options) {}

  absl::StatusOr<Snapshot> Convert(const YNode& root);

 private:
  // "<file>:<line>: <path>: <message>", or without the path when empty.
  absl::Status Error(const YNode& at, std::string_view path, std::string_view message) const {
    return absl::InvalidArgumentError(
        path.empty() ? absl::StrCat(AV(file_), ":", at.line, ": ", AV(message))
                     : absl::StrCat(AV(file_), ":", at.line, ": ", AV(path), ": ", AV(message)));
  }

  absl::Status CheckFields(const YNode& map, const std::string& path,
                           std::initializer_list<std::string_view> known) const;
  // The value of `key`, or nullptr when absent or null.
  static const YNode* Find(const YNode& map, std::string_view key);
  // Whether `key` is there at all, even with a null value.
  static bool HasKey(const YNode& map, std::string_view key);
  absl::Status Require(const YNode& map, const std::string& path, std::string_view key,
                       const YNode** out) const;

  absl::Status GetList(const YNode& n, const std::string& path, size_t max) const;
  absl::Status GetString(const YNode& n, const std::string& path, size_t max_len, std::string* out) const;
  absl::Status GetPort(const YNode& n, const std::string& path, uint16_t* out) const;
  absl::Status GetBool(const YNode& n, const std::string& path, bool* out) const;
  absl::Status GetIp(const YNode& n, const std::string& path, IpAddress* out) const;
  absl::Status GetEnum(const YNode& n, const std::string& path,
                       std::initializer_list<std::string_view> allowed, std::string* out) const;
  absl::Status GetName(const YNode& n, const std::string& path, bool subdomain, std::string* out) const;
  absl::Status GetPath(const YNode& n, const std::string& path, std::string* out) const;

  // The checks and fields both kinds of pod share.
  absl::Status ConvertPodName(const YNode& n, const std::string& path, size_t index, std::string* ns,
                              std::string* name);
  absl::Status ConvertIps(const YNode& n, const std::string& path, size_t index, std::vector<IpAddress>* ips);
  absl::Status ConvertLabels(const YNode& n, const std::string& path,
                             std::map<std::string, std::string>* labels) const;
  absl::Status ConvertPod(const YNode& n, size_t index, Pod* pod);
  absl::Status ConvertRemotePod(const YNode& n, size_t index, RemotePod* pod);
  absl::Status ConvertService(const YNode& n, size_t index, Service* svc);
  absl::Status ConvertPort(const YNode& n, const std::string& path, ServicePort* port) const;
  absl::Status ConvertPolicies(const YNode& n, std::vector<AuthorizationPolicy>* out) const;

  std::string_view file_;
  NodeFileOptions options_;
  // For the cross-entry checks: which entry first used a key. Pods are
  // numbered by their place in the file's `pods` list, local or remote.
  std::map<std::string, size_t> pod_names_;
  std::vector<std::string> pod_keys_;  // "<ns>/<name>" per pods[] index
  std::map<IpAddress, size_t> pod_ips_;
  std::map<std::string, size_t> netns_paths_;
  std::map<std::string, size_t> service_names_;
  std::map<IpAddress, size_t> vips_;
};

absl::Status Converter::CheckFields(const YNode& map, const std::string& path,
                                    std::initializer_list<std::string_view> known) const {
  if (map.kind != YNode::Kind::kMap) {
    return Error(map, path, absl::StrCat("expected a mapping, got ", KindName(map)));
  }
  for (size_t i = 0; i < map.children.size(); i += 2) {
    const YNode& key = map.children[i];
    if (key.kind != YNode::Kind::kScalar) {
      return Error(key, path, absl::StrCat("field names must be strings, got ", KindName(key)));
    }
    bool ok = false;
    for (auto k : known) ok = ok || k == key.value;
    if (!ok) return Error(key, path, absl::StrCat("unknown field ", Quote(key.value)));
    for (size_t j = 0; j < i; j += 2) {
      if (map.children[j].value == key.value) {
        return Error(key, path,
                     absl::StrCat("duplicate field ", Quote(key.value), " (first on line ",
                                  map.children[j].line, ")"));
      }
    }
  }
  return absl::OkStatus();
}

bool Converter::HasKey(const YNode& map, std::string_view key) {
  for (size_t i = 0; i + 1 < map.children.size(); i += 2) {
    if (map.children[i].value == key) return true;
  }
  return false;
}

const YNode* Converter::Find(const YNode& map, std::string_view key) {
  for (size_t i = 0; i + 1 < map.children.size(); i += 2) {
    if (map.children[i].value == key) {
      const YNode& v = map.children[i + 1];
      return v.kind == YNode::Kind::kNull ? nullptr : &v;
    }
  }
  return nullptr;
}

absl::Status Converter::Require(const YNode& map, const std::string& path, std::string_view key,
                                const YNode** out) const {
  *out = Find(map, key);
  if (*out == nullptr) return Error(map, Child(path, key), "required field missing");
  return absl::OkStatus();
}

absl::Status Converter::GetList(const YNode& n, const std::string& path, size_t max) const {
  if (n.kind != YNode::Kind::kSeq) return Error(n, path, absl::StrCat("expected a list, got ", KindName(n)));
  if (n.children.size() > max) {
    return Error(n, path, absl::StrCat(n.children.size(), " entries, at most ", max, " allowed"));
  }
  return absl::OkStatus();
}

absl::Status Converter::GetString(const YNode& n, const std::string& path, size_t max_len,
                                  std::string* out) const {
  if (n.kind != YNode::Kind::kScalar)
    return Error(n, path, absl::StrCat("expected a string, got ", KindName(n)));
  if (n.value.size() > max_len) {
    return Error(n, path, absl::StrCat("longer than ", max_len, " bytes"));
  }
  // JSON on the wire and in logs needs clean text.
  if (!IsValidUtf8NoControl(n.value)) {
    return Error(n, path, absl::StrCat(Quote(n.value), " contains control characters or invalid UTF-8"));
  }
  *out = n.value;
  return absl::OkStatus();
}

absl::Status Converter::GetPort(const YNode& n, const std::string& path, uint16_t* out) const {
  if (n.kind != YNode::Kind::kScalar) {
    return Error(n, path, absl::StrCat("expected a port number, got ", KindName(n)));
  }
  uint32_t v = 0;
  bool ok = n.plain && !n.value.empty() && n.value.size() <= 5;
  for (char c : n.value) {
    ok = ok && c >= '0' && c <= '9';
    if (ok) v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (!ok || v < 1 || v > 65535)
    return Error(n, path, absl::StrCat(Quote(n.value), " is not a port (1-65535)"));
  *out = static_cast<uint16_t>(v);
  return absl::OkStatus();
}

absl::Status Converter::GetBool(const YNode& n, const std::string& path, bool* out) const {
  if (n.kind == YNode::Kind::kScalar && n.plain && (n.value == "true" || n.value == "false")) {
    *out = n.value == "true";
    return absl::OkStatus();
  }
  if (n.kind == YNode::Kind::kScalar) {
    return Error(n, path, absl::StrCat(Quote(n.value), " is not a boolean (true or false)"));
  }
  return Error(n, path, absl::StrCat("expected true or false, got ", KindName(n)));
}

absl::Status Converter::GetIp(const YNode& n, const std::string& path, IpAddress* out) const {
  if (n.kind != YNode::Kind::kScalar) {
    return Error(n, path, absl::StrCat("expected an IP address, got ", KindName(n)));
  }
  auto ip = IpAddress::Parse(n.value);
  if (!ip) return Error(n, path, absl::StrCat(Quote(n.value), " is not an IP address"));
  *out = *ip;
  return absl::OkStatus();
}

absl::Status Converter::GetEnum(const YNode& n, const std::string& path,
                                std::initializer_list<std::string_view> allowed, std::string* out) const {
  std::vector<absl::string_view> names;
  for (auto a : allowed) names.push_back(AV(a));
  if (n.kind == YNode::Kind::kScalar) {
    for (auto a : allowed) {
      if (a == n.value) {
        *out = n.value;
        return absl::OkStatus();
      }
    }
    return Error(n, path,
                 absl::StrCat("unknown value ", Quote(n.value), " (expected one of ",
                              absl::StrJoin(names, ", "), ")"));
  }
  return Error(n, path, absl::StrCat("expected one of ", absl::StrJoin(names, ", "), ", got ", KindName(n)));
}

absl::Status Converter::GetName(const YNode& n, const std::string& path, bool subdomain,
                                std::string* out) const {
  RM_RETURN_IF_ERROR(GetString(n, path, 253, out));
  if (subdomain ? !IsDnsSubdomain(*out) : !IsDnsLabel(*out)) {
    return Error(n, path,
                 absl::StrCat(Quote(*out), " is not a valid name (",
                              subdomain ? "lowercase letters, digits, '-' and '.', at most 253"
                                        : "lowercase letters, digits and '-', at most 63",
                              ")"));
  }
  return absl::OkStatus();
}

absl::Status Converter::GetPath(const YNode& n, const std::string& path, std::string* out) const {
  RM_RETURN_IF_ERROR(GetString(n, path, 4095, out));
  if (out->empty() || out->front() != '/') {
    return Error(n, path, absl::StrCat(Quote(*out), " is not an absolute path"));
  }
  return absl::OkStatus();
}

absl::Status Converter::ConvertPodName(const YNode& n, const std::string& path, size_t index, std::string* ns,
                                       std::string* name) {
  const YNode* v = nullptr;
  RM_RETURN_IF_ERROR(Require(n, path, "namespace", &v));
  RM_RETURN_IF_ERROR(GetName(*v, Child(path, "namespace"), /*subdomain=*/false, ns));
  RM_RETURN_IF_ERROR(Require(n, path, "name", &v));
  RM_RETURN_IF_ERROR(GetName(*v, Child(path, "name"), /*subdomain=*/true, name));
  std::string key = absl::StrCat(*ns, "/", *name);
  if (auto [it, inserted] = pod_names_.emplace(key, index); !inserted) {
    return Error(n, "",
                 absl::StrCat("duplicate pod ", key, " (pods[", it->second, "] and pods[", index, "])"));
  }
  if (pod_keys_.size() <= index) pod_keys_.resize(index + 1);
  pod_keys_[index] = std::move(key);
  return absl::OkStatus();
}

absl::Status Converter::ConvertIps(const YNode& n, const std::string& path, size_t index,
                                   std::vector<IpAddress>* ips) {
  const YNode* v = nullptr;
  RM_RETURN_IF_ERROR(Require(n, path, "ips", &v));
  const std::string ips_path = Child(path, "ips");
  RM_RETURN_IF_ERROR(GetList(*v, ips_path, kMaxIpsPerPod));
  if (v->children.empty()) return Error(*v, ips_path, "at least one IP address is required");
  ips->reserve(v->children.size());
  for (size_t i = 0; i < v->children.size(); ++i) {
    const YNode& item = v->children[i];
    IpAddress ip;
    RM_RETURN_IF_ERROR(GetIp(item, Index(ips_path, i), &ip));
    if (auto [it, inserted] = pod_ips_.emplace(ip, index); !inserted) {
      if (it->second == index)
        return Error(item, Index(ips_path, i), absl::StrCat("duplicate IP ", ip.ToString()));
      return Error(
          item, "",
          absl::StrCat("duplicate IP ", ip.ToString(), " (pods[", it->second, "] and pods[", index, "])"));
    }
    ips->push_back(ip);
  }
  return absl::OkStatus();
}

absl::Status Converter::ConvertLabels(const YNode& n, const std::string& path,
                                      std::map<std::string, std::string>* labels) const {
  const YNode* v = Find(n, "labels");
  if (v == nullptr) return absl::OkStatus();
  const std::string labels_path = Child(path, "labels");
  if (v->kind != YNode::Kind::kMap) {
    return Error(*v, labels_path, absl::StrCat("expected a mapping, got ", KindName(*v)));
  }
  if (v->children.size() / 2 > kMaxLabelsPerPod) {
    return Error(*v, labels_path,
                 absl::StrCat(v->children.size() / 2, " labels, at most ", kMaxLabelsPerPod, " allowed"));
  }
  for (size_t i = 0; i + 1 < v->children.size(); i += 2) {
    const YNode& k = v->children[i];
    std::string name;
    RM_RETURN_IF_ERROR(GetString(k, labels_path, 317, &name));
    if (!IsLabelKey(name))
      return Error(k, labels_path, absl::StrCat(Quote(name), " is not a valid label key"));
    if (labels->count(name)) return Error(k, labels_path, absl::StrCat("duplicate label ", Quote(name)));
    const YNode& lv = v->children[i + 1];
    std::string value;
    if (lv.kind != YNode::Kind::kNull)
      RM_RETURN_IF_ERROR(GetString(lv, Child(labels_path, name), 63, &value));
    if (!value.empty() && !IsLabelName(value)) {
      return Error(lv, Child(labels_path, name), absl::StrCat(Quote(value), " is not a valid label value"));
    }
    labels->emplace(std::move(name), std::move(value));
  }
  return absl::OkStatus();
}

absl::Status Converter::ConvertRemotePod(const YNode& n, size_t index, RemotePod* pod) {
  const std::string path = Index("pods", index);
  // What only a pod of this node has (where its sockets live, how the
  // datapath treats them) means nothing for a pod elsewhere: an error, not
  // silently ignored, as it most likely means a wrong `node:`.
  for (size_t i = 0; i + 1 < n.children.size(); i += 2) {
    const YNode& key = n.children[i];
    for (std::string_view local : {"uid", "netns", "cgroup", "failMode", "optOutPorts", "optOutCidrs"}) {
      if (key.value == local) {
        return Error(key, Child(path, local),
                     "only pods of this node have it; this pod has `node:` (a pod of another node)");
      }
    }
  }
  RM_RETURN_IF_ERROR(ConvertPodName(n, path, index, &pod->ns, &pod->name));
  const YNode* v = nullptr;
  RM_RETURN_IF_ERROR(Require(n, path, "node", &v));
  RM_RETURN_IF_ERROR(GetName(*v, Child(path, "node"), /*subdomain=*/true, &pod->node));
  pod->service_account = "default";
  if ((v = Find(n, "serviceAccount"))) {
    RM_RETURN_IF_ERROR(GetName(*v, Child(path, "serviceAccount"), /*subdomain=*/true, &pod->service_account));
  }
  if ((v = Find(n, "mode"))) {
    std::string mode;
    RM_RETURN_IF_ERROR(GetEnum(*v, Child(path, "mode"), {"enabled", "disabled"}, &mode));
    pod->enrolled = mode == "enabled";
  }
  RM_RETURN_IF_ERROR(ConvertIps(n, path, index, &pod->ips));
  // Checked like a local pod's, so a file stays valid when a pod moves, but
  // not kept: nothing on this node selects remote pods by label.
  std::map<std::string, std::string> labels;
  return ConvertLabels(n, path, &labels);
}

absl::Status Converter::ConvertPod(const YNode& n, size_t index, Pod* pod) {
  const std::string path = Index("pods", index);
  RM_RETURN_IF_ERROR(ConvertPodName(n, path, index, &pod->ns, &pod->name));
  const YNode* v = nullptr;
  if ((v = Find(n, "uid"))) RM_RETURN_IF_ERROR(GetString(*v, Child(path, "uid"), 128, &pod->uid));
  pod->service_account = "default";
  if ((v = Find(n, "serviceAccount"))) {
    RM_RETURN_IF_ERROR(GetName(*v, Child(path, "serviceAccount"), /*subdomain=*/true, &pod->service_account));
  }
  if ((v = Find(n, "mode"))) {
    std::string mode;
    RM_RETURN_IF_ERROR(GetEnum(*v, Child(path, "mode"), {"enabled", "disabled"}, &mode));
    pod->enrolled = mode == "enabled";
  }
  if ((v = Find(n, "failMode"))) {
    std::string mode;
    RM_RETURN_IF_ERROR(GetEnum(*v, Child(path, "failMode"), {"open", "closed"}, &mode));
    pod->fail_mode = *ParseFailMode(mode);
  }
  // Only an enrolled pod needs its netns: that is where the proxy listens.
  if (pod->enrolled) {
    RM_RETURN_IF_ERROR(Require(n, path, "netns", &v));
  } else {
    v = Find(n, "netns");
  }
  if (v) {
    RM_RETURN_IF_ERROR(GetPath(*v, Child(path, "netns"), &pod->netns_path));
    if (pod->enrolled) {
      if (auto [it, inserted] = netns_paths_.emplace(pod->netns_path, index); !inserted) {
        return Error(*v, "",
                     absl::StrCat("duplicate netns ", pod->netns_path, " (pods[", it->second, "] and pods[",
                                  index, "])"));
      }
    }
  }
  if ((v = Find(n, "cgroup"))) RM_RETURN_IF_ERROR(GetPath(*v, Child(path, "cgroup"), &pod->cgroup_path));

  RM_RETURN_IF_ERROR(ConvertIps(n, path, index, &pod->ips));
  RM_RETURN_IF_ERROR(ConvertLabels(n, path, &pod->labels));

  if ((v = Find(n, "optOutPorts"))) {
    const std::string p = Child(path, "optOutPorts");
    RM_RETURN_IF_ERROR(GetList(*v, p, kMaxOptOutPorts));
    for (size_t i = 0; i < v->children.size(); ++i) {
      uint16_t port;
      RM_RETURN_IF_ERROR(GetPort(v->children[i], Index(p, i), &port));
      for (uint16_t seen : pod->opt_out_ports) {
        if (seen == port) return Error(v->children[i], Index(p, i), absl::StrCat("duplicate port ", port));
      }
      pod->opt_out_ports.push_back(port);
    }
  }
  if ((v = Find(n, "optOutCidrs"))) {
    const std::string p = Child(path, "optOutCidrs");
    RM_RETURN_IF_ERROR(GetList(*v, p, kMaxOptOutCidrs));
    for (size_t i = 0; i < v->children.size(); ++i) {
      const YNode& item = v->children[i];
      std::optional<Cidr> cidr;
      if (item.kind == YNode::Kind::kScalar) cidr = Cidr::Parse(item.value);
      if (!cidr) {
        return Error(item, Index(p, i),
                     item.kind == YNode::Kind::kScalar
                         ? absl::StrCat(Quote(item.value), " is not a CIDR (address/prefix-length)")
                         : absl::StrCat("expected a CIDR, got ", KindName(item)));
      }
      pod->opt_out_cidrs.push_back(*cidr);
    }
  }
  return absl::OkStatus();
}

absl::Status Converter::ConvertPort(const YNode& n, const std::string& path, ServicePort* port) const {
  RM_RETURN_IF_ERROR(CheckFields(n, path, {"name", "port", "targetPort", "protocol"}));
  const YNode* v = nullptr;
  RM_RETURN_IF_ERROR(Require(n, path, "port", &v));
  RM_RETURN_IF_ERROR(GetPort(*v, Child(path, "port"), &port->port));
  port->target_port = port->port;
  if ((v = Find(n, "targetPort")))
    RM_RETURN_IF_ERROR(GetPort(*v, Child(path, "targetPort"), &port->target_port));
  if ((v = Find(n, "name")))
    RM_RETURN_IF_ERROR(GetName(*v, Child(path, "name"), /*subdomain=*/false, &port->name));
  if ((v = Find(n, "protocol"))) {
    std::string proto;
    RM_RETURN_IF_ERROR(GetEnum(*v, Child(path, "protocol"), {"tcp", "http", "http2", "grpc"}, &proto));
    port->protocol = *ParseAppProtocol(proto);
  }
  return absl::OkStatus();
}

absl::Status Converter::ConvertService(const YNode& n, size_t index, Service* svc) {
  const std::string path = Index("services", index);
  RM_RETURN_IF_ERROR(CheckFields(n, path, {"namespace", "name", "vips", "ports", "lb", "endpoints"}));
  const YNode* v = nullptr;
  RM_RETURN_IF_ERROR(Require(n, path, "namespace", &v));
  RM_RETURN_IF_ERROR(GetName(*v, Child(path, "namespace"), /*subdomain=*/false, &svc->ns));
  RM_RETURN_IF_ERROR(Require(n, path, "name", &v));
  RM_RETURN_IF_ERROR(GetName(*v, Child(path, "name"), /*subdomain=*/false, &svc->name));
  const std::string key = absl::StrCat(svc->ns, "/", svc->name);
  if (auto [it, inserted] = service_names_.emplace(key, index); !inserted) {
    return Error(
        n, "",
        absl::StrCat("duplicate service ", key, " (services[", it->second, "] and services[", index, "])"));
  }

  if ((v = Find(n, "vips"))) {
    const std::string p = Child(path, "vips");
    RM_RETURN_IF_ERROR(GetList(*v, p, kMaxVipsPerService));
    for (size_t i = 0; i < v->children.size(); ++i) {
      const YNode& item = v->children[i];
      IpAddress ip;
      RM_RETURN_IF_ERROR(GetIp(item, Index(p, i), &ip));
      if (auto [it, inserted] = vips_.emplace(ip, index); !inserted) {
        if (it->second == index)
          return Error(item, Index(p, i), absl::StrCat("duplicate VIP ", ip.ToString()));
        return Error(item, "",
                     absl::StrCat("duplicate VIP ", ip.ToString(), " (services[", it->second,
                                  "] and services[", index, "])"));
      }
      // A VIP that is also a pod IP would make the proxy hijack traffic to
      // that pod.
      if (auto it = pod_ips_.find(ip); it != pod_ips_.end()) {
        return Error(item, Index(p, i),
                     absl::StrCat("VIP ", ip.ToString(), " is also the IP of pods[", it->second, "] (",
                                  pod_keys_[it->second], ")"));
      }
      svc->vips.push_back(ip);
    }
  }

  RM_RETURN_IF_ERROR(Require(n, path, "ports", &v));
  const std::string ports_path = Child(path, "ports");
  RM_RETURN_IF_ERROR(GetList(*v, ports_path, kMaxPortsPerService));
  if (v->children.empty()) return Error(*v, ports_path, "at least one port is required");
  for (size_t i = 0; i < v->children.size(); ++i) {
    ServicePort port;
    const std::string p = Index(ports_path, i);
    RM_RETURN_IF_ERROR(ConvertPort(v->children[i], p, &port));
    for (size_t j = 0; j < svc->ports.size(); ++j) {
      if (svc->ports[j].port == port.port) {
        return Error(v->children[i], p, absl::StrCat("duplicate port ", port.port, " (ports[", j, "])"));
      }
      if (!port.name.empty() && svc->ports[j].name == port.name) {
        return Error(v->children[i], p,
                     absl::StrCat("duplicate port name ", Quote(port.name), " (ports[", j, "])"));
      }
    }
    svc->ports.push_back(std::move(port));
  }

  if ((v = Find(n, "lb"))) {
    std::string lb;
    RM_RETURN_IF_ERROR(
        GetEnum(*v, Child(path, "lb"), {"p2c", "round_robin", "random", "least_connections"}, &lb));
    svc->lb = *ParseLbPolicy(lb);
  }

  if ((v = Find(n, "endpoints"))) {
    const std::string eps_path = Child(path, "endpoints");
    RM_RETURN_IF_ERROR(GetList(*v, eps_path, kMaxEndpointsPerService));
    std::map<IpAddress, size_t> seen;
    for (size_t i = 0; i < v->children.size(); ++i) {
      const YNode& item = v->children[i];
      const std::string p = Index(eps_path, i);
      RM_RETURN_IF_ERROR(CheckFields(item, p, {"ip", "ready", "pod"}));
      Endpoint ep;
      const YNode* f = nullptr;
      RM_RETURN_IF_ERROR(Require(item, p, "ip", &f));
      RM_RETURN_IF_ERROR(GetIp(*f, Child(p, "ip"), &ep.ip));
      if (auto [it, inserted] = seen.emplace(ep.ip, i); !inserted) {
        return Error(*f, Child(p, "ip"),
                     absl::StrCat("duplicate endpoint ", ep.ip.ToString(), " (endpoints[", it->second, "])"));
      }
      if ((f = Find(item, "ready"))) RM_RETURN_IF_ERROR(GetBool(*f, Child(p, "ready"), &ep.ready));
      if ((f = Find(item, "pod"))) {
        RM_RETURN_IF_ERROR(GetString(*f, Child(p, "pod"), 317, &ep.pod));
        size_t slash = ep.pod.find('/');
        if (slash == std::string::npos || !IsDnsLabel(std::string_view(ep.pod).substr(0, slash)) ||
            !IsDnsSubdomain(std::string_view(ep.pod).substr(slash + 1))) {
          return Error(*f, Child(p, "pod"), absl::StrCat(Quote(ep.pod), " is not <namespace>/<name>"));
        }
      }
      svc->endpoints.push_back(std::move(ep));
    }
  }
  return absl::OkStatus();
}

// The YAML subtree as JSON, for the Istio parser the Kubernetes source uses
// too. Every scalar becomes a string: the schema has no booleans, and ports
// are accepted as strings (Istio's own type for them).
nlohmann::json ToJson(const YNode& n) {
  switch (n.kind) {
    case YNode::Kind::kNull:
      return nullptr;
    case YNode::Kind::kScalar:
      return n.value;
    case YNode::Kind::kSeq: {
      nlohmann::json out = nlohmann::json::array();
      for (const YNode& c : n.children) out.push_back(ToJson(c));
      return out;
    }
    case YNode::Kind::kMap: {
      nlohmann::json out = nlohmann::json::object();
      // CheckFields-style duplicate detection is not needed: the Istio
      // parser sees the last value, and duplicates were refused below.
      for (size_t i = 0; i + 1 < n.children.size(); i += 2)
        out[n.children[i].value] = ToJson(n.children[i + 1]);
      return out;
    }
  }
  return nullptr;
}

// The line of the deepest node that `path` ("spec.rules[0].from[1]...")
// reaches from `n`, so that errors of the shared Istio parser still point
// at a line of the file.
int LineOf(const YNode& n, std::string_view path) {
  const YNode* at = &n;
  while (!path.empty()) {
    if (path.front() == '.') path.remove_prefix(1);
    if (path.empty()) break;
    if (path.front() == '[') {
      size_t close = path.find(']');
      size_t index = 0;
      for (char c : path.substr(1, close - 1)) index = index * 10 + static_cast<size_t>(c - '0');
      if (close == std::string_view::npos || at->kind != YNode::Kind::kSeq || index >= at->children.size())
        break;
      at = &at->children[index];
      path.remove_prefix(close + 1);
      continue;
    }
    size_t end = path.find_first_of(".[");
    std::string_view key = path.substr(0, end);
    if (at->kind != YNode::Kind::kMap) break;
    const YNode* next = nullptr;
    for (size_t i = 0; i + 1 < at->children.size(); i += 2) {
      if (at->children[i].value == key) next = &at->children[i + 1];
    }
    if (next == nullptr) break;
    at = next;
    if (end == std::string_view::npos) break;
    path.remove_prefix(end);
  }
  return at->line;
}

// Duplicate keys anywhere in a policy: the JSON conversion keeps one of
// them, so they must be refused first. Returns the offending node in *dup.
absl::Status FindDuplicateKey(const YNode& n, const YNode** dup) {
  // Also refuses text JSON cannot carry (the snapshot is sent as JSON), as
  // GetString does for the other fields.
  if (n.kind == YNode::Kind::kScalar && !IsValidUtf8NoControl(n.value)) {
    *dup = &n;
    return absl::InvalidArgumentError(absl::StrCat(Quote(n.value), " is not printable UTF-8"));
  }
  if (n.kind == YNode::Kind::kMap) {
    for (size_t i = 0; i + 1 < n.children.size(); i += 2) {
      for (size_t j = 0; j < i; j += 2) {
        if (n.children[i].kind == YNode::Kind::kScalar && n.children[j].value == n.children[i].value) {
          *dup = &n.children[i];
          return absl::InvalidArgumentError(absl::StrCat("duplicate field ", Quote(n.children[i].value)));
        }
      }
    }
  }
  for (const YNode& c : n.children) RM_RETURN_IF_ERROR(FindDuplicateKey(c, dup));
  return absl::OkStatus();
}

absl::Status Converter::ConvertPolicies(const YNode& n, std::vector<AuthorizationPolicy>* out) const {
  const std::string list = "authorizationPolicies";
  RM_RETURN_IF_ERROR(GetList(n, list, options_.authz.max_policies));
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < n.children.size(); ++i) {
    const YNode& item = n.children[i];
    const std::string path = Index(list, i);
    RM_RETURN_IF_ERROR(CheckFields(item, path, {"apiVersion", "kind", "metadata", "spec"}));
    if (const YNode* v = Find(item, "kind");
        v && (v->kind != YNode::Kind::kScalar || v->value != "AuthorizationPolicy")) {
      return Error(*v, Child(path, "kind"), "must be AuthorizationPolicy");
    }
    const YNode* dup = nullptr;
    if (auto st = FindDuplicateKey(item, &dup); !st.ok()) return Error(*dup, path, std::string(st.message()));
    auto policy = ParseIstioAuthorizationPolicy(ToJson(item), options_.authz);
    if (!policy.ok()) {
      // "<field>: <message>" from the Istio parser, placed at the line of
      // that field and prefixed with the policy's place in the file.
      std::string_view message(policy.status().message().data(), policy.status().message().size());
      size_t colon = message.find(": ");
      std::string_view field = colon == std::string_view::npos ? "" : message.substr(0, colon);
      return absl::InvalidArgumentError(
          absl::StrCat(AV(file_), ":", LineOf(item, field), ": ", path, ".", AV(message)));
    }
    if (!policy->has_value()) {
      return Error(
          item, path,
          "CUSTOM policies and policies with targetRef(s) are enforced by waypoints, not by ringmesh");
    }
    std::string key = absl::StrCat((*policy)->ns, "/", (*policy)->name);
    if (auto [it, inserted] = seen.emplace(key, i); !inserted) {
      return Error(item, "",
                   absl::StrCat("duplicate authorization policy ", key, " (authorizationPolicies[",
                                it->second, "] and authorizationPolicies[", i, "])"));
    }
    out->push_back(std::move(**policy));
  }
  return absl::OkStatus();
}

absl::StatusOr<Snapshot> Converter::Convert(const YNode& root) {
  Snapshot s;
  s.outbound_port = kDefaultOutboundPort;
  if (root.kind == YNode::Kind::kNull) return s;  // an empty file: a node without pods
  RM_RETURN_IF_ERROR(CheckFields(root, "", {"outboundPort", "pods", "services", "authorizationPolicies"}));
  const YNode* v = nullptr;
  if ((v = Find(root, "outboundPort"))) RM_RETURN_IF_ERROR(GetPort(*v, "outboundPort", &s.outbound_port));
  if ((v = Find(root, "pods"))) {
    RM_RETURN_IF_ERROR(GetList(*v, "pods", kMaxPods + options_.max_remote_pods));
    // A pod with a `node:` key is a pod of another node. Counted first so
    // that both vectors are allocated once, at their exact size: with many
    // remote pods, growth slack would be a large share of their memory.
    std::vector<bool> remote(v->children.size());
    size_t local_count = 0, remote_count = 0;
    for (size_t i = 0; i < v->children.size(); ++i) {
      const YNode& item = v->children[i];
      const std::string path = Index("pods", i);
      RM_RETURN_IF_ERROR(CheckFields(item, path,
                                     {"namespace", "name", "uid", "serviceAccount", "node", "netns", "cgroup",
                                      "ips", "labels", "mode", "failMode", "optOutPorts", "optOutCidrs"}));
      remote[i] = HasKey(item, "node");
      if (remote[i] && ++remote_count > options_.max_remote_pods) {
        return Error(
            item, path,
            absl::StrCat("more than ", options_.max_remote_pods, " pods of other nodes (with `node:`)"));
      }
      if (!remote[i] && ++local_count > kMaxPods) {
        return Error(item, path,
                     absl::StrCat("more than ", kMaxPods, " pods of this node (without `node:`)"));
      }
    }
    s.pods.resize(local_count);
    s.remote_pods.resize(remote_count);
    pod_keys_.reserve(v->children.size());
    for (size_t i = 0, l = 0, r = 0; i < v->children.size(); ++i) {
      if (remote[i]) {
        RM_RETURN_IF_ERROR(ConvertRemotePod(v->children[i], i, &s.remote_pods[r++]));
      } else {
        RM_RETURN_IF_ERROR(ConvertPod(v->children[i], i, &s.pods[l++]));
      }
    }
  }
  if ((v = Find(root, "services"))) {
    RM_RETURN_IF_ERROR(GetList(*v, "services", kMaxServices));
    s.services.resize(v->children.size());
    for (size_t i = 0; i < v->children.size(); ++i) {
      RM_RETURN_IF_ERROR(ConvertService(v->children[i], i, &s.services[i]));
    }
  }
  if ((v = Find(root, "authorizationPolicies")))
    RM_RETURN_IF_ERROR(ConvertPolicies(*v, &s.authorization_policies));
  return s;
}

const char* NamespaceTypeName(int type) {
  switch (type) {
    case CLONE_NEWNS:
      return "mount";
    case CLONE_NEWUTS:
      return "uts";
    case CLONE_NEWIPC:
      return "ipc";
    case CLONE_NEWUSER:
      return "user";
    case CLONE_NEWPID:
      return "pid";
    case CLONE_NEWCGROUP:
      return "cgroup";
    case CLONE_NEWTIME:
      return "time";
  }
  return "other";
}

}  // namespace

absl::StatusOr<Snapshot> ParseNodeFile(std::string_view text, std::string_view file_name,
                                       const NodeFileOptions& options) {
  if (text.size() > kMaxNodeFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(AV(file_name), ": ", text.size(),
                                                   " bytes, larger than the limit of ", kMaxNodeFileBytes));
  }
  TreeBuilder builder;
  try {
    ViewStreamBuf buf(text);
    std::istream in(&buf);
    YAML::Parser parser(in);
    // The second call reports a second document through OnDocumentStart.
    if (parser.HandleNextDocument(builder)) parser.HandleNextDocument(builder);
  } catch (const YamlFailure& f) {
    return absl::InvalidArgumentError(
        absl::StrCat(AV(file_name), ":", f.line, ":", f.column, ": ", f.message));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(AV(file_name), ":", e.mark.line + 1, ":", e.mark.column + 1, ": invalid YAML: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(AV(file_name), ": invalid YAML: ", e.what()));
  }
  return Converter(file_name, options).Convert(builder.root());
}

absl::StatusOr<Snapshot> LoadNodeFile(const std::string& path, const NodeFileOptions& options) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  // Read one byte past the limit to tell "exactly at the limit" from "over".
  std::string text;
  char chunk[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd.get(), chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      return absl::Status(absl::ErrnoToStatusCode(err), absl::StrCat(path, ": read: ", std::strerror(err)));
    }
    if (n == 0) break;
    text.append(chunk, static_cast<size_t>(n));
    if (text.size() > kMaxNodeFileBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": larger than the limit of ", kMaxNodeFileBytes, " bytes"));
    }
  }
  return ParseNodeFile(text, path, options);
}

absl::Status CheckNodeFileResources(const Snapshot& snapshot) {
  for (size_t i = 0; i < snapshot.pods.size(); ++i) {
    const Pod& pod = snapshot.pods[i];
    if (!pod.enrolled) continue;
    const std::string field = absl::StrCat("pods[", i, "].netns: ");
    const std::string& path = pod.netns_path;
    if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(field, "missing for an enabled pod"));
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      int err = errno;
      if (err == ENOENT) return absl::NotFoundError(absl::StrCat(field, path, " does not exist"));
      return absl::Status(absl::ErrnoToStatusCode(err), absl::StrCat(field, path, ": ", std::strerror(err)));
    }
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    if (!fd) {
      int err = errno;
      return absl::Status(absl::ErrnoToStatusCode(err),
                          absl::StrCat(field, path, ": cannot open: ", std::strerror(err)));
    }
    // Only nsfs files are namespaces; checking the filesystem first also
    // rejects an unmounted /run/netns placeholder, and keeps the ioctl away
    // from device files.
    struct statfs fs;
    bool nsfs = ::fstatfs(fd.get(), &fs) == 0 && fs.f_type == NSFS_MAGIC;
    int type = nsfs ? ::ioctl(fd.get(), NS_GET_NSTYPE) : -1;
    if (type < 0)
      return absl::FailedPreconditionError(absl::StrCat(field, path, " is not a network namespace"));
    if (type != CLONE_NEWNET) {
      return absl::FailedPreconditionError(absl::StrCat(field, path, " is a ", NamespaceTypeName(type),
                                                        " namespace, not a network namespace"));
    }
  }
  return absl::OkStatus();
}

}  // namespace ringmesh::agent
