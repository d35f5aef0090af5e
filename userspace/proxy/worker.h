// One data-plane thread: its own event loop (one io_uring ring or epoll
// set), its share of every listener (SO_REUSEPORT, one socket per worker),
// and the connections those listeners accepted. Everything here runs on the
// worker's thread; other threads talk to it only through Post().
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "userspace/common/unique_fd.h"
#include "userspace/proxy/byte_queue.h"
#include "userspace/proxy/connection.h"
#include "userspace/proxy/event_loop.h"
#include "userspace/proxy/inbound_tunnel.h"
#include "userspace/proxy/outbound_tunnel.h"
#include "userspace/proxy/netns_switch.h"
#include "userspace/proxy/orig_dst.h"
#include "userspace/proxy/proxy_options.h"
#include "userspace/proxy/route_table.h"
#include "userspace/proxy/stats.h"

namespace ringmesh::proxy {

namespace l7 {
class Http1Proxy;
}

class Worker {
 public:
  Worker(int id, const ProxyOptions& options, ProxyStats* stats, std::shared_ptr<OrigDstResolver> resolver);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts the thread and creates the loop on it (io_uring rings belong to
  // the thread that submits to them).
  absl::Status Start(IoBackend backend);
  // Thread-safe.
  void Post(absl::AnyInvocable<void()> fn);
  // Thread-safe: stop accepting, reset what is left, exit the thread once
  // every op drained, and join.
  void Shutdown();

  // --- on the worker thread (use Post from elsewhere) -----------------------
  void AddListener(uint64_t key, UniqueFd fd, std::shared_ptr<const ListenerInfo> info);
  void RemoveListener(uint64_t key);
  void UpdateListenerInfo(uint64_t key, std::shared_ptr<const ListenerInfo> info);
  void SetRoutes(std::shared_ptr<const RouteTable> routes) { routes_ = std::move(routes); }
  // Accepts and serves what is queued on a listening socket being removed.
  void DrainListenQueue(int fd, const std::shared_ptr<const ListenerInfo>& info);
  void StopAccepting();
  void AbortAll(CloseReason reason);
  std::vector<ConnectionInfo> Connections() const;

  // --- for Connection -------------------------------------------------------
  int id() const { return id_; }
  EventLoop* loop() { return loop_.get(); }
  ChunkPool* pool() { return &pool_; }
  ProxyStats& stats() { return *stats_; }
  const ProxyOptions& options() const { return options_; }
  OrigDstResolver& resolver() { return *resolver_; }
  const std::shared_ptr<const RouteTable>& routes() const { return routes_; }
  // A socket of `family` in the listener's pod namespace, with SO_MARK and
  // the loop's socket flags; -errno on failure.
  int CreateUpstreamSocket(const ListenerInfo& listener, int family);
  void Destroy(Connection* c);
  // Hands an accepted connection of `route` to the L7 proxy (l7/) when it
  // serves that route; false: the caller carries it at L4.
  bool AdoptHttp1(uint64_t id, int fd, const std::shared_ptr<const ListenerInfo>& listener,
                  const SocketAddress& peer, const SocketAddress& orig_dst,
                  const std::shared_ptr<const RouteTable>& routes, const ServiceRoute* route);
  void DestroyTunnel(InboundTunnel* t);
  void DestroyOutbound(OutboundTunnel* t);
  // A CONNECT stream to `target`, a mesh pod of another node, in a pooled
  // mTLS tunnel from the listener's pod (its certificate) to `peer`'s
  // proxy at <target IP>:15008.
  absl::StatusOr<std::unique_ptr<TunnelStream>> OpenTunnelStream(const ListenerInfo& listener,
                                                                 const SocketAddress& target, const MeshPeer& peer);

  // Thread-safe counters.
  size_t connection_count() const { return connection_count_.load(std::memory_order_relaxed); }
  // Acquire: pairs with UpdateCounters, which stores connection_count_ first.
  size_t listener_count() const { return listener_count_.load(std::memory_order_acquire); }
  size_t chunks_outstanding() const { return chunks_outstanding_.load(std::memory_order_relaxed); }

 private:
  class Listener;
  void ThreadMain(IoBackend backend, std::function<void(absl::Status)> ready);
  void OnAccepted(int fd, const std::shared_ptr<const ListenerInfo>& info);
  void ListenerGone(uint64_t key);
  void UpdateCounters();
  // Spare upstream sockets, per (pod namespace, address family).
  struct SparePool {
    std::shared_ptr<const UniqueFd> netns;  // keeps the namespace fd valid
    std::vector<int> fds;
    int64_t last_used_ns = 0;
  };
  int MakeUpstreamSocket(int family);  // in the current namespace
  void SweepSpares(bool all);

  const int id_;
  const ProxyOptions options_;
  ProxyStats* stats_;
  std::shared_ptr<OrigDstResolver> resolver_;
  std::thread thread_;
  std::unique_ptr<EventLoop> loop_;
  IoBackend backend_ = IoBackend::kEpoll;
  std::unique_ptr<NetnsSwitch> netns_;
  ChunkPool pool_;
  std::shared_ptr<const RouteTable> routes_;
  std::unordered_map<uint64_t, std::unique_ptr<Listener>> listeners_;
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;
  // HTTP/1 connections and their upstream pool; made at the first one.
  std::unique_ptr<l7::Http1Proxy> l7_;
  std::unordered_map<uint64_t, std::unique_ptr<InboundTunnel>> tunnels_;
  // Outbound tunnels; the pool names those that may take new streams, by
  // (source identity, destination identity, destination IP).
  std::unordered_map<uint64_t, std::unique_ptr<OutboundTunnel>> outbound_;
  std::multimap<std::string, OutboundTunnel*> tunnel_pool_;
  void SweepTunnels(int64_t now);
  std::map<std::pair<const UniqueFd*, int>, SparePool> spares_;
  int64_t next_sweep_ns_ = 0;
  uint64_t next_conn_ = 1;
  bool exiting_ = false;
  std::atomic<bool> exit_requested_{false};
  std::atomic<size_t> connection_count_{0};
  std::atomic<size_t> listener_count_{0};
  std::atomic<size_t> chunks_outstanding_{0};
};

}  // namespace ringmesh::proxy
