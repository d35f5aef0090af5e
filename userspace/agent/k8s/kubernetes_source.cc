#include "userspace/agent/k8s/kubernetes_source.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"
#include "userspace/agent/utf8.h"

namespace ringmesh::agent::k8s {

using Clock = std::chrono::steady_clock;

// Everything the reflectors have seen, by "<ns>/<name>" (namespaces: name).
// One mutex for all four kinds: a snapshot is built from one view of it.
struct KubernetesSource::Cache {
  mutable std::mutex mu;
  uint64_t version = 0;  // bumped on every change
  std::map<std::string, ServiceObject> services;
  std::map<std::string, EndpointSliceObject> slices;
  std::map<std::string, NamespaceObject> namespaces;
  std::map<std::string, PodObject> pods;
  RemotePodMap remote_pods;  // pods of other nodes
  std::map<std::string, AuthorizationPolicy> authz_policies;
  std::map<std::string, uint64_t> skipped;  // malformed objects seen, by kind
};

// Parses what one reflector delivers into one map of the cache. Bad objects
// are logged with their namespace/name and skipped; the version of the
// object stored before (if any) stays, so the last good state keeps serving.
template <typename T>
class KubernetesSource::Store : public ObjectStore {
 public:
  using Parser = std::function<absl::StatusOr<std::optional<T>>(const Json&)>;
  Store(std::string kind, Cache* cache, std::map<std::string, T> Cache::*member, Parser parse,
        std::function<bool(const T&)> wanted)
      : kind_(std::move(kind)),
        cache_(cache),
        member_(member),
        parse_(std::move(parse)),
        wanted_(std::move(wanted)) {}

  void BeginList() override {
    next_.clear();
    bad_.clear();
  }

  void AddListItem(const Json& item) override {
    std::string key = ObjectKey(item);
    auto parsed = Parse(item, key);
    if (!parsed.ok()) {
      if (!key.empty()) bad_.push_back(key);
      return;
    }
    if (*parsed) next_[key] = std::move(**parsed);
  }

  void EndList() override {
    std::lock_guard lock(cache_->mu);
    auto& map = cache_->*member_;
    for (const auto& key : bad_) {
      if (auto it = map.find(key); it != map.end() && !next_.count(key)) next_[key] = it->second;
    }
    if constexpr (std::is_same_v<T, PodObject>) {
      for (const auto& [key, pod] : next_) LogWarnings(key, pod, map);
    }
    if (next_ != map) {
      map = std::move(next_);
      ++cache_->version;
    }
    BeginList();  // frees what is left
  }

  void AbortList() override { BeginList(); }

  void Apply(const std::string& type, const Json& object) override {
    std::string key = ObjectKey(object);
    if (key.empty()) {
      spdlog::warn("skipping {} {} event without metadata.name", kind_, type);
      return;
    }
    if (type == "DELETED") {
      std::lock_guard lock(cache_->mu);
      if ((cache_->*member_).erase(key)) ++cache_->version;
      return;
    }
    auto parsed = Parse(object, key);
    if (!parsed.ok()) return;
    std::lock_guard lock(cache_->mu);
    auto& map = cache_->*member_;
    if (!*parsed) {
      if (map.erase(key)) ++cache_->version;  // e.g. a Service that just became headless
      return;
    }
    if constexpr (std::is_same_v<T, PodObject>) LogWarnings(key, **parsed, map);
    auto it = map.find(key);
    if (it == map.end() || !(it->second == **parsed)) {
      map.insert_or_assign(key, std::move(**parsed));
      ++cache_->version;
    }
  }

 private:
  absl::StatusOr<std::optional<T>> Parse(const Json& item, const std::string& key) {
    auto parsed = parse_(item);
    if (!parsed.ok()) {
      spdlog::warn("skipping malformed {} {}: {}", kind_, key.empty() ? "(no name)" : key,
                   SanitizeUtf8(std::string(parsed.status().message())));
      std::lock_guard lock(cache_->mu);
      ++cache_->skipped[kind_];
      return parsed.status();
    }
    if (*parsed && wanted_ && !wanted_(**parsed)) return std::optional<T>();
    return parsed;
  }

