// Endpoint selection for one service port: P2C over peak-EWMA connect
// latency (default), round robin, random and least connections, with
// passive outlier ejection after consecutive connect failures. Pure logic
// (no sockets), shared by all workers: per-endpoint state is atomic.
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
//   ... lb.OnConnectResult(i, latency, ok); ... lb.OnRelease(i);
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "absl/time/time.h"
#include "userspace/common/ip.h"
#include "userspace/common/snapshot.h"

namespace ringmesh::proxy {

struct LbOptions {
  // Peak-EWMA time constant: how fast a latency sample fades.
  absl::Duration decay = absl::Seconds(10);
  // Connect latencies below this are treated as equal: on one node or one
  // rack they differ by scheduling noise, and a greedy choice on noise
  // starves endpoints (P2C over two endpoints always compares both).
  absl::Duration latency_floor = absl::Milliseconds(1);
  // Latency charged for a failed connect, so P2C steers away at once.
  absl::Duration failure_penalty = absl::Seconds(1);
  // Passive outlier ejection: after this many consecutive connect failures
  // the endpoint is skipped for `ejection_time` (0 disables).
  int eject_after_failures = 5;
  absl::Duration ejection_time = absl::Seconds(30);
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
    int consecutive_failures = 0;  // since the last successful connect
    bool ejected = false;
  };

  LoadBalancer(LbPolicy policy, std::vector<IpAddress> endpoints, const LoadBalancer* previous = nullptr,
               LbOptions options = {});

  // A ready endpoint not in `exclude` (indices already tried), or kNone.
  size_t Pick(std::span<const size_t> exclude = {});
  void OnConnectStart(size_t i);
  void OnConnectResult(size_t i, absl::Duration latency, bool ok);
  void OnRelease(size_t i);

  LbPolicy policy() const { return policy_; }
  size_t size() const { return states_.size(); }
  const IpAddress& endpoint(size_t i) const { return states_[i]->ip; }
  std::vector<EndpointStats> Stats() const;

  // For tests: replaces the monotonic clock (nanoseconds).
  void set_clock(std::function<int64_t()> clock) { clock_ = std::move(clock); }

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
    std::mutex update_mu;  // serialises EWMA read-modify-write
  };

  bool Eligible(size_t i, std::span<const size_t> exclude, int64_t now, bool ignore_ejection) const;
  double Cost(size_t i, int64_t now) const;
  size_t PickFrom(const std::vector<size_t>& candidates, int64_t now);
  int64_t Now() const;

  LbPolicy policy_;
  LbOptions options_;
  std::vector<std::shared_ptr<State>> states_;
  std::atomic<uint64_t> rr_{0};
  std::function<int64_t()> clock_;
};

}  // namespace ringmesh::proxy
