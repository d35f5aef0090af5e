#include "userspace/bpf/inspect.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace ringmesh::bpf {

absl::StatusOr<std::vector<MapSummary>> DescribeMaps(const PinnedMaps& maps) {
  std::vector<MapSummary> out;
  for (const char* name : {RM_MAP_PODS, RM_MAP_OPT_OUT_CIDRS, RM_MAP_ORIG_DST, RM_MAP_SOCKHASH, RM_MAP_FP_CREDIT, RM_MAP_SOCK_ADDR, RM_MAP_SPLICE, RM_MAP_SHORT_DST, RM_MAP_SPLICE_BYTES, RM_MAP_DIRECT_CONNS,
                           RM_MAP_CONFIG, RM_MAP_COUNTERS}) {
    int fd = maps.map_fd(name);
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (fd < 0 || bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
      return absl::InternalError(absl::StrCat("map ", name, ": ", std::strerror(errno)));
    }
    MapSummary s;
    s.name = name;
    const char* t = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(info.type));
    s.type = t ? t : absl::StrCat(info.type);
    s.max_entries = info.max_entries;
    if (info.type != BPF_MAP_TYPE_ARRAY && info.type != BPF_MAP_TYPE_PERCPU_ARRAY) {
      auto n = maps.CountEntries(name);
      if (n.ok()) s.entries = *n;
    }
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::vector<LinkSummary>> DescribeLinks(const std::string& pin_dir) {
  std::vector<LinkSummary> out;
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::path(pin_dir) / "links";
  if (!std::filesystem::exists(dir, ec)) return out;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    LinkSummary s;
    s.pin = entry.path().filename();
    int fd = bpf_obj_get(entry.path().c_str());
    if (fd < 0) return absl::InternalError(absl::StrCat("open ", entry.path().string(), ": ", std::strerror(errno)));
    bpf_link_info li{};
    uint32_t len = sizeof(li);
    int rc = bpf_obj_get_info_by_fd(fd, &li, &len);
    close(fd);
    if (rc != 0) return absl::InternalError(absl::StrCat("link info ", s.pin, ": ", std::strerror(errno)));
    s.link_id = li.id;
    s.prog_id = li.prog_id;
    if (li.type == BPF_LINK_TYPE_CGROUP) {
      s.cgroup_id = li.cgroup.cgroup_id;
      const char* a = libbpf_bpf_attach_type_str(static_cast<bpf_attach_type>(li.cgroup.attach_type));
      s.attach = a ? a : absl::StrCat(li.cgroup.attach_type);
    } else {
      // libbpf 1.1 predates sockmap links (type 14, kernel 6.10).
      const char* t = libbpf_bpf_link_type_str(static_cast<bpf_link_type>(li.type));
      s.attach = t ? t : (li.type == 14 ? "sk_msg_verdict (sockhash)" : absl::StrCat("link type ", li.type));
      s.sockhash_attach = true;
    }
    int pfd = bpf_prog_get_fd_by_id(li.prog_id);
    if (pfd >= 0) {
      bpf_prog_info pi{};
      uint32_t plen = sizeof(pi);
      if (bpf_obj_get_info_by_fd(pfd, &pi, &plen) == 0) s.prog_name = pi.name;
      close(pfd);
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace ringmesh::bpf
