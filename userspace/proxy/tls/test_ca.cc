#include "userspace/proxy/tls/test_ca.h"

#include "absl/strings/str_cat.h"
#include "userspace/proxy/tls/x509_util.h"

namespace ringmesh::proxy::tls {
namespace {

struct CaCert {
  X509Ptr cert;
  EvpPkeyPtr key;
};

// `issuer` null makes a self-signed root.
absl::StatusOr<CaCert> MakeCaCert(const std::string& common_name, const CaCert* issuer,
                                  absl::Duration validity) {
  auto key = MakeP256Key();
  if (!key.ok()) return key.status();
  X509Ptr cert(X509_new());
  if (!cert || !X509_set_version(cert.get(), X509_VERSION_3)) return OpenSslError("X509_new");
  if (auto serial = SetRandomSerial(cert.get()); !serial.ok()) return serial.status();
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>("ringmesh-test"), -1, -1, 0) ||
      !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0)) {
    return OpenSslError("building the CA name");
  }
  X509* issuer_cert = issuer ? issuer->cert.get() : cert.get();
  if (!X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_cert)) ||
      !X509_set_pubkey(cert.get(), key->get())) {
    return OpenSslError("setting issuer and key");
  }
  const absl::Time now = absl::Now();
  if (absl::Status s = SetValidity(cert.get(), now - absl::Hours(24), now + validity); !s.ok()) return s;
  for (auto [nid, value] : {std::pair<int, const char*>{NID_basic_constraints, "critical,CA:TRUE"},
                            {NID_key_usage, "critical,keyCertSign,cRLSign"},
                            {NID_subject_key_identifier, "hash"},
                            {NID_authority_key_identifier, "keyid:always"}}) {
    if (absl::Status s = AddExtension(cert.get(), issuer_cert, nid, value); !s.ok()) return s;
  }
  EVP_PKEY* signer = issuer ? issuer->key.get() : key->get();
  if (X509_sign(cert.get(), signer, EVP_sha256()) <= 0) return OpenSslError("signing the CA certificate");
  return CaCert{std::move(cert), std::move(*key)};
}

}  // namespace

absl::StatusOr<TestCaMaterial> MakeTestCaForTesting(std::string_view name, bool with_intermediate,
                                                    absl::Duration validity) {
  auto root = MakeCaCert(absl::StrCat(std::string(name), " root"), nullptr, validity);
  if (!root.ok()) return root.status();
  TestCaMaterial out;
  out.root_pem = ToPem(root->cert.get());
  if (!with_intermediate) {
    out.ca_cert_pem = out.root_pem;
    out.ca_key_pem = PrivateKeyToPem(root->key.get());
    return out;
  }
  auto intermediate = MakeCaCert(absl::StrCat(std::string(name), " intermediate"), &*root, validity);
  if (!intermediate.ok()) return intermediate.status();
  out.ca_cert_pem = ToPem(intermediate->cert.get());
  out.ca_key_pem = PrivateKeyToPem(intermediate->key.get());
  return out;
}

}  // namespace ringmesh::proxy::tls
