#include "userspace/proxy/tls/spiffe_id.h"

#include "absl/strings/str_cat.h"

namespace ringmesh::proxy::tls {
namespace {

constexpr std::string_view kScheme = "spiffe://";

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// SPIFFE trust domain: lowercase letters, digits, '.', '-', '_'. We also
// require DNS-like ends (no leading/trailing '.' or '-') and no empty labels,
// since trust domains are DNS names in practice and "a..b" is a typo.
bool ValidTrustDomain(std::string_view td) {
  if (td.empty() || td.size() > SpiffeId::kMaxTrustDomain) return false;
  if (!IsLowerAlnum(td.front()) || !IsLowerAlnum(td.back())) return false;
  char prev = 0;
  for (char c : td) {
    if (!IsLowerAlnum(c) && c != '.' && c != '-' && c != '_') return false;
    if (c == '.' && prev == '.') return false;
    prev = c;
  }
  return true;
}

// RFC 1123 label as Kubernetes checks it (namespaces).
bool ValidDnsLabel(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  if (!IsLowerAlnum(s.front()) || !IsLowerAlnum(s.back())) return false;
  for (char c : s) {
    if (!IsLowerAlnum(c) && c != '-') return false;
  }
  return true;
}

// RFC 1123 subdomain as Kubernetes checks it (service accounts): labels
// joined by '.', each a DNS label.
bool ValidDnsSubdomain(std::string_view s) {
  if (s.empty() || s.size() > SpiffeId::kMaxServiceAccount) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    std::string_view label = s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    if (!ValidDnsLabel(label, 63)) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

}  // namespace

absl::Status SpiffeId::Validate(std::string_view trust_domain, std::string_view ns,
                                std::string_view service_account) {
  if (!ValidTrustDomain(trust_domain)) return absl::InvalidArgumentError("invalid SPIFFE trust domain");
  if (!ValidDnsLabel(ns, kMaxNamespace)) return absl::InvalidArgumentError("invalid namespace in SPIFFE ID");
  if (!ValidDnsSubdomain(service_account)) {
    return absl::InvalidArgumentError("invalid service account in SPIFFE ID");
  }
  return absl::OkStatus();
}

absl::StatusOr<SpiffeId> SpiffeId::Parse(std::string_view uri) {
  constexpr size_t kMaxUri = kScheme.size() + kMaxTrustDomain + 4 + kMaxNamespace + 4 + kMaxServiceAccount;
  if (uri.size() > kMaxUri) return absl::InvalidArgumentError("SPIFFE ID too long");
  if (uri.substr(0, kScheme.size()) != kScheme)
    return absl::InvalidArgumentError("SPIFFE ID must start with spiffe://");
  uri.remove_prefix(kScheme.size());
  size_t slash = uri.find('/');
  if (slash == std::string_view::npos) return absl::InvalidArgumentError("SPIFFE ID without a path");
  std::string_view td = uri.substr(0, slash);
  std::string_view path = uri.substr(slash);
  // Exactly four segments: /ns/<ns>/sa/<sa>. Characters such as '?', '#',
  // '%', ':' and '@' fail the per-part checks below.
  std::string_view parts[4];
  for (int i = 0; i < 4; ++i) {
    if (path.empty() || path.front() != '/')
      return absl::InvalidArgumentError("SPIFFE ID path must be /ns/<ns>/sa/<sa>");
    path.remove_prefix(1);
    size_t next = path.find('/');
    if (i < 3 && next == std::string_view::npos) {
      return absl::InvalidArgumentError("SPIFFE ID path must be /ns/<ns>/sa/<sa>");
    }
    parts[i] = path.substr(0, next);
    path.remove_prefix(parts[i].size());
  }
  if (!path.empty() || parts[0] != "ns" || parts[2] != "sa") {
    return absl::InvalidArgumentError("SPIFFE ID path must be /ns/<ns>/sa/<sa>");
  }
  if (absl::Status s = Validate(td, parts[1], parts[3]); !s.ok()) return s;
  return SpiffeId{std::string(td), std::string(parts[1]), std::string(parts[3])};
}

std::string SpiffeId::ToString() const {
  return absl::StrCat(std::string(kScheme), trust_domain, "/ns/", ns, "/sa/", service_account);
}

}  // namespace ringmesh::proxy::tls
