#include "userspace/proxy/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <future>

#include "spdlog/spdlog.h"
#include "absl/strings/str_cat.h"
#include "userspace/proxy/hbone/hbone_request.h"
#include "userspace/proxy/l7/http1_connection.h"
#include "userspace/proxy/proxy_core.h"
#include "userspace/proxy/socket_mark.h"
#include "userspace/proxy/tls/workload_identities.h"

namespace ringmesh::proxy {

// One listening socket of this worker. Owns the fd; removal cancels the
// multishot accept and closes the fd only after its final completion.
class Worker::Listener final : public IoHandler {
 public:
  Listener(Worker* w, uint64_t key, int fd, std::shared_ptr<const ListenerInfo> info)
      : w_(w), key_(key), fd_(fd), info_(std::move(info)) {}
  ~Listener() {
    if (accept_op_.in_flight() || retry_op_.in_flight()) {
      spdlog::critical("listener freed with ops in flight");
      std::abort();
    }
  }

  void Arm() { w_->loop()->Accept(&accept_op_, fd_); }
  void Remove() {
    if (removing_) return;
    removing_ = true;
    w_->loop()->Cancel(&accept_op_);
    w_->loop()->Cancel(&retry_op_);
    MaybeGone();
  }
  void set_info(std::shared_ptr<const ListenerInfo> info) { info_ = std::move(info); }
  const std::shared_ptr<const ListenerInfo>& info() const { return info_; }

  void OnCompletion(IoOp* op, const Completion& c) override {
    if (op == &retry_op_) {
      if (!removing_ && c.res == 0) Arm();
    } else if (c.res >= 0) {
      // Also after Remove(): the kernel already handed this connection to
      // us, so it is served (and drained) like any other rather than
      // dropped on the floor.
      w_->OnAccepted(c.res, info_);
    } else if (!c.more && !removing_) {
      // EMFILE/ENFILE/ENOMEM end a multishot accept; back off briefly
      // instead of spinning on the same error.
      if (c.res != -ECANCELED) spdlog::warn("accept on {}: {}", info_->local.ToString(), std::strerror(-c.res));
      w_->loop()->StartTimer(&retry_op_, absl::Milliseconds(50));
      return;
    }
    if (!c.more && !removing_ && op == &accept_op_) {
      Arm();  // the kernel ended the multishot (e.g. CQ overflow): re-arm
      return;
    }
    MaybeGone();
  }

 private:
  void MaybeGone() {
    if (!removing_ || gone_ || accept_op_.in_flight() || retry_op_.in_flight()) return;
    gone_ = true;
    // Accept waits are exclusive: a wake-up this listener took while its
    // accept was being cancelled leaves its connection queued with no other
    // waiter told. With the socket shared (handed to a successor, or other
    // sockets of the group), take what is queued now and serve it.
    w_->DrainListenQueue(fd_, info_);
    w_->loop()->Close(fd_);
    Worker* w = w_;
    uint64_t key = key_;
    w->loop()->Defer([w, key] { w->ListenerGone(key); });
  }

