#include "userspace/proxy/tls/x509_util.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::proxy::tls {
namespace {

absl::StatusOr<BioPtr> MemBio(std::string_view data) {
  if (data.size() > INT_MAX) return absl::InvalidArgumentError("PEM input too large");
  BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  return bio;
}

std::string BioContents(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

}  // namespace

absl::StatusOr<EvpPkeyPtr> MakeP256Key() {
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return OpenSslError("generating a P-256 key");
  return key;
}

bool IsP256Key(EVP_PKEY* key) {
  if (key == nullptr || !EVP_PKEY_is_a(key, "EC")) return false;
  char group[64];
  size_t len = 0;
  if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len)) {
    ERR_clear_error();
    return false;
  }
  std::string_view name(group, len);
  return name == "prime256v1" || name == "P-256";
}

absl::StatusOr<std::vector<X509Ptr>> ParsePemCertificates(std::string_view pem, size_t max_certs) {
  auto bio = MemBio(pem);
  if (!bio.ok()) return bio.status();
  std::vector<X509Ptr> certs;
  ERR_clear_error();
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio->get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    if (certs.size() == max_certs) {
      return absl::ResourceExhaustedError(
          absl::StrCat("more than ", max_certs, " certificates in PEM input"));
    }
    certs.push_back(std::move(cert));
  }
  // The loop ends with "no start line" when the input is used up; any
  // other error is a damaged certificate.
  unsigned long err = ERR_peek_last_error();
  if (err != 0 && !(ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE)) {
    return OpenSslError("reading PEM certificates", absl::StatusCode::kInvalidArgument);
  }
  ERR_clear_error();
  return certs;
}

absl::StatusOr<EvpPkeyPtr> ParsePemPrivateKey(std::string_view pem) {
  auto bio = MemBio(pem);
  if (!bio.ok()) return bio.status();
  // An empty passphrase callback: an encrypted key fails instead of
  // prompting on a terminal.
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(
      bio->get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  if (!key) return OpenSslError("reading the PEM private key", absl::StatusCode::kInvalidArgument);
  return key;
}

std::string ToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_X509(bio.get(), cert)) return {};
  return BioContents(bio.get());
}

std::string PrivateKeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) return {};
  return BioContents(bio.get());
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return absl::NotFoundError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  std::string out;
  char buf[16384];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::InternalError(absl::StrCat("read ", path, ": ", std::strerror(errno)));
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

absl::Time Asn1TimeToAbsl(const ASN1_TIME* t) {
  struct tm tm;
  std::memset(&tm, 0, sizeof(tm));
  if (t == nullptr || !ASN1_TIME_to_tm(t, &tm)) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || !X509_add_ext(cert, ext.get(), -1))
    return OpenSslError(absl::StrCat("adding extension ", value));
  return absl::OkStatus();
}

absl::Status SetValidity(X509* cert, absl::Time not_before, absl::Time not_after) {
  if (!ASN1_TIME_set(X509_getm_notBefore(cert), absl::ToTimeT(not_before)) ||
      !ASN1_TIME_set(X509_getm_notAfter(cert), absl::ToTimeT(not_after))) {
    return OpenSslError("setting the validity period");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SetRandomSerial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return OpenSslError("RAND_bytes");
  bytes[0] &= 0x7f;  // positive in DER (no sign bit) ...
  bytes[0] |= 0x40;  // ... and never short (or zero)
  BignumPtr bn(BN_bin2bn(bytes, sizeof(bytes), nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)))
    return OpenSslError("setting the serial");
  char* hex = BN_bn2hex(bn.get());
  if (hex == nullptr) return OpenSslError("BN_bn2hex");
  std::string out(hex);
  OPENSSL_free(hex);
  return out;
}

absl::StatusOr<SpiffeId> SpiffeIdOfCertificate(X509* cert) {
  int crit = 0;
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, nullptr)));
  if (!names) {
    ERR_clear_error();
    return absl::InvalidArgumentError(crit == -2 ? "several SAN extensions" : "no SAN extension");
  }
  const ASN1_IA5STRING* uri = nullptr;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type != GEN_URI) continue;
    if (uri != nullptr) return absl::InvalidArgumentError("more than one URI SAN");
    uri = gn->d.uniformResourceIdentifier;
  }
  if (uri == nullptr) return absl::InvalidArgumentError("no URI SAN");
  std::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                        static_cast<size_t>(ASN1_STRING_length(uri)));
  return SpiffeId::Parse(text);
}

}  // namespace ringmesh::proxy::tls
