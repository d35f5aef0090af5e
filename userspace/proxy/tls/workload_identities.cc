#include "userspace/proxy/tls/workload_identities.h"

#include <openssl/x509.h>

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace ringmesh::proxy::tls {
namespace {

std::string NameOf(X509* cert) {
  char buf[256];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof(buf));
  return buf;
}

}  // namespace

absl::StatusOr<SpiffeId> WorkloadIdentities::IdentityOf(const Pod& pod, const std::string& trust_domain) {
  SpiffeId id{trust_domain, pod.ns, pod.service_account.empty() ? "default" : pod.service_account};
  if (absl::Status s = SpiffeId::Validate(id.trust_domain, id.ns, id.service_account); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("pod ", pod.ns, "/", pod.name, ": no identity: ", s.message()));
  }
  return id;
}

absl::StatusOr<std::unique_ptr<WorkloadIdentities>> WorkloadIdentities::Start(Options options) {
  if (options.ca_cert_path.empty() || options.ca_key_path.empty()) {
    return absl::InvalidArgumentError("workload certificates need the CA certificate and key files");
  }
  if (absl::Status s = SpiffeId::Validate(options.trust_domain, "ns", "sa"); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("trust domain \"", options.trust_domain, "\": ", s.message()));
  }
  if (options.ttl < absl::Seconds(2)) return absl::InvalidArgumentError("certificate lifetime under 2 s");
  if (options.tick <= absl::ZeroDuration() || options.retry_min <= absl::ZeroDuration() ||
      options.retry_max < options.retry_min) {
    return absl::InvalidArgumentError("tick and retry intervals must be positive, retry_max >= retry_min");
  }
  std::unique_ptr<WorkloadIdentities> w(new WorkloadIdentities(options));
  LocalCa::Options ca_options;
  ca_options.max_ttl = options.ttl;
  // Only what this node's pods are: the set SetWorkloads keeps.
  ca_options.allowed = [p = w.get()](const SpiffeId& id) {
    std::lock_guard<std::mutex> lock(p->mu_);
    return p->entries_.contains(id);
  };
  auto ca = LocalCa::FromFiles(options.ca_cert_path, options.ca_key_path, options.ca_chain_path,
                               std::move(ca_options));
  if (!ca.ok()) return absl::Status(ca.status().code(), absl::StrCat("CA: ", ca.status().message()));
  w->ca_ = std::move(*ca);
  w->issuer_name_ = NameOf(w->ca_->certificate());
  const std::string& bundle = options.trust_bundle_path.empty() ? options.ca_cert_path : options.trust_bundle_path;
  if (absl::Status s = w->bundle_.LoadFile(bundle); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("trust bundle ", bundle, ": ", s.message()));
  }
  w->store_ = std::make_unique<CertStore>(*w->ca_, w->bundle_,
                                          CertStore::Options{.max_identities = options.max_identities,
                                                             .ttl = options.ttl});
  w->thread_ = std::thread([p = w.get()] { p->Run(); });
  return w;
}

WorkloadIdentities::~WorkloadIdentities() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void WorkloadIdentities::SetWorkloads(const std::vector<Pod>& pods) {
  std::map<SpiffeId, std::vector<std::string>> wanted;
  for (const Pod& pod : pods) {
    if (!pod.enrolled) continue;
    auto id = IdentityOf(pod, options_.trust_domain);
    if (!id.ok()) {
      spdlog::warn("{}", id.status().ToString());
      continue;
    }
    if (!wanted.contains(*id) && wanted.size() >= options_.max_identities) {
      spdlog::warn("pod {}/{}: more than {} identities on this node; not issued", pod.ns, pod.name,
                   options_.max_identities);
      continue;
    }
    wanted[*id].push_back(absl::StrCat(pod.ns, "/", pod.name));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      it = wanted.contains(it->first) ? std::next(it) : entries_.erase(it);
    }
    for (auto& [id, names] : wanted) entries_[id].pods = std::move(names);
    kicked_ = true;
  }
  cv_.notify_all();
}

