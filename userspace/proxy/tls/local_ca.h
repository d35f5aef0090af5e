// The embedded certificate authority: an intermediate (or root) CA
// certificate and key loaded from PEM (files or a Secret's strings), which
// issues short-lived SPIFFE leaves for the identities of pods on this node.
//
//   LocalCa::Options opts;
//   opts.allowed = [&](const SpiffeId& id) { return pods_on_node.contains(id); };
//   auto ca = LocalCa::FromPem(cert_pem, key_pem, chain_pem, std::move(opts));
//   auto leaf = (*ca)->Issue(id, key.get(), absl::Hours(24));
//
// Leaves carry exactly: the SPIFFE ID as the only (critical) URI SAN, an
// empty subject, EKU serverAuth+clientAuth, KU digitalSignature+keyAgreement,
// basicConstraints CA:FALSE, a random 128-bit serial, SHA-256 signature.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "userspace/proxy/tls/issuer.h"
#include "userspace/proxy/tls/x509_util.h"

namespace ringmesh::proxy::tls {

class LocalCa : public CertificateIssuer {
 public:
  struct Options {
    // Which identities this node may hold; unset refuses every identity
    // (fail closed).
    std::function<bool(const SpiffeId&)> allowed;
    absl::Duration max_ttl = absl::Hours(24);
    // notBefore is set this far in the past so peers with a slightly slow
    // clock accept a brand-new certificate.
    absl::Duration backdate = absl::Minutes(1);
    std::function<absl::Time()> clock = [] { return absl::Now(); };
  };

  // `chain_pem` holds the certificates above the CA certificate (may be
  // empty); a root in it is dropped, peers have it in their bundle.
  static absl::StatusOr<std::unique_ptr<LocalCa>> FromPem(std::string_view cert_pem, std::string_view key_pem,
                                                          std::string_view chain_pem, Options options);
  static absl::StatusOr<std::unique_ptr<LocalCa>> FromFiles(const std::string& cert_path,
                                                            const std::string& key_path,
                                                            const std::string& chain_path, Options options);

  // Thread-safe as long as `allowed` and `clock` are.
  absl::StatusOr<IssuedCertificate> Issue(const SpiffeId& id, EVP_PKEY* public_key,
                                          absl::Duration ttl) override;

  X509* certificate() const { return cert_.get(); }

 private:
  LocalCa() = default;

  X509Ptr cert_;
  EvpPkeyPtr key_;
  std::vector<X509Ptr> chain_;  // what leaves are sent with: cert_ (unless a root) and chain
  absl::Time ca_not_after_;
  Options options_;
};

}  // namespace ringmesh::proxy::tls
