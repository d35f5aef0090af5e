// The certificate issuer seam: something that signs a workload's public key
// into a SPIFFE leaf certificate. Implementations: LocalCa (an intermediate
// CA held in the process) and, later, the Istio CA API client.
#pragma once

#include <openssl/evp.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "userspace/proxy/tls/spiffe_id.h"
#include "userspace/proxy/tls/ssl_handle.h"

namespace ringmesh::proxy::tls {

struct IssuedCertificate {
  X509Ptr leaf;
  std::vector<X509Ptr> chain;  // intermediates to send after the leaf, issuer first; no root
  absl::Time not_before;  // backdated a little for peers with slow clocks
  // When it was signed (or received): renewal is due at issued_at + half of
  // what is left to not_after, so backdating does not shorten short lives.
  absl::Time issued_at;
  absl::Time not_after;
  std::string serial_hex;
};

class CertificateIssuer {
 public:
  virtual ~CertificateIssuer() = default;
  // Signs `public_key` for `id`, valid for `ttl` (shortened to what the
  // issuer can vouch for). PermissionDenied for identities this node may
  // not hold.
  virtual absl::StatusOr<IssuedCertificate> Issue(const SpiffeId& id, EVP_PKEY* public_key,
                                                  absl::Duration ttl) = 0;
};

}  // namespace ringmesh::proxy::tls
