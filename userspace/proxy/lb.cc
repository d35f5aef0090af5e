#include "userspace/proxy/lb.h"

#include <time.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <thread>

namespace ringmesh::proxy {
namespace {

std::mt19937_64& Rng() {
  thread_local std::mt19937_64 rng(std::random_device{}() ^
                                   std::hash<std::thread::id>{}(std::this_thread::get_id()));
  return rng;
}

size_t RandomBelow(std::mt19937_64& rng, size_t n) {
  return std::uniform_int_distribution<size_t>(0, n - 1)(rng);
}

}  // namespace

LoadBalancer::LoadBalancer(LbPolicy policy, std::vector<IpAddress> endpoints, const LoadBalancer* previous,
                           LbOptions options)
    : policy_(policy), options_(options) {
  std::map<IpAddress, std::shared_ptr<State>> old;
  if (previous != nullptr) {
    for (const auto& s : previous->states_) old[s->ip] = s;
  }
  states_.reserve(endpoints.size());
  for (const IpAddress& ip : endpoints) {
    auto it = old.find(ip);
    if (it != old.end()) {
      states_.push_back(it->second);
    } else {
      auto s = std::make_shared<State>();
      s->ip = ip;
      states_.push_back(std::move(s));
    }
  }
  rr_.store(endpoints.empty() ? 0 : RandomBelow(Rng(), endpoints.size()));
}

int64_t LoadBalancer::Now() const {
  if (clock_) return clock_();
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

bool LoadBalancer::Eligible(size_t i, std::span<const size_t> exclude, int64_t now,
                            bool ignore_ejection) const {
  if (std::find(exclude.begin(), exclude.end(), i) != exclude.end()) return false;
  return ignore_ejection || states_[i]->ejected_until_ns.load(std::memory_order_relaxed) <= now;
}

double LoadBalancer::Cost(size_t i, int64_t now) const {
  const State& s = *states_[i];
  // Peak EWMA (Finagle's "peak EWMA"): latency estimate scaled by load, so
  // a fast endpoint that is already busy loses to an idle, slightly slower
  // one. The estimate also fades with the time since its last sample: an
  // endpoint that had one slow connect and was then never picked would
  // otherwise keep its bad score forever (it only changes on a new sample).
  double ewma = s.ewma_ns.load(std::memory_order_relaxed);
  int64_t last = s.last_sample_ns.load(std::memory_order_relaxed);
  double tau = static_cast<double>(absl::ToInt64Nanoseconds(options_.decay));
  if (last != 0 && tau > 0 && now > last) ewma *= std::exp(-static_cast<double>(now - last) / tau);
  ewma = std::max(ewma, static_cast<double>(absl::ToInt64Nanoseconds(options_.latency_floor)));
  return ewma * static_cast<double>(s.active.load(std::memory_order_relaxed) + 1);
}

size_t LoadBalancer::PickFrom(const std::vector<size_t>& c, int64_t now) {
  std::mt19937_64& rng = test_rng_ ? *test_rng_ : Rng();
  switch (policy_) {
    case LbPolicy::kRandom:
      return c[RandomBelow(rng, c.size())];
    case LbPolicy::kRoundRobin: {
      // Walk from the shared cursor to the next candidate in index order so
      // exclusions and ejections do not skew the rotation.
      size_t start = rr_.fetch_add(1, std::memory_order_relaxed) % states_.size();
      auto it = std::lower_bound(c.begin(), c.end(), start);
      return it == c.end() ? c.front() : *it;
    }
    case LbPolicy::kLeastConnections: {
      size_t offset = RandomBelow(rng, c.size());  // random tie-break
      size_t best = c[offset];
      for (size_t k = 1; k < c.size(); ++k) {
        size_t i = c[(offset + k) % c.size()];
        if (states_[i]->active.load(std::memory_order_relaxed) <
            states_[best]->active.load(std::memory_order_relaxed)) {
          best = i;
        }
      }
      return best;
    }
    case LbPolicy::kP2cPeakEwma: {
      if (c.size() == 1) return c[0];
      size_t a = RandomBelow(rng, c.size());
      size_t b = RandomBelow(rng, c.size() - 1);
      if (b >= a) ++b;
      double ca = Cost(c[a], now), cb = Cost(c[b], now);
      if (options_.weighted_choice) {
        return std::uniform_real_distribution<double>(0, ca + cb)(rng) < cb ? c[a] : c[b];
      }
      if (ca == cb) return RandomBelow(rng, 2) ? c[a] : c[b];  // not always the first drawn
      return ca < cb ? c[a] : c[b];
    }
  }
  return c[0];
}

size_t LoadBalancer::Pick(std::span<const size_t> exclude) {
  if (states_.empty()) return kNone;
  const int64_t now = Now();
  std::vector<size_t> candidates;
  candidates.reserve(states_.size());
  for (size_t i = 0; i < states_.size(); ++i) {
    if (Eligible(i, exclude, now, false)) candidates.push_back(i);
  }
  if (candidates.empty()) {
    // Everything left is ejected: ejection is a hint, not a verdict, so try
    // them anyway rather than failing the connection outright.
    for (size_t i = 0; i < states_.size(); ++i) {
      if (Eligible(i, exclude, now, true)) candidates.push_back(i);
    }
  }
  if (candidates.empty()) return kNone;
  size_t i = PickFrom(candidates, now);
  states_[i]->picks.fetch_add(1, std::memory_order_relaxed);
  return i;
}

void LoadBalancer::OnConnectStart(size_t i) { states_[i]->active.fetch_add(1, std::memory_order_relaxed); }

void LoadBalancer::OnRelease(size_t i) { states_[i]->active.fetch_sub(1, std::memory_order_relaxed); }

void LoadBalancer::OnResult(size_t i, absl::Duration latency, bool ok) {
  State& s = *states_[i];
  const int64_t now = Now();
  double sample = static_cast<double>(absl::ToInt64Nanoseconds(ok ? latency : options_.failure_penalty));
  std::lock_guard<std::mutex> lock(s.update_mu);
  double prev = s.ewma_ns.load(std::memory_order_relaxed);
  int64_t last = s.last_sample_ns.load(std::memory_order_relaxed);
  double next;
  if (last == 0 || sample > prev) {
    next = sample;  // peak: jump up at once, decay down slowly
  } else {
    double dt = static_cast<double>(std::max<int64_t>(0, now - last));
    double tau = static_cast<double>(absl::ToInt64Nanoseconds(options_.decay));
    double w = tau > 0 ? std::exp(-dt / tau) : 0.0;
    next = prev * w + sample * (1.0 - w);
  }
  s.ewma_ns.store(next, std::memory_order_relaxed);
  s.last_sample_ns.store(now, std::memory_order_relaxed);
  if (ok) {
    s.consecutive_failures.store(0, std::memory_order_relaxed);
    return;
  }
  s.failures.fetch_add(1, std::memory_order_relaxed);
  int n = s.consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (options_.eject_after_failures > 0 && n >= options_.eject_after_failures) MaybeEject(s, now);
}

void LoadBalancer::MaybeEject(State& s, int64_t now) {
  if (s.ejected_until_ns.load(std::memory_order_relaxed) > now) return;  // already out
  size_t out = 0;
  for (const auto& other : states_) {
    if (other->ejected_until_ns.load(std::memory_order_relaxed) > now) ++out;
  }
  // Two workers may each pass this check for different endpoints at the
  // same moment: the cap can be exceeded by one, briefly. Ejection is a
  // hint (Pick falls back to ejected endpoints when nothing else is left).
  if ((out + 1) * 100 > static_cast<size_t>(std::max(options_.max_ejected_percent, 0)) * states_.size())
    return;
  const int64_t base = absl::ToInt64Nanoseconds(options_.ejection_time);
  if (base <= 0) return;
  // Healthy time since the last ejection ended earns the multiplier back.
  if (s.last_ejection_end_ns != 0 && now > s.last_ejection_end_ns) {
    const int64_t healthy = (now - s.last_ejection_end_ns) / base;
    s.ejection_multiplier = static_cast<int>(std::max<int64_t>(0, s.ejection_multiplier - healthy));
  }
  s.ejection_multiplier = std::min(s.ejection_multiplier + 1, 1 << 20);
  const int64_t duration =
      std::min(base * s.ejection_multiplier, absl::ToInt64Nanoseconds(options_.max_ejection_time));
  s.ejected_until_ns.store(now + duration, std::memory_order_relaxed);
  s.last_ejection_end_ns = now + duration;
  s.ejections.fetch_add(1, std::memory_order_relaxed);
  s.consecutive_failures.store(0, std::memory_order_relaxed);
}

std::vector<LoadBalancer::EndpointStats> LoadBalancer::Stats() const {
  const int64_t now = Now();
  std::vector<EndpointStats> out;
  out.reserve(states_.size());
  for (const auto& s : states_) {
    out.push_back({.ip = s->ip,
                   .active = s->active.load(std::memory_order_relaxed),
                   .picks = s->picks.load(std::memory_order_relaxed),
                   .ewma_ms = s->ewma_ns.load(std::memory_order_relaxed) / 1e6,
                   .failures = s->failures.load(std::memory_order_relaxed),
                   .consecutive_failures = s->consecutive_failures.load(std::memory_order_relaxed),
                   .ejected = s->ejected_until_ns.load(std::memory_order_relaxed) > now,
                   .ejections = s->ejections.load(std::memory_order_relaxed)});
  }
  return out;
}

}  // namespace ringmesh::proxy
