#include "userspace/proxy/proxy_core.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "userspace/common/netns.h"
#include "userspace/proxy/hbone/hbone_request.h"
#include "userspace/proxy/worker.h"

namespace ringmesh::proxy {

int SocketFlagsFor(IoBackend backend) {
  return backend == IoBackend::kIoUring ? SOCK_CLOEXEC : SOCK_CLOEXEC | SOCK_NONBLOCK;
}

std::string WorkloadName(const Pod& pod) {
  for (const char* key : {"app.kubernetes.io/name", "app"}) {
    auto it = pod.labels.find(key);
    if (it != pod.labels.end() && !it->second.empty()) return it->second;
  }
  return pod.name;
}

absl::StatusOr<UniqueFd> OpenListenSocket(const SocketAddress& address, int sock_flags, int backlog) {
  UniqueFd fd(::socket(address.ip.family(), SOCK_STREAM | sock_flags, 0));
  if (!fd) return absl::ErrnoToStatus(errno, "socket");
  int one = 1;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    return absl::ErrnoToStatus(errno, "setsockopt(SO_REUSEPORT)");
  }
  if (!address.ip.is_v4()) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  // Accepted sockets inherit it: one setsockopt per listener instead of one
  // per connection.
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_storage ss;
  socklen_t len = address.ToSockaddr(&ss);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("bind ", address.ToString()));
  }
  if (::listen(fd.get(), backlog) != 0) return absl::ErrnoToStatus(errno, "listen");
  return fd;
}

ProxyCore::ProxyCore(const ProxyOptions& options, std::shared_ptr<OrigDstResolver> resolver)
    : options_(options), resolver_(std::move(resolver)) {}

absl::StatusOr<std::unique_ptr<ProxyCore>> ProxyCore::Create(const ProxyOptions& options,
                                                             std::shared_ptr<OrigDstResolver> resolver) {
  if (options.workers < 1) return absl::InvalidArgumentError("workers must be >= 1");
  if (options.buffer_bytes < 1) return absl::InvalidArgumentError("buffer_bytes must be >= 1");
  std::unique_ptr<ProxyCore> core(new ProxyCore(options, std::move(resolver)));
  core->backend_ = ResolveBackend(options.backend);
  spdlog::info("io backend: {}", ToString(core->backend_));
  for (int i = 0; i < options.workers; ++i) {
    auto w = std::make_unique<Worker>(i, options, &core->stats_, core->resolver_);
    if (absl::Status s = w->Start(core->backend_); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("worker ", i, ": ", s.message()));
    }
    core->workers_.push_back(std::move(w));
  }
  core->routes_ = RouteTable::Build(Snapshot{}, nullptr, options.lb);
  core->PublishRoutes(core->routes_);
  return core;
}

ProxyCore::~ProxyCore() { Stop(); }

