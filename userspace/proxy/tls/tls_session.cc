#include "userspace/proxy/tls/tls_session.h"

#include <algorithm>
#include <climits>
#include <utility>

namespace ringmesh::proxy::tls {
namespace {

// The largest TLS 1.3 record on the wire (16 KiB + 256 + 5 header bytes):
// the input bound must admit one, or a session could never make progress.
constexpr size_t kMaxRecord = 16384 + 256 + 5;

int ClampInt(size_t n) { return static_cast<int>(std::min<size_t>(n, INT_MAX)); }

}  // namespace

absl::StatusOr<std::unique_ptr<TlsSession>> TlsSession::Make(const std::shared_ptr<SSL_CTX>& ctx, bool client,
                                                             Limits limits) {
  if (!ctx) return absl::InvalidArgumentError("no TLS context");
  std::unique_ptr<TlsSession> s(new TlsSession());
  limits.max_pending_input = std::max(limits.max_pending_input, kMaxRecord);
  limits.max_pending_wire = std::max<size_t>(limits.max_pending_wire, 1);
  s->limits_ = limits;
  // SSL_new takes its own reference on the context: a renewed context in
  // the store does not disturb this session.
  s->ssl_.reset(SSL_new(ctx.get()));
  if (!s->ssl_) return OpenSslError("SSL_new");
  BioPtr rbio(BIO_new(BIO_s_mem()));
  BioPtr wbio(BIO_new(BIO_s_mem()));
  if (!rbio || !wbio) return OpenSslError("BIO_new");
  // An empty input BIO means "wait for more", not EOF.
  BIO_set_mem_eof_return(rbio.get(), -1);
  s->rbio_ = rbio.release();
  s->wbio_ = wbio.release();
  SSL_set_bio(s->ssl_.get(), s->rbio_, s->wbio_);
  AttachPeerCheck(s->ssl_.get(), &s->check_);
  if (client) {
    SSL_set_connect_state(s->ssl_.get());
  } else {
    SSL_set_accept_state(s->ssl_.get());
  }
  return s;
}

absl::StatusOr<std::unique_ptr<TlsSession>> TlsSession::Client(const std::shared_ptr<SSL_CTX>& ctx,
                                                               SpiffeId expected_peer, Limits limits) {
  auto s = Make(ctx, true, limits);
  if (!s.ok()) return s.status();
  (*s)->check_.expected_peer = std::move(expected_peer);
  // No SNI: the destination is named by its SPIFFE ID, not a host name.
  (*s)->Handshake();  // queues the ClientHello
  return s;
}

absl::StatusOr<std::unique_ptr<TlsSession>> TlsSession::Server(const std::shared_ptr<SSL_CTX>& ctx,
                                                               std::string trust_domain, Limits limits) {
  if (trust_domain.empty()) return absl::InvalidArgumentError("a server session needs a trust domain");
  auto s = Make(ctx, false, limits);
  if (!s.ok()) return s.status();
  (*s)->check_.required_trust_domain = std::move(trust_domain);
  return s;
}

TlsSession::~TlsSession() = default;

void TlsSession::Fail(TlsError error) {
  if (error_ == TlsError::kNone) error_ = error;
  ERR_clear_error();
}

void TlsSession::FailFromSsl(int ret) {
  int err = SSL_get_error(ssl_.get(), ret);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    ERR_clear_error();
    return;
  }
  if (err == SSL_ERROR_ZERO_RETURN) {
    peer_closed_ = true;
    if (!handshake_done_) Fail(TlsError::kPeerClosed);
    return;
  }
  Fail(ClassifySslFailure(ssl_.get(), check_, &error_detail_));
}

void TlsSession::Handshake() {
  if (handshake_done_ || failed()) return;
  int ret = SSL_do_handshake(ssl_.get());
  if (ret != 1) {
    FailFromSsl(ret);
    if (!failed() && eof_) Fail(TlsError::kPeerClosed);
    return;
  }
  // The context already limits us to TLS 1.3 and h2; these checks keep a
  // misconfigured context from going unnoticed.
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl_.get(), &alpn, &alpn_len);
  if (std::string_view(reinterpret_cast<const char*>(alpn), alpn ? alpn_len : 0) != "h2") {
    return Fail(TlsError::kNoAlpn);
  }
  if (SSL_version(ssl_.get()) != TLS1_3_VERSION) return Fail(TlsError::kNotTls13);
  if (!check_.peer) return Fail(TlsError::kBadIdentity);  // verification did not run
  handshake_done_ = true;
}

size_t TlsSession::Feed(std::span<const uint8_t> ciphertext) {
  if (failed() || eof_) return 0;
  size_t pending = BIO_ctrl_pending(rbio_);
  if (pending >= limits_.max_pending_input) return 0;
  size_t n = std::min(ciphertext.size(), limits_.max_pending_input - pending);
  if (n == 0) return 0;
  int written = BIO_write(rbio_, ciphertext.data(), ClampInt(n));
  if (written <= 0) {
    Fail(TlsError::kProtocolError);  // allocation failure in the BIO
    return 0;
  }
  Handshake();
  return static_cast<size_t>(written);
}

void TlsSession::FeedEof() {
  eof_ = true;
  if (!handshake_done_) {
    Handshake();  // what was fed before EOF may still complete it
    if (!handshake_done_) Fail(TlsError::kPeerClosed);
  }
}

size_t TlsSession::PendingWire() const { return BIO_ctrl_pending(wbio_); }

size_t TlsSession::TakeWire(std::span<uint8_t> out) {
  if (out.empty() || BIO_ctrl_pending(wbio_) == 0) return 0;
  int n = BIO_read(wbio_, out.data(), ClampInt(out.size()));
  return n > 0 ? static_cast<size_t>(n) : 0;
}

size_t TlsSession::Write(std::span<const uint8_t> plaintext) {
  if (!handshake_done_ || failed() || shutdown_sent_ || plaintext.empty()) return 0;
  size_t pending = BIO_ctrl_pending(wbio_);
  if (pending >= limits_.max_pending_wire) return 0;
  // Each record adds a few bytes of overhead, so the bound is exceeded by
  // at most ~22 bytes per 16 KiB accepted.
  size_t n = std::min(plaintext.size(), limits_.max_pending_wire - pending);
  size_t written = 0;
  int ret = SSL_write_ex(ssl_.get(), plaintext.data(), n, &written);
  if (ret != 1) {
    FailFromSsl(ret);
    return 0;
  }
  return written;
}

size_t TlsSession::Read(std::span<uint8_t> out) {
  if (failed() || out.empty()) return 0;
  if (!handshake_done_) {
    Handshake();
    if (!handshake_done_) return 0;
  }
  if (peer_closed_) return 0;
  size_t n = 0;
  int ret = SSL_read_ex(ssl_.get(), out.data(), out.size(), &n);
  if (ret == 1) return n;
  FailFromSsl(ret);
  if (!failed() && !peer_closed_ && eof_) Fail(TlsError::kPeerClosed);
  return 0;
}

void TlsSession::Shutdown() {
  if (shutdown_sent_ || failed() || !handshake_done_) {
    shutdown_sent_ = true;
    return;
  }
  shutdown_sent_ = true;
  // Returns 0 ("sent, not yet received theirs"), which is all we need: the
  // peer's close_notify shows up as peer_closed() through Read.
  SSL_shutdown(ssl_.get());
  ERR_clear_error();
}

}  // namespace ringmesh::proxy::tls
