#include "userspace/bpf/pinned_maps.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"

namespace ringmesh::bpf {
namespace {

constexpr const char* kMapNames[] = {RM_MAP_PODS,   RM_MAP_OPT_OUT_CIDRS, RM_MAP_ORIG_DST, RM_MAP_SOCKHASH,
                                     RM_MAP_CONFIG, RM_MAP_COUNTERS,      RM_MAP_FP_CREDIT, RM_MAP_SOCK_ADDR, RM_MAP_UPSTREAM, RM_MAP_SPLICE, RM_MAP_SHORT_DST, RM_MAP_SPLICE_BYTES, RM_MAP_DIRECT_CONNS};

#define RM_COUNTER_NAME(name, str) str,
constexpr const char* kCounterNames[] = {RM_COUNTERS(RM_COUNTER_NAME)};
#undef RM_COUNTER_NAME

void FillAddr(uint8_t out[16], const IpAddress& ip) { std::memcpy(out, ip.bytes().data(), 16); }

bool IsLoopback(const IpAddress& ip) {
  const auto& b = ip.bytes();
  static constexpr uint8_t kV6Loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  if (ip.is_v4()) return b[12] == 127;
  return std::memcmp(b.data(), kV6Loopback, 16) == 0;
}

// As the BPF side builds it (rm_key_netns in bpf/lib/addr.h): loopback
// connections are keyed with their netns, pod-to-pod ones with 0.
rm_sock_key SockKey(uint64_t netns_cookie, const SocketAddress& local, const SocketAddress& remote) {
  rm_sock_key key{};
  key.netns_cookie = IsLoopback(local.ip) ? netns_cookie : 0;
  FillAddr(key.local_addr, local.ip);
  FillAddr(key.remote_addr, remote.ip);
  key.local_port = htons(local.port);
  key.remote_port = htons(remote.port);
  return key;
}

}  // namespace

const char* CounterName(int index) {
  if (index < 0 || index >= RM_CTR_MAX) return "unknown";
  return kCounterNames[index];
}

absl::StatusOr<PinnedMaps> PinnedMaps::Open(const std::string& pin_dir) {
  PinnedMaps m;
  for (const char* name : kMapNames) {
    std::string path = absl::StrCat(pin_dir, "/maps/", name);
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0) {
      return absl::NotFoundError(absl::StrCat("open pinned map ", path, ": ", std::strerror(errno),
                                              " (is ringmesh-agent running with this --pin-dir?)"));
    }
    m.maps_.push_back(Map{name, UniqueFd(fd)});
  }
  // Optional: without it the proxy never holds a write (rm_unread_args).
  const std::string prog = absl::StrCat(pin_dir, "/progs/", RM_PROG_UNREAD);
  m.unread_prog_ = UniqueFd(bpf_obj_get(prog.c_str()));
  return m;
}

int PinnedMaps::map_fd(const char* map_name) const {
  for (const auto& m : maps_) {
    if (m.name == map_name) return m.fd.get();
  }
  return -1;
}

std::optional<rm_orig_dst> PinnedMaps::TakeOrigDst(uint64_t netns_cookie, const SocketAddress& peer) const {
  rm_tuple_key key{};
  key.netns_cookie = netns_cookie;
  FillAddr(key.addr, peer.ip);
  key.port = htons(peer.port);
  rm_orig_dst value{};
  int fd = map_fd(RM_MAP_ORIG_DST);
  if (bpf_map_lookup_and_delete_elem(fd, &key, &value) != 0) {
    // Hash maps gained lookup_and_delete in 5.14; keep a fallback.
    if (errno != EINVAL && errno != EOPNOTSUPP) return std::nullopt;
    if (bpf_map_lookup_elem(fd, &key, &value) != 0) return std::nullopt;
    bpf_map_delete_elem(fd, &key);
  }
  return value;
}

PinnedMaps::SockhashAdd PinnedMaps::AddToSockhash(int fd, uint64_t netns_cookie, const SocketAddress& local,
                                                  const SocketAddress& remote) const {
  if (!FastpathEnabled()) return SockhashAdd::kFastpathOff;
  rm_sock_key key = SockKey(netns_cookie, local, remote);
  uint64_t value = static_cast<uint64_t>(fd);
  if (bpf_map_update_elem(map_fd(RM_MAP_SOCKHASH), &key, &value, BPF_NOEXIST) == 0) return SockhashAdd::kAdded;
  // EEXIST: the key is there. EBUSY: the socket already belongs to a map
  // with the sk_msg program attached (the kernel will not link a second
  // parser), which for ringmesh's single sockhash means sockops put it there.
  return errno == EEXIST || errno == EBUSY ? SockhashAdd::kAlreadyPresent : SockhashAdd::kFailed;
}

bool PinnedMaps::Credit(uint64_t netns_cookie, const SocketAddress& local, const SocketAddress& remote,
                        uint64_t consumed) const {
  rm_sock_key key = SockKey(netns_cookie, local, remote);
  rm_fp_credit value{.consumed = consumed};
  return bpf_map_update_elem(map_fd(RM_MAP_FP_CREDIT), &key, &value, BPF_ANY) == 0;
}