void ProxyCore::PublishRoutes(std::shared_ptr<const RouteTable> routes) {
  // Waits (bounded) until every worker swapped its pointer, so a connection
  // accepted after ApplySnapshot returns is routed by the new generation.
  struct Pending {
    std::mutex mu;
    std::condition_variable cv;
    size_t left;
  };
  auto pending = std::make_shared<Pending>();
  pending->left = workers_.size();
  for (auto& w : workers_) {
    Worker* wp = w.get();
    wp->Post([wp, routes, pending] {
      wp->SetRoutes(routes);
      std::lock_guard<std::mutex> lock(pending->mu);
      if (--pending->left == 0) pending->cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(pending->mu);
  if (!pending->cv.wait_for(lock, std::chrono::seconds(2), [&] { return pending->left == 0; })) {
    spdlog::warn("route table generation {} not yet taken by every worker", routes->generation());
  }
}

absl::StatusOr<std::vector<UniqueFd>> ProxyCore::OpenListenerSet(const SocketAddress& address) {
  std::vector<UniqueFd> fds;
  SocketAddress bind_addr = address;
  for (size_t i = 0; i < workers_.size(); ++i) {
    auto fd = OpenListenSocket(bind_addr, SocketFlagsFor(backend_), options_.listen_backlog);
    if (!fd.ok()) return fd.status();
    if (bind_addr.port == 0) {
      // Port 0: the first socket picks the port, the others join it.
      auto local = LocalAddress(fd->get());
      if (!local) return absl::ErrnoToStatus(errno, "getsockname");
      bind_addr.port = local->port;
    }
    fds.push_back(std::move(*fd));
  }
  return fds;
}

absl::StatusOr<SocketAddress> ProxyCore::AddListener(const SocketAddress& address, ListenerInfo identity) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stopped_) return absl::FailedPreconditionError("proxy stopped");
  auto fds = OpenListenerSet(address);
  if (!fds.ok()) return fds.status();
  auto local = LocalAddress((*fds)[0].get());
  if (!local) return absl::ErrnoToStatus(errno, "getsockname");
  identity.local = *local;
  if (identity.netns_cookie == 0) {
    if (auto cookie = SocketNetnsCookie((*fds)[0].get()); cookie.ok()) identity.netns_cookie = *cookie;
  }
  SetIdentity(identity);
  static_sources_.insert({identity.workload, identity.pod_ns});
  auto info = std::make_shared<const ListenerInfo>(std::move(identity));
  for (size_t i = 0; i < workers_.size(); ++i) {
    Worker* w = workers_[i].get();
    uint64_t key = next_key_++;
    w->Post(
        [w, key, fd = std::move((*fds)[i]), info]() mutable { w->AddListener(key, std::move(fd), info); });
  }
  static_listeners_.push_back(local->ToString());
  lock.unlock();
  UpdateReady();
  return *local;
}

void ProxyCore::SetIdentity(ListenerInfo& info) const {
  if (info.pod_name.empty()) return;  // plain-proxy mode: no pod
  Pod pod;
  pod.ns = info.pod_ns;
  pod.name = info.pod_name;
  pod.service_account = info.service_account;
  info.identity = tls::WorkloadIdentities::IdentityOf(
      pod, identities_ ? identities_->trust_domain() : tls::WorkloadIdentityOptions{}.trust_domain);
  info.principal = info.identity.ok() ? info.identity->ToString() : "";
}

std::shared_ptr<const ListenerInfo> ProxyCore::MakeInfo(const PodListeners& p,
                                                        const SocketAddress& local) const {
  auto info = std::make_shared<ListenerInfo>();
  info->pod_ns = p.pod.ns;
  info->pod_name = p.pod.name;
  info->service_account = p.pod.service_account;
  info->workload = WorkloadName(p.pod);
  SetIdentity(*info);
  info->pod_id = p.pod.pod_id;
  info->netns_cookie = p.netns_cookie;
  info->netns = p.netns;
  info->local = local;
  // Certificates for both directions: inbound tunnels answer with the pod's,
  // outbound ones present it.
  info->pod_ips = p.pod.ips;
  info->pod_labels = p.pod.labels;
  info->identities = identities_;
  // Outbound listeners are on loopback; HBONE's on the pod's own addresses.
  info->hbone_inbound = local.port == hbone::kHbonePort &&
                        std::find(p.pod.ips.begin(), p.pod.ips.end(), local.ip) != p.pod.ips.end();
  return info;
}

// With tcp_migrate_req, connections queued on a listener that closes move
// to another listener of its SO_REUSEPORT group instead of being reset. The
// sysctl is per network namespace (this thread's, after setns), i.e. the
// pod's: only with --set-tcp-migrate-req (ProxyOptions). Best effort:
// kernels before 5.14 lack it.
static void EnableListenerMigration() {
  int fd = ::open("/proc/sys/net/ipv4/tcp_migrate_req", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  if (::write(fd, "1", 1) != 1) spdlog::debug("tcp_migrate_req: {}", std::strerror(errno));
  ::close(fd);
}

// Sockets a predecessor handed over for `address` in the netns with
// `cookie`, topped up to one per worker with new ones (same SO_REUSEPORT
// group); nullopt when nothing was handed over for it.
std::optional<absl::StatusOr<std::vector<UniqueFd>>> ProxyCore::TakeInherited(uint64_t cookie,
                                                                              const SocketAddress& address) {
  auto it = inherited_.find({cookie, address.ToString()});
  if (it == inherited_.end()) return std::nullopt;
  std::vector<UniqueFd> fds = std::move(it->second);
  inherited_.erase(it);
  // The epoll loop needs non-blocking listeners. Never the other way: the
  // file is shared with the predecessor, whose epoll loop would block.
  if ((SocketFlagsFor(backend_) & SOCK_NONBLOCK) != 0) {
    for (UniqueFd& f : fds) {
      const int fl = fcntl(f.get(), F_GETFL);
      if (fl >= 0 && (fl & O_NONBLOCK) == 0) fcntl(f.get(), F_SETFL, fl | O_NONBLOCK);
    }
  }
  while (fds.size() < workers_.size()) {
    auto fd = OpenListenSocket(address, SocketFlagsFor(backend_), options_.listen_backlog);
    if (!fd.ok()) return fd.status();
    fds.push_back(std::move(*fd));
  }
  return fds;
}

absl::Status ProxyCore::OpenPodListeners(PodListeners& p) {
  auto sw = NetnsSwitch::ForCurrentThread();
  if (!sw.ok()) return sw.status();
  std::vector<std::pair<SocketAddress, std::vector<UniqueFd>>> sets;
  absl::Status status;
  size_t inherited = 0;
  if (status = sw->Enter(p.netns->get()); !status.ok()) return status;
  {
    if (options_.set_tcp_migrate_req) EnableListenerMigration();
    // The namespace's identity first: it keys the sockets a predecessor
    // handed over.
    UniqueFd probe(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    auto cookie = probe ? SocketNetnsCookie(probe.get()) : absl::ErrnoToStatus(errno, "socket");
    if (!cookie.ok()) {
      sw->Leave();
      return cookie.status();
    }
    p.netns_cookie = *cookie;
    auto open = [&](const SocketAddress& a) -> absl::StatusOr<std::vector<UniqueFd>> {
      if (!inherited_.empty()) {
        if (auto taken = TakeInherited(p.netns_cookie, a)) {
          if (taken->ok()) inherited += (*taken)->size();
          return std::move(*taken);
        }
      }
      return OpenListenerSet(a);
    };
    auto v4 = open(SocketAddress{*IpAddress::Parse("127.0.0.1"), p.port});
    if (v4.ok()) {
      sets.emplace_back(SocketAddress{*IpAddress::Parse("127.0.0.1"), p.port}, std::move(*v4));
    } else {
      status = v4.status();
    }
    // IPv6 only where the namespace has it (disabled IPv6 or no ::1 on lo
    // is common); its absence is not an error.
    auto v6 = open(SocketAddress{*IpAddress::Parse("::1"), p.port});
    if (v6.ok()) sets.emplace_back(SocketAddress{*IpAddress::Parse("::1"), p.port}, std::move(*v6));
    // Inbound HBONE on each pod IP, when this proxy holds workload
    // certificates to answer with (other nodes' proxies tunnel here).
    for (const IpAddress& ip : identities_ ? p.pod.ips : std::vector<IpAddress>{}) {
      const SocketAddress a{ip, hbone::kHbonePort};
      auto h = open(a);
      if (h.ok()) {
        sets.emplace_back(a, std::move(*h));
      } else if (status.ok()) {
        status = absl::Status(h.status().code(),
                              absl::StrCat("HBONE listener ", a.ToString(), ": ", h.status().message()));
      }
    }
  }
  sw->Leave();
  if (!status.ok()) return status;
  if (inherited > 0)
    spdlog::info("pod {}/{}: {} listening socket(s) taken over", p.pod.ns, p.pod.name, inherited);

  for (auto& [addr, fds] : sets) {
    auto info = MakeInfo(p, addr);
    p.addresses.push_back(addr.ToString());
    const bool keep_dups = options_.listener_handover && accepting_;
    std::vector<UniqueFd> dups;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (keep_dups) {
        UniqueFd dup(fcntl(fds[i].get(), F_DUPFD_CLOEXEC, 0));
        if (dup) dups.push_back(std::move(dup));
      }
      // More sockets than workers (a predecessor had more): round robin.
      const size_t wi = i % workers_.size();
      Worker* w = workers_[wi].get();
      uint64_t key = next_key_++;
      p.keys.push_back({key, static_cast<int>(wi), addr});
      w->Post([w, key, fd = std::move(fds[i]), info]() mutable { w->AddListener(key, std::move(fd), info); });
    }
    if (keep_dups) p.dups.emplace_back(addr.ToString(), std::move(dups));
  }
  return absl::OkStatus();
}

void ProxyCore::ClosePodListeners(const PodListeners& p) {
  for (const auto& k : p.keys) {
    Worker* w = workers_[static_cast<size_t>(k.worker)].get();
    uint64_t key = k.key;
    w->Post([w, key] { w->RemoveListener(key); });
  }
}

absl::Status ProxyCore::ApplySnapshot(const Snapshot& snapshot, std::vector<UniqueFd> netns_fds) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return absl::FailedPreconditionError("proxy stopped");
  // A draining proxy opens no listener again (Drain waits for them all to close).
  if (!accepting_) return absl::FailedPreconditionError("proxy draining");
  if (identities_) identities_->SetWorkloads(snapshot.pods);
  // Routes first: a worker handles posts in order, so no listener of this
  // snapshot accepts a connection before its routes are there (a taken-over
  // listener has connections waiting at once).
  auto previous = routes_;
  routes_ = RouteTable::Build(snapshot, previous.get(), options_.lb);
  // The datapath learns the new endpoints before the workers do (no connect
  // goes straight to a removed one from here on), and again once every
  // worker has the new table: a connection of the old table that closed in
  // between may have told the old endpoints. From then on connections of
  // old tables tell nothing (Connection::MaybeFinish).
  routes_->RetellDatapath(previous.get(), options_.direct_connects, *resolver_);
  PublishRoutes(routes_);
  routes_->RetellDatapath(previous.get(), options_.direct_connects, *resolver_);
  std::map<NetnsId, PodListeners> next;
  int failed = 0;
  for (size_t i = 0; i < snapshot.pods.size(); ++i) {
    const Pod& pod = snapshot.pods[i];
    if (!pod.enrolled || i >= netns_fds.size() || !netns_fds[i].valid()) continue;
    auto id = GetNetnsId(netns_fds[i].get());
    if (!id.ok()) {
      spdlog::warn("pod {}/{}: {}", pod.ns, pod.name, id.status().ToString());
      continue;
    }
    if (next.contains(*id)) {
      spdlog::warn("pod {}/{} shares a network namespace with another pod; ignored", pod.ns, pod.name);
      continue;
    }
    auto old = pods_.find(*id);
    if (old != pods_.end() && old->second.error.empty() && old->second.port == snapshot.outbound_port) {
      PodListeners p = std::move(old->second);
      pods_.erase(old);
      if (!(p.pod == pod)) {
        p.pod = pod;
        for (const auto& k : p.keys) {
          Worker* w = workers_[static_cast<size_t>(k.worker)].get();
          auto info = MakeInfo(p, k.local);
          uint64_t key = k.key;
          w->Post([w, key, info] { w->UpdateListenerInfo(key, info); });
        }
      }
      next.emplace(*id, std::move(p));
      continue;  // the duplicate fd in netns_fds[i] closes with the vector
    }
    PodListeners p;
    p.pod = pod;
    p.port = snapshot.outbound_port;
    p.netns = std::make_shared<const UniqueFd>(std::move(netns_fds[i]));
    if (absl::Status s = OpenPodListeners(p); !s.ok()) {
      ++failed;
      p.error = s.ToString();
      spdlog::error("pod {}/{}: listeners not opened: {}", pod.ns, pod.name, p.error);
      ClosePodListeners(p);
      p.keys.clear();
      p.addresses.clear();
      p.dups.clear();
    } else {
      spdlog::info("pod {}/{}: listening on {} (netns cookie {})", pod.ns, pod.name, p.addresses[0],
                   p.netns_cookie);
    }
    next.emplace(*id, std::move(p));
  }
  for (auto& [id, p] : pods_) {
    spdlog::info("pod {}/{}: removed; closing its listeners", p.pod.ns, p.pod.name);
    ClosePodListeners(p);
  }
  pods_ = std::move(next);
  // Metric cells of workloads with no pod here any more (and no connection
  // left holding them) go: label sets stay bounded by what the node runs.
  std::set<std::pair<std::string, std::string>> live = static_sources_;
  for (const auto& [id, p] : pods_) live.insert({WorkloadName(p.pod), p.pod.ns});
  if (const size_t freed = stats_.PruneSources(live); freed > 0) {
    spdlog::debug("{} metric label set(s) of workloads gone from the node freed", freed);
  }
  if (!inherited_.empty()) {
    // Handed over for pods this snapshot does not have: let them go (their
    // queues move to the rest of their group, if any, as on any close).
    size_t n = 0;
    for (const auto& [key, fds] : inherited_) n += fds.size();
    spdlog::info("{} taken-over listening socket(s) of {} set(s) not in the snapshot: closed", n,
                 inherited_.size());
    inherited_.clear();
  }
  generation_ = snapshot.generation;
  snapshot_applied_ = true;
  bool all_ok = failed == 0;
  ready_.store(all_ok || !static_listeners_.empty());
  if (!all_ok) return absl::UnavailableError(absl::StrCat(failed, " pod(s) without listeners"));
  return absl::OkStatus();
}

void ProxyCore::UpdateReady() {
  std::lock_guard<std::mutex> lock(mu_);
  bool pods_ok = snapshot_applied_;
  for (const auto& [id, p] : pods_) pods_ok = pods_ok && p.error.empty();
  ready_.store(pods_ok || !static_listeners_.empty());
}

uint64_t ProxyCore::generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generation_;
}

