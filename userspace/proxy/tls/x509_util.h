// Small X.509 and key helpers shared by the issuer, the trust bundle and the
// tests: P-256 key generation, PEM in and out, ASN.1 time conversion, and
// reading the SPIFFE ID out of a certificate.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "userspace/proxy/tls/spiffe_id.h"
#include "userspace/proxy/tls/ssl_handle.h"

namespace ringmesh::proxy::tls {

// ECDSA P-256 key pair made in memory (the only key type leaves use).
absl::StatusOr<EvpPkeyPtr> MakeP256Key();
bool IsP256Key(EVP_PKEY* key);

// Reads every certificate of a PEM text, at most `max_certs` (more is an
// error). Text outside BEGIN/END blocks is ignored; an empty input yields
// an empty vector.
absl::StatusOr<std::vector<X509Ptr>> ParsePemCertificates(std::string_view pem, size_t max_certs);
absl::StatusOr<EvpPkeyPtr> ParsePemPrivateKey(std::string_view pem);
std::string ToPem(X509* cert);
std::string PrivateKeyToPem(EVP_PKEY* key);

// Bounded whole-file read (PEM files are small; a huge one is a mistake).
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes = 1 << 20);

absl::Time Asn1TimeToAbsl(const ASN1_TIME* t);

// Certificate building blocks (the issuer and the test CA).
// Adds an X.509v3 extension written in OpenSSL's config syntax, e.g.
// (NID_basic_constraints, "critical,CA:FALSE"); `issuer` may be `cert`.
absl::Status AddExtension(X509* cert, X509* issuer, int nid, const char* value);
absl::Status SetValidity(X509* cert, absl::Time not_before, absl::Time not_after);
// A random 128-bit serial, positive and of full length (so 126 random
// bits); returns it in hex.
absl::StatusOr<std::string> SetRandomSerial(X509* cert);

// The certificate's identity: it must carry exactly one URI SAN, and that
// must parse as a SpiffeId.
absl::StatusOr<SpiffeId> SpiffeIdOfCertificate(X509* cert);

}  // namespace ringmesh::proxy::tls
