// Fuzzes the Istio AuthorizationPolicy parser (ParseIstioAuthorizationPolicy
// in snapshot.h, shared by the node file and the Kubernetes source) and the
// Authorizer built from what it accepts.
//
// Input: JSON text of one policy object (metadata + spec). Properties:
//   - no crash, no exception, no unbounded growth (default AuthzLimits);
//   - an accepted policy is within its limits and survives the snapshot
//     JSON round trip unchanged (the agent sends it to the proxy);
//   - the Authorizer decides for a few fixed peers without crashing, and a
//     DENY decision always names a policy.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "userspace/common/snapshot.h"
#include "userspace/common/snapshot_json.h"
#include "userspace/proxy/authz/authorizer.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ringmesh;  // NOLINT
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (JsonNestingDepth(text) > 32) return 0;
  nlohmann::json json = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  auto policy = ParseIstioAuthorizationPolicy(json);
  if (!policy.ok() || !policy->has_value()) return 0;
  Check(CheckAuthzLimits(**policy, AuthzLimits{}).ok(), "accepted policy over its limits");

  Snapshot snapshot;
  snapshot.authorization_policies.push_back(**policy);
  auto encoded = EncodeSnapshotJson(snapshot);
  Check(encoded.ok(), "accepted policy does not encode");
  auto back = DecodeSnapshotJson(*encoded);
  Check(back.ok() && *back == snapshot, "snapshot JSON round trip changed the policy");

  authz::Authorizer authorizer(snapshot.authorization_policies);
  const std::map<std::string, std::string> labels{{"app", "web"}};
  const authz::Workload dest{(*policy)->ns, &labels};
  for (const char* principal :
       {"", "spiffe://cluster.local/ns/default/sa/sleep", "spiffe://x/ns/evil/sa/a"}) {
    for (const char* ip : {"10.1.2.3", "2001:db8::1"}) {
      for (uint16_t port : {80, 8080}) {
        auto d = authorizer.Check(dest, authz::Peer{principal, *IpAddress::Parse(ip)}, port);
        Check(d.allowed || d.reason == authz::Decision::Reason::kNoAllowMatched || !d.policy.empty(),
              "a DENY decision without its policy");
      }
    }
  }
  return 0;
}
