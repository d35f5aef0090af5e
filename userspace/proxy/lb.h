// Endpoint selection for one service port: P2C over peak-EWMA latency
// (default; connect latency on L4 routes, request latency on L7 ones),
// round robin, random and least connections, with passive outlier ejection
// after consecutive failures (connect failures, resets, 5xx answers). Pure
// logic (no sockets), shared by all workers: per-endpoint state is atomic.
//
// A LoadBalancer is immutable in its endpoint set; a new snapshot builds a
// new one that adopts the per-endpoint state (latency, active connections)
// of the previous one for endpoints that stayed, so a generation swap does
// not reset what was learned, and connections still holding the old
// instance release into the same counters.
//
//   LoadBalancer lb(LbPolicy::kP2cPeakEwma, {ip1, ip2});
//   size_t i = lb.Pick();            // LoadBalancer::kNone if none ready
//   lb.OnConnectStart(i);
//   ... lb.OnResult(i, latency, ok); ... lb.OnRelease(i);
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <vector>

#include "absl/time/time.h"
#include "userspace/common/ip.h"
#include "userspace/common/snapshot.h"

namespace ringmesh::proxy {

struct LbOptions {
  // Peak-EWMA time constant: how fast a latency sample fades.
  absl::Duration decay = absl::Seconds(10);
  // Latencies below this are treated as equal: on one node or one rack
  // they differ by scheduling noise, and a greedy choice on noise starves
  // endpoints (P2C over two endpoints always compares both).
  absl::Duration latency_floor = absl::Milliseconds(1);
  // P2C's choice between its two candidates: the cheaper always (false),
  // or each with the other's share of their summed costs (true: equal
  // costs 50/50, one 9x costlier 10%). Greedy is right for connect
  // latencies, which sit under the floor unless something is wrong; request
  // latencies carry a busy machine's noise (a few ms once in a while on
  // sub-ms answers), and greedily the endpoint that drew a spike got no
  // request until it faded: 131 to 1684 of 3000 requests to three equal
  // endpoints. Weighted, a spike only lowers the endpoint's share.
  bool weighted_choice = false;
  // Time constant for request latencies: they follow an endpoint's load
  // within a second, connect latencies its network.
  absl::Duration request_decay = absl::Seconds(1);
  // Latency charged for a failure, so P2C steers away at once.
  absl::Duration failure_penalty = absl::Seconds(1);
  // Passive outlier ejection (Envoy's consecutive_5xx / gateway failures):
  // after this many consecutive failures the endpoint is skipped for
  // `ejection_time` times the number of times it has been ejected (each
  // `ejection_time` it then stays healthy takes one off that count), at
  // most `max_ejection_time`; never more than `max_ejected_percent` of the
  // endpoints at once (a single endpoint is never ejected). 0 disables.
  int eject_after_failures = 5;
  absl::Duration ejection_time = absl::Seconds(30);
  absl::Duration max_ejection_time = absl::Seconds(300);
  int max_ejected_percent = 50;

  // These options for a route balanced per request.
  LbOptions ForRequests() const {
    LbOptions o = *this;
    o.decay = request_decay;
    o.weighted_choice = true;
    return o;
  }
};

class LoadBalancer {
 public:
  static constexpr size_t kNone = static_cast<size_t>(-1);

  struct EndpointStats {
    IpAddress ip;
    int64_t active = 0;
    uint64_t picks = 0;
    double ewma_ms = 0;
    uint64_t failures = 0;
    int consecutive_failures = 0;  // since the last success
    bool ejected = false;
    uint64_t ejections = 0;
  };

  LoadBalancer(LbPolicy policy, std::vector<IpAddress> endpoints, const LoadBalancer* previous = nullptr,
               LbOptions options = {});

  // A ready endpoint not in `exclude` (indices already tried), or kNone.
  size_t Pick(std::span<const size_t> exclude = {});
  void OnConnectStart(size_t i);
  // A latency sample and its outcome: a connect (L4), or a request's answer
  // (L7: `ok` false for a reset or a 5xx).
  void OnResult(size_t i, absl::Duration latency, bool ok);
  void OnRelease(size_t i);

  LbPolicy policy() const { return policy_; }
  size_t size() const { return states_.size(); }
  const IpAddress& endpoint(size_t i) const { return states_[i]->ip; }
  std::vector<EndpointStats> Stats() const;

  // For tests: replaces the monotonic clock (nanoseconds).
  void set_clock(std::function<int64_t()> clock) { clock_ = std::move(clock); }
  // For tests: picks draw from this balancer's own generator seeded so
  // (not thread-safe) instead of the thread's.
  void set_seed(uint64_t seed) { test_rng_ = std::make_unique<std::mt19937_64>(seed); }

 private:
  struct State {
    IpAddress ip;
    std::atomic<int64_t> active{0};
    std::atomic<uint64_t> picks{0};
    std::atomic<uint64_t> failures{0};
    std::atomic<double> ewma_ns{0};
    std::atomic<int64_t> last_sample_ns{0};
    std::atomic<int> consecutive_failures{0};
    std::atomic<int64_t> ejected_until_ns{0};
    std::atomic<uint64_t> ejections{0};
    std::mutex update_mu;         // serialises EWMA read-modify-write; guards the two below
    int ejection_multiplier = 0;  // times ejected, less one per healthy ejection_time
    int64_t last_ejection_end_ns = 0;
  };

  // Ejects endpoint i (its update_mu held) unless that would put more than
  // max_ejected_percent out.
  void MaybeEject(State& s, int64_t now);
  bool Eligible(size_t i, std::span<const size_t> exclude, int64_t now, bool ignore_ejection) const;
  double Cost(size_t i, int64_t now) const;
  size_t PickFrom(const std::vector<size_t>& candidates, int64_t now);
  int64_t Now() const;

  LbPolicy policy_;
  LbOptions options_;
  std::vector<std::shared_ptr<State>> states_;
  std::atomic<uint64_t> rr_{0};
  std::function<int64_t()> clock_;
  std::unique_ptr<std::mt19937_64> test_rng_;
};

}  // namespace ringmesh::proxy
