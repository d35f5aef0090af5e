// The proxy data plane as one object: worker threads, the listeners inside
// every enrolled pod's network namespace, the route table of the current
// snapshot generation, and the read-only views the admin API serves.
//
//   auto core = ProxyCore::Create(options, std::make_shared<StaticOrigDstResolver>(dst));
//   (*core)->AddListener(*SocketAddress::Parse("127.0.0.1:0"));  // plain mode
//   (*core)->ApplySnapshot(snapshot, std::move(netns_fds));     // mesh mode
//   ...
//   (*core)->Drain(absl::Seconds(5));
//   (*core)->Stop();
//
// ApplySnapshot and AddListener are called from control threads (agent
// client, main); they create sockets on the calling thread (entering pod
// namespaces with setns and returning) and hand them to the workers.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "userspace/common/snapshot.h"
#include "userspace/common/unique_fd.h"
#include "userspace/proxy/connection.h"
#include "userspace/proxy/handover.h"
#include "userspace/proxy/netns_switch.h"
#include "userspace/proxy/orig_dst.h"
#include "userspace/proxy/proxy_options.h"
#include "userspace/proxy/route_table.h"
#include "userspace/proxy/stats.h"
#include "userspace/proxy/tls/workload_identities.h"

namespace ringmesh::proxy {

class Worker;

class ProxyCore {
 public:
  static absl::StatusOr<std::unique_ptr<ProxyCore>> Create(const ProxyOptions& options,
                                                           std::shared_ptr<OrigDstResolver> resolver);
  ~ProxyCore();
  ProxyCore(const ProxyCore&) = delete;
  ProxyCore& operator=(const ProxyCore&) = delete;

  IoBackend backend() const { return backend_; }
  const ProxyOptions& options() const { return options_; }

  // netns_fds[i] is the network namespace of snapshot.pods[i] (invalid for
  // pods without one). Pods are matched to the previous snapshot by
  // namespace identity: unchanged pods keep their listeners, removed pods'
  // listeners close (their connections drain). A pod whose listeners cannot
  // be opened is reported in config_dump and keeps the proxy not ready; the
  // rest of the snapshot still applies.
  absl::Status ApplySnapshot(const Snapshot& snapshot, std::vector<UniqueFd> netns_fds);

  // Plain-proxy mode: a listener (one socket per worker) in the proxy's own
  // namespace. Returns the bound address (port 0 picks one).
  absl::StatusOr<SocketAddress> AddListener(const SocketAddress& address, ListenerInfo identity = {});

  void StopAccepting();

  // Restart without drops (handover.h). The successor gives the sockets it
  // took over before the first snapshot; pods of that snapshot listen on
  // them instead of opening new ones (the rest close after it applies).
  void Inherit(InheritedListeners inherited);
  // Duplicates of every pod listening socket, for a successor; empty once
  // this proxy stops accepting.
  std::vector<ListenerSet> HandoverSets();
  // Stops accepting, waits for every worker to close its listening sockets
  // (serving what they had queued), then up to `timeout` in all for
  // connections to end on their own. True if none is left; Stop() resets
  // the rest.
  bool Drain(absl::Duration timeout);
  // Runs `fn` on every worker's thread, after what was posted there before
  // (tests hold a worker with it to queue connections in a listen backlog).
  void RunOnWorkers(const std::function<void()>& fn);
  // Resets every connection, drains every op and joins the workers
  // (idempotent; also run by the destructor).
  void Stop();

  bool ready() const { return ready_.load(); }
  uint64_t generation() const;
  ProxyStats& stats() { return stats_; }
  size_t active_connections() const;
  size_t listener_sockets() const;
  // Buffer chunks held by connections across workers (tests: memory bound).
  size_t buffer_chunks_outstanding() const;
  // Socket LB: connections connect() sent straight to each endpoint of the
  // current routes that may take them (no proxy involved; rm_direct_conns).
  struct DirectCount {
    std::string destination_service;
    std::string endpoint;
    uint64_t connections = 0;
    uint64_t failed = 0;  // of them, connects that never established
  };
  std::vector<DirectCount> DirectConnections();
  // Adds the direct connections established and closed since the last call
  // to the istio_tcp_connections_* cells of their (source workload,
  // destination service), so those metrics count every connection of a
  // route, through the proxy or not. Called before metrics are rendered.
  void SyncDirectMetrics();

