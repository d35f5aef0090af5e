#include "userspace/proxy/authz/authorizer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace ringmesh::authz {
namespace {

constexpr std::string_view kSpiffePrefix = "spiffe://";

// What a source entry is matched against, computed once per Check.
struct SourceFacts {
  // The principal without "spiffe://", as Istio writes principals. ztunnel
  // (rbac.rs, matches_principal) fails every principal match when the
  // prefix is missing, which is also what happens to a plaintext peer: its
  // identity is empty, so `principals` never matches and `notPrincipals`
  // always does.
  bool has_identity = false;
  std::string_view principal;
  std::string_view ns;  // "" for plaintext peers
  IpAddress ip;
  // The request's, or none at L4. Host lowercased (hosts match
  // case-insensitively, patterns are lowercased once by the Authorizer).
  const Request* request = nullptr;
  std::string host;
  std::string_view host_no_port;
  std::string_view path;  // without "?query" and "#fragment"
};

// ztunnel's matches_internal: the positive list (when set) must have a
// match, and the negative list (when set) must have none.
template <typename T, typename Pred>
bool PositiveNegative(const std::vector<T>& positive, const std::vector<T>& negative, Pred pred) {
  if (!positive.empty() && std::none_of(positive.begin(), positive.end(), pred)) return false;
  if (!negative.empty() && std::any_of(negative.begin(), negative.end(), pred)) return false;
  return true;
}

bool MatchesSource(const AuthzSource& s, const SourceFacts& f) {
  // An entry without any L4 field never matches (ztunnel skips empty
  // matches); only a DENY entry whose fields were all L7 is empty.
  if (s.empty()) return false;
  auto principal = [&](const std::string& p) { return f.has_identity && MatchesIstioString(p, f.principal); };
  auto ns = [&](const std::string& p) { return MatchesIstioString(p, f.ns); };
  auto ip = [&](const Cidr& c) { return c.Contains(f.ip); };
  return PositiveNegative(s.principals, s.not_principals, principal) &&
         PositiveNegative(s.namespaces, s.not_namespaces, ns) &&
         PositiveNegative(s.ip_blocks, s.not_ip_blocks, ip);
}

bool MatchesOperation(const AuthzOperation& o, const SourceFacts& f, uint16_t port) {
  // At L4 only the ports are seen: an entry with none of them is an empty
  // clause there, which never matches (as an all-L7 source entry above).
  if (f.request == nullptr ? !o.has_l4() : o.empty()) return false;
  if (!PositiveNegative(o.ports, o.not_ports, [&](uint16_t p) { return p == port; })) return false;
  if (f.request == nullptr) return true;
  auto host = [&](const std::string& p) {
    return MatchesIstioString(p, f.host) || MatchesIstioString(p, f.host_no_port);
  };
  auto method = [&](const std::string& p) { return MatchesIstioString(p, f.request->method); };
  auto path = [&](const std::string& p) { return MatchesIstioString(p, f.path); };
  return PositiveNegative(o.hosts, o.not_hosts, host) && PositiveNegative(o.methods, o.not_methods, method) &&
         PositiveNegative(o.paths, o.not_paths, path);
}

bool MatchesRule(const AuthzRule& rule, AuthzAction action, const SourceFacts& f, uint16_t port) {
  // istiod for ztunnel: "L7 policies never match for ALLOW" (nor AUDIT); a
  // DENY rule's L7 fields are left out (MatchesOperation).
  if (f.request == nullptr && action != AuthzAction::kDeny && rule.has_l7()) return false;
  bool from = rule.from.empty() || std::any_of(rule.from.begin(), rule.from.end(),
                                               [&](const auto& s) { return MatchesSource(s, f); });
  if (!from) return false;
  return rule.to.empty() || std::any_of(rule.to.begin(), rule.to.end(),
                                        [&](const auto& o) { return MatchesOperation(o, f, port); });
}

// A policy without rules never matches (ztunnel: "empty rules").
bool MatchesPolicy(const AuthorizationPolicy& p, const SourceFacts& f, uint16_t port) {
  return std::any_of(p.rules.begin(), p.rules.end(),
                     [&](const auto& r) { return MatchesRule(r, p.action, f, port); });
}

// The host without its ":port" (IPv6 literals keep their brackets).
std::string_view HostWithoutPort(std::string_view host) {
  size_t colon = host.rfind(':');
  if (colon == std::string_view::npos) return host;
  size_t bracket = host.find(']');
  if (bracket != std::string_view::npos && bracket > colon) return host;  // "[::1]" alone
  std::string_view port = host.substr(colon + 1);
  if (port.empty() || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return host;
  }
  return host.substr(0, colon);
}

bool Selects(const AuthorizationPolicy& p, const Workload& dest) {
  for (const auto& [key, value] : p.match_labels) {
    if (dest.labels == nullptr) return false;
    auto it = dest.labels->find(key);
    if (it == dest.labels->end() || it->second != value) return false;
  }
  return true;
}

}  // namespace

const char* ToString(Decision::Reason r) {
  switch (r) {
    case Decision::Reason::kNoAllowPolicies:
      return "no_allow_policies";
    case Decision::Reason::kAllowMatched:
      return "allow_matched";
    case Decision::Reason::kDenyMatched:
      return "deny_matched";
    case Decision::Reason::kNoAllowMatched:
      return "no_allow_matched";
  }
  return "?";
}

