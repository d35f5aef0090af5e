#include "userspace/bpf/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "rm_datapath.skel.h"
#include "userspace/common/logging.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

namespace ringmesh::bpf {
namespace {

namespace fs = std::filesystem;

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

absl::Status MkdirAll(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

// Refuses anything that is not a proper subdirectory of a cgroup v2 mount:
// attaching to a hierarchy root would catch every process on the machine.
absl::Status CheckCgroup(const std::string& path) {
  struct statfs sfs{};
  if (statfs(path.c_str(), &sfs) != 0) return Errno(absl::StrCat("cgroup ", path));
  if (static_cast<unsigned long>(sfs.f_type) != CGROUP2_SUPER_MAGIC) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not in a cgroup v2 hierarchy"));
  }
  fs::path parent = fs::path(path).lexically_normal().parent_path();
  struct statfs pfs{};
  if (parent.empty() || statfs(parent.c_str(), &pfs) != 0 ||
      static_cast<unsigned long>(pfs.f_type) != CGROUP2_SUPER_MAGIC) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is the root of a cgroup hierarchy; ringmesh attaches only below it"));
  }
  return absl::OkStatus();
}

struct Hook {
  bpf_program* prog;
  const char* link_name;
  bpf_attach_type type;
  bool on_sockhash;  // target is the sockhash map instead of the cgroup
};

}  // namespace

Datapath::~Datapath() {
  links_.clear();
  if (skel_) rm_datapath__destroy(skel_);
}

absl::StatusOr<std::unique_ptr<Datapath>> Datapath::LoadOrAdopt(const DatapathOptions& opts) {
  if (opts.pin_dir.empty()) return absl::InvalidArgumentError("pin_dir is required");
  if (auto st = CheckCgroup(opts.cgroup_path); !st.ok()) return st;
  struct statfs sfs{};
  if (auto st = MkdirAll(opts.pin_dir); !st.ok()) return st;
  if (statfs(opts.pin_dir.c_str(), &sfs) != 0 || static_cast<unsigned long>(sfs.f_type) != BPF_FS_MAGIC) {
    return absl::FailedPreconditionError(
        absl::StrCat(opts.pin_dir, " is not on a bpffs mount (mount -t bpf bpf /sys/fs/bpf)"));
  }
  std::unique_ptr<Datapath> dp(new Datapath());
  if (auto st = dp->Load(opts); !st.ok()) return st;
  if (auto st = dp->AttachAll(opts); !st.ok()) return st;
  auto maps = PinnedMaps::Open(opts.pin_dir);
  if (!maps.ok()) return maps.status();
  dp->maps_ = std::move(*maps);
  return dp;
}

