#include "userspace/agent/agent.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "userspace/common/logging.h"
#include "userspace/agent/node_file.h"
#include "userspace/agent/utf8.h"
#include "userspace/common/netns.h"
#include "userspace/common/snapshot_protocol.h"

namespace ringmesh::agent {
namespace {

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string PodName(const Pod& p) { return absl::StrCat(p.ns, "/", p.name); }

}  // namespace

absl::StatusOr<std::optional<Snapshot>> NodeFileSource::Poll() {
  auto content = ReadFile(path_);
  if (!content.ok()) return content.status();
  if (have_last_ && *content == last_content_) return std::optional<Snapshot>();
  // Remember the content before validating: a bad file is reported once,
  // not on every poll, and the next edit is noticed.
  last_content_ = *content;
  have_last_ = true;
  auto snap = ParseNodeFile(*content, path_);
  if (!snap.ok()) return snap.status();
  if (auto st = CheckNodeFileResources(*snap); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat(path_, ": ", st.message()));
  }
  return std::optional<Snapshot>(std::move(*snap));
}

Agent::Agent(AgentOptions opts, std::unique_ptr<EndpointSource> source)
    : opts_(std::move(opts)), source_(std::move(source)) {}

Agent::~Agent() = default;

absl::Status Agent::Start() {
  started_unix_ms_ = NowUnixMs();
  auto dp = bpf::Datapath::LoadOrAdopt(opts_.datapath);
  if (!dp.ok()) return dp.status();
  datapath_ = std::move(*dp);
  spdlog::info("datapath {} at {} (cgroup {})", datapath_->adopted() ? "adopted" : "loaded",
               opts_.datapath.pin_dir, opts_.datapath.cgroup_path);
  // Pod ids already in the pinned map stay with their netns: opt-out CIDR
  // keys include the id, and a restart must not reshuffle them.
  int pods_fd = datapath_->maps().map_fd(RM_MAP_PODS);
  uint64_t key, next;
  uint64_t* prev = nullptr;
  for (int guard = 0; guard < (1 << 20) && bpf_map_get_next_key(pods_fd, prev, &next) == 0; ++guard) {
    rm_pod_info info{};
    if (bpf_map_lookup_elem(pods_fd, &next, &info) == 0) {
      adopted_ids_[next] = info.pod_id;
      next_pod_id_ = std::max(next_pod_id_, info.pod_id + 1);
    }
    key = next;
    prev = &key;
  }
  auto lease = bpf::AgentLease::OpenOrCreate(opts_.datapath.pin_dir);
  if (!lease.ok()) return lease.status();
  lease_ = std::move(*lease);
  auto epoch = lease_->Claim(static_cast<uint32_t>(getpid()));
  if (!epoch.ok()) return epoch.status();
  owner_ = true;
  spdlog::info("datapath lease taken (epoch {})", *epoch);
  auto server = proto::AgentServer::Listen(opts_.agent_socket);
  if (!server.ok()) return server.status();
  server_ = std::make_unique<proto::AgentServer>(std::move(*server));
  WriteStatus();
  return absl::OkStatus();
}

uint32_t Agent::AllocatePodId() {
  for (;;) {
    uint32_t id = next_pod_id_++;
    if (next_pod_id_ == 0) next_pod_id_ = 1;
    bool used = false;
    for (const auto& [k, st] : pods_) used |= st.pod_id == id;
    for (const auto& [c, aid] : adopted_ids_) used |= aid == id;
    if (!used && id != 0) return id;
  }
}

