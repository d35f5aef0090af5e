#include "userspace/proxy/tls/tls_context.h"

#include <string_view>

#include "absl/strings/str_cat.h"
#include "userspace/proxy/tls/x509_util.h"

namespace ringmesh::proxy::tls {
namespace {

constexpr unsigned char kAlpnH2[] = {2, 'h', '2'};
constexpr int kMaxVerifyDepth = 8;

int PeerCheckIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

PeerCheck* GetPeerCheck(SSL* ssl) {
  return ssl ? static_cast<PeerCheck*>(SSL_get_ex_data(ssl, PeerCheckIndex())) : nullptr;
}

TlsError FromVerifyError(long err) {
  switch (err) {
    case X509_V_OK:
      return TlsError::kNone;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return TlsError::kExpired;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      return TlsError::kUnknownCa;
    default:
      return TlsError::kBadCertificate;
  }
}

// Runs for every certificate of the peer's chain; the identity check runs
// last, on the leaf, once the chain is known good.
int VerifyCallback(int ok, X509_STORE_CTX* store_ctx) {
  SSL* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  PeerCheck* check = GetPeerCheck(ssl);
  if (check == nullptr) return 0;  // fail closed: nobody said whom to accept
  if (!ok) {
    if (check->failure == TlsError::kNone)
      check->failure = FromVerifyError(X509_STORE_CTX_get_error(store_ctx));
    return 0;
  }
  if (X509_STORE_CTX_get_error_depth(store_ctx) != 0) return 1;
  X509* leaf = X509_STORE_CTX_get_current_cert(store_ctx);
  auto id = SpiffeIdOfCertificate(leaf);
  TlsError failure = TlsError::kNone;
  if (!id.ok() || X509_check_ca(leaf) != 0) {
    // A CA certificate is never a workload, whatever its SAN says.
    failure = TlsError::kBadIdentity;
  } else if (check->expected_peer && *id != *check->expected_peer) {
    failure = TlsError::kSanMismatch;
  } else if (!check->required_trust_domain.empty() && id->trust_domain != check->required_trust_domain) {
    failure = TlsError::kWrongTrustDomain;
  }
  if (failure != TlsError::kNone) {
    check->failure = failure;
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  check->peer = *std::move(id);
  return 1;
}

// Whether a TLS extension holding a length-prefixed list of entries (of
// `entry_len` bytes, or each length-prefixed itself when 0) contains `want`.
bool ListContains(const unsigned char* data, size_t len, size_t prefix, size_t entry_len,
                  std::string_view want) {
  if (len < prefix) return false;
  size_t list_len = prefix == 1 ? data[0] : (size_t{data[0]} << 8 | data[1]);
  if (list_len != len - prefix) return false;  // malformed: OpenSSL rejects it later anyway
  size_t pos = prefix;
  while (pos < len) {
    size_t n = entry_len;
    if (n == 0) n = data[pos++];
    if (pos + n > len) return false;
    if (std::string_view(reinterpret_cast<const char*>(data + pos), n) == want) return true;
    pos += n;
  }
  return false;
}

// Server: refuse a ClientHello without TLS 1.3 or without "h2", with a
// reason of our own (OpenSSL would only say "no shared protocol", and
// would accept a client that sends no ALPN at all).
int ClientHelloCallback(SSL* ssl, int* alert, void*) {
  PeerCheck* check = GetPeerCheck(ssl);
  const unsigned char* data = nullptr;
  size_t len = 0;
  static constexpr char kTls13[] = {0x03, 0x04};
  if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &data, &len) ||
      !ListContains(data, len, 1, 2, std::string_view(kTls13, 2))) {
    if (check) check->failure = TlsError::kNotTls13;
    *alert = SSL_AD_PROTOCOL_VERSION;
    return SSL_CLIENT_HELLO_ERROR;
  }
  if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &data, &len) ||
      !ListContains(data, len, 2, 0, "h2")) {
    if (check) check->failure = TlsError::kNoAlpn;
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

int AlpnSelect(SSL*, const unsigned char** out, unsigned char* out_len, const unsigned char* in,
               unsigned int in_len, void*) {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, out_len, kAlpnH2, sizeof(kAlpnH2), in, in_len) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

const char* TlsErrorName(TlsError e) {
  switch (e) {
    case TlsError::kNone:
      return "none";
    case TlsError::kUnknownCa:
      return "unknown_ca";
    case TlsError::kExpired:
      return "expired";
    case TlsError::kBadCertificate:
      return "bad_certificate";
    case TlsError::kBadIdentity:
      return "bad_identity";
    case TlsError::kSanMismatch:
      return "san_mismatch";
    case TlsError::kWrongTrustDomain:
      return "wrong_trust_domain";
    case TlsError::kNoPeerCertificate:
      return "no_peer_certificate";
    case TlsError::kNoAlpn:
      return "no_alpn";
    case TlsError::kNotTls13:
      return "not_tls13";
    case TlsError::kPeerRejected:
      return "peer_rejected";
    case TlsError::kProtocolError:
      return "protocol_error";
    case TlsError::kPeerClosed:
      return "peer_closed";
  }
  return "unknown";
}

void AttachPeerCheck(SSL* ssl, PeerCheck* check) { SSL_set_ex_data(ssl, PeerCheckIndex(), check); }

absl::StatusOr<std::shared_ptr<SSL_CTX>> MakeTlsContext(TlsRole role, EVP_PKEY* key, X509* leaf,
                                                        const std::vector<X509Ptr>& chain,
                                                        std::shared_ptr<X509_STORE> roots) {
  if (!roots) return absl::FailedPreconditionError("no trust bundle loaded");
  SslCtxPtr ctx(SSL_CTX_new(role == TlsRole::kClient ? TLS_client_method() : TLS_server_method()));
  if (!ctx) return OpenSslError("SSL_CTX_new");
  SSL_CTX* c = ctx.get();
  if (!SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION)) {
    return OpenSslError("limiting to TLS 1.3");
  }
  // Sessions are not resumed (every connection proves its identity), so
  // tickets and the session cache would only cost memory and bytes.
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(c, 0);
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_use_certificate(c, leaf) != 1 || SSL_CTX_use_PrivateKey(c, key) != 1 ||
      SSL_CTX_check_private_key(c) != 1) {
    return OpenSslError("installing the certificate and key");
  }
  for (const X509Ptr& cert : chain) {
    if (!SSL_CTX_add1_chain_cert(c, cert.get())) return OpenSslError("installing the chain");
  }
  SSL_CTX_set1_cert_store(c, roots.get());
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, VerifyCallback);
  SSL_CTX_set_verify_depth(c, kMaxVerifyDepth);
  if (role == TlsRole::kClient) {
    // set_alpn_protos returns 0 on success.
    if (SSL_CTX_set_alpn_protos(c, kAlpnH2, sizeof(kAlpnH2)) != 0) return OpenSslError("setting ALPN");
  } else {
    SSL_CTX_set_client_hello_cb(c, ClientHelloCallback, nullptr);
    SSL_CTX_set_alpn_select_cb(c, AlpnSelect, nullptr);
  }
  return std::shared_ptr<SSL_CTX>(ctx.release(), SSL_CTX_free);
}