  // Annotation problems are reported when they change, not on every event.
  void LogWarnings(const std::string& key, const PodObject& pod,
                   const std::map<std::string, PodObject>& old) {
    auto it = old.find(key);
    if (pod.warnings.empty() || (it != old.end() && it->second.warnings == pod.warnings)) return;
    for (const auto& w : pod.warnings) spdlog::warn("pod {}: {}", key, w);
  }

  const std::string kind_;
  Cache* const cache_;
  std::map<std::string, T> Cache::*const member_;
  const Parser parse_;
  const std::function<bool(const T&)> wanted_;
  // The list being received (reflector thread only).
  std::map<std::string, T> next_;
  std::vector<std::string> bad_;  // keys of malformed items in it
};

namespace {

constexpr char kAuthzKind[] = "AuthorizationPolicy";

// The CRD is not installed: the list of its kind answered 404 (the
// reflector reports it as "list <kind>: HTTP 404: ...").
bool KindAbsent(const Reflector& r, const ReflectorState& st) {
  return r.spec().kind == kAuthzKind && !st.synced &&
         absl::StartsWith(st.error, absl::StrCat("list ", kAuthzKind, ": HTTP 404"));
}

std::string Seconds(Clock::duration d) {
  char buf[32];
  std::snprintf(
      buf, sizeof(buf), "%.1fs",
      static_cast<double>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) / 1000.0);
  return buf;
}

// The Service as the proxy sees it: VIPs, ports with the target port
// resolved through the EndpointSlices (a named targetPort is only known
// there), and the endpoints of all its slices, deduplicated by IP.
Service BuildService(const ServiceObject& svc, const std::vector<const EndpointSliceObject*>& slices) {
  Service out;
  out.ns = svc.ns;
  out.name = svc.name;
  out.vips = svc.vips;
  for (const auto& p : svc.ports) {
    ServicePort sp{p.name, p.port, p.target_port, p.protocol};
    // Slices carry the port each endpoint really listens on, by Service
    // port name; that is what kube-proxy uses too.
    bool resolved = false;
    for (const auto* slice : slices) {
      for (const auto& sport : slice->ports) {
        if (sport.name == p.name) {
          sp.target_port = sport.port;
          resolved = true;
          break;
        }
      }
      if (resolved) break;
    }
    if (sp.target_port == 0) continue;  // named target port, no endpoints yet: nowhere to send
    out.ports.push_back(sp);
  }

  struct Merged {
    bool ready = false, serving = false, terminating = true;
    std::string pod;
  };
  std::map<IpAddress, Merged> merged;
  for (const auto* slice : slices) {
    for (const auto& ep : slice->endpoints) {
      // An endpoint can sit in two slices while the controller moves it.
      auto [it, fresh] = merged.try_emplace(ep.ip);
      Merged& m = it->second;
      m.ready |= ep.ready;
      m.serving |= ep.serving;
      m.terminating = fresh ? ep.terminating : (m.terminating && ep.terminating);
      if (m.pod.empty()) m.pod = ep.pod;
    }
  }
  bool any_ready = std::any_of(merged.begin(), merged.end(), [](const auto& kv) { return kv.second.ready; });
  for (const auto& [ip, m] : merged) {
    // kube-proxy's rule: ready endpoints take the traffic; when there are
    // none, endpoints that are terminating but still serving do, so a
    // rolling update of the last replica drains instead of failing.
    bool use = any_ready ? m.ready : (m.serving && m.terminating);
    out.endpoints.push_back(Endpoint{ip, use, m.pod});
  }
  return out;
}

}  // namespace

KubernetesSource::KubernetesSource(KubernetesOptions opts, ApiConfig api, std::unique_ptr<PodLocator> locator)
    : opts_(std::move(opts)),
      api_(std::move(api)),
      locator_(std::move(locator)),
      cache_(std::make_unique<Cache>()) {}

KubernetesSource::~KubernetesSource() {
  for (auto& r : reflectors_) r->Stop();
}

