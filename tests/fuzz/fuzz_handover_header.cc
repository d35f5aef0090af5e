// Fuzzes the header of a listener handover message (ParseHandoverHeader),
// what a successor proxy reads from its predecessor's --handover-socket.
//
// Properties:
//   - no crash, no exception escapes (the parser is no-throw);
//   - a header it accepts is either the end or a set with a non-empty
//     address of at most 64 bytes;
//   - what it accepts, written back as the predecessor writes it, parses to
//     the same header.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "userspace/proxy/handover.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto h = ringmesh::proxy::ParseHandoverHeader(text);
  if (!h.ok()) return 0;
  if (h->end) {
    auto again = ringmesh::proxy::ParseHandoverHeader(nlohmann::json{{"end", true}}.dump());
    Check(again.ok() && again->end, "the end header round-trips");
    return 0;
  }
  Check(!h->address.empty() && h->address.size() <= 64, "accepted address within bounds");
  nlohmann::json back = {{"netns_cookie", h->netns_cookie}, {"address", h->address}};
  auto again = ringmesh::proxy::ParseHandoverHeader(back.dump());
  Check(again.ok() && !again->end && again->netns_cookie == h->netns_cookie && again->address == h->address,
        "an accepted set header round-trips");
  return 0;
}
