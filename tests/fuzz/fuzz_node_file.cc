// Fuzzes the node file parser (YAML via yaml-cpp events, then validation).
// Properties: no crash, errors always name the file, and whatever the parser
// accepts survives the snapshot JSON encoding unchanged (the agent sends it).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "userspace/agent/node_file.h"
#include "userspace/common/snapshot_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto snapshot = ringmesh::agent::ParseNodeFile(text, "fuzz.yaml");
  if (!snapshot.ok()) {
    std::string_view message(snapshot.status().message().data(), snapshot.status().message().size());
    if (message.substr(0, 10) != "fuzz.yaml:") {
      std::fprintf(stderr, "error without the file name: %s\n", std::string(message).c_str());
      std::abort();
    }
    return 0;
  }
  auto json = ringmesh::EncodeSnapshotJson(*snapshot);
  if (!json.ok()) {
    std::fprintf(stderr, "accepted node file does not encode: %s\n", json.status().ToString().c_str());
    std::abort();
  }
  auto back = ringmesh::DecodeSnapshotJson(*json);
  if (!back.ok() || *back != *snapshot) {
    std::fprintf(stderr, "JSON round trip changed the snapshot: %s\n", back.status().ToString().c_str());
    std::abort();
  }
  return 0;
}
