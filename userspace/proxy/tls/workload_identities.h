// The certificates of the workloads on this node, kept current in the
// background: the proxy tells it which pods are enrolled (every snapshot),
// and a control thread of its own issues a certificate for each identity
// (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>), renews it
// at half-life, drops the identities whose pods left, reloads the trust
// bundle when its file changes, and retries failures with backoff. The data
// plane only ever takes the current credential (Get) and keeps its
// shared_ptr, so renewal never touches an open connection.
//
//   auto ids = WorkloadIdentities::Start(options);     // CA + bundle from files
//   (*ids)->SetWorkloads(snapshot.pods);              // on every snapshot
//   auto cred = (*ids)->Get(id);                      // data plane: current credential
//   for (auto& v : (*ids)->Views()) ...               // admin: /certs
//
// Only identities of pods on this node are issued: the CA's allow-check is
// this object's own set of wanted identities.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "userspace/common/snapshot.h"
#include "userspace/proxy/tls/cert_store.h"
#include "userspace/proxy/tls/local_ca.h"
#include "userspace/proxy/tls/spiffe_id.h"
#include "userspace/proxy/tls/trust_bundle.h"

namespace ringmesh::proxy::tls {

struct WorkloadIdentityOptions {
  std::string trust_domain = "cluster.local";
  // The embedded CA (an intermediate, or a root): PEM files, e.g. a
  // mounted Secret. The chain file holds the certificates above it (may
  // be empty).
  std::string ca_cert_path;
  std::string ca_key_path;
  std::string ca_chain_path;
  // The roots peers' certificates must chain to (several allowed, for a
  // root rotation); watched for changes. Empty: the CA certificate file.
  std::string trust_bundle_path;
  absl::Duration ttl = absl::Hours(24);
  // How often the thread looks for due renewals and a changed bundle.
  absl::Duration tick = absl::Seconds(1);
  // Backoff after a failed issue: from retry_min, doubling, at most retry_max.
  absl::Duration retry_min = absl::Seconds(1);
  absl::Duration retry_max = absl::Seconds(60);
  size_t max_identities = 1024;
};

// What /certs and `ringmeshctl certs` show of one identity.
struct IdentityView {
  std::string id;
  std::vector<std::string> pods;  // "<namespace>/<name>"
  std::string state;              // "pending", "ready", "failed" (kept serving the last good one if any)
  std::string serial;
  absl::Time not_before = absl::InfinitePast();
  absl::Time not_after = absl::InfinitePast();
  absl::Time renew_at = absl::InfinitePast();  // half-life
  std::string issuer;
  uint64_t renewals = 0;
  std::string last_error;
};

class WorkloadIdentities {
 public:
  using Options = WorkloadIdentityOptions;

  // Loads the CA and the trust bundle (a clear error when either is
  // unusable) and starts the control thread.
  static absl::StatusOr<std::unique_ptr<WorkloadIdentities>> Start(Options options);
  ~WorkloadIdentities();
  WorkloadIdentities(const WorkloadIdentities&) = delete;
  WorkloadIdentities& operator=(const WorkloadIdentities&) = delete;

  // The pod's identity; its service account defaults to "default" as in
  // Kubernetes. An error for names that make no valid SPIFFE ID.
  static absl::StatusOr<SpiffeId> IdentityOf(const Pod& pod, const std::string& trust_domain);

  // The enrolled pods of a snapshot: their identities are wanted from now
  // on (issued in the background), every other identity is dropped.
  void SetWorkloads(const std::vector<Pod>& pods);
  // The current credential of an identity of this node; NotFound for any
  // other, Unavailable while it has none yet.
  absl::StatusOr<std::shared_ptr<const Credential>> Get(const SpiffeId& id) const;
  std::vector<IdentityView> Views() const;
  const std::string& trust_domain() const { return options_.trust_domain; }
  // Runs one round of the control thread's work now (tests).
  void Kick();

 private:
  struct Entry {
    std::vector<std::string> pods;
    std::shared_ptr<const Credential> cred;
    std::string last_error;
    uint64_t renewals = 0;
    absl::Duration backoff = absl::ZeroDuration();
    absl::Time retry_at = absl::InfinitePast();
  };

  explicit WorkloadIdentities(Options options) : options_(std::move(options)) {}
  void Run();
  void Round();  // issue what is wanted, drop the rest, renew, reload

  const Options options_;
  std::unique_ptr<LocalCa> ca_;
  std::string issuer_name_;
  TrustBundle bundle_;
  std::unique_ptr<CertStore> store_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<SpiffeId, Entry> entries_;  // the wanted identities
  std::set<SpiffeId> issued_;           // held by store_ (control thread only)
  bool kicked_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace ringmesh::proxy::tls
