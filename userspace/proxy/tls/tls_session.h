// One mTLS connection as bytes in, bytes out (OpenSSL on memory BIOs): the
// event loop reads the socket and Feeds ciphertext, sends what TakeWire
// gives, and moves plaintext with Read/Write. Nothing here touches a socket.
//
//   auto s = TlsSession::Client(ctx, destination_id);   // ClientHello is pending
//   loop: send((*s)->TakeWire(buf)); on readable: (*s)->Feed(bytes);
//         while (n = (*s)->Read(buf)) deliver(n);  ... (*s)->Write(plain);
//   (*s)->failed() → close, count TlsErrorName((*s)->error()).
//
// Backpressure and bounds: ciphertext waiting to be sent is capped by
// Limits::max_pending_wire (Write accepts less, down to 0, when it is
// full; the caller stops writing until it has sent), and ciphertext fed but
// not yet read is capped by max_pending_input (Feed accepts less; the
// caller stops reading the socket until it has Read).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "userspace/proxy/tls/tls_context.h"

namespace ringmesh::proxy::tls {

struct TlsSessionLimits {
  size_t max_pending_wire = 256 * 1024;
  // At least one full TLS record (about 16.7 KiB) is always accepted.
  size_t max_pending_input = 64 * 1024;
};

class TlsSession {
 public:
  using Limits = TlsSessionLimits;

  // `ctx` from MakeTlsContext(kClient, ...); the server must present
  // exactly `expected_peer`.
  static absl::StatusOr<std::unique_ptr<TlsSession>> Client(const std::shared_ptr<SSL_CTX>& ctx,
                                                            SpiffeId expected_peer, Limits limits = {});
  // `ctx` from MakeTlsContext(kServer, ...); the client must be an identity
  // of `trust_domain`.
  static absl::StatusOr<std::unique_ptr<TlsSession>> Server(const std::shared_ptr<SSL_CTX>& ctx,
                                                            std::string trust_domain, Limits limits = {});
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Ciphertext from the socket; returns how much was taken (less when the
  // input bound is reached). Advances the handshake; after it, call Read.
  size_t Feed(std::span<const uint8_t> ciphertext);
  // The socket reached EOF. Without a close_notify first that is
  // kPeerClosed (a truncation attack looks the same).
  void FeedEof();

  size_t PendingWire() const;
  // Moves up to out.size() bytes of ciphertext to send into `out`.
  size_t TakeWire(std::span<uint8_t> out);

  // Encrypts up to plaintext.size() bytes; returns how many were taken (0
  // before the handshake is done, after failure or shutdown, or when the
  // pending wire is full).
  size_t Write(std::span<const uint8_t> plaintext);
  // Decrypted bytes into `out`; 0 when none are ready (check failed() and
  // peer_closed()).
  size_t Read(std::span<uint8_t> out);

  // Queues a close_notify; Write accepts nothing afterwards.
  void Shutdown();

  bool handshake_done() const { return handshake_done_; }
  bool failed() const { return error_ != TlsError::kNone; }
  TlsError error() const { return error_; }
  // OpenSSL's own words for the failure, for logs.
  const std::string& error_detail() const { return error_detail_; }
  // The peer sent close_notify: no more plaintext will come.
  bool peer_closed() const { return peer_closed_; }
  // The verified peer identity, once the handshake has checked it.
  const std::optional<SpiffeId>& peer_id() const { return check_.peer; }

 private:
  TlsSession() = default;
  static absl::StatusOr<std::unique_ptr<TlsSession>> Make(const std::shared_ptr<SSL_CTX>& ctx, bool client,
                                                          Limits limits);
  void Handshake();
  void Fail(TlsError error);
  void FailFromSsl(int ret);

  Limits limits_;
  PeerCheck check_;  // outlives ssl_ (declared first, destroyed last)
  SslPtr ssl_;
  BIO* rbio_ = nullptr;  // owned by ssl_
  BIO* wbio_ = nullptr;  // owned by ssl_
  bool handshake_done_ = false;
  bool peer_closed_ = false;
  bool eof_ = false;
  bool shutdown_sent_ = false;
  TlsError error_ = TlsError::kNone;
  std::string error_detail_;
};

}  // namespace ringmesh::proxy::tls