  Worker* w_;
  uint64_t key_;
  int fd_;
  std::shared_ptr<const ListenerInfo> info_;
  IoOp accept_op_{this, OpType::kAccept};
  IoOp retry_op_{this, OpType::kTimer};
  bool removing_ = false;
  bool gone_ = false;
};

Worker::Worker(int id, const ProxyOptions& options, ProxyStats* stats, std::shared_ptr<OrigDstResolver> resolver)
    : id_(id), options_(options), stats_(stats), resolver_(std::move(resolver)) {}

Worker::~Worker() { Shutdown(); }

absl::Status Worker::Start(IoBackend backend) {
  std::promise<absl::Status> ready;
  auto fut = ready.get_future();
  thread_ = std::thread([this, backend, &ready] {
    ThreadMain(backend, [&ready](absl::Status s) { ready.set_value(std::move(s)); });
  });
  absl::Status s = fut.get();
  if (!s.ok()) thread_.join();
  return s;
}

void Worker::ThreadMain(IoBackend backend, std::function<void(absl::Status)> ready) {
  auto ns = NetnsSwitch::ForCurrentThread();
  if (!ns.ok()) {
    ready(ns.status());
    return;
  }
  netns_ = std::make_unique<NetnsSwitch>(std::move(*ns));
  auto loop = CreateEventLoop(backend, options_.loop);
  if (!loop.ok()) {
    ready(loop.status());
    return;
  }
  loop_ = std::move(*loop);
  backend_ = backend;
  ready(absl::OkStatus());

  while (!(exiting_ && listeners_.empty() && conns_.empty() && tunnels_.empty() && outbound_.empty() &&
           (!l7_ || l7_->empty()))) {
    loop_->RunOnce(absl::Milliseconds(100));
    UpdateCounters();
    SweepSpares(exiting_);
  }
  SweepSpares(true);
  l7_.reset();
  // Destroyed on this thread: an io_uring ring set up for a single issuer
  // must not be touched from another.
  loop_.reset();
  UpdateCounters();
}

void Worker::UpdateCounters() {
  connection_count_.store(conns_.size() + tunnels_.size() + (l7_ ? l7_->connections() : 0),
                          std::memory_order_relaxed);
  listener_count_.store(listeners_.size(), std::memory_order_release);
  chunks_outstanding_.store(pool_.outstanding(), std::memory_order_relaxed);
}

void Worker::Post(absl::AnyInvocable<void()> fn) { loop_->Post(std::move(fn)); }

void Worker::Shutdown() {
  if (!thread_.joinable()) return;
  if (!exit_requested_.exchange(true)) {
    Post([this] {
      exiting_ = true;
      StopAccepting();
      AbortAll(CloseReason::kDrain);
    });
  }
  thread_.join();
}

void Worker::AddListener(uint64_t key, UniqueFd fd, std::shared_ptr<const ListenerInfo> info) {
  if (exiting_) return;  // fd closes here
  auto l = std::make_unique<Listener>(this, key, fd.Release(), std::move(info));
  l->Arm();
  listeners_[key] = std::move(l);
  UpdateCounters();
}

void Worker::RemoveListener(uint64_t key) {
  auto it = listeners_.find(key);
  if (it != listeners_.end()) it->second->Remove();
}

void Worker::UpdateListenerInfo(uint64_t key, std::shared_ptr<const ListenerInfo> info) {
  auto it = listeners_.find(key);
  if (it != listeners_.end()) it->second->set_info(std::move(info));
}

void Worker::ListenerGone(uint64_t key) {
  listeners_.erase(key);
  UpdateCounters();
}

void Worker::DrainListenQueue(int fd, const std::shared_ptr<const ListenerInfo>& info) {
  // A blocking listener (io_uring's) must not block this loop: the poll
  // says something is queued, and if another process takes it first the
  // receive timeout ends the accept at once.
  if (exiting_) return;  // shutting down for good: nothing more is served
  timeval tv{0, 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const int flags = SocketFlagsFor(backend_);
  for (int i = 0; i < 4096; ++i) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 0) != 1 || (p.revents & POLLIN) == 0) break;
    const int c = accept4(fd, nullptr, nullptr, flags);
    if (c < 0) break;
    stats_->Add(stats_->drained_from_listen_queue);
    OnAccepted(c, info);
  }
  // The socket may live on in a successor: leave it as it was.
  tv = timeval{0, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void Worker::StopAccepting() {
  for (auto& [key, l] : listeners_) l->Remove();
  // Keep-alive HTTP connections would hold the drain until its deadline.
  if (l7_) l7_->Drain();
}

void Worker::AbortAll(CloseReason reason) {
  std::vector<Connection*> all;
  all.reserve(conns_.size());
  for (auto& [id, c] : conns_) all.push_back(c.get());
  for (Connection* c : all) c->Abort(reason, /*reset=*/true);
  std::vector<InboundTunnel*> tunnels;
  for (auto& [id, t] : tunnels_) tunnels.push_back(t.get());
  for (InboundTunnel* t : tunnels) t->Abort(reason);
  if (l7_) l7_->AbortAll(reason);
  // Connections reset their streams above; what is left are idle tunnels.
  std::vector<OutboundTunnel*> outbound;
  for (auto& [id, t] : outbound_) outbound.push_back(t.get());
  for (OutboundTunnel* t : outbound) t->Close(/*abort=*/true);
}

std::vector<ConnectionInfo> Worker::Connections() const {
  std::vector<ConnectionInfo> out;
  out.reserve(conns_.size());
  for (const auto& [id, c] : conns_) out.push_back(c->Info());
  if (l7_) l7_->AppendInfo(&out);
  return out;
}

void Worker::OnAccepted(int fd, const std::shared_ptr<const ListenerInfo>& info) {
  stats_->Add(stats_->connections_total);
  if (conns_.size() >= options_.max_connections_per_worker) {
    // Accept-and-reset keeps the listen queue moving and tells the client
    // at once, instead of leaving it to time out in the backlog.
    stats_->Add(stats_->overloaded);
    stats_->Closed(CloseReason::kOverloaded);
    linger lg{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    loop_->Close(fd);
    return;
  }
  const uint64_t id = (static_cast<uint64_t>(id_) << 48) | next_conn_++;
  if (info->hbone_inbound) {
    auto t = std::make_unique<InboundTunnel>(this, id, fd, info);
    InboundTunnel* tp = t.get();
    tunnels_[id] = std::move(t);
    stats_->connections_active.fetch_add(1, std::memory_order_relaxed);
    tp->Start();
    return;
  }
  auto conn = std::make_unique<Connection>(this, id, fd, info);
  Connection* c = conn.get();
  conns_[id] = std::move(conn);
  stats_->connections_active.fetch_add(1, std::memory_order_relaxed);
  c->Start();
}

void Worker::Destroy(Connection* c) {
  if (conns_.erase(c->id()) > 0) stats_->connections_active.fetch_sub(1, std::memory_order_relaxed);
}

bool Worker::AdoptHttp1(uint64_t id, int fd, const std::shared_ptr<const ListenerInfo>& listener,
                        const SocketAddress& peer, const SocketAddress& orig_dst,
                        const std::shared_ptr<const RouteTable>& routes, const ServiceRoute* route) {
  if (routes == nullptr || !l7::ServesHttp1(options_, *routes, *route)) return false;
  if (!l7_) l7_ = std::make_unique<l7::Http1Proxy>(this);
  l7_->Adopt(id, fd, listener, peer, orig_dst, routes, route);
  return true;
}

void Worker::DestroyTunnel(InboundTunnel* t) {
  if (tunnels_.erase(t->id()) > 0) stats_->connections_active.fetch_sub(1, std::memory_order_relaxed);
}

void Worker::DestroyOutbound(OutboundTunnel* t) {
  auto [b, e] = tunnel_pool_.equal_range(t->key());
  for (auto it = b; it != e; ++it) {
    if (it->second == t) {
      tunnel_pool_.erase(it);
      break;
    }
  }
  outbound_.erase(t->id());
}

absl::StatusOr<std::unique_ptr<TunnelStream>> Worker::OpenTunnelStream(const ListenerInfo& listener,
                                                                       const SocketAddress& target,
                                                                       const MeshPeer& peer) {
  const tls::WorkloadIdentities* ids = listener.identities.get();
  if (ids == nullptr) return absl::FailedPreconditionError("no workload certificates (--ca-cert)");
  const absl::StatusOr<tls::SpiffeId>& source = listener.identity;
  if (!source.ok()) return source.status();
  const tls::SpiffeId destination{ids->trust_domain(), peer.ns,
                                  peer.service_account.empty() ? "default" : peer.service_account};
  auto cred = ids->Get(*source);
  if (!cred.ok()) return cred.status();
  const std::string key = absl::StrCat(source->ToString(), " ", destination.ToString(), " ", target.ip.ToString());
  OutboundTunnel* tunnel = nullptr;
  auto [b, e] = tunnel_pool_.equal_range(key);
  for (auto it = b; it != e && tunnel == nullptr; ++it) {
    if (it->second->CanOpen()) tunnel = it->second;
  }
  if (tunnel == nullptr) {
    const int fd = CreateUpstreamSocket(listener, target.ip.family());
    if (fd < 0) return absl::ErrnoToStatus(-fd, "tunnel socket");
    const uint64_t id = (static_cast<uint64_t>(id_) << 48) | next_conn_++;
    auto t = std::make_unique<OutboundTunnel>(this, id, key, fd);
    tunnel = t.get();
    outbound_[id] = std::move(t);
    absl::Status st = tunnel->Start(SocketAddress{target.ip, hbone::kHbonePort}, (*cred)->client_ctx, destination);
    if (!st.ok()) return st;  // it closes itself
    tunnel_pool_.emplace(key, tunnel);
    stats_->Add(stats_->hbone_outbound_tunnels);
  }
  auto stream = std::make_unique<TunnelStream>(loop_.get());
  hbone::HboneConnectOptions options;
  if (!listener.pod_ips.empty()) options.source_ip = listener.pod_ips.front();
  options.baggage = {{"k8s.namespace.name", listener.pod_ns}, {"k8s.pod.name", listener.pod_name}};
  if (absl::Status st = tunnel->Open(stream.get(), target, options); !st.ok()) return st;
  stats_->Add(stats_->hbone_outbound_streams);
  return stream;
}

void Worker::SweepTunnels(int64_t now) {
  const int64_t idle = absl::ToInt64Nanoseconds(options_.tunnel_idle);
  std::vector<OutboundTunnel*> done;
  for (auto& [id, t] : outbound_) {
    if (t->idle_since_ns() != 0 && now - t->idle_since_ns() >= idle) done.push_back(t.get());
  }
  for (OutboundTunnel* t : done) t->Close(/*abort=*/false);
}

int Worker::MakeUpstreamSocket(int family) {
  int fd = ::socket(family, SOCK_STREAM | loop_->socket_flags(), 0);
  if (fd < 0) return -errno;
  if (options_.proxy_mark != 0) {
    if (const int err = SetSocketMark(fd, options_.proxy_mark); err != 0) {
      stats_->Add(stats_->upstream_mark_failures);
      if (options_.require_mark) {
        spdlog::warn("upstream socket: SO_MARK: {}", std::strerror(-err));
        ::close(fd);
        return err;
      }
    }
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

int Worker::CreateUpstreamSocket(const ListenerInfo& listener, int family) {
  const int netns_fd = listener.netns_fd();
  // Spares only for pod namespaces: in the proxy's own, socket() is cheap.
  SparePool* pool = nullptr;
  if (netns_fd >= 0 && options_.upstream_socket_batch > 1) {
    pool = &spares_[{listener.netns.get(), family}];
    pool->last_used_ns = MonotonicNowNs();
    if (!pool->netns) pool->netns = listener.netns;
    if (!pool->fds.empty()) {
      int fd = pool->fds.back();
      pool->fds.pop_back();
      stats_->upstream_spare_sockets.fetch_sub(1, std::memory_order_relaxed);
      return fd;
    }
  }
  if (absl::Status s = netns_->Enter(netns_fd); !s.ok()) {
    spdlog::warn("upstream socket for {}/{}: {}", listener.pod_ns, listener.pod_name, s.ToString());
    return -EINVAL;
  }
  int fd = MakeUpstreamSocket(family);
  // One trip into the namespace makes the spares too; a failure to make a
  // spare (fd limit) just means fewer spares.
  for (int i = 1; pool != nullptr && fd >= 0 && i < options_.upstream_socket_batch; ++i) {
    int spare = MakeUpstreamSocket(family);
    if (spare < 0) break;
    pool->fds.push_back(spare);
    stats_->upstream_spare_sockets.fetch_add(1, std::memory_order_relaxed);
  }
  netns_->Leave();
  return fd;
}

void Worker::SweepSpares(bool all) {
  const int64_t now = MonotonicNowNs();
  if (!all && now < next_sweep_ns_) return;
  next_sweep_ns_ = now + 1'000'000'000;
  SweepTunnels(now);
  const int64_t idle = absl::ToInt64Nanoseconds(options_.spare_socket_idle);
  for (auto it = spares_.begin(); it != spares_.end();) {
    SparePool& p = it->second;
    // use_count 1: no listener or connection refers to the pod any more.
    const bool gone = p.netns == nullptr || p.netns.use_count() == 1;
    if (all || gone || now - p.last_used_ns >= idle) {
      for (int fd : p.fds) ::close(fd);
      stats_->upstream_spare_sockets.fetch_sub(static_cast<int64_t>(p.fds.size()), std::memory_order_relaxed);
      it = spares_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace ringmesh::proxy
