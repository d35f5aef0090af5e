// Owners for OpenSSL handles (Seastar's pattern: a unique_ptr whose deleter
// is the library's free function), plus the one helper that turns the
// OpenSSL error queue into an absl::Status.
//
//   X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
//   if (!cert) return OpenSslError("reading the CA certificate");
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace ringmesh::proxy::tls {

template <auto fn>
struct SslDeleter {
  template <typename T>
  void operator()(T* p) const {
    fn(p);
  }
};
template <typename T, auto fn>
using SslHandle = std::unique_ptr<T, SslDeleter<fn>>;

using BioPtr = SslHandle<BIO, BIO_free_all>;
using BignumPtr = SslHandle<BIGNUM, BN_free>;
using EvpPkeyPtr = SslHandle<EVP_PKEY, EVP_PKEY_free>;
using EvpPkeyCtxPtr = SslHandle<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using EvpMdCtxPtr = SslHandle<EVP_MD_CTX, EVP_MD_CTX_free>;
using X509Ptr = SslHandle<X509, X509_free>;
using X509StorePtr = SslHandle<X509_STORE, X509_STORE_free>;
using X509ExtensionPtr = SslHandle<X509_EXTENSION, X509_EXTENSION_free>;
using GeneralNamesPtr = SslHandle<GENERAL_NAMES, GENERAL_NAMES_free>;
using Asn1IntegerPtr = SslHandle<ASN1_INTEGER, ASN1_INTEGER_free>;
using SslCtxPtr = SslHandle<SSL_CTX, SSL_CTX_free>;
using SslPtr = SslHandle<SSL, SSL_free>;

// A second owner of a reference-counted handle.
inline X509Ptr UpRef(X509* x) {
  if (x) X509_up_ref(x);
  return X509Ptr(x);
}
inline EvpPkeyPtr UpRef(EVP_PKEY* k) {
  if (k) EVP_PKEY_up_ref(k);
  return EvpPkeyPtr(k);
}

// Drains the calling thread's OpenSSL error queue into one status (so a
// stale error never shows up in an unrelated later failure).
inline absl::Status OpenSslError(std::string_view what, absl::StatusCode code = absl::StatusCode::kInternal) {
  std::string msg(what);
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    msg += ": ";
    msg += buf;
  }
  return absl::Status(code, msg);
}

}  // namespace ringmesh::proxy::tls