size_t ProxyCore::active_connections() const {
  size_t n = 0;
  for (const auto& w : workers_) n += w->connection_count();
  return n;
}

size_t ProxyCore::listener_sockets() const {
  size_t n = 0;
  for (const auto& w : workers_) n += w->listener_count();
  return n;
}

std::vector<ProxyCore::DirectCount> ProxyCore::DirectConnections() {
  std::shared_ptr<const RouteTable> routes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    routes = routes_;
  }
  std::vector<DirectCount> out;
  for (const auto& r : routes->routes()) {
    for (const SocketAddress& ep : r->direct_endpoints) {
      const auto c = resolver_->DirectStats(ep);
      out.push_back({r->Fqdn(), ep.ToString(), c.connects, c.failed});
    }
  }
  return out;
}

void ProxyCore::SyncDirectMetrics() {
  std::lock_guard<std::mutex> sync(direct_sync_mu_);
  std::shared_ptr<const RouteTable> routes;
  std::map<uint32_t, std::pair<std::string, std::string>> sources;  // pod id -> (workload, namespace)
  {
    std::lock_guard<std::mutex> lock(mu_);
    routes = routes_;
    for (const auto& [id, p] : pods_) sources[p.pod.pod_id] = {WorkloadName(p.pod), p.pod.ns};
  }
  std::map<std::string, std::string> service_of;  // endpoint -> destination_service
  for (const auto& r : routes->routes()) {
    for (const SocketAddress& ep : r->direct_endpoints) service_of.try_emplace(ep.ToString(), r->Fqdn());
  }
  std::map<std::pair<uint32_t, std::string>, std::pair<uint64_t, uint64_t>> seen;
  for (const auto& d : resolver_->DirectStatsBySource()) {
    const std::string ep = d.endpoint.ToString();
    auto prev = direct_seen_.find({d.pod_id, ep});
    // A counter below what was seen was evicted and made again: all of it
    // is new.
    auto delta = [](uint64_t now, uint64_t before) { return now >= before ? now - before : now; };
    const uint64_t opened =
        prev == direct_seen_.end() ? d.established : delta(d.established, prev->second.first);
    const uint64_t closed = prev == direct_seen_.end() ? d.closed : delta(d.closed, prev->second.second);
    seen[{d.pod_id, ep}] = {d.established, d.closed};
    auto src = sources.find(d.pod_id);
    auto svc = service_of.find(ep);
    if (src == sources.end() || svc == service_of.end() || (opened == 0 && closed == 0)) continue;
    TcpMetricCell* cell = stats_.Cell(src->second.first, src->second.second, svc->second);
    stats_.Add(cell->opened, opened);
    stats_.Add(cell->closed, closed);
    stats_.Release(cell);
  }
  direct_seen_ = std::move(seen);  // only what the datapath still holds
}

