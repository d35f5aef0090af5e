// A workload identity as Istio writes it into certificates:
//   spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
// Parse is strict (it reads what peers put in certificates): lowercase
// trust domain of DNS-ish characters, namespace a Kubernetes DNS label,
// service account a Kubernetes DNS subdomain; no port, userinfo, query,
// fragment, percent-encoding or empty segment.
//
//   auto id = SpiffeId::Parse("spiffe://cluster.local/ns/default/sa/web");
//   if (id.ok()) use(id->ns, id->service_account);
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

namespace ringmesh::proxy::tls {

struct SpiffeId {
  // Bounds: the SPIFFE spec's 255-byte trust domain and Kubernetes' 63-byte
  // namespace and 253-byte service account names.
  static constexpr size_t kMaxTrustDomain = 255;
  static constexpr size_t kMaxNamespace = 63;
  static constexpr size_t kMaxServiceAccount = 253;

  std::string trust_domain;
  std::string ns;
  std::string service_account;

  static absl::StatusOr<SpiffeId> Parse(std::string_view uri);
  // Checks the parts alone (what Parse checks), for ids built field by field.
  static absl::Status Validate(std::string_view trust_domain, std::string_view ns,
                               std::string_view service_account);

  std::string ToString() const;

  friend bool operator==(const SpiffeId&, const SpiffeId&) = default;
  friend auto operator<=>(const SpiffeId&, const SpiffeId&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const SpiffeId& id) {
    return H::combine(std::move(h), id.trust_domain, id.ns, id.service_account);
  }
};

}  // namespace ringmesh::proxy::tls
