// Fuzzes SpiffeId::Parse, which reads the URI SAN of every peer certificate.
//
// Properties:
//   - no crash, no exception escapes;
//   - an accepted ID respects the length bounds and prints back to exactly
//     the input (Parse accepts one spelling only);
//   - ToString(Parse(x)) parses back to an equal ID.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "userspace/proxy/tls/spiffe_id.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ringmesh::proxy::tls::SpiffeId;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto id = SpiffeId::Parse(text);
  if (!id.ok()) return 0;
  Check(!id->trust_domain.empty() && id->trust_domain.size() <= SpiffeId::kMaxTrustDomain,
        "trust domain bounds");
  Check(!id->ns.empty() && id->ns.size() <= SpiffeId::kMaxNamespace, "namespace bounds");
  Check(!id->service_account.empty() && id->service_account.size() <= SpiffeId::kMaxServiceAccount,
        "service account bounds");
  const std::string back = id->ToString();
  Check(back == text, "an accepted ID prints back to its input");
  auto again = SpiffeId::Parse(back);
  Check(again.ok() && *again == *id, "ToString(Parse(x)) parses back equal");
  return 0;
}
