// Ready-to-use OpenSSL contexts for the mesh's mTLS: TLS 1.3 only, ALPN
// "h2" only, peer certificate required both ways, chains verified against a
// trust bundle, and the peer's SPIFFE ID checked during the handshake (so a
// refused peer gets an alert, not a dropped connection). TlsSession uses
// them; CertStore makes one client and one server context per identity.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "userspace/proxy/tls/spiffe_id.h"
#include "userspace/proxy/tls/ssl_handle.h"

namespace ringmesh::proxy::tls {

// Why a TLS session failed; each has a counter name.
enum class TlsError : uint8_t {
  kNone,
  kUnknownCa,          // the peer's chain does not end at a root we trust
  kExpired,            // a certificate in the peer's chain is expired or not yet valid
  kBadCertificate,     // other chain problems (signature, purpose, constraints)
  kBadIdentity,        // the peer leaf is a CA or lacks a single URI SAN that is a SPIFFE ID
  kSanMismatch,        // client: the server is not the identity we dialled
  kWrongTrustDomain,   // server: the client is from another trust domain
  kNoPeerCertificate,  // the peer sent no certificate
  kNoAlpn,             // no "h2" in ALPN
  kNotTls13,           // the peer does not speak TLS 1.3
  kPeerRejected,       // the peer sent a fatal alert (it refused us)
  kProtocolError,      // malformed TLS, unexpected message
  kPeerClosed,         // the transport ended without a TLS close_notify
};
const char* TlsErrorName(TlsError e);

enum class TlsRole : uint8_t { kClient, kServer };

// What one connection expects of its peer and what the handshake callbacks
// found. Attached to the SSL (ex_data) by its owner, which keeps it alive
// longer than the SSL.
struct PeerCheck {
  std::optional<SpiffeId> expected_peer;  // client side: exactly this identity
  std::string required_trust_domain;      // server side: any identity of this domain
  TlsError failure = TlsError::kNone;
  std::optional<SpiffeId> peer;
};
void AttachPeerCheck(SSL* ssl, PeerCheck* check);

// A context presenting `leaf` (+ `chain`) with `key`, trusting `roots`.
// A session made from it without an attached PeerCheck refuses every peer.
absl::StatusOr<std::shared_ptr<SSL_CTX>> MakeTlsContext(TlsRole role, EVP_PKEY* key, X509* leaf,
                                                        const std::vector<X509Ptr>& chain,
                                                        std::shared_ptr<X509_STORE> roots);

// The failure behind an SSL_ERROR_SSL, from the callbacks' finding, the
// verify result and the error queue (which it drains).
TlsError ClassifySslFailure(SSL* ssl, const PeerCheck& check, std::string* detail);

}  // namespace ringmesh::proxy::tls