TlsError ClassifySslFailure(SSL* ssl, const PeerCheck& check, std::string* detail) {
  TlsError from_queue = TlsError::kProtocolError;
  bool first = true;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (detail) absl::StrAppend(detail, detail->empty() ? "" : "; ", buf);
    if (!first || ERR_GET_LIB(e) != ERR_LIB_SSL) continue;
    first = false;
    int reason = ERR_GET_REASON(e);
    switch (reason) {
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        from_queue = TlsError::kNoPeerCertificate;
        break;
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_NO_PROTOCOLS_AVAILABLE:
      case SSL_R_VERSION_TOO_LOW:
      case SSL_R_WRONG_SSL_VERSION:
      case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
        from_queue = TlsError::kNotTls13;
        break;
      case SSL_R_NO_APPLICATION_PROTOCOL:
      case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
        from_queue = TlsError::kNoAlpn;
        break;
      case SSL_R_CERTIFICATE_VERIFY_FAILED:
        from_queue = FromVerifyError(SSL_get_verify_result(ssl));
        if (from_queue == TlsError::kNone) from_queue = TlsError::kBadCertificate;
        break;
      default:
        if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
          from_queue = TlsError::kPeerRejected;
        }
    }
  }
  // Our callbacks know best; the queue explains everything else.
  return check.failure != TlsError::kNone ? check.failure : from_queue;
}

}  // namespace ringmesh::proxy::tls
