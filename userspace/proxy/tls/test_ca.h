// For tests and the demo only: a throwaway CA hierarchy made in memory.
// Production CAs come from files or a Secret (LocalCa::FromFiles/FromPem).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ringmesh::proxy::tls {

struct TestCaMaterial {
  std::string root_pem;     // for a TrustBundle
  std::string ca_cert_pem;  // the issuing CA: the intermediate, or the root itself
  std::string ca_key_pem;
  std::string chain_pem;  // certificates above the issuing CA, root excluded (empty here)
};

// A self-signed P-256 root named `name` and, unless `with_intermediate` is
// false, an intermediate signed by it. Both valid from a day ago for
// `validity`.
absl::StatusOr<TestCaMaterial> MakeTestCaForTesting(std::string_view name, bool with_intermediate = true,
                                                    absl::Duration validity = absl::Hours(24 * 365));

}  // namespace ringmesh::proxy::tls