absl::Status Agent::Apply(Snapshot snap) {
  std::map<std::string, PodState> next_pods;
  std::vector<bpf::PodEntry> entries;
  std::vector<int> fds(snap.pods.size(), -1);
  for (size_t i = 0; i < snap.pods.size(); ++i) {
    Pod& pod = snap.pods[i];
    if (!pod.enrolled) continue;
    UniqueFd fd(open(pod.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st{};
    if (!fd || fstat(fd.get(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat("pod ", PodName(pod), ": netns ", pod.netns_path, ": ",
                                              std::strerror(errno)));
    }
    std::string id = absl::StrCat(st.st_dev, ":", st.st_ino);
    if (next_pods.count(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("pod ", PodName(pod), ": netns ", pod.netns_path, " is shared with another pod"));
    }
    PodState state;
    if (auto it = pods_.find(id); it != pods_.end()) {
      state.pod_id = it->second.pod_id;
      state.netns_cookie = it->second.netns_cookie;
    } else {
      auto cookie = NetnsCookie(fd.get());
      if (!cookie.ok()) {
        return absl::Status(cookie.status().code(),
                            absl::StrCat("pod ", PodName(pod), ": ", cookie.status().message()));
      }
      state.netns_cookie = *cookie;
      auto adopted = adopted_ids_.find(*cookie);
      state.pod_id = adopted != adopted_ids_.end() ? adopted->second : AllocatePodId();
    }
    state.netns_fd = std::move(fd);
    pod.pod_id = state.pod_id;
    fds[i] = state.netns_fd.get();

    bpf::PodEntry e;
    e.netns_cookie = state.netns_cookie;
    e.info.pod_id = state.pod_id;
    e.info.flags = RM_POD_ENROLLED | (pod.fail_mode == FailMode::kClosed ? RM_POD_FAIL_CLOSED : 0u);
    e.info.proxy_port = htons(snap.outbound_port);
    e.info.n_opt_out_ports = static_cast<uint16_t>(std::min<size_t>(pod.opt_out_ports.size(), RM_MAX_OPT_OUT_PORTS));
    for (size_t p = 0; p < e.info.n_opt_out_ports; ++p) e.info.opt_out_ports[p] = htons(pod.opt_out_ports[p]);
    e.opt_out_cidrs = pod.opt_out_cidrs;
    entries.push_back(std::move(e));
    next_pods.emplace(id, std::move(state));
  }

  generation_ = std::max<uint64_t>(generation_ + 1, static_cast<uint64_t>(NowUnixMs()));
  snap.generation = generation_;
  spdlog::info("generation {}: {} pods ({} enrolled), {} services, {} pods of other nodes", generation_,
               snap.pods.size(), entries.size(), snap.services.size(), snap.remote_pods.size());
  entries_ = std::move(entries);
  last_error_.clear();
  SyncDatapath();
  pods_ = std::move(next_pods);
  adopted_ids_.clear();  // the first good snapshot settles every id
  current_ = std::move(snap);
  current_fds_ = std::move(fds);
  for (auto& p : proxies_) Publish(p);
  return absl::OkStatus();
}

void Agent::SyncDatapath() {
  if (!owner_) return;  // the lease holder writes the maps
  auto res = datapath_->SyncPods(entries_);
  for (const auto& e : res.errors) spdlog::error("datapath: {}", e);
  if (!res.errors.empty()) last_error_ = absl::StrCat("datapath: ", res.errors.front());
  spdlog::debug("datapath: {} pods written, {} removed", res.upserted, res.removed);
}

void Agent::PollLease() {
  auto held = lease_->Poll(static_cast<uint32_t>(getpid()),
                           static_cast<uint64_t>(opts_.lease_timeout_ms) * 1000000ull);
  if (!held.ok()) {
    spdlog::warn("datapath lease: {}", held.status().message());
    return;
  }
  if (*held == owner_) return;
  owner_ = *held;
  if (owner_) {
    spdlog::info("datapath lease taken over (epoch {}): writing the maps again", lease_->epoch());
    SyncDatapath();
  } else {
    auto v = lease_->Read();
    spdlog::warn("datapath lease held by agent pid {} (epoch {}): standing by, publishing to our proxy only",
                 v.ok() ? v->pid : 0, v.ok() ? v->epoch : 0);
  }
  WriteStatus();
}

void Agent::Publish(ProxyConn& conn) {
  if (!current_ || !conn.fd) return;
  auto st = proto::SendSnapshot(conn.fd.get(), *current_, current_fds_, conn.version);
  if (!st.ok()) {
    spdlog::warn("proxy connection dropped while sending generation {}: {}", current_->generation, st.message());
    conn.fd.Reset();
  }
}

void Agent::WriteStatus() {
  if (opts_.status_file.empty()) return;
  nlohmann::json j;
  j["pid"] = getpid();
  j["started_unix_ms"] = started_unix_ms_;
  j["updated_unix_ms"] = NowUnixMs();
  j["source"] = source_->Describe();
  j["source_health"] = source_->Health();
  j["generation"] = current_ ? current_->generation : 0;
  j["last_error"] = last_error_;
  j["pin_dir"] = opts_.datapath.pin_dir;
  j["cgroup"] = opts_.datapath.cgroup_path;
  j["datapath_adopted"] = datapath_ && datapath_->adopted();
  j["datapath_role"] = owner_ ? "owner" : "standby";
  j["pods"] = current_ ? current_->pods.size() : 0;
  j["enrolled_pods"] = pods_.size();
  j["services"] = current_ ? current_->services.size() : 0;
  nlohmann::json proxies = nlohmann::json::array();
  for (const auto& p : proxies_) proxies.push_back({{"acked_generation", p.acked}});
  j["proxies"] = proxies;
  // Health() and last_error_ carry text from outside (an API server's error
  // page, names from the node file): DumpJson replaces bytes that are not
  // UTF-8 instead of throwing, and nothing here may end the agent anyway.
  std::string text;
  try {
    text = DumpJson(j);
  } catch (const std::exception& e) {
    spdlog::warn("status file not written: {}", e.what());
    return;
  }
  std::string tmp = opts_.status_file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text << "\n";
    if (!out) {
      spdlog::warn("cannot write {}", tmp);
      return;
    }
  }
  if (rename(tmp.c_str(), opts_.status_file.c_str()) != 0) {
    spdlog::warn("rename {}: {}", tmp, std::strerror(errno));
  }
}

absl::Status Agent::Run() {
  auto next_poll = std::chrono::steady_clock::now();
  std::string reported_error;
  while (!stop_.load()) {
    auto now = std::chrono::steady_clock::now();
    if (now >= next_poll) {
      next_poll = now + std::chrono::milliseconds(opts_.poll_interval_ms);
      PollLease();
      auto polled = source_->Poll();
      if (!polled.ok()) {
        last_error_ = std::string(polled.status().message());
        if (last_error_ != reported_error) {
          spdlog::error("{} (keeping generation {})", last_error_, current_ ? current_->generation : 0);
          reported_error = last_error_;
        }
        WriteStatus();
      } else if (std::string health = source_->Health(); health != reported_health_) {
        // The source's connectivity changed without new data (API server
        // down or back): the status file must say so.
        reported_health_ = health;
        if (!polled->has_value()) WriteStatus();
      }
      if (polled.ok() && polled->has_value()) {
        if (auto st = Apply(std::move(**polled)); !st.ok()) {
          last_error_ = std::string(st.message());
          spdlog::error("{} (keeping generation {})", last_error_, current_ ? current_->generation : 0);
          reported_error = last_error_;
        } else {
          reported_error.clear();
        }
        WriteStatus();
      }
    }

    std::vector<pollfd> pfds;
    pfds.push_back({server_->fd(), POLLIN, 0});
    for (auto& p : proxies_) pfds.push_back({p.fd.get(), POLLIN, 0});
    int timeout = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       next_poll - std::chrono::steady_clock::now())
                                       .count());
    int n = poll(pfds.data(), pfds.size(), std::max(0, timeout));
    if (n < 0 && errno != EINTR) return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    if (n <= 0) continue;
    bool changed = false;
    for (size_t i = 1; i < pfds.size(); ++i) {
      if (!pfds[i].revents) continue;
      auto& conn = proxies_[i - 1];
      auto ack = proto::ReceiveAck(conn.fd.get(), 0);
      if (!ack.ok()) {
        spdlog::info("proxy disconnected: {}", ack.status().message());
        conn.fd.Reset();
      } else {
        conn.acked = *ack;
      }
      changed = true;
    }
    std::erase_if(proxies_, [](const ProxyConn& c) { return !c.fd; });
    if (pfds[0].revents & POLLIN) {
      auto conn = server_->AcceptPeer();
      if (!conn.ok()) {
        spdlog::warn("proxy handshake failed: {}", conn.status().message());
      } else {
        spdlog::info("proxy connected (protocol version {})", conn->version);
        if (conn->version < proto::kRemotePodsVersion) {
          spdlog::warn("the proxy speaks protocol {}: it is not told about pods of other nodes; upgrade it",
                       conn->version);
        }
        if (conn->version < proto::kAuthorizationPoliciesVersion) {
          spdlog::warn(
              "the proxy speaks protocol {}: it is not given AuthorizationPolicies and enforces none; "
              "upgrade it",
              conn->version);
        }
        proxies_.push_back(ProxyConn{std::move(conn->fd), 0, conn->version});
        Publish(proxies_.back());
        std::erase_if(proxies_, [](const ProxyConn& c) { return !c.fd; });
      }
      changed = true;
    }
    if (changed) WriteStatus();
  }
  WriteStatus();
  return absl::OkStatus();
}

}  // namespace ringmesh::agent
