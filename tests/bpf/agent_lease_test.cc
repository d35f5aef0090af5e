// The datapath lease decision (userspace/bpf/agent_lease.h); the pinned map
// itself is exercised by tests/netns/bpf_smoke_test.sh with two agents.
#include "userspace/bpf/agent_lease.h"

#include <gtest/gtest.h>

namespace ringmesh::bpf {
namespace {

constexpr uint64_t kSec = 1000000000ull;

TEST(DecideLease, HolderRenews) {
  AgentLeaseValue v{3, 100 * kSec, 42, 0};
  EXPECT_EQ(DecideLease(v, 3, 42, 101 * kSec, 5 * kSec), LeaseAction::kRenew);
  // Even when its own heartbeat is late (it was paused): still ours.
  EXPECT_EQ(DecideLease(v, 3, 42, 200 * kSec, 5 * kSec), LeaseAction::kRenew);
}

TEST(DecideLease, OthersStandByWhileFresh) {
  AgentLeaseValue v{4, 100 * kSec, 43, 0};
  EXPECT_EQ(DecideLease(v, 3, 42, 104 * kSec, 5 * kSec), LeaseAction::kStandBy);
}

TEST(DecideLease, StaleHolderIsReplaced) {
  AgentLeaseValue v{4, 100 * kSec, 43, 0};
  EXPECT_EQ(DecideLease(v, 3, 42, 106 * kSec, 5 * kSec), LeaseAction::kClaim);
}

TEST(DecideLease, SameEpochOtherPidLosesTheTie) {
  // Both claimed epoch 4 at once; pid 43 wrote last.
  AgentLeaseValue v{4, 100 * kSec, 43, 0};
  EXPECT_EQ(DecideLease(v, 4, 42, 100 * kSec, 5 * kSec), LeaseAction::kStandBy);
  EXPECT_EQ(DecideLease(v, 4, 43, 100 * kSec, 5 * kSec), LeaseAction::kRenew);
}

TEST(DecideLease, EmptyOrClockSkewClaims) {
  EXPECT_EQ(DecideLease(AgentLeaseValue{}, 0, 42, 1 * kSec, 5 * kSec), LeaseAction::kClaim);
  AgentLeaseValue future{2, 500 * kSec, 43, 0};
  EXPECT_EQ(DecideLease(future, 1, 42, 100 * kSec, 5 * kSec), LeaseAction::kClaim);
}

}  // namespace
}  // namespace ringmesh::bpf