absl::StatusOr<std::unique_ptr<KubernetesSource>> KubernetesSource::Create(
    KubernetesOptions opts, std::unique_ptr<PodLocator> locator) {
  if (opts.node_name.empty()) {
    if (const char* env = std::getenv("NODE_NAME")) opts.node_name = env;
  }
  if (opts.node_name.empty()) {
    return absl::InvalidArgumentError("kubernetes: the node name is required (--node-name or $NODE_NAME)");
  }
  ApiConfig api;
  if (!opts.api_server.empty()) {
    api.server = opts.api_server;
    while (!api.server.empty() && api.server.back() == '/') api.server.pop_back();
    api.token_file = opts.token_file;
    api.tls.ca_file = opts.ca_file;
  } else if (!opts.kubeconfig.empty()) {
    auto cfg = LoadKubeconfig(opts.kubeconfig, opts.kubeconfig_context);
    if (!cfg.ok()) return cfg.status();
    api = std::move(*cfg);
    if (!opts.token_file.empty()) api.token_file = opts.token_file;
    if (!opts.ca_file.empty()) api.tls.ca_file = opts.ca_file;
  } else {
    auto cfg = InClusterConfig(opts.token_file, opts.ca_file);
    if (!cfg.ok()) return cfg.status();
    api = std::move(*cfg);
  }
  if (!absl::StartsWith(api.server, "http://") && !absl::StartsWith(api.server, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("kubernetes: API server \"", api.server, "\" is not an http:// or https:// URL"));
  }
  auto& r = opts.reflector;
  if (r.backoff_initial.count() <= 0 || r.backoff_max < r.backoff_initial) {
    return absl::InvalidArgumentError("kubernetes: backoff must satisfy 0 < initial <= max");
  }
  if (r.max_list_bytes < 4096 || r.max_event_bytes < 4096) {
    return absl::InvalidArgumentError("kubernetes: max_list_bytes and max_event_bytes must be at least 4096");
  }
  if (r.stall_timeout < std::chrono::seconds(1)) {
    return absl::InvalidArgumentError("kubernetes: the stall timeout must be at least 1s");
  }
  // A quiet watch must end on the server's timeout before it looks stalled.
  auto stall_s = std::chrono::duration_cast<std::chrono::seconds>(r.stall_timeout);
  if (r.watch_timeout_max >= stall_s) {
    r.watch_timeout_max = std::max<std::chrono::seconds>(std::chrono::seconds(1), stall_s * 2 / 3);
  }
  r.watch_timeout_min = std::clamp(r.watch_timeout_min, std::chrono::seconds(1), r.watch_timeout_max);
  if (!locator) {
    CgroupPodLocatorOptions lo;
    lo.cgroup_root = opts.cgroup_root.empty() ? DefaultCgroupRoot() : opts.cgroup_root;
    lo.driver = opts.cgroup_driver;
    lo.kubelet_cgroup_root = opts.kubelet_cgroup_root;
    locator = std::make_unique<CgroupPodLocator>(lo);
  }
  std::unique_ptr<KubernetesSource> src(
      new KubernetesSource(std::move(opts), std::move(api), std::move(locator)));
  src->Start();
  return src;
}

void KubernetesSource::Start() {
  token_ = std::make_unique<TokenSource>(api_.token, api_.token_file, opts_.token_refresh);
  Cache* c = cache_.get();
  auto add = [&](std::unique_ptr<ObjectStore> store, ResourceSpec spec) {
    reflectors_.push_back(
        std::make_unique<Reflector>(std::move(spec), api_, token_.get(), opts_.reflector, store.get()));
    stores_.push_back(std::move(store));
  };
  add(std::make_unique<Store<ServiceObject>>("Service", c, &Cache::services, &ParseService, nullptr),
      {"Service", "/api/v1/services", ""});
  add(std::make_unique<Store<EndpointSliceObject>>("EndpointSlice", c, &Cache::slices, &ParseEndpointSlice,
                                                   nullptr),
      {"EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices", ""});
  add(std::make_unique<Store<NamespaceObject>>("Namespace", c, &Cache::namespaces, &ParseNamespace, nullptr),
      {"Namespace", "/api/v1/namespaces", ""});
  // Only this node's pods: the field selector keeps the watch small; the
  // filter guards against a server (or proxy) that ignores it.
  std::string node = opts_.node_name;
  add(std::make_unique<Store<PodObject>>("Pod", c, &Cache::pods, &ParsePod,
                                         [node](const PodObject& p) { return p.node_name == node; }),
      {"Pod", "/api/v1/pods", absl::StrCat("spec.nodeName=", node)});
  if (opts_.remote_pods) {
    // Every pod of the cluster, stored compactly, minus this node's (which
    // the watch above has in full).
    add(std::make_unique<Store<RemotePodObject>>(
            "RemotePod", c, &Cache::remote_pods, &ParseRemotePod,
            [node](const RemotePodObject& p) { return *p.node != node; }),
        {"RemotePod", "/api/v1/pods", "", opts_.remote_pods_max_list_bytes});
  }
  if (opts_.authorization_policies) {
    const AuthzLimits limits = opts_.authz;
    add(std::make_unique<Store<AuthorizationPolicy>>(
            kAuthzKind, c, &Cache::authz_policies,
            [limits](const Json& j) { return ParseAuthorizationPolicy(j, limits); }, nullptr),
        {kAuthzKind, "/apis/security.istio.io/v1/authorizationpolicies", ""});
  }
  for (auto& r : reflectors_) r->Start();
}

