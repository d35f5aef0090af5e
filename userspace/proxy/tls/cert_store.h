// Per-identity credentials of the pods on this node: a P-256 key made in
// the process (never written anywhere), its certificate from the issuer,
// and TLS contexts ready for TlsSession. Issued on first use, renewed at
// half-life. Renewal and trust-bundle changes swap in new contexts; a
// session keeps the context it started with (hitless).
//
//   CertStore store(issuer, bundle);
//   auto cred = store.Get(id);   // shared_ptr<const Credential>
//   auto s = TlsSession::Client((*cred)->client_ctx, peer_id);
//   ... on a control-plane timer: store.RenewDue(absl::Now());
//
// Thread-safe (one mutex). Get and RenewDue hold it while the issuer
// signs, so they belong on the control plane; the data plane keeps the
// shared_ptr it was handed.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "userspace/proxy/tls/issuer.h"
#include "userspace/proxy/tls/trust_bundle.h"

namespace ringmesh::proxy::tls {

struct Credential {
  SpiffeId id;
  EvpPkeyPtr key;
  IssuedCertificate cert;
  std::shared_ptr<SSL_CTX> server_ctx;
  std::shared_ptr<SSL_CTX> client_ctx;
  uint64_t bundle_generation = 0;  // the trust bundle the contexts were made with
};

struct CertStoreOptions {
  size_t max_identities = 1024;
  absl::Duration ttl = absl::Hours(24);
};

// Half-life: halfway from issuing to expiry.
inline absl::Time RenewalTime(const IssuedCertificate& c) { return c.issued_at + (c.not_after - c.issued_at) / 2; }

class CertStore {
 public:
  using Options = CertStoreOptions;
  struct RenewResult {
    std::vector<SpiffeId> renewed;
    std::vector<std::pair<SpiffeId, absl::Status>> failed;  // kept; retried next time
  };

  // Both must outlive the store.
  CertStore(CertificateIssuer& issuer, const TrustBundle& bundle, Options options = {})
      : issuer_(issuer), bundle_(bundle), options_(options) {}

  // The identity's credential, issued on first use; rebuilt with the new
  // roots (same key and certificate) when the trust bundle changed.
  absl::StatusOr<std::shared_ptr<const Credential>> Get(const SpiffeId& id);
  // Renews (new key, new certificate, new contexts) every credential at or
  // past half its lifetime at `now`.
  RenewResult RenewDue(absl::Time now);
  // The pod left the node.
  void Remove(const SpiffeId& id);
  size_t size() const;

 private:
  absl::StatusOr<std::shared_ptr<const Credential>> IssueLocked(const SpiffeId& id);
  absl::StatusOr<std::shared_ptr<const Credential>> WithContextsLocked(Credential cred);

  CertificateIssuer& issuer_;
  const TrustBundle& bundle_;
  const Options options_;
  mutable std::mutex mu_;
  absl::flat_hash_map<SpiffeId, std::shared_ptr<const Credential>> creds_;
};

}  // namespace ringmesh::proxy::tls