absl::Status Datapath::Load(const DatapathOptions& opts) {
  skel_ = rm_datapath__open();
  if (!skel_) return Errno("open BPF skeleton");
  skel_->rodata->rm_proxy_mark = opts.proxy_mark;

  const std::string maps_dir = opts.pin_dir + "/maps";
  if (auto st = MkdirAll(maps_dir); !st.ok()) return st;

  struct Sized {
    bpf_map* map;
    uint32_t max;
  };
  const Sized sized[] = {{skel_->maps.rm_pods, opts.max_pods},
                         {skel_->maps.rm_opt_out_cidrs, opts.max_opt_out_cidrs},
                         {skel_->maps.rm_orig_dst, opts.max_orig_dst},
                         {skel_->maps.rm_sockhash, opts.max_sockhash},
                         {skel_->maps.rm_fp_credit, opts.max_sockhash},
                         {skel_->maps.rm_sock_addr, opts.max_sockhash},
                         {skel_->maps.rm_short_dst, opts.max_short_routes},
                         {skel_->maps.rm_direct_conns, opts.max_direct_backends},
                         {skel_->maps.rm_splice_bytes, opts.max_sockhash}};
  for (const auto& s : sized) {
    if (s.max == 0) return absl::InvalidArgumentError(absl::StrCat(bpf_map__name(s.map), ": capacity 0"));
    bpf_map__set_max_entries(s.map, s.max);
  }

  // Reuse whatever a previous agent pinned; libbpf checks type, key, value
  // and capacity compatibility and fails the load on a mismatch.
  int reused = 0, total = 0;
  bpf_map* map;
  bpf_object__for_each_map(map, skel_->obj) {
    if (bpf_map__is_internal(map)) continue;  // .rodata
    ++total;
    std::string path = absl::StrCat(maps_dir, "/", bpf_map__name(map));
    bpf_map__set_pin_path(map, path.c_str());  // libbpf reuses if present, pins after load if not
    if (access(path.c_str(), F_OK) == 0) ++reused;
  }
  if (reused > 0 && reused < total) {
    spdlog::warn("{}: {} of {} maps pinned; creating the missing ones", maps_dir, reused, total);
  }
  if (rm_datapath__load(skel_) != 0) {
    return absl::InternalError(absl::StrCat("load BPF object: ", std::strerror(errno),
                                            reused ? " (pinned maps incompatible? run ringmesh-agent "
                                                     "--uninstall to start over)"
                                                   : ""));
  }
  adopted_ = reused == total;
  if (auto st = PinUnreadProgram(opts.pin_dir); !st.ok()) return st;

  uint32_t zero = 0;
  rm_config cfg{};
  int cfg_fd = bpf_map__fd(skel_->maps.rm_config);
  if (bpf_map_lookup_elem(cfg_fd, &zero, &cfg) != 0) return Errno("read rm_config");
  if (cfg.abi_version != 0 && cfg.abi_version != RM_ABI_VERSION) {
    return absl::FailedPreconditionError(absl::StrCat("pinned maps in ", maps_dir, " have ABI version ",
                                                      cfg.abi_version, ", this agent speaks ", RM_ABI_VERSION,
                                                      "; run ringmesh-agent --uninstall first"));
  }
  if (cfg.abi_version == 0) {
    cfg.abi_version = RM_ABI_VERSION;
    cfg.fastpath_enabled = opts.fastpath ? 1 : 0;  // later starts keep the runtime switch as it is
  }
  cfg.fastpath_budget = opts.fastpath_budget;
  cfg.flow_control = opts.flow_control;
  if (bpf_map_update_elem(cfg_fd, &zero, &cfg, BPF_ANY) != 0) return Errno("write rm_config");
  return absl::OkStatus();
}

// The proxy's way to read a socket's unread count (rm_unread_args in
// abi.h). Replaced on every start: a proxy that opened the previous one
// keeps a working copy (same pinned maps).
absl::Status Datapath::PinUnreadProgram(const std::string& pin_dir) {
  const std::string dir = pin_dir + "/progs";
  if (auto st = MkdirAll(dir); !st.ok()) return st;
  const std::string path = absl::StrCat(dir, "/", RM_PROG_UNREAD);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return Errno(absl::StrCat("unlink ", path));
  if (bpf_obj_pin(bpf_program__fd(skel_->progs.rm_unread), path.c_str()) != 0) {
    return Errno(absl::StrCat("pin ", path));
  }
  return absl::OkStatus();
}

