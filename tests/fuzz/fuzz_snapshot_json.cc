// Fuzzes the snapshot JSON decoder (what the proxy runs on the agent's
// bytes). Properties: no crash, and anything it accepts re-encodes and
// decodes to the same snapshot (the encoding is lossless).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "userspace/common/snapshot_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto snapshot = ringmesh::DecodeSnapshotJson(text);
  if (!snapshot.ok()) return 0;
  for (int indent : {-1, 1}) {
    auto json = ringmesh::EncodeSnapshotJson(*snapshot, indent);
    if (!json.ok()) {
      std::fprintf(stderr, "decoded snapshot does not encode: %s\n", json.status().ToString().c_str());
      std::abort();
    }
    auto back = ringmesh::DecodeSnapshotJson(*json);
    if (!back.ok() || *back != *snapshot) {
      std::fprintf(stderr, "round trip changed the snapshot: %s\n%s\n", back.status().ToString().c_str(),
                   json->c_str());
      std::abort();
    }
  }
  return 0;
}