size_t ProxyCore::buffer_chunks_outstanding() const {
  size_t n = 0;
  for (const auto& w : workers_) n += w->chunks_outstanding();
  return n;
}

void ProxyCore::Inherit(InheritedListeners inherited) {
  std::lock_guard<std::mutex> lock(mu_);
  inherited_ = std::move(inherited);
}

std::vector<ListenerSet> ProxyCore::HandoverSets() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ListenerSet> out;
  if (!accepting_ || stopped_) return out;
  for (const auto& [id, p] : pods_) {
    for (const auto& [addr, fds] : p.dups) {
      ListenerSet s;
      s.netns_cookie = p.netns_cookie;
      s.address = addr;
      for (const UniqueFd& f : fds) {
        UniqueFd d(fcntl(f.get(), F_DUPFD_CLOEXEC, 0));
        if (d) s.fds.push_back(std::move(d));
      }
      if (!s.fds.empty()) out.push_back(std::move(s));
    }
  }
  return out;
}

void ProxyCore::SetWorkloadIdentities(std::shared_ptr<tls::WorkloadIdentities> identities) {
  std::lock_guard<std::mutex> lock(mu_);
  identities_ = std::move(identities);
}

std::shared_ptr<tls::WorkloadIdentities> ProxyCore::workload_identities() const {
  std::lock_guard<std::mutex> lock(mu_);
  return identities_;
}

