#include "userspace/proxy/tls/local_ca.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace ringmesh::proxy::tls {
namespace {

constexpr size_t kMaxChainCerts = 8;

bool IsSelfSigned(X509* cert) { return X509_check_issued(cert, cert) == X509_V_OK; }

}  // namespace

absl::StatusOr<std::unique_ptr<LocalCa>> LocalCa::FromPem(std::string_view cert_pem, std::string_view key_pem,
                                                          std::string_view chain_pem, Options options) {
  auto certs = ParsePemCertificates(cert_pem, 1);
  if (!certs.ok()) return certs.status();
  if (certs->empty()) return absl::InvalidArgumentError("no CA certificate in PEM input");
  auto key = ParsePemPrivateKey(key_pem);
  if (!key.ok()) return key.status();
  auto chain = ParsePemCertificates(chain_pem, kMaxChainCerts);
  if (!chain.ok()) return chain.status();

  std::unique_ptr<LocalCa> ca(new LocalCa());
  ca->cert_ = std::move(certs->front());
  ca->key_ = std::move(*key);
  X509* cert = ca->cert_.get();
  if (X509_check_private_key(cert, ca->key_.get()) != 1) {
    return OpenSslError("the CA key does not match the CA certificate", absl::StatusCode::kInvalidArgument);
  }
  if (X509_check_ca(cert) < 1) return absl::InvalidArgumentError("the CA certificate is not a CA");
  if (!(X509_get_extension_flags(cert) & EXFLAG_KUSAGE) || !(X509_get_key_usage(cert) & KU_KEY_CERT_SIGN)) {
    return absl::InvalidArgumentError("the CA certificate lacks keyUsage keyCertSign");
  }
  ca->ca_not_after_ = Asn1TimeToAbsl(X509_get0_notAfter(cert));
  if (!IsSelfSigned(cert)) ca->chain_.push_back(UpRef(cert));
  for (X509Ptr& c : *chain) {
    if (!IsSelfSigned(c.get())) ca->chain_.push_back(std::move(c));
  }
  ca->options_ = std::move(options);
  return ca;
}

absl::StatusOr<std::unique_ptr<LocalCa>> LocalCa::FromFiles(const std::string& cert_path,
                                                            const std::string& key_path,
                                                            const std::string& chain_path, Options options) {
  auto cert = ReadSmallFile(cert_path);
  if (!cert.ok()) return cert.status();
  auto key = ReadSmallFile(key_path);
  if (!key.ok()) return key.status();
  std::string chain;
  if (!chain_path.empty()) {
    auto c = ReadSmallFile(chain_path);
    if (!c.ok()) return c.status();
    chain = std::move(*c);
  }
  return FromPem(*cert, *key, chain, std::move(options));
}

absl::StatusOr<IssuedCertificate> LocalCa::Issue(const SpiffeId& id, EVP_PKEY* public_key,
                                                 absl::Duration ttl) {
  if (!options_.allowed || !options_.allowed(id)) {
    return absl::PermissionDeniedError(absl::StrCat(id.ToString(), " is not an identity of this node"));
  }
  if (absl::Status s = SpiffeId::Validate(id.trust_domain, id.ns, id.service_account); !s.ok()) return s;
  if (!IsP256Key(public_key)) return absl::InvalidArgumentError("leaf keys must be ECDSA P-256");
  if (ttl <= absl::ZeroDuration()) return absl::InvalidArgumentError("certificate TTL must be positive");
  // Whole seconds: what the certificate can hold, so the values returned
  // are exactly the certificate's.
  const absl::Time now = absl::FromTimeT(absl::ToTimeT(options_.clock()));
  IssuedCertificate out;
  out.issued_at = now;
  out.not_before = absl::FromTimeT(absl::ToTimeT(now - options_.backdate));
  out.not_after =
      std::min(absl::FromTimeT(absl::ToTimeT(now + std::min(ttl, options_.max_ttl))), ca_not_after_);
  if (out.not_after <= now) return absl::FailedPreconditionError("the CA certificate has expired");

  X509Ptr leaf(X509_new());
  if (!leaf || !X509_set_version(leaf.get(), X509_VERSION_3)) return OpenSslError("X509_new");
  auto serial = SetRandomSerial(leaf.get());
  if (!serial.ok()) return serial.status();
  out.serial_hex = std::move(*serial);
  // Subject stays empty: the identity is the URI SAN alone, which RFC 5280
  // then requires to be critical.
  if (!X509_set_issuer_name(leaf.get(), X509_get_subject_name(cert_.get())) ||
      !X509_set_pubkey(leaf.get(), public_key)) {
    return OpenSslError("setting issuer and key");
  }
  if (absl::Status s = SetValidity(leaf.get(), out.not_before, out.not_after); !s.ok()) return s;
  const std::string san = absl::StrCat("critical,URI:", id.ToString());
  for (auto [nid, value] : {std::pair<int, const char*>{NID_basic_constraints, "critical,CA:FALSE"},
                            {NID_key_usage, "critical,digitalSignature,keyAgreement"},
                            {NID_ext_key_usage, "serverAuth,clientAuth"},
                            {NID_subject_key_identifier, "hash"},
                            {NID_authority_key_identifier, "keyid:always"},
                            {NID_subject_alt_name, san.c_str()}}) {
    if (absl::Status s = AddExtension(leaf.get(), cert_.get(), nid, value); !s.ok()) return s;
  }
  if (X509_sign(leaf.get(), key_.get(), EVP_sha256()) <= 0) return OpenSslError("signing the leaf");
  out.leaf = std::move(leaf);
  for (const X509Ptr& c : chain_) out.chain.push_back(UpRef(c.get()));
  return out;
}

}  // namespace ringmesh::proxy::tls
