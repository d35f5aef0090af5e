// The Kubernetes endpoint source: mirrors Services, EndpointSlices,
// Namespaces and this node's Pods from the API server, a compact view
// of every other node's pods (remote_pods) and Istio AuthorizationPolicies
// (when the CRD is installed), (list + watch on
// background threads, see reflector.h) and turns them into the agent's
// Snapshot: the node's pods with their enrollment (label ringmesh.io/mode
// on the pod or its namespace, opt-out and fail-mode annotations), cgroup
// and netns, and every Service VIP with its endpoints. docs/kubernetes.md
// describes the behaviour for operators.
//
// Poll() never touches the network: it reads the in-memory cache under one
// lock, so each snapshot is one consistent view of it, and returns a new
// snapshot only when the result differs from the last one. Until every kind
// has been listed once, Poll() returns nullopt (a snapshot with the pods but
// not yet the services would withdraw every VIP). When the API server goes
// away the cache, and so the last snapshot, keeps serving; Health() says why.
//
//   KubernetesOptions opts;
//   opts.node_name = "node-1";                       // or $NODE_NAME
//   ASSIGN_OR_RETURN(auto source, KubernetesSource::Create(opts));
//   Agent agent(agent_opts, std::move(source));      // the agent polls it
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "userspace/agent/agent.h"
#include "userspace/agent/k8s/api_client.h"
#include "userspace/agent/k8s/objects.h"
#include "userspace/agent/k8s/pod_locator.h"
#include "userspace/agent/k8s/reflector.h"
#include "userspace/common/snapshot.h"

namespace ringmesh::agent::k8s {

struct KubernetesOptions {
  // Where the API server is, in order of precedence:
  std::string api_server;  // explicit URL (tests, kubectl proxy): "http://127.0.0.1:8001"
  std::string kubeconfig;  // kubeconfig file (outside a cluster)
  std::string kubeconfig_context;
  // otherwise in-cluster: KUBERNETES_SERVICE_HOST/_PORT and the service
  // account files (these override their paths; also apply to api_server).
  std::string token_file;
  std::string ca_file;
  std::chrono::milliseconds token_refresh{60'000};

  std::string node_name;  // required; Create() falls back to $NODE_NAME

  ReflectorOptions reflector;  // backoff, timeouts, page size, bounds

  // Pod discovery (used when Create() is given no PodLocator).
  std::string cgroup_root;  // "" = DefaultCgroupRoot()
  CgroupDriver cgroup_driver = CgroupDriver::kAuto;
  std::string kubelet_cgroup_root = "/";
  // How often located pods are checked again (their netns process may have
  // been replaced); unlocated pods are retried on every Poll().
  std::chrono::milliseconds relocate_interval{2'000};

  uint16_t outbound_port = 15001;

  // Also watch every pod of the cluster (no field selector), so that the
  // snapshot carries the mesh pods of other nodes (Snapshot::remote_pods:
  // connections to them are tunnelled with mTLS to their node's proxy).
  // Costs one more watch and RemotePodObject's bytes per pod.
  bool remote_pods = true;
  // All pages of the cluster-wide pod list together (each page is bounded by
  // reflector.max_list_bytes; the store keeps ~200 bytes of each pod's
  // several KiB of JSON). 4 GiB: 100k pods at up to 40 KiB each.
  size_t remote_pods_max_list_bytes = size_t{4} << 30;

  // Also watch Istio AuthorizationPolicies cluster-wide
  // (security.istio.io/v1) into Snapshot::authorization_policies. Where the
  // CRD is not installed the list answers 404: the kind then counts as
  // listed and empty, so Poll() is not held back, and the list is retried
  // with the reflector's backoff (growing to reflector.backoff_max) until
  // the CRD appears. Any other failure (e.g. 403: the agent's ClusterRole
  // lacks authorizationpolicies) holds Poll() back like the other kinds:
  // publishing without the policies would silently drop every DENY.
  bool authorization_policies = true;
  // Bounds on policies; more than authz.max_policies makes Poll() fail
  // (the last snapshot keeps serving) rather than drop some.
  AuthzLimits authz;
};

class KubernetesSource : public EndpointSource {
 public:
  // Resolves the API configuration (errors here are configuration errors:
  // a bad kubeconfig, no node name) and starts the watches. An unreachable
  // API server is not an error: it is retried with backoff.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<KubernetesSource>> Create(
      KubernetesOptions opts, std::unique_ptr<PodLocator> locator = nullptr);
  ~KubernetesSource() override;

  absl::StatusOr<std::optional<Snapshot>> Poll() override;
  std::string Describe() const override;

  // "synced", or why not, e.g.
  //   "connecting to https://10.96.0.1:443: Service: Connection refused, retry in 3.2s"
  //   "Pod: HTTP 401 ... (serving the last state)"
  std::string Health() const override;
  // Every kind has been listed at least once.
  bool synced() const;
  // Per-kind reflector state, for status and tests.
  std::map<std::string, ReflectorState> reflector_states() const;
  // Objects skipped as malformed since the start, by kind ("Pod": 3),
  // counted each time one arrives (in a list or an event). A pod whose
  // metadata.uid is not a UUID is one of these: the UID becomes part of a
  // cgroup path, so such a pod is never located nor enrolled.
  std::map<std::string, uint64_t> skipped_objects() const;

 private:
  struct Cache;
  template <typename T>
  class Store;

  KubernetesSource(KubernetesOptions opts, ApiConfig api, std::unique_ptr<PodLocator> locator);
  void Start();
  std::string HealthText() const;
  Snapshot Build(bool* pending);

  const KubernetesOptions opts_;
  const ApiConfig api_;
  std::unique_ptr<PodLocator> locator_;
  std::unique_ptr<TokenSource> token_;
  std::unique_ptr<Cache> cache_;
  std::vector<std::unique_ptr<ObjectStore>> stores_;
  std::vector<std::unique_ptr<Reflector>> reflectors_;

  // Poll() state (the agent calls Poll from one thread).
  uint64_t built_version_ = 0;
  bool have_built_ = false;
  bool pending_pods_ = false;
  std::chrono::steady_clock::time_point next_relocate_{};
  std::optional<Snapshot> last_;
  std::set<std::string> reported_;  // "<reason>:<pod uid>", so each pod problem is logged once
};

}  // namespace ringmesh::agent::k8s