absl::StatusOr<std::shared_ptr<const Credential>> WorkloadIdentities::Get(const SpiffeId& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return absl::NotFoundError(absl::StrCat(id.ToString(), " is not a workload of this node"));
  if (!it->second.cred) {
    return absl::UnavailableError(absl::StrCat(id.ToString(), ": no certificate yet",
                                               it->second.last_error.empty() ? "" : ": ", it->second.last_error));
  }
  return it->second.cred;
}

std::vector<IdentityView> WorkloadIdentities::Views() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<IdentityView> out;
  out.reserve(entries_.size());
  for (const auto& [id, e] : entries_) {
    IdentityView v;
    v.id = id.ToString();
    v.pods = e.pods;
    v.issuer = issuer_name_;
    v.renewals = e.renewals;
    v.last_error = e.last_error;
    v.state = !e.last_error.empty() ? "failed" : e.cred ? "ready" : "pending";
    if (e.cred) {
      v.serial = e.cred->cert.serial_hex;
      v.not_before = e.cred->cert.not_before;
      v.not_after = e.cred->cert.not_after;
      v.renew_at = RenewalTime(e.cred->cert);
    }
    out.push_back(std::move(v));
  }
  return out;
}

void WorkloadIdentities::Kick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    kicked_ = true;
  }
  cv_.notify_all();
}

void WorkloadIdentities::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.tick), [&] { return stop_ || kicked_; });
    if (stop_) break;
    kicked_ = false;
    lock.unlock();
    Round();
    lock.lock();
  }
}

void WorkloadIdentities::Round() {
  const absl::Time now = absl::Now();
  // What to issue (wanted, none yet, not backing off) and what to drop.
  // The store is never called under mu_: its issuer's allow-check takes it.
  std::vector<SpiffeId> issue, keep;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, e] : entries_) {
      keep.push_back(id);
      if (!e.cred && now >= e.retry_at) issue.push_back(id);
    }
  }
  // Identities the store holds whose pods are gone: their keys go now.
  const std::set<SpiffeId> wanted(keep.begin(), keep.end());
  for (auto it = issued_.begin(); it != issued_.end();) {
    if (wanted.contains(*it)) {
      ++it;
    } else {
      store_->Remove(*it);
      it = issued_.erase(it);
    }
  }

  auto record = [&](const SpiffeId& id, absl::StatusOr<std::shared_ptr<const Credential>> cred, bool renewal) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;  // the pod left meanwhile
    Entry& e = it->second;
    if (cred.ok()) {
      const bool is_new = e.cred != *cred;
      if (is_new && renewal) ++e.renewals;
      e.cred = *std::move(cred);
      e.last_error.clear();
      e.backoff = absl::ZeroDuration();
      e.retry_at = absl::InfinitePast();
      return;
    }
    e.last_error = std::string(cred.status().message());
    e.backoff = std::clamp(e.backoff * 2, options_.retry_min, options_.retry_max);
    e.retry_at = now + e.backoff;
    spdlog::warn("certificate for {}: {} (retry in {})", id.ToString(), e.last_error, absl::FormatDuration(e.backoff));
  };
  for (const SpiffeId& id : issue) {
    auto cred = store_->Get(id);
    if (cred.ok()) issued_.insert(id);
    record(id, std::move(cred), false);
  }

  // A new trust bundle: every context is rebuilt with it (same keys).
  auto reloaded = bundle_.ReloadIfChanged();
  if (!reloaded.ok()) {
    spdlog::warn("trust bundle: {} (keeping the previous roots)", reloaded.status().ToString());
  } else if (*reloaded) {
    spdlog::info("trust bundle changed: {} root(s)", bundle_.size());
    for (const SpiffeId& id : issued_) record(id, store_->Get(id), false);
  }

  CertStore::RenewResult renewed = store_->RenewDue(now);
  for (const SpiffeId& id : renewed.renewed) record(id, store_->Get(id), true);
  for (auto& [id, status] : renewed.failed) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it != entries_.end()) it->second.last_error = std::string(status.message());
  }
}

}  // namespace ringmesh::proxy::tls
