// The roots this node trusts for peer certificates: one or more CA
// certificates from a PEM bundle (a file mounted from a ConfigMap, or
// text). Reloading builds a new X509_STORE; TLS contexts made afterwards
// use it, contexts made before keep the store they were given (so sessions
// in flight are not disturbed).
//
//   TrustBundle bundle;
//   RETURN_IF_ERROR(bundle.LoadFile("/etc/ringmesh/roots.pem"));
//   ... periodically: auto changed = bundle.ReloadIfChanged();
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "userspace/proxy/tls/ssl_handle.h"

namespace ringmesh::proxy::tls {

struct TrustBundleLimits {
  size_t max_roots = 64;
  size_t max_file_bytes = 1 << 20;
};

class TrustBundle {
 public:
  using Limits = TrustBundleLimits;
  // A shared, immutable store: hand it to SSL_CTX_set1_cert_store.
  using StorePtr = std::shared_ptr<X509_STORE>;

  explicit TrustBundle(Limits limits = {}) : limits_(limits) {}

  // Replaces the roots. On error the previous roots stay.
  absl::Status LoadPem(std::string_view pem);
  // Loads `path` and remembers it for ReloadIfChanged.
  absl::Status LoadFile(const std::string& path);
  // Re-reads the remembered file when its mtime or size changed, and takes
  // it when its content (SHA-256) changed. Returns whether the roots
  // changed. On error (unreadable, bad PEM) the previous roots stay.
  absl::StatusOr<bool> ReloadIfChanged();

  // The current roots (null before the first successful load).
  StorePtr Store() const;
  // Bumped by every change of roots, so holders of derived state (contexts)
  // know to rebuild.
  uint64_t generation() const;
  size_t size() const;

 private:
  absl::Status LoadFileLocked(const std::string& path);

  const Limits limits_;
  mutable std::mutex mu_;
  StorePtr store_;
  size_t count_ = 0;
  uint64_t generation_ = 0;
  std::string path_;
  int64_t mtime_ns_ = -1;
  int64_t size_ = -1;
  std::string digest_;
};

}  // namespace ringmesh::proxy::tls
