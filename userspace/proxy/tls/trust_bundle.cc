#include "userspace/proxy/tls/trust_bundle.h"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "userspace/proxy/tls/x509_util.h"

namespace ringmesh::proxy::tls {
namespace {

absl::StatusOr<std::string> Sha256(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr)) return OpenSslError("SHA-256");
  return std::string(reinterpret_cast<char*>(md), len);
}

absl::StatusOr<TrustBundle::StorePtr> BuildStore(std::string_view pem, size_t max_roots, size_t* count) {
  auto certs = ParsePemCertificates(pem, max_roots);
  if (!certs.ok()) return certs.status();
  if (certs->empty()) return absl::InvalidArgumentError("trust bundle holds no certificate");
  X509StorePtr store(X509_STORE_new());
  if (!store) return OpenSslError("X509_STORE_new");
  for (X509Ptr& cert : *certs) {
    if (X509_check_ca(cert.get()) < 1)
      return absl::InvalidArgumentError("trust bundle holds a non-CA certificate");
    if (!X509_STORE_add_cert(store.get(), cert.get())) return OpenSslError("X509_STORE_add_cert");
  }
  *count = certs->size();
  return TrustBundle::StorePtr(store.release(), X509_STORE_free);
}

}  // namespace

absl::Status TrustBundle::LoadPem(std::string_view pem) {
  size_t count = 0;
  auto store = BuildStore(pem, limits_.max_roots, &count);
  if (!store.ok()) return store.status();
  std::lock_guard lock(mu_);
  store_ = std::move(*store);
  count_ = count;
  ++generation_;
  path_.clear();  // text replaces the file: nothing to reload from
  digest_.clear();
  return absl::OkStatus();
}

absl::Status TrustBundle::LoadFile(const std::string& path) {
  std::lock_guard lock(mu_);
  return LoadFileLocked(path);
}

absl::Status TrustBundle::LoadFileLocked(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return absl::NotFoundError(absl::StrCat("stat ", path, ": ", std::strerror(errno)));
  auto pem = ReadSmallFile(path, limits_.max_file_bytes);
  if (!pem.ok()) return pem.status();
  auto digest = Sha256(*pem);
  if (!digest.ok()) return digest.status();
  const int64_t mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  if (path == path_ && *digest == digest_) {
    // Touched but unchanged: remember the new stat, keep the roots.
    mtime_ns_ = mtime_ns;
    size_ = st.st_size;
    return absl::OkStatus();
  }
  size_t count = 0;
  auto store = BuildStore(*pem, limits_.max_roots, &count);
  if (!store.ok()) return store.status();
  store_ = std::move(*store);
  count_ = count;
  ++generation_;
  path_ = path;
  mtime_ns_ = mtime_ns;
  size_ = st.st_size;
  digest_ = std::move(*digest);
  return absl::OkStatus();
}

absl::StatusOr<bool> TrustBundle::ReloadIfChanged() {
  std::lock_guard lock(mu_);
  if (path_.empty()) return absl::FailedPreconditionError("trust bundle not loaded from a file");
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("stat ", path_, ": ", std::strerror(errno)));
  }
  const int64_t mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  if (mtime_ns == mtime_ns_ && st.st_size == size_) return false;
  const uint64_t before = generation_;
  if (absl::Status s = LoadFileLocked(path_); !s.ok()) return s;
  return generation_ != before;
}

TrustBundle::StorePtr TrustBundle::Store() const {
  std::lock_guard lock(mu_);
  return store_;
}

uint64_t TrustBundle::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

size_t TrustBundle::size() const {
  std::lock_guard lock(mu_);
  return count_;
}

}  // namespace ringmesh::proxy::tls