  // Workload certificates (mTLS identities), when configured: told the
  // enrolled pods of every snapshot from then on. Set before the first
  // snapshot.
  void SetWorkloadIdentities(std::shared_ptr<tls::WorkloadIdentities> identities);
  std::shared_ptr<tls::WorkloadIdentities> workload_identities() const;

  // Gathered from the workers through their loops; waits at most `timeout`.
  std::vector<ConnectionInfo> Connections(absl::Duration timeout = absl::Seconds(1));
  nlohmann::json ConfigDump();

 private:
  struct PodListeners {
    Pod pod;
    std::shared_ptr<const UniqueFd> netns;
    uint16_t port = 0;
    uint64_t netns_cookie = 0;
    struct Key {
      uint64_t key;
      int worker;
      SocketAddress local;
    };
    std::vector<std::string> addresses;
    std::vector<Key> keys;  // one per (address, worker)
    // A duplicate of each listening socket, per address, for a successor
    // (handover.h); closed when the pod goes and when draining starts.
    std::vector<std::pair<std::string, std::vector<UniqueFd>>> dups;
    std::string error;  // empty when listening
  };

  ProxyCore(const ProxyOptions& options, std::shared_ptr<OrigDstResolver> resolver);
  absl::Status OpenPodListeners(PodListeners& p);
  std::optional<absl::StatusOr<std::vector<UniqueFd>>> TakeInherited(uint64_t cookie,
                                                                     const SocketAddress& address);
  // Opens one socket per worker on `address` (in the current namespace).
  absl::StatusOr<std::vector<UniqueFd>> OpenListenerSet(const SocketAddress& address);
  void ClosePodListeners(const PodListeners& p);
  // ListenerInfo::identity and principal from its pod fields.
  void SetIdentity(ListenerInfo& info) const;
  std::shared_ptr<const ListenerInfo> MakeInfo(const PodListeners& p, const SocketAddress& local) const;
  void PublishRoutes(std::shared_ptr<const RouteTable> routes);
  void UpdateReady();

  const ProxyOptions options_;
  IoBackend backend_ = IoBackend::kEpoll;
  std::shared_ptr<OrigDstResolver> resolver_;
  ProxyStats stats_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<uint64_t> next_key_{1};
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopped_{false};

  mutable std::mutex mu_;  // guards everything below
  bool snapshot_applied_ = false;
  uint64_t generation_ = 0;
  std::map<NetnsId, PodListeners> pods_;
  std::vector<std::string> static_listeners_;
  std::set<std::pair<std::string, std::string>> static_sources_;  // (workload, ns) of AddListener's
  std::shared_ptr<const RouteTable> routes_;
  InheritedListeners inherited_;
  bool accepting_ = true;
  std::shared_ptr<tls::WorkloadIdentities> identities_;

  std::mutex direct_sync_mu_;  // guards direct_seen_
  // (pod id, endpoint) -> (established, closed) already added to the cells.
  std::map<std::pair<uint32_t, std::string>, std::pair<uint64_t, uint64_t>> direct_seen_;
};

// Opens a TCP listener on `address` with SO_REUSEPORT; `sock_flags` are the
// loop's socket flags (SOCK_NONBLOCK for epoll).
absl::StatusOr<UniqueFd> OpenListenSocket(const SocketAddress& address, int sock_flags, int backlog);
// The socket flags a backend's loop expects (see EventLoop::socket_flags).
int SocketFlagsFor(IoBackend backend);
// Istio's source_workload for a pod: its app label, else its name.
std::string WorkloadName(const Pod& pod);

}  // namespace ringmesh::proxy
