// Read-only views of an instance's pinned BPF state for ringmeshctl and
// tests: maps with capacity and fill, links with their programs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "userspace/bpf/pinned_maps.h"

namespace ringmesh::bpf {

struct MapSummary {
  std::string name;
  std::string type;
  uint32_t max_entries = 0;
  std::optional<size_t> entries;  // unset where the map cannot be iterated
};

struct LinkSummary {
  std::string pin;         // file name under <pin_dir>/links
  uint32_t link_id = 0;
  uint32_t prog_id = 0;
  std::string prog_name;
  std::string attach;      // connect4, sockops, ...
  uint64_t cgroup_id = 0;  // 0 when not a cgroup link
  bool sockhash_attach = false;
};

absl::StatusOr<std::vector<MapSummary>> DescribeMaps(const PinnedMaps& maps);
// Links pinned under <pin_dir>/links. Missing directory -> empty list.
absl::StatusOr<std::vector<LinkSummary>> DescribeLinks(const std::string& pin_dir);

}  // namespace ringmesh::bpf