void ProxyCore::RunOnWorkers(const std::function<void()>& fn) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return;
  for (auto& w : workers_) w->Post([fn] { fn(); });
}

void ProxyCore::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  ready_.store(false);
  // The duplicates kept for a successor go now: with no successor holding
  // them, the workers' closes below really close the listeners.
  accepting_ = false;
  for (auto& [id, p] : pods_) p.dups.clear();
  if (stopped_) return;
  for (auto& w : workers_) {
    Worker* wp = w.get();
    wp->Post([wp] { wp->StopAccepting(); });
  }
}

bool ProxyCore::Drain(absl::Duration timeout) {
  StopAccepting();
  const absl::Time deadline = absl::Now() + timeout;
  // Done only once every worker has closed its listening sockets as well:
  // until then a worker may still accept (it serves what is queued when its
  // accept is cancelled), so "no connections" seen before that proves
  // nothing. Returning early let Stop() reset connections accepted just
  // after (the handover flake: 1 in ~50,000 connections failed with EPIPE).
  // listener_sockets() is read first: a worker publishes its connection
  // count before its listener count.
  while ((listener_sockets() > 0 || active_connections() > 0) && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  bool clean = listener_sockets() == 0 && active_connections() == 0;
  if (!clean) spdlog::warn("drain deadline reached; {} connection(s) left to reset", active_connections());
  return clean;
}

void ProxyCore::Stop() {
  {
    // Under mu_ so that no control thread posts to a worker that is exiting.
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_.exchange(true)) return;
  }
  ready_.store(false);
  // Worker::Shutdown resets what is left, drains every op and joins.
  for (auto& w : workers_) w->Shutdown();
}

