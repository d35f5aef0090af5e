// Fuzzes the HBONE server's reading of a CONNECT head (userspace/proxy/hbone
// hbone_request.h): :authority, forwarded, traceparent, the whole head.
// Input: lines "method", "authority", "scheme", "path", then "name: value"
// fields.
//
// Properties:
//   - no crash, no exception escapes;
//   - an accepted authority formats back to text that parses to the same
//     address, and a target is never the unspecified address or port 0;
//   - a forwarded `for` we format parses back to the same address;
//   - an accepted head is a CONNECT without :scheme/:path, and a traceparent
//     it reports is valid.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "userspace/proxy/hbone/hbone_request.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

std::string_view NextLine(std::string_view* rest) {
  size_t nl = rest->find('\n');
  std::string_view line = rest->substr(0, nl);
  *rest = nl == std::string_view::npos ? std::string_view() : rest->substr(nl + 1);
  return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ringmesh::proxy::hbone;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  ringmesh::proxy::http::Http2Headers head;
  head.method = NextLine(&rest);
  head.authority = NextLine(&rest);
  head.scheme = NextLine(&rest);
  head.path = NextLine(&rest);
  while (!rest.empty() && head.fields.size() < 64) {
    std::string_view line = NextLine(&rest);
    size_t colon = line.find(": ");
    if (colon == std::string_view::npos) {
      head.fields.emplace_back(std::string(line), "");
    } else {
      head.fields.emplace_back(std::string(line.substr(0, colon)), std::string(line.substr(colon + 2)));
    }
  }

  auto target = ParseConnectAuthority(head.authority);
  if (target.ok()) {
    Check(target->port != 0 && !target->ip.is_unspecified(), "target is a real address");
    auto again = ParseConnectAuthority(FormatConnectAuthority(*target));
    Check(again.ok() && *again == *target, "authority round trip");
  }
  for (const auto& [name, value] : head.fields) {
    auto ip = ParseForwardedFor(value);
    if (ip) {
      auto back = ParseForwardedFor(FormatForwardedFor(*ip));
      Check(back && *back == *ip, "forwarded round trip");
    }
    (void)IsValidTraceparent(value);
  }
  auto req = ParseConnectRequest(head);
  if (req.ok()) {
    Check(head.method == "CONNECT" && head.scheme.empty() && head.path.empty(),
          "only HBONE CONNECT accepted");
    Check(req->target == *target, "request target is the authority");
    Check(req->traceparent.empty() || IsValidTraceparent(req->traceparent), "traceparent valid");
  }
  return 0;
}