bool KubernetesSource::synced() const {
  return std::all_of(reflectors_.begin(), reflectors_.end(), [](const auto& r) {
    auto st = r->state();
    return st.synced || KindAbsent(*r, st);
  });
}

std::map<std::string, ReflectorState> KubernetesSource::reflector_states() const {
  std::map<std::string, ReflectorState> out;
  for (const auto& r : reflectors_) out[r->spec().kind] = r->state();
  return out;
}

std::string KubernetesSource::Describe() const {
  return absl::StrCat("kubernetes ", api_.server, " (node ", opts_.node_name, ")");
}

std::map<std::string, uint64_t> KubernetesSource::skipped_objects() const {
  std::lock_guard lock(cache_->mu);
  return cache_->skipped;
}

std::string KubernetesSource::Health() const { return SanitizeUtf8(HealthText()); }

std::string KubernetesSource::HealthText() const {
  auto now = Clock::now();
  bool all_synced = true;
  std::vector<std::string> waiting;
  std::string error;
  for (const auto& r : reflectors_) {
    auto st = r->state();
    if (KindAbsent(*r, st)) continue;  // an optional CRD that is not installed: nothing wrong
    if (!st.synced) {
      all_synced = false;
      waiting.push_back(r->spec().kind);
    }
    if (!st.error.empty() && error.empty()) {
      error = st.error;
      if (st.retry_at > now) {
        absl::StrAppend(&error, ", retry in ", Seconds(st.retry_at - now));
      } else {
        absl::StrAppend(&error, ", retrying");
      }
    }
  }
  if (!error.empty()) {
    if (!all_synced) return absl::StrCat("connecting to ", api_.server, ": ", error);
    return absl::StrCat(api_.server, ": ", error, " (serving the last state)");
  }
  if (!all_synced)
    return absl::StrCat("syncing with ", api_.server, ": waiting for ", absl::StrJoin(waiting, ", "));
  return "synced";
}