std::vector<ConnectionInfo> ProxyCore::Connections(absl::Duration timeout) {
  struct Gather {
    std::mutex mu;
    std::condition_variable cv;
    size_t pending = 0;
    std::vector<ConnectionInfo> out;
  };
  auto g = std::make_shared<Gather>();
  {
    std::lock_guard<std::mutex> core_lock(mu_);
    if (stopped_) return {};
    g->pending = workers_.size();
    for (auto& w : workers_) {
      Worker* wp = w.get();
      wp->Post([wp, g] {
        auto infos = wp->Connections();
        std::lock_guard<std::mutex> lock(g->mu);
        for (auto& i : infos) g->out.push_back(std::move(i));
        --g->pending;
        g->cv.notify_all();
      });
    }
  }
  std::unique_lock<std::mutex> lock(g->mu);
  g->cv.wait_for(lock, absl::ToChronoMilliseconds(timeout), [&] { return g->pending == 0; });
  return g->out;
}

nlohmann::json ProxyCore::ConfigDump() {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json j;
  j["generation"] = generation_;
  j["snapshot_applied"] = snapshot_applied_;
  j["ready"] = ready_.load();
  j["io_backend"] = ToString(backend_);
  j["workers"] = workers_.size();
  j["static_listeners"] = static_listeners_;
  nlohmann::json pods = nlohmann::json::array();
  for (const auto& [id, p] : pods_) {
    nlohmann::json ips = nlohmann::json::array();
    for (const auto& ip : p.pod.ips) ips.push_back(ip.ToString());
    pods.push_back({{"namespace", p.pod.ns},
                    {"name", p.pod.name},
                    {"ips", std::move(ips)},
                    {"pod_id", p.pod.pod_id},
                    {"service_account", p.pod.service_account},
                    {"workload", WorkloadName(p.pod)},
                    {"netns_cookie", p.netns_cookie},
                    {"listeners", p.addresses},
                    {"listener_sockets", p.keys.size()},
                    {"state", p.error.empty() ? "listening" : "error"},
                    {"error", p.error}});
  }
  j["pods"] = std::move(pods);
  nlohmann::json services = nlohmann::json::array();
  if (routes_) {
    for (const auto& r : routes_->routes()) {
      nlohmann::json eps = nlohmann::json::array();
      for (const auto& e : r->lb->Stats()) {
        eps.push_back({{"ip", e.ip.ToString()},
                       {"ready", true},
                       {"active_connections", e.active},
                       {"picks", e.picks},
                       {"ewma_ms", e.ewma_ms},
                       {"failures", e.failures},  // connects; on L7 routes also resets and 5xx
                       {"ejected", e.ejected},
                       {"ejections", e.ejections}});
        // Connections connect() sent straight to it (socket LB), which the
        // balancer's picks do not include.
        if (!r->direct_endpoints.empty()) {
          const auto direct = resolver_->DirectStats(SocketAddress{e.ip, r->target_port});
          eps.back()["direct_connections"] = direct.connects;
          eps.back()["direct_connect_failures"] = direct.failed;
        }
      }
      // What the proxy has judged the route's connections to be, and
      // whether connect() may skip the proxy for them (socket LB).
      const uint8_t told = r->told.load(std::memory_order_relaxed);
      const char* shape = told == 2 ? "short" : told == 1 ? "long" : "unjudged";
      const bool socket_lb = told == 2 && options_.direct_connects > 0 && !r->direct_endpoints.empty();
      for (const auto& ip : r->not_ready) eps.push_back({{"ip", ip.ToString()}, {"ready", false}});
      nlohmann::json vips = nlohmann::json::array();
      for (const auto& v : r->vips) vips.push_back(v.ToString());
      services.push_back({{"namespace", r->ns},
                          {"name", r->name},
                          {"vips", std::move(vips)},
                          {"port", r->port},
                          {"target_port", r->target_port},
                          {"protocol", ToString(r->protocol)},
                          {"lb", ToString(r->lb->policy())},
                          {"connections", shape},
                          {"socket_lb", socket_lb},
                          {"endpoints", std::move(eps)}});
    }
  }
  j["services"] = std::move(services);
  // AuthorizationPolicies with the pods of this node each applies to (by
  // selector and scope), and the denials so far.
  nlohmann::json policies = nlohmann::json::array();
  if (routes_) {
    const authz::Authorizer& az = routes_->authorizer();
    std::map<const AuthorizationPolicy*, std::set<std::string>> applies;
    for (const auto& [ip, pod] : routes_->local_pods()) {
      for (const AuthorizationPolicy* p : az.PoliciesFor(authz::Workload::Of(pod))) {
        applies[p].insert(absl::StrCat(pod.ns, "/", pod.name));
      }
    }
    for (const AuthorizationPolicy* p : az.Policies()) {
      const auto it = applies.find(p);
      // Rules with methods/paths/hosts: matched on HTTP requests (the L7
      // path); at L4 they follow istiod's rule (authorizer.h).
      const auto http_rules =
          std::count_if(p->rules.begin(), p->rules.end(), [](const AuthzRule& r) { return r.has_l7(); });
      policies.push_back({{"namespace", p->ns},
                          {"name", p->name},
                          {"action", ToString(p->action)},
                          {"match_labels", p->match_labels},
                          {"rules", p->rules.size()},
                          {"http_rules", http_rules},
                          {"dropped_l7_rules", p->dropped_l7_rules},
                          {"applies_to", it == applies.end() ? std::set<std::string>{} : it->second}});
    }
  }
  j["authorization_policies"] = std::move(policies);
  j["authorization_denied"] = {{"hbone", stats_.authz_denied_hbone.load(std::memory_order_relaxed)},
                               {"local", stats_.authz_denied_local.load(std::memory_order_relaxed)}};
  return j;
}

}  // namespace ringmesh::proxy
