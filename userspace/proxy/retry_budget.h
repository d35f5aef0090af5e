// The retry budget of one route (Envoy's retry_budget, Linkerd's retry
// budget): retries may make up at most a share of the requests in flight,
// with a floor so that a quiet route can still retry. When every endpoint
// fails, retries stop multiplying the load at that share instead of at the
// attempt count. Shared by the workers (atomics) and carried over snapshots
// with the route (route_table.h).
//
//   budget.RequestStarted();            // for the request's whole life
//   if (budget.TryStartRetry(opts)) { ... budget.RetryEnded(); }
//   budget.RequestEnded();
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace ringmesh::proxy {

struct RetryBudgetOptions {
  // Retries in flight may be this share of the requests in flight...
  double ratio = 0.2;
  // ...or this many, whichever is more.
  int min_concurrent = 3;
};

class RetryBudget {
 public:
  void RequestStarted() { requests_.fetch_add(1, std::memory_order_relaxed); }
  void RequestEnded() { requests_.fetch_sub(1, std::memory_order_relaxed); }

  // Takes one retry from the budget, or says there is none left.
  bool TryStartRetry(const RetryBudgetOptions& o) {
    const double active = static_cast<double>(requests_.load(std::memory_order_relaxed));
    const double allowed = std::max(static_cast<double>(o.min_concurrent), o.ratio * active);
    int64_t r = retries_.load(std::memory_order_relaxed);
    do {
      if (static_cast<double>(r + 1) > allowed) return false;
    } while (!retries_.compare_exchange_weak(r, r + 1, std::memory_order_relaxed));
    return true;
  }
  void RetryEnded() { retries_.fetch_sub(1, std::memory_order_relaxed); }

  int64_t active_requests() const { return requests_.load(std::memory_order_relaxed); }
  int64_t active_retries() const { return retries_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> requests_{0};
  std::atomic<int64_t> retries_{0};
};

}  // namespace ringmesh::proxy
