#include "userspace/proxy/tls/cert_store.h"

#include "absl/strings/str_cat.h"
#include "userspace/proxy/tls/tls_context.h"
#include "userspace/proxy/tls/x509_util.h"

namespace ringmesh::proxy::tls {
namespace {

// A second owner of every handle (they are reference counted).
IssuedCertificate ShareIssued(const IssuedCertificate& c) {
  IssuedCertificate out;
  out.leaf = UpRef(c.leaf.get());
  for (const X509Ptr& x : c.chain) out.chain.push_back(UpRef(x.get()));
  out.not_before = c.not_before;
  out.issued_at = c.issued_at;
  out.not_after = c.not_after;
  out.serial_hex = c.serial_hex;
  return out;
}

bool DueForRenewal(const Credential& c, absl::Time now) {
  return now >= RenewalTime(c.cert);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Credential>> CertStore::WithContextsLocked(Credential cred) {
  // Generation first, then the store: a reload in between only makes us
  // rebuild once more on the next Get.
  cred.bundle_generation = bundle_.generation();
  TrustBundle::StorePtr roots = bundle_.Store();
  auto server =
      MakeTlsContext(TlsRole::kServer, cred.key.get(), cred.cert.leaf.get(), cred.cert.chain, roots);
  if (!server.ok()) return server.status();
  auto client =
      MakeTlsContext(TlsRole::kClient, cred.key.get(), cred.cert.leaf.get(), cred.cert.chain, roots);
  if (!client.ok()) return client.status();
  cred.server_ctx = std::move(*server);
  cred.client_ctx = std::move(*client);
  return std::make_shared<const Credential>(std::move(cred));
}

absl::StatusOr<std::shared_ptr<const Credential>> CertStore::IssueLocked(const SpiffeId& id) {
  auto key = MakeP256Key();
  if (!key.ok()) return key.status();
  auto cert = issuer_.Issue(id, key->get(), options_.ttl);
  if (!cert.ok()) return cert.status();
  auto leaf_id = SpiffeIdOfCertificate(cert->leaf.get());
  if (!leaf_id.ok() || *leaf_id != id) {
    return absl::InternalError(
        absl::StrCat("the issuer returned a certificate for another identity than ", id.ToString()));
  }
  Credential cred;
  cred.id = id;
  cred.key = std::move(*key);
  cred.cert = std::move(*cert);
  return WithContextsLocked(std::move(cred));
}

absl::StatusOr<std::shared_ptr<const Credential>> CertStore::Get(const SpiffeId& id) {
  std::lock_guard lock(mu_);
  auto it = creds_.find(id);
  if (it != creds_.end()) {
    const Credential& old = *it->second;
    if (old.bundle_generation == bundle_.generation()) return it->second;
    Credential cred;
    cred.id = id;
    cred.key = UpRef(old.key.get());
    cred.cert = ShareIssued(old.cert);
    auto rebuilt = WithContextsLocked(std::move(cred));
    if (!rebuilt.ok()) return rebuilt.status();
    it->second = *rebuilt;
    return *rebuilt;
  }
  if (creds_.size() >= options_.max_identities) {
    return absl::ResourceExhaustedError(absl::StrCat("more than ", options_.max_identities, " identities"));
  }
  auto cred = IssueLocked(id);
  if (!cred.ok()) return cred.status();
  creds_.emplace(id, *cred);
  return cred;
}

CertStore::RenewResult CertStore::RenewDue(absl::Time now) {
  std::lock_guard lock(mu_);
  RenewResult result;
  for (auto& [id, cred] : creds_) {
    if (!DueForRenewal(*cred, now)) continue;
    auto fresh = IssueLocked(id);
    if (!fresh.ok()) {
      result.failed.emplace_back(id, fresh.status());
      continue;
    }
    cred = *std::move(fresh);
    result.renewed.push_back(id);
  }
  return result;
}

void CertStore::Remove(const SpiffeId& id) {
  std::lock_guard lock(mu_);
  creds_.erase(id);
}

size_t CertStore::size() const {
  std::lock_guard lock(mu_);
  return creds_.size();
}

}  // namespace ringmesh::proxy::tls