void PinnedMaps::ForgetCredit(uint64_t netns_cookie, const SocketAddress& local, const SocketAddress& remote) const {
  rm_sock_key key = SockKey(netns_cookie, local, remote);
  bpf_map_delete_elem(map_fd(RM_MAP_FP_CREDIT), &key);
}

std::optional<rm_config> PinnedMaps::ReadConfig() const {
  uint32_t zero = 0;
  rm_config cfg{};
  if (bpf_map_lookup_elem(map_fd(RM_MAP_CONFIG), &zero, &cfg) != 0) return std::nullopt;
  return cfg;
}

absl::Status PinnedMaps::UpdateConfig(const std::function<void(rm_config&)>& change) const {
  std::optional<rm_config> cfg = ReadConfig();
  if (!cfg) return absl::InternalError(absl::StrCat("read rm_config: ", std::strerror(errno)));
  change(*cfg);
  uint32_t zero = 0;
  if (bpf_map_update_elem(map_fd(RM_MAP_CONFIG), &zero, &*cfg, BPF_ANY) != 0) {
    return absl::InternalError(absl::StrCat("write rm_config: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

bool PinnedMaps::MarkUpstreamToLocalPod(int fd) const {
  rm_upstream value{.to_local_pod = 1, ._pad = 0};
  return bpf_map_update_elem(map_fd(RM_MAP_UPSTREAM), &fd, &value, BPF_ANY) == 0;
}

bool PinnedMaps::LegOnFastPath(const SpliceLeg& leg) const {
  rm_sock_addr value{};
  rm_sock_key via = SockKey(leg.netns_cookie, leg.via, leg.via_peer);
  rm_sock_key target = SockKey(leg.netns_cookie, leg.target, leg.target_peer);
  return bpf_map_lookup_elem(map_fd(RM_MAP_SOCK_ADDR), &via, &value) == 0 &&
         bpf_map_lookup_elem(map_fd(RM_MAP_SOCK_ADDR), &target, &value) == 0;
}

bool PinnedMaps::SetSplice(const SpliceLeg& leg, uint64_t forwarded) const {
  rm_sock_key writer = SockKey(leg.netns_cookie, leg.writer, leg.writer_peer);
  rm_splice value{};
  value.target = SockKey(leg.netns_cookie, leg.target, leg.target_peer);
  value.via = SockKey(leg.netns_cookie, leg.via, leg.via_peer);
  value.forwarded = forwarded;
  return bpf_map_update_elem(map_fd(RM_MAP_SPLICE), &writer, &value, BPF_ANY) == 0;
}

bool PinnedMaps::SetShortRoute(const SocketAddress& dst, bool is_short, std::span<const SocketAddress> direct,
                               uint32_t direct_left) const {
  rm_dst_key key{};
  FillAddr(key.addr, dst.ip);
  key.port = htons(dst.port);
  if (!is_short) return bpf_map_delete_elem(map_fd(RM_MAP_SHORT_DST), &key) == 0 || errno == ENOENT;
  rm_short_dst value{};
  value.short_lived = 1;
  if (!direct.empty() && direct.size() <= RM_MAX_DIRECT_BACKENDS && direct_left > 0) {
    value.direct_left = direct_left;
    value.n_backends = static_cast<uint32_t>(direct.size());
    for (size_t i = 0; i < direct.size(); ++i) {
      FillAddr(value.backends[i].addr, direct[i].ip);
      value.backends[i].port = htons(direct[i].port);
    }
  }
  return bpf_map_update_elem(map_fd(RM_MAP_SHORT_DST), &key, &value, BPF_ANY) == 0;
}

void PinnedMaps::ClearShortRoutes() const {
  const int fd = map_fd(RM_MAP_SHORT_DST);
  rm_dst_key key{};
  // Always the first key, deleted: bounded by the map's capacity.
  for (int guard = 0; guard < (1 << 20) && bpf_map_get_next_key(fd, nullptr, &key) == 0; ++guard) {
    if (bpf_map_delete_elem(fd, &key) != 0 && errno != ENOENT) break;
  }
}

rm_direct_conns PinnedMaps::DirectStats(const SocketAddress& endpoint) const {
  rm_direct_key key{};  // pod 0: over all source pods
  FillAddr(key.endpoint.addr, endpoint.ip);
  key.endpoint.port = htons(endpoint.port);
  rm_direct_conns value{};
  if (bpf_map_lookup_elem(map_fd(RM_MAP_DIRECT_CONNS), &key, &value) != 0) return rm_direct_conns{};
  return value;
}

std::vector<PinnedMaps::DirectBySource> PinnedMaps::DirectStatsBySource() const {
  const int fd = map_fd(RM_MAP_DIRECT_CONNS);
  std::vector<DirectBySource> out;
  rm_direct_key key{}, next{};
  bool first = true;
  // Bounded by the map's capacity (a key deleted mid-walk restarts it).
  for (int guard = 0; guard < (1 << 22); ++guard) {
    if (bpf_map_get_next_key(fd, first ? nullptr : &key, &next) != 0) break;
    first = false;
    key = next;
    if (key.pod_id == 0) continue;
    rm_direct_conns value{};
    if (bpf_map_lookup_elem(fd, &key, &value) != 0) continue;
    out.push_back({key.pod_id, SocketAddress{IpAddress::FromV6(key.endpoint.addr), ntohs(key.endpoint.port)}, value});
  }
  return out;
}

std::optional<rm_short_dst> PinnedMaps::ShortRoute(const SocketAddress& dst) const {
  rm_dst_key key{};
  FillAddr(key.addr, dst.ip);
  key.port = htons(dst.port);
  rm_short_dst value{};
  if (bpf_map_lookup_elem(map_fd(RM_MAP_SHORT_DST), &key, &value) != 0) return std::nullopt;
  return value;
}

void PinnedMaps::ClearSplice(const SpliceLeg& leg) const {
  rm_sock_key writer = SockKey(leg.netns_cookie, leg.writer, leg.writer_peer);
  bpf_map_delete_elem(map_fd(RM_MAP_SPLICE), &writer);
}

bool PinnedMaps::StartDirectCount(const SpliceLeg& leg) const {
  rm_sock_key via = SockKey(leg.netns_cookie, leg.via, leg.via_peer);
  rm_splice_bytes zero{};
  return bpf_map_update_elem(map_fd(RM_MAP_SPLICE_BYTES), &via, &zero, BPF_ANY) == 0;
}

uint64_t PinnedMaps::DirectBytes(const SpliceLeg& leg) const {
  rm_sock_key via = SockKey(leg.netns_cookie, leg.via, leg.via_peer);
  rm_splice_bytes value{};
  if (bpf_map_lookup_elem(map_fd(RM_MAP_SPLICE_BYTES), &via, &value) != 0) return 0;
  return value.direct;
}

uint64_t PinnedMaps::TakeDirectBytes(const SpliceLeg& leg) const {
  rm_sock_key via = SockKey(leg.netns_cookie, leg.via, leg.via_peer);
  rm_splice_bytes value{};
  if (bpf_map_lookup_and_delete_elem(map_fd(RM_MAP_SPLICE_BYTES), &via, &value) != 0) return 0;
  return value.direct;
}

int64_t PinnedMaps::TargetUnread(const SpliceLeg& leg) const {
  if (!unread_prog_) return -1;
  rm_unread_args args{};
  args.key = SockKey(leg.netns_cookie, leg.target, leg.target_peer);
  args.unread = -1;
  // A syscall program's context is copied back into ctx_in (ctx_out is
  // refused for this program type).
  LIBBPF_OPTS(bpf_test_run_opts, opts);
  opts.ctx_in = &args;
  opts.ctx_size_in = sizeof(args);
  if (bpf_prog_test_run_opts(unread_prog_.get(), &opts) != 0) return -1;
  return args.unread;
}

uint64_t PinnedMaps::FastpathBudget() const {
  std::optional<rm_config> cfg = ReadConfig();
  return cfg ? cfg->fastpath_budget : 0;
}

bool PinnedMaps::FastpathEnabled() const {
  std::optional<rm_config> cfg = ReadConfig();
  return cfg && cfg->fastpath_enabled != 0;
}

absl::Status PinnedMaps::SetFastpathBudget(uint64_t bytes) const {
  return UpdateConfig([bytes](rm_config& c) { c.fastpath_budget = bytes; });
}

uint32_t PinnedMaps::FlowControl() const {
  std::optional<rm_config> cfg = ReadConfig();
  return cfg ? cfg->flow_control : UINT32_MAX;
}

absl::Status PinnedMaps::SetFlowControl(uint32_t mode) const {
  return UpdateConfig([mode](rm_config& c) { c.flow_control = mode; });
}

absl::Status PinnedMaps::SetFastpath(bool enabled) const {
  return UpdateConfig([enabled](rm_config& c) { c.fastpath_enabled = enabled ? 1 : 0; });
}

absl::StatusOr<Counters> PinnedMaps::ReadCounters() const {
  Counters out{};
  long ncpu = sysconf(_SC_NPROCESSORS_CONF);
  int possible = libbpf_num_possible_cpus();
  if (possible > 0) ncpu = possible;
  std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpu));
  int fd = map_fd(RM_MAP_COUNTERS);
  for (uint32_t i = 0; i < RM_CTR_MAX; ++i) {
    if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) != 0) {
      return absl::InternalError(absl::StrCat("read rm_counters[", i, "]: ", std::strerror(errno)));
    }
    for (uint64_t v : per_cpu) out[i] += v;
  }
  return out;
}

absl::StatusOr<size_t> PinnedMaps::CountEntries(const char* map_name) const {
  int fd = map_fd(map_name);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("no map ", map_name));
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
    return absl::InternalError(absl::StrCat("map info: ", std::strerror(errno)));
  }
  std::vector<uint8_t> key(info.key_size), next(info.key_size);
  size_t n = 0;
  void* prev = nullptr;
  // Bounded by max_entries (+1 to notice a concurrent refill, not loop forever).
  while (n <= info.max_entries && bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    ++n;
    key.swap(next);
    prev = key.data();
  }
  return n;
}

}  // namespace ringmesh::bpf