Snapshot KubernetesSource::Build(bool* pending) {
  Snapshot snap;
  snap.outbound_port = opts_.outbound_port;
  std::vector<PodObject> pods;
  std::map<std::string, std::string> ns_modes;
  {
    std::lock_guard lock(cache_->mu);
    built_version_ = cache_->version;
    std::map<std::string, std::vector<const EndpointSliceObject*>> by_service;
    for (const auto& [key, slice] : cache_->slices) {
      by_service[absl::StrCat(slice.ns, "/", slice.service)].push_back(&slice);
    }
    static const std::vector<const EndpointSliceObject*> kNone;
    for (const auto& [key, svc] : cache_->services) {
      auto it = by_service.find(key);
      snap.services.push_back(BuildService(svc, it == by_service.end() ? kNone : it->second));
    }
    pods.reserve(cache_->pods.size());
    for (const auto& [key, pod] : cache_->pods) pods.push_back(pod);
    for (const auto& [name, ns] : cache_->namespaces) ns_modes[name] = ns.mode;
    snap.remote_pods.reserve(cache_->remote_pods.size());
    for (const auto& [key, rp] : cache_->remote_pods) {
      RemotePod out;
      out.ns = *rp.ns;
      out.name = key.substr(key.find('/') + 1);
      out.service_account = *rp.service_account;
      out.node = *rp.node;
      out.ips.assign(rp.ips.begin(), rp.ips.begin() + rp.ip_count);
      const auto ns_it = ns_modes.find(*rp.ns);
      out.enrolled = rp.mode == PodMode::kEnabled ||
                     (rp.mode == PodMode::kInherit && ns_it != ns_modes.end() && ns_it->second == "enabled");
      snap.remote_pods.push_back(std::move(out));
    }
    snap.authorization_policies.reserve(cache_->authz_policies.size());
    for (const auto& [key, policy] : cache_->authz_policies) snap.authorization_policies.push_back(policy);
  }

  // Locating touches the filesystem: done outside the lock so the watches
  // never wait for it.
  std::set<std::string> live;
  for (auto& pod : pods) {
    if (pod.phase == "Succeeded" || pod.phase == "Failed") continue;  // no process, no netns
    live.insert(pod.uid);
    bool enrolled =
        pod.mode == PodMode::kEnabled || (pod.mode == PodMode::kInherit && ns_modes[pod.ns] == "enabled");
    std::string key = absl::StrCat(pod.ns, "/", pod.name);
    if (enrolled && pod.host_network) {
      // Its "netns" is the node's: enrolling it would capture the node.
      if (reported_.insert("hostnet:" + pod.uid).second) {
        spdlog::warn("pod {}: uses the host network; not enrolled", key);
      }
      enrolled = false;
    }
    Pod out;
    out.ns = pod.ns;
    out.name = pod.name;
    out.uid = pod.uid;
    out.service_account = pod.service_account.empty() ? "default" : pod.service_account;
    out.ips = pod.ips;
    out.labels = pod.labels;
    out.enrolled = enrolled;
    if (enrolled) {
      auto where = locator_->Locate({pod.ns, pod.name, pod.uid, pod.qos_class});
      if (!where.ok()) {
        // Just scheduled: the sandbox or its cgroup is not there yet.
        *pending = true;
        if (reported_.insert("unlocated:" + pod.uid).second) {
          spdlog::info("pod {}: not enrolled yet: {}; retrying", key, std::string(where.status().message()));
        }
        continue;
      }
      reported_.erase("unlocated:" + pod.uid);
      out.cgroup_path = where->cgroup_path;
      out.netns_path = where->netns_path;
      out.fail_mode = pod.fail_mode;
      out.opt_out_ports = pod.opt_out_ports;
      out.opt_out_cidrs = pod.opt_out_cidrs;
    }
    snap.pods.push_back(std::move(out));
  }
  std::erase_if(reported_, [&](const std::string& r) { return !live.count(r.substr(r.find(':') + 1)); });
  return snap;
}

absl::StatusOr<std::optional<Snapshot>> KubernetesSource::Poll() {
  // Never publish a partial world: with pods but no services yet, every VIP
  // would be withdrawn for the time of the first list.
  if (!synced()) return std::optional<Snapshot>();
  auto now = Clock::now();
  uint64_t version;
  {
    std::lock_guard lock(cache_->mu);
    version = cache_->version;
  }
  if (have_built_ && version == built_version_ && !pending_pods_ && now < next_relocate_) {
    return std::optional<Snapshot>();
  }
  {
    std::lock_guard lock(cache_->mu);
    if (cache_->authz_policies.size() > opts_.authz.max_policies) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "kubernetes: ", cache_->authz_policies.size(), " AuthorizationPolicies, more than the limit of ",
          opts_.authz.max_policies, "; not publishing a snapshot without some of them"));
    }
  }
  bool pending = false;
  Snapshot snap = Build(&pending);
  have_built_ = true;
  pending_pods_ = pending;
  next_relocate_ = now + opts_.relocate_interval;
  if (last_ && *last_ == snap) return std::optional<Snapshot>();
  last_ = snap;
  return std::optional<Snapshot>(std::move(snap));
}

}  // namespace ringmesh::agent::k8s