absl::Status Datapath::AttachAll(const DatapathOptions& opts) {
  const std::string links_dir = opts.pin_dir + "/links";
  if (auto st = MkdirAll(links_dir); !st.ok()) return st;
  UniqueFd cg(open(opts.cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cg) return Errno(absl::StrCat("open cgroup ", opts.cgroup_path));

  const Hook hooks[] = {
      {skel_->progs.rm_connect4, "connect4", BPF_CGROUP_INET4_CONNECT, false},
      {skel_->progs.rm_connect6, "connect6", BPF_CGROUP_INET6_CONNECT, false},
      {skel_->progs.rm_sockops, "sockops", BPF_CGROUP_SOCK_OPS, false},
      {skel_->progs.rm_sk_msg, "sk_msg", BPF_SK_MSG_VERDICT, true},
  };
  for (const auto& h : hooks) {
    int prog_fd = bpf_program__fd(h.prog);
    std::string path = absl::StrCat(links_dir, "/", h.link_name);
    int target = h.on_sockhash ? bpf_map__fd(skel_->maps.rm_sockhash) : cg.get();
    int pinned = bpf_obj_get(path.c_str());
    if (pinned >= 0) {
      UniqueFd link(pinned);
      // Atomic program swap: the hook never runs without a program.
      if (bpf_link_update(link.get(), prog_fd, nullptr) != 0) {
        return Errno(absl::StrCat("bpf_link_update ", path));
      }
      links_.push_back(std::move(link));
      continue;
    }
    int link_fd = bpf_link_create(prog_fd, target, h.type, nullptr);
    if (link_fd < 0) {
      if (!h.on_sockhash) return Errno(absl::StrCat("attach ", h.link_name, " to ", opts.cgroup_path));
      // Kernels before 6.10 have no sockmap links: the program then stays
      // attached to the pinned map itself, which is just as persistent.
      if (bpf_prog_attach(prog_fd, target, h.type, 0) != 0) return Errno("attach sk_msg to sockhash");
      spdlog::info("sk_msg attached to the sockhash without a link (kernel has no sockmap links)");
      continue;
    }
    UniqueFd link(link_fd);
    if (bpf_obj_pin(link.get(), path.c_str()) != 0) return Errno(absl::StrCat("pin ", path));
    links_.push_back(std::move(link));
  }
  return absl::OkStatus();
}

SyncResult Datapath::SyncPods(const std::vector<PodEntry>& pods) {
  SyncResult r;
  int pods_fd = maps_.map_fd(RM_MAP_PODS);
  int cidr_fd = maps_.map_fd(RM_MAP_OPT_OUT_CIDRS);

  std::set<uint64_t> want_pods;
  std::set<std::vector<uint8_t>> want_cidrs;
  auto cidr_key = [](uint32_t pod_id, const Cidr& c) {
    rm_cidr_key k{};
    k.pod_id = pod_id;
    k.prefixlen = 32 + (c.base.is_v4() ? 96 : 0) + c.prefix_len;
    std::memcpy(k.addr, c.base.bytes().data(), 16);
    return k;
  };
  auto as_bytes = [](const rm_cidr_key& k) {
    const auto* p = reinterpret_cast<const uint8_t*>(&k);
    return std::vector<uint8_t>(p, p + sizeof(k));
  };
  for (const auto& p : pods) {
    want_pods.insert(p.netns_cookie);
    bool ok = true;
    // CIDRs before the pod entry, so a newly enrolled pod's opt-outs are in
    // force from its first redirected connect.
    for (const auto& c : p.opt_out_cidrs) {
      rm_cidr_key k = cidr_key(p.info.pod_id, c);
      want_cidrs.insert(as_bytes(k));
      uint32_t one = 1;
      if (bpf_map_update_elem(cidr_fd, &k, &one, BPF_ANY) != 0) {
        r.errors.push_back(absl::StrCat("pod_id ", p.info.pod_id, ": opt-out CIDR ", c.ToString(), ": ",
                                        std::strerror(errno)));
        ok = false;
      }
    }
    if (bpf_map_update_elem(pods_fd, &p.netns_cookie, &p.info, BPF_ANY) != 0) {
      r.errors.push_back(absl::StrCat("pod_id ", p.info.pod_id, ": ", std::strerror(errno),
                                      errno == E2BIG ? " (rm_pods full: raise --max-pods)" : ""));
      ok = false;
    }
    if (ok) ++r.upserted;
  }
  // Delete stale entries (collect first: deleting while iterating restarts
  // the walk on hash maps).
  std::vector<uint64_t> stale_pods;
  uint64_t key, next;
  uint64_t* prev = nullptr;
  while (bpf_map_get_next_key(pods_fd, prev, &next) == 0) {
    if (!want_pods.count(next)) stale_pods.push_back(next);
    key = next;
    prev = &key;
    if (stale_pods.size() > 1u << 20) break;
  }
  for (uint64_t k : stale_pods) {
    if (bpf_map_delete_elem(pods_fd, &k) == 0) ++r.removed;
  }
  std::vector<rm_cidr_key> stale_cidrs;
  rm_cidr_key ck{}, cnext{};
  rm_cidr_key* cprev = nullptr;
  while (bpf_map_get_next_key(cidr_fd, cprev, &cnext) == 0) {
    if (!want_cidrs.count(as_bytes(cnext))) stale_cidrs.push_back(cnext);
    ck = cnext;
    cprev = &ck;
    if (stale_cidrs.size() > 1u << 20) break;
  }
  for (const auto& k : stale_cidrs) bpf_map_delete_elem(cidr_fd, &k);
  return r;
}

absl::Status Datapath::Uninstall(const std::string& pin_dir) {
  std::error_code ec;
  if (!fs::exists(pin_dir, ec)) return absl::OkStatus();
  fs::remove_all(pin_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("remove ", pin_dir, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace ringmesh::bpf