std::string_view NamespaceOfPrincipal(std::string_view principal) {
  if (principal.substr(0, kSpiffePrefix.size()) != kSpiffePrefix) return {};
  std::string_view rest = principal.substr(kSpiffePrefix.size());
  // <trust-domain>/ns/<ns>/sa/<sa>: exactly five non-empty segments.
  std::string_view seg[5];
  for (int i = 0; i < 5; ++i) {
    size_t slash = rest.find('/');
    seg[i] = rest.substr(0, slash);
    if (seg[i].empty()) return {};
    if (slash == std::string_view::npos) {
      if (i != 4) return {};
      rest = {};
      break;
    }
    if (i == 4) return {};  // a sixth segment
    rest = rest.substr(slash + 1);
  }
  if (seg[1] != "ns" || seg[3] != "sa") return {};
  return seg[2];
}

bool MatchesIstioString(std::string_view pattern, std::string_view value) {
  // istiod's stringToMatch: "*" presence, "*x" suffix, "x*" prefix, else
  // exact; ztunnel's StringMatch::matches.
  if (pattern == "*") return !value.empty();
  if (!pattern.empty() && pattern.front() == '*') {
    std::string_view suffix = pattern.substr(1);
    return value.size() >= suffix.size() && value.substr(value.size() - suffix.size()) == suffix;
  }
  if (!pattern.empty() && pattern.back() == '*') {
    std::string_view prefix = pattern.substr(0, pattern.size() - 1);
    return value.substr(0, prefix.size()) == prefix;
  }
  return pattern == value;
}

Authorizer::Authorizer(const std::vector<AuthorizationPolicy>& policies, AuthorizerOptions options)
    : options_(std::move(options)) {
  for (const AuthorizationPolicy& p : policies) {
    ByAction* set = &allow_;
    if (p.action == AuthzAction::kDeny) set = &deny_;
    if (p.action == AuthzAction::kAudit) set = &audit_;
    Entry entry{p, absl::StrCat(p.ns, "/", p.name)};
    for (AuthzRule& rule : entry.policy.rules) {
      for (AuthzOperation& op : rule.to) {
        for (auto* hosts : {&op.hosts, &op.not_hosts}) {
          for (std::string& h : *hosts) absl::AsciiStrToLower(&h);
        }
      }
    }
    if (p.ns == options_.root_namespace) {
      set->root.push_back(std::move(entry));
    } else {
      set->by_ns[p.ns].push_back(std::move(entry));
    }
    ++count_;
  }
}

template <typename Fn>
void Authorizer::ForEachApplying(const ByAction& set, const Workload& dest, Fn&& fn) const {
  for (const Entry& e : set.root) {
    if (Selects(e.policy, dest) && !fn(e)) return;
  }
  // A workload in the root namespace already saw its policies above.
  if (dest.ns == options_.root_namespace) return;
  auto it = set.by_ns.find(absl::string_view(dest.ns.data(), dest.ns.size()));
  if (it == set.by_ns.end()) return;
  for (const Entry& e : it->second) {
    if (Selects(e.policy, dest) && !fn(e)) return;
  }
}

Decision Authorizer::Check(const Workload& dest, const Peer& src, uint16_t dest_port,
                           const Request* request) const {
  SourceFacts facts;
  facts.ip = src.ip;
  if (request != nullptr) {
    facts.request = request;
    facts.host.assign(request->host);
    absl::AsciiStrToLower(&facts.host);
    facts.host_no_port = HostWithoutPort(facts.host);
    facts.path = request->path.substr(0, request->path.find_first_of("?#"));
  }
  if (src.principal.substr(0, kSpiffePrefix.size()) == kSpiffePrefix) {
    facts.has_identity = true;
    facts.principal = src.principal.substr(kSpiffePrefix.size());
    facts.ns = NamespaceOfPrincipal(src.principal);
  }

  Decision d;
  ForEachApplying(audit_, dest, [&](const Entry& e) {
    if (!MatchesPolicy(e.policy, facts, dest_port)) return true;
    d.audit_policy = e.key;
    return false;
  });
  bool denied = false;
  ForEachApplying(deny_, dest, [&](const Entry& e) {
    if (!MatchesPolicy(e.policy, facts, dest_port)) return true;
    denied = true;
    d.policy = e.key;
    return false;
  });
  if (denied) {
    d.allowed = false;
    d.reason = Decision::Reason::kDenyMatched;
    return d;
  }
  bool any_allow = false, allowed = false;
  ForEachApplying(allow_, dest, [&](const Entry& e) {
    any_allow = true;
    if (!MatchesPolicy(e.policy, facts, dest_port)) return true;
    allowed = true;
    d.policy = e.key;
    return false;
  });
  if (!any_allow) return d;  // allowed, kNoAllowPolicies
  d.allowed = allowed;
  d.reason = allowed ? Decision::Reason::kAllowMatched : Decision::Reason::kNoAllowMatched;
  return d;
}

std::vector<const AuthorizationPolicy*> Authorizer::PoliciesFor(const Workload& dest) const {
  std::vector<const AuthorizationPolicy*> out;
  for (const ByAction* set : {&deny_, &allow_, &audit_}) {
    ForEachApplying(*set, dest, [&](const Entry& e) {
      out.push_back(&e.policy);
      return true;
    });
  }
  return out;
}

std::vector<const AuthorizationPolicy*> Authorizer::Policies() const {
  std::vector<const AuthorizationPolicy*> out;
  out.reserve(count_);
  for (const ByAction* set : {&deny_, &allow_, &audit_}) {
    for (const Entry& e : set->root) out.push_back(&e.policy);
    std::vector<const Entry*> rest;
    for (const auto& [ns, entries] : set->by_ns) {
      for (const Entry& e : entries) rest.push_back(&e);
    }
    std::sort(rest.begin(), rest.end(), [](const Entry* a, const Entry* b) { return a->key < b->key; });
    for (const Entry* e : rest) out.push_back(&e->policy);
  }
  return out;
}

}  // namespace ringmesh::authz
