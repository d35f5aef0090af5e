#include "userspace/proxy/lb.h"

#include <gtest/gtest.h>

#include <array>
#include <map>
#include <optional>
#include <random>

#include "bpf/include/ringmesh/abi.h"
#include "userspace/proxy/orig_dst.h"
#include "userspace/proxy/proxy_options.h"
#include "userspace/proxy/retry_budget.h"
#include "userspace/proxy/route_table.h"

namespace ringmesh::proxy {
namespace {

std::vector<IpAddress> Ips(int n) {
  std::vector<IpAddress> out;
  for (int i = 1; i <= n; ++i) out.push_back(*IpAddress::Parse("198.18.0." + std::to_string(i)));
  return out;
}

std::map<size_t, int> Histogram(LoadBalancer& lb, int picks) {
  std::map<size_t, int> h;
  for (int i = 0; i < picks; ++i) ++h[lb.Pick()];
  return h;
}

TEST(LoadBalancer, EmptyHasNoPick) {
  for (auto policy :
       {LbPolicy::kP2cPeakEwma, LbPolicy::kRoundRobin, LbPolicy::kRandom, LbPolicy::kLeastConnections}) {
    LoadBalancer lb(policy, {});
    EXPECT_EQ(lb.Pick(), LoadBalancer::kNone) << ToString(policy);
  }
}

TEST(LoadBalancer, RoundRobinCyclesEvenly) {
  LoadBalancer lb(LbPolicy::kRoundRobin, Ips(4));
  auto h = Histogram(lb, 400);
  ASSERT_EQ(h.size(), 4u);
  for (auto& [i, n] : h) EXPECT_EQ(n, 100) << i;
  // Consecutive picks differ.
  size_t prev = lb.Pick();
  for (int i = 0; i < 10; ++i) {
    size_t next = lb.Pick();
    EXPECT_EQ(next, (prev + 1) % 4);
    prev = next;
  }
}

TEST(LoadBalancer, RandomSpreadsRoughlyEvenly) {
  LoadBalancer lb(LbPolicy::kRandom, Ips(4));
  auto h = Histogram(lb, 8000);
  ASSERT_EQ(h.size(), 4u);
  for (auto& [i, n] : h) {
    EXPECT_GT(n, 1600) << i;  // expected 2000; > 10 sigma margin
    EXPECT_LT(n, 2400) << i;
  }
}

TEST(LoadBalancer, ExcludeSkipsTriedEndpoints) {
  for (auto policy :
       {LbPolicy::kP2cPeakEwma, LbPolicy::kRoundRobin, LbPolicy::kRandom, LbPolicy::kLeastConnections}) {
    LoadBalancer lb(policy, Ips(3));
    std::vector<size_t> tried = {0, 2};
    for (int i = 0; i < 50; ++i) EXPECT_EQ(lb.Pick(tried), 1u) << ToString(policy);
    tried.push_back(1);
    EXPECT_EQ(lb.Pick(tried), LoadBalancer::kNone);
  }
}

TEST(LoadBalancer, LeastConnectionsPicksIdlest) {
  LoadBalancer lb(LbPolicy::kLeastConnections, Ips(3));
  for (int i = 0; i < 5; ++i) lb.OnConnectStart(0);
  for (int i = 0; i < 2; ++i) lb.OnConnectStart(1);
  for (int i = 0; i < 4; ++i) lb.OnConnectStart(2);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(lb.Pick(), 1u);
  // Filling it up moves the choice.
  for (int i = 0; i < 4; ++i) lb.OnConnectStart(1);
  EXPECT_EQ(lb.Pick(), 2u);
  lb.OnRelease(0);
  lb.OnRelease(0);
  lb.OnRelease(0);
  EXPECT_EQ(lb.Pick(), 0u);  // 2 active vs 6 and 4
}

TEST(LoadBalancer, LeastConnectionsBalancesUnderLoad) {
  LoadBalancer lb(LbPolicy::kLeastConnections, Ips(4));
  for (int i = 0; i < 100; ++i) lb.OnConnectStart(lb.Pick());
  for (const auto& s : lb.Stats()) EXPECT_EQ(s.active, 25) << s.ip.ToString();
}

TEST(LoadBalancer, P2cPrefersLowerLatency) {
  int64_t now = 1'000'000'000;
  LoadBalancer lb(LbPolicy::kP2cPeakEwma, Ips(2));
  lb.set_clock([&] { return now; });
  lb.OnResult(0, absl::Milliseconds(1), true);
  lb.OnResult(1, absl::Milliseconds(50), true);
  auto h = Histogram(lb, 1000);
  // With two endpoints both are always compared: the fast one always wins.
  EXPECT_EQ(h[0], 1000);

  // Among many, the slow one is picked only when it is not drawn against a
  // faster one, i.e. never.
  LoadBalancer many(LbPolicy::kP2cPeakEwma, Ips(5));
  many.set_clock([&] { return now; });
  for (size_t i = 0; i < 5; ++i) many.OnResult(i, absl::Milliseconds(i == 4 ? 100 : 1), true);
  auto hm = Histogram(many, 2000);
  EXPECT_EQ(hm[4], 0);
  for (size_t i = 0; i < 4; ++i) EXPECT_GT(hm[i], 300) << i;
}

// Regression: one slow first connect used to starve an endpoint for good,
// because its estimate only changed on a new sample and P2C over two
// endpoints always compares both (1 pick in 6000 before the fix).
TEST(LoadBalancer, P2cDoesNotStarveAfterOneSlowConnect) {
  int64_t now = 1'000'000'000;
  LoadBalancer lb(LbPolicy::kP2cPeakEwma, Ips(2));
  lb.set_clock([&] { return now; });
  bool first0 = true;
  std::array<int, 2> picks{};
  for (int t = 0; t < 6000; ++t) {  // one connection every 10 ms for 60 s
    size_t i = lb.Pick();
    ++picks[i];
    lb.OnConnectStart(i);
    bool slow = i == 0 && first0;
    if (i == 0) first0 = false;
    lb.OnResult(i, slow ? absl::Milliseconds(1) : absl::Microseconds(100), true);
    lb.OnRelease(i);
    now += 10'000'000;
  }
  EXPECT_GT(picks[0], 1800) << picks[0] << "/" << picks[1];
  EXPECT_GT(picks[1], 1800) << picks[0] << "/" << picks[1];
}

// A clearly slow endpoint is avoided, but its bad sample fades, so it is
// probed again later instead of being written off forever.
TEST(LoadBalancer, P2cReprobesAfterTheSlowSampleFades) {
  int64_t now = 1'000'000'000;
  LoadBalancer lb(LbPolicy::kP2cPeakEwma, Ips(2));  // decay 10 s
  lb.set_clock([&] { return now; });
  lb.OnResult(0, absl::Milliseconds(20), true);
  int first_again_ms = -1;
  for (int t = 0; t < 6000; ++t) {
    size_t i = lb.Pick();
    if (i == 0) {
      first_again_ms = t * 10;
      break;
    }
    lb.OnResult(1, absl::Milliseconds(2), true);
    now += 10'000'000;
  }
  // 20 ms * exp(-t / 10 s) reaches 2 ms after ~23 s.
  EXPECT_GT(first_again_ms, 15000);
  EXPECT_LT(first_again_ms, 30000);
}

TEST(LoadBalancer, P2cWeighsLoad) {
  int64_t now = 1'000'000'000;
  LoadBalancer lb(LbPolicy::kP2cPeakEwma, Ips(2));
  lb.set_clock([&] { return now; });
  lb.OnResult(0, absl::Milliseconds(1), true);
  lb.OnResult(1, absl::Milliseconds(3), true);
  // 1 ms * (5+1) active > 3 ms * (0+1): the busier fast endpoint loses.
  for (int i = 0; i < 5; ++i) lb.OnConnectStart(0);
  EXPECT_EQ(lb.Pick(), 1u);
}

TEST(LoadBalancer, PeakEwmaJumpsUpAndDecaysDown) {
  int64_t now = 1'000'000'000;
  LoadBalancer lb(LbPolicy::kP2cPeakEwma, Ips(1), nullptr, LbOptions{.decay = absl::Seconds(1)});
  lb.set_clock([&] { return now; });
  lb.OnResult(0, absl::Milliseconds(10), true);
  EXPECT_NEAR(lb.Stats()[0].ewma_ms, 10, 1e-6);
  lb.OnResult(0, absl::Milliseconds(100), true);
  EXPECT_NEAR(lb.Stats()[0].ewma_ms, 100, 1e-6);  // peak: immediate
  now += 1'000'000'000;                           // one time constant later
  lb.OnResult(0, absl::Milliseconds(10), true);
  double e = lb.Stats()[0].ewma_ms;
  EXPECT_NEAR(e, 100 * std::exp(-1.0) + 10 * (1 - std::exp(-1.0)), 1e-3);
}

TEST(LoadBalancer, FailuresSteerAwayAndEject) {
  int64_t now = 1'000'000'000;
  LbOptions opts{.eject_after_failures = 3, .ejection_time = absl::Seconds(30)};
  LoadBalancer lb(LbPolicy::kRoundRobin, Ips(2), nullptr, opts);
  lb.set_clock([&] { return now; });
  for (int i = 0; i < 3; ++i) lb.OnResult(0, absl::Milliseconds(1), false);
  EXPECT_TRUE(lb.Stats()[0].ejected);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(lb.Pick(), 1u);
  // The other one failing too is not ejected (at most 50% of two), and is
  // still picked rather than failing the request.
  for (int i = 0; i < 3; ++i) lb.OnResult(1, absl::Milliseconds(1), false);
  EXPECT_FALSE(lb.Stats()[1].ejected);
  EXPECT_EQ(lb.Pick(), 1u);
  now += 31'000'000'000;
  EXPECT_FALSE(lb.Stats()[0].ejected);
}

// Envoy's outlier detection: ejected for base x times ejected, capped; time
// spent healthy earns the multiplier back.
TEST(LoadBalancer, EjectionGrowsWithRepeatsAndIsEarnedBack) {
  int64_t now = 1'000'000'000;
  constexpr int64_t kSec = 1'000'000'000;
  LbOptions opts{
      .eject_after_failures = 2, .ejection_time = absl::Seconds(10), .max_ejection_time = absl::Seconds(25)};
  LoadBalancer lb(LbPolicy::kRoundRobin, Ips(3), nullptr, opts);
  lb.set_clock([&] { return now; });
  auto fail_twice = [&] {
    lb.OnResult(0, absl::Milliseconds(1), false);
    lb.OnResult(0, absl::Milliseconds(1), false);
  };
  // How long endpoint 0 stays out, in whole seconds.
  auto ejected_for = [&] {
    const int64_t start = now;
    while (lb.Stats()[0].ejected && now - start < 100 * kSec) now += kSec / 2;
    return (now - start + kSec / 2 - 1) / kSec;
  };
  fail_twice();
  EXPECT_EQ(ejected_for(), 10);
  lb.OnResult(0, absl::Milliseconds(1), false);  // one failure: not yet
  EXPECT_FALSE(lb.Stats()[0].ejected);
  lb.OnResult(0, absl::Milliseconds(1), false);
  EXPECT_EQ(ejected_for(), 20);
  fail_twice();
  EXPECT_EQ(ejected_for(), 25);  // 30, capped
  EXPECT_EQ(lb.Stats()[0].ejections, 3u);
  // 30 s healthy earn three back: the next ejection is the base again.
  now += 30 * kSec;
  fail_twice();
  EXPECT_EQ(ejected_for(), 10);
  // A success in between resets the run of failures.
  lb.OnResult(0, absl::Milliseconds(1), false);
  lb.OnResult(0, absl::Milliseconds(1), true);
  lb.OnResult(0, absl::Milliseconds(1), false);
  EXPECT_FALSE(lb.Stats()[0].ejected);
}

TEST(LoadBalancer, NeverEjectsMoreThanTheMaxShare) {
  int64_t now = 1'000'000'000;
  LbOptions opts{.eject_after_failures = 1, .max_ejected_percent = 50};
  LoadBalancer four(LbPolicy::kRoundRobin, Ips(4), nullptr, opts);
  four.set_clock([&] { return now; });
  for (size_t i = 0; i < 4; ++i) four.OnResult(i, absl::Milliseconds(1), false);
  int ejected = 0;
  for (const auto& e : four.Stats()) ejected += e.ejected ? 1 : 0;
  EXPECT_EQ(ejected, 2);
  // A service's only endpoint is never ejected: there is nothing to steer to.
  LoadBalancer one(LbPolicy::kRoundRobin, Ips(1), nullptr, opts);
  one.set_clock([&] { return now; });
  for (int i = 0; i < 5; ++i) one.OnResult(0, absl::Milliseconds(1), false);
  EXPECT_FALSE(one.Stats()[0].ejected);
  // 0% turns ejection off.
  LoadBalancer none(LbPolicy::kRoundRobin, Ips(4), nullptr,
                    LbOptions{.eject_after_failures = 1, .max_ejected_percent = 0});
  none.OnResult(0, absl::Milliseconds(1), false);
  EXPECT_FALSE(none.Stats()[0].ejected);
}

// Per-request balancing on request latencies: three equal endpoints whose
// samples carry a busy machine's noise (most answers well under a
// millisecond, one in 50 a spike of 2-20 ms) share the requests evenly,
// with one request at a time and with eight. With the connect options
// (greedy choice) one spike kept an endpoint out until it faded (131 to
// 1684 of 3000 requests in the L7 test).
// Requests of `concurrency` clients, one every 0.3 ms, to three endpoints
// answering in 0.1-0.5 ms (`slow` one `slow_factor` times that), one in 50
// spiking to 2-20 ms. Picks per endpoint.
std::array<int, 3> SimulateRequests(LbOptions opts, uint32_t seed, int concurrency, int requests,
                                    int slow = -1, int slow_factor = 1) {
  int64_t now = 1'000'000'000;
  LoadBalancer lb(LbPolicy::kP2cPeakEwma, Ips(3), nullptr, opts);
  lb.set_clock([&] { return now; });
  lb.set_seed(seed);
  std::mt19937 rng(seed);
  std::array<int, 3> picks{};
  std::multimap<int64_t, std::pair<size_t, int64_t>> in_flight;  // end -> (endpoint, latency)
  for (int t = 0; t < requests; ++t) {
    while (!in_flight.empty() &&
           (static_cast<int>(in_flight.size()) >= concurrency || in_flight.begin()->first <= now)) {
      auto [end, done] = *in_flight.begin();
      in_flight.erase(in_flight.begin());
      now = std::max(now, end);
      lb.OnResult(done.first, absl::Nanoseconds(done.second), true);
      lb.OnRelease(done.first);
    }
    const size_t i = lb.Pick();
    ++picks[i];
    lb.OnConnectStart(i);
    int64_t latency = rng() % 50 == 0 ? 2'000'000 + rng() % 18'000'000 : 100'000 + rng() % 400'000;
    if (static_cast<int>(i) == slow) latency *= slow_factor;
    in_flight.emplace(now + latency, std::make_pair(i, latency));
    now += 300'000;
  }
  return picks;
}

TEST(LoadBalancer, RequestOptionsKeepEqualEndpointsEvenUnderNoise) {
  constexpr int kRequests = 3000;
  int greedy_worst = kRequests;
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    for (int concurrency : {1, 8}) {
      const auto picks = SimulateRequests(LbOptions{}.ForRequests(), seed, concurrency, kRequests);
      for (int p : picks) {
        EXPECT_GE(p, 0.25 * kRequests)
            << seed << " " << concurrency << ": " << picks[0] << "/" << picks[1] << "/" << picks[2];
        EXPECT_LE(p, 0.42 * kRequests)
            << seed << " " << concurrency << ": " << picks[0] << "/" << picks[1] << "/" << picks[2];
      }
      const auto greedy = SimulateRequests(LbOptions{}, seed, concurrency, kRequests);
      greedy_worst = std::min({greedy_worst, greedy[0], greedy[1], greedy[2]});
    }
  }
  // The simulation does show what the greedy choice did.
  EXPECT_LT(greedy_worst, 0.25 * kRequests);
}

// Weighted, a slow endpoint still gets clearly less than its third: 3x
// slower about a fifth of the requests, 10x slower about a tenth (averages
// over 10 runs; single runs: 3x 15-23%, 10x 6-16%).
TEST(LoadBalancer, RequestOptionsStillSteerAwayFromASlowEndpoint) {
  constexpr int kRequests = 3000, kRuns = 10;
  double three_sum = 0, ten_sum = 0;
  for (uint32_t seed = 1; seed <= kRuns; ++seed) {
    const auto three = SimulateRequests(LbOptions{}.ForRequests(), seed, 8, kRequests, 0, 3);
    const auto ten = SimulateRequests(LbOptions{}.ForRequests(), seed, 8, kRequests, 0, 10);
    EXPECT_LT(three[0], 0.25 * kRequests) << seed;
    EXPECT_LT(ten[0], 0.25 * kRequests) << seed;
    three_sum += three[0];
    ten_sum += ten[0];
  }
  EXPECT_LT(three_sum / kRuns, 0.22 * kRequests);
  EXPECT_LT(ten_sum / kRuns, 0.14 * kRequests);
}

TEST(RetryBudget, AShareOfTheRequestsInFlightWithAFloor) {
  RetryBudget budget;
  const RetryBudgetOptions opts{.ratio = 0.2, .min_concurrent = 3};
  // Quiet route: the floor.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(budget.TryStartRetry(opts)) << i;
  EXPECT_FALSE(budget.TryStartRetry(opts));
  // Busy route: 20% of 50 requests in flight.
  for (int i = 0; i < 50; ++i) budget.RequestStarted();
  for (int i = 0; i < 7; ++i) EXPECT_TRUE(budget.TryStartRetry(opts)) << i;
  EXPECT_FALSE(budget.TryStartRetry(opts));
  EXPECT_EQ(budget.active_retries(), 10);
  budget.RetryEnded();
  EXPECT_TRUE(budget.TryStartRetry(opts));
  // No floor, one request: no retry at all.
  RetryBudget strict;
  strict.RequestStarted();
  EXPECT_FALSE(strict.TryStartRetry(RetryBudgetOptions{.ratio = 0.2, .min_concurrent = 0}));
  EXPECT_EQ(strict.active_retries(), 0);
}

TEST(LoadBalancer, StateSurvivesGenerationSwap) {
  LoadBalancer a(LbPolicy::kLeastConnections, Ips(2));
  a.OnConnectStart(1);
  a.OnResult(1, absl::Milliseconds(7), true);
  auto ips = Ips(3);
  LoadBalancer b(LbPolicy::kLeastConnections, {ips[2], ips[1]}, &a);
  auto stats = b.Stats();
  EXPECT_EQ(stats[1].ip, ips[1]);
  EXPECT_EQ(stats[1].active, 1);
  EXPECT_NEAR(stats[1].ewma_ms, 7, 1e-6);
  // A connection that picked from the old instance releases into the same
  // counter the new one reads.
  a.OnRelease(1);
  EXPECT_EQ(b.Stats()[1].active, 0);
}

TEST(RouteTable, MapsVipsToReadyEndpoints) {
  Snapshot snap;
  snap.generation = 7;
  Service svc;
  svc.ns = "default";
  svc.name = "web";
  svc.vips = {*IpAddress::Parse("10.96.0.10")};
  svc.ports = {ServicePort{.name = "http", .port = 80, .target_port = 8080}};
  svc.lb = LbPolicy::kRoundRobin;
  svc.endpoints = {Endpoint{.ip = *IpAddress::Parse("198.18.1.1"), .ready = true},
                   Endpoint{.ip = *IpAddress::Parse("198.18.1.2"), .ready = false}};
  snap.services.push_back(svc);
  auto table = RouteTable::Build(snap, nullptr);
  EXPECT_EQ(table->generation(), 7u);
  const ServiceRoute* r = table->Find(*SocketAddress::Parse("10.96.0.10:80"));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->target_port, 8080);
  EXPECT_EQ(r->Fqdn(), "web.default.svc.cluster.local");
  ASSERT_EQ(r->lb->size(), 1u);
  EXPECT_EQ(r->lb->endpoint(0).ToString(), "198.18.1.1");
  EXPECT_EQ(table->Find(*SocketAddress::Parse("10.96.0.10:81")), nullptr);
  EXPECT_EQ(table->Find(*SocketAddress::Parse("10.96.0.11:80")), nullptr);

  // Next generation keeps the learned state of the endpoint that stayed.
  r->lb->OnConnectStart(0);
  auto next = RouteTable::Build(snap, table.get());
  EXPECT_EQ(next->Find(*SocketAddress::Parse("10.96.0.10:80"))->lb->Stats()[0].active, 1);
}

}  // namespace
}  // namespace ringmesh::proxy

namespace ringmesh::proxy {
namespace {

// The server-leg join follows how long a route's connections are.
TEST(ServiceRoute, JoinsUntilItsConnectionsProveShort) {
  ServiceRoute r;
  EXPECT_TRUE(r.LongLived(3)) << "no samples yet: join";
  for (int i = 0; i < 15; ++i) r.RecordForwards(2);
  EXPECT_TRUE(r.LongLived(3)) << "15 samples are not enough to decide";
  r.RecordForwards(2);
  EXPECT_FALSE(r.LongLived(3)) << "connect, one exchange, close";
  for (int i = 0; i < 40; ++i) r.RecordForwards(500);
  EXPECT_TRUE(r.LongLived(3)) << "keep-alive connections again";
  for (int i = 0; i < 60; ++i) r.RecordForwards(1);
  EXPECT_FALSE(r.LongLived(3));
}

// A new snapshot keeps what a route's connections looked like and what the
// datapath was told, unless the route's VIPs changed.
TEST(RouteTable, CarriesTheRouteShapeOverSnapshots) {
  Snapshot snap;
  Service svc;
  svc.ns = "default";
  svc.name = "web";
  svc.vips = {*IpAddress::Parse("198.18.200.10")};
  svc.ports = {ServicePort{.port = 80, .target_port = 8080}};
  svc.endpoints = {Endpoint{.ip = *IpAddress::Parse("198.18.1.11")}};
  snap.services = {svc};
  auto t1 = RouteTable::Build(snap, nullptr, {});
  const ServiceRoute* r1 = t1->Find(SocketAddress{svc.vips[0], 80});
  ASSERT_NE(r1, nullptr);
  for (int i = 0; i < 16; ++i) r1->RecordForwards(2);
  ASSERT_EQ(r1->ShortRouteChange(3), std::optional<bool>(true));
  auto t2 = RouteTable::Build(snap, t1.get(), {});
  const ServiceRoute* r2 = t2->Find(SocketAddress{svc.vips[0], 80});
  ASSERT_NE(r2, nullptr);
  EXPECT_FALSE(r2->LongLived(3));
  EXPECT_EQ(r2->ShortRouteChange(3), std::nullopt) << "already told";
  snap.services[0].vips.push_back(*IpAddress::Parse("198.18.200.11"));
  auto t3 = RouteTable::Build(snap, t2.get(), {});
  EXPECT_EQ(t3->Find(SocketAddress{svc.vips[0], 80})->ShortRouteChange(3), std::optional<bool>(true))
      << "a new VIP must hear it";
}

// The datapath (rm_short_dst) hears about a route once per change of state.
TEST(ServiceRoute, TellsTheDatapathOncePerChange) {
  ServiceRoute r;
  EXPECT_EQ(r.ShortRouteChange(3), std::optional<bool>(false))
      << "first closed connection: long until shown short";
  EXPECT_EQ(r.ShortRouteChange(3), std::nullopt);
  for (int i = 0; i < 16; ++i) r.RecordForwards(2);
  EXPECT_EQ(r.ShortRouteChange(3), std::optional<bool>(true));
  r.RecordForwards(2);
  EXPECT_EQ(r.ShortRouteChange(3), std::nullopt);
  for (int i = 0; i < 40; ++i) r.RecordForwards(500);
  EXPECT_EQ(r.ShortRouteChange(3), std::optional<bool>(false));
}

// What the datapath was told, per VIP:port (a fake rm_short_dst).
class RecordingResolver : public OrigDstResolver {
 public:
  struct Told {
    bool is_short = false;
    std::vector<SocketAddress> direct;
    uint32_t direct_left = 0;
  };
  std::optional<SocketAddress> Resolve(int, const ListenerInfo&, const SocketAddress&) override {
    return std::nullopt;
  }
  void MarkShortRoute(const SocketAddress& dst, bool is_short, std::span<const SocketAddress> direct,
                      uint32_t direct_left) override {
    ++tells;
    told[dst.ToString()] = Told{is_short, {direct.begin(), direct.end()}, direct_left};
  }
  DirectCounts DirectStats(const SocketAddress& endpoint) const override {
    auto it = failed.find(endpoint.ToString());
    return {0, it == failed.end() ? 0 : it->second};
  }
  std::map<std::string, Told> told;
  std::map<std::string, uint64_t> failed;  // rm_direct_conns.failed
  int tells = 0;
};

Snapshot DirectSnapshot(std::vector<std::string> endpoints, std::vector<std::string> local_pods,
                        LbPolicy lb = LbPolicy::kP2cPeakEwma) {
  Snapshot snap;
  for (size_t i = 0; i < local_pods.size(); ++i) {
    Pod pod;
    pod.ns = "default";
    pod.name = "p" + std::to_string(i);
    pod.netns_path = "/proc/1/ns/net";
    pod.enrolled = true;
    pod.ips = {*IpAddress::Parse(local_pods[i])};
    snap.pods.push_back(pod);
  }
  Service svc;
  svc.ns = "default";
  svc.name = "web";
  svc.lb = lb;
  svc.vips = {*IpAddress::Parse("198.18.200.10")};
  svc.ports = {ServicePort{.port = 80, .target_port = 8080}};
  for (const auto& ep : endpoints) svc.endpoints.push_back(Endpoint{.ip = *IpAddress::Parse(ep)});
  snap.services = {svc};
  return snap;
}

// DirectSnapshot's route once 16 one-exchange connections judged it short
// (nullptr if that did not tell the datapath "short").
const ServiceRoute* JudgedShort(const RouteTable& t) {
  const ServiceRoute* r = t.Find(*SocketAddress::Parse("198.18.200.10:80"));
  if (r == nullptr) return nullptr;
  for (int i = 0; i < 16; ++i) r->RecordForwards(2);
  return r->ShortRouteChange(3) == std::optional<bool>(true) ? r : nullptr;
}

// Socket LB only where a random choice among local enrolled pods is what
// the proxy would have done.
TEST(RouteTable, DirectEndpointsOnlyForLocalEnrolledPods) {
  auto t = RouteTable::Build(DirectSnapshot({"198.18.1.11", "198.18.1.12"}, {"198.18.1.11", "198.18.1.12"}),
                             nullptr);
  const ServiceRoute* r = t->Find(*SocketAddress::Parse("198.18.200.10:80"));
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->direct_endpoints.size(), 2u);
  EXPECT_EQ(r->direct_endpoints[0].ToString(), "198.18.1.11:8080") << "the target port, not the service port";
  // One endpoint elsewhere (another node, an unenrolled pod): none direct.
  t = RouteTable::Build(DirectSnapshot({"198.18.1.11", "198.18.9.9"}, {"198.18.1.11"}), nullptr);
  EXPECT_TRUE(t->Find(*SocketAddress::Parse("198.18.200.10:80"))->direct_endpoints.empty());
  // Least connections is not what a random pick does.
  t = RouteTable::Build(DirectSnapshot({"198.18.1.11"}, {"198.18.1.11"}, LbPolicy::kLeastConnections),
                        nullptr);
  EXPECT_TRUE(t->Find(*SocketAddress::Parse("198.18.200.10:80"))->direct_endpoints.empty());
  // More endpoints than the datapath's entry holds.
  std::vector<std::string> nine;
  for (int i = 0; i < RM_MAX_DIRECT_BACKENDS + 1; ++i) nine.push_back("198.18.1." + std::to_string(20 + i));
  t = RouteTable::Build(DirectSnapshot(nine, nine), nullptr);
  EXPECT_TRUE(t->Find(*SocketAddress::Parse("198.18.200.10:80"))->direct_endpoints.empty());
}

// The destination side's authorization: the table knows this node's
// enrolled pods (their namespace and labels) and the snapshot's policies,
// and no connect may skip the proxy (socket LB) to a pod a policy applies to.
TEST(RouteTable, CarriesPoliciesAndTurnsSocketLbOffForEndpointsTheyApplyTo) {
  Snapshot snap = DirectSnapshot({"198.18.1.11"}, {"198.18.1.11"});
  snap.pods[0].labels = {{"app", "web"}};
  auto t = RouteTable::Build(snap, nullptr);
  EXPECT_EQ(t->authorizer().size(), 0u);
  EXPECT_FALSE(t->Find(*SocketAddress::Parse("198.18.200.10:80"))->direct_endpoints.empty());
  const Pod* pod = t->LocalEnrolledPod(*IpAddress::Parse("198.18.1.11"));
  ASSERT_NE(pod, nullptr);
  EXPECT_EQ(pod->ns, "default");
  EXPECT_EQ(pod->labels.at("app"), "web");
  EXPECT_EQ(t->LocalEnrolledPod(*IpAddress::Parse("198.18.9.9")), nullptr);

  AuthorizationPolicy deny;
  deny.ns = "default";
  deny.name = "no-ops";
  deny.action = AuthzAction::kDeny;
  deny.rules = {AuthzRule{.from = {AuthzSource{.namespaces = {"ops"}}}}};
  // A policy of another namespace: this endpoint is not checked, so
  // connect() may still go straight to it.
  AuthorizationPolicy elsewhere = deny;
  elsewhere.ns = "ops";
  snap.authorization_policies = {elsewhere};
  t = RouteTable::Build(snap, nullptr);
  EXPECT_EQ(t->authorizer().size(), 1u);
  EXPECT_FALSE(t->Find(*SocketAddress::Parse("198.18.200.10:80"))->direct_endpoints.empty());
  // One selecting other labels: the same.
  AuthorizationPolicy other_app = deny;
  other_app.match_labels = {{"app", "db"}};
  snap.authorization_policies = {other_app};
  t = RouteTable::Build(snap, nullptr);
  EXPECT_FALSE(t->Find(*SocketAddress::Parse("198.18.200.10:80"))->direct_endpoints.empty());
  // One that applies to the endpoint: every connection through the proxy.
  snap.authorization_policies = {deny};
  t = RouteTable::Build(snap, nullptr);
  EXPECT_EQ(t->authorizer().size(), 1u);
  EXPECT_TRUE(t->Find(*SocketAddress::Parse("198.18.200.10:80"))->direct_endpoints.empty());
  AuthorizationPolicy root = elsewhere;
  root.ns = "istio-system";  // the root namespace's apply to every namespace
  snap.authorization_policies = {root};
  t = RouteTable::Build(snap, nullptr);
  EXPECT_TRUE(t->Find(*SocketAddress::Parse("198.18.200.10:80"))->direct_endpoints.empty());
  const authz::Workload dest = authz::Workload::Of(*t->LocalEnrolledPod(*IpAddress::Parse("198.18.1.11")));
  EXPECT_FALSE(
      t->authorizer().Check(dest, authz::Peer{"spiffe://cluster.local/ns/ops/sa/x", {}}, 8080).allowed);
  EXPECT_TRUE(
      t->authorizer().Check(dest, authz::Peer{"spiffe://cluster.local/ns/shop/sa/x", {}}, 8080).allowed);
}

TEST(RouteTable, ShortRouteArmsSocketLbAndRearmsAfterRejudging) {
  RecordingResolver res;
  auto t = RouteTable::Build(DirectSnapshot({"198.18.1.11", "198.18.1.12"}, {"198.18.1.11", "198.18.1.12"}),
                             nullptr);
  const ServiceRoute* r = JudgedShort(*t);
  ASSERT_NE(r, nullptr);
  TellDatapath(*r, true, 1024, res);
  const auto& told = res.told["198.18.200.10:80"];
  EXPECT_TRUE(told.is_short);
  EXPECT_EQ(told.direct.size(), 2u);
  EXPECT_EQ(told.direct_left, 1024u);
  // Connections come through the proxy again: after 16 closes, renew.
  int due = 0;
  for (int i = 0; i < 40; ++i) due += r->DirectRearmDue(ProxyOptions::kDirectRejudge) ? 1 : 0;
  EXPECT_EQ(due, 2);
  // Socket LB off: short, but no endpoints.
  TellDatapath(*r, true, 0, res);
  EXPECT_TRUE(res.told["198.18.200.10:80"].direct.empty());
  EXPECT_EQ(res.told["198.18.200.10:80"].direct_left, 0u);
}

TEST(RouteTable, SnapshotRewritesOrRemovesWhatTheDatapathHolds) {
  RecordingResolver res;
  auto t1 = RouteTable::Build(DirectSnapshot({"198.18.1.11", "198.18.1.12"}, {"198.18.1.11", "198.18.1.12"}),
                              nullptr);
  const ServiceRoute* r1 = JudgedShort(*t1);
  ASSERT_NE(r1, nullptr);
  TellDatapath(*r1, true, 1024, res);
  // An endpoint is removed: the entry is rewritten at once (no connect may
  // reach the removed pod), still short.
  auto t2 = RouteTable::Build(DirectSnapshot({"198.18.1.11"}, {"198.18.1.11", "198.18.1.12"}), t1.get());
  t2->RetellDatapath(t1.get(), 1024, res);
  ASSERT_EQ(res.told["198.18.200.10:80"].direct.size(), 1u);
  EXPECT_EQ(res.told["198.18.200.10:80"].direct[0].ToString(), "198.18.1.11:8080");
  EXPECT_TRUE(res.told["198.18.200.10:80"].is_short);
  // The service is gone: the entry goes.
  Snapshot empty;
  auto t3 = RouteTable::Build(empty, t2.get());
  t3->RetellDatapath(t2.get(), 1024, res);
  EXPECT_FALSE(res.told["198.18.200.10:80"].is_short);
  // A long route is never told on a snapshot.
  const int before = res.tells;
  auto t4 = RouteTable::Build(DirectSnapshot({"198.18.1.11"}, {"198.18.1.11"}), t3.get());
  t4->RetellDatapath(t3.get(), 1024, res);
  EXPECT_EQ(res.tells, before);
}

// A direct connect that failed (counted by sockops, which also ended socket
// LB for the route) keeps that endpoint out when the proxy renews it,
// until a connect through the proxy succeeds there.
TEST(RouteTable, FailedDirectConnectsKeepTheEndpointOutUntilItAnswers) {
  RecordingResolver res;
  auto t = RouteTable::Build(DirectSnapshot({"198.18.1.11", "198.18.1.12"}, {"198.18.1.11", "198.18.1.12"}),
                             nullptr);
  const ServiceRoute* r = JudgedShort(*t);
  ASSERT_NE(r, nullptr);
  res.failed["198.18.1.12:8080"] = 7;  // history before the first look
  TellDatapath(*r, true, 1024, res);
  EXPECT_EQ(res.told["198.18.200.10:80"].direct.size(), 2u)
      << "failures before the first look are the baseline";
  res.failed["198.18.1.12:8080"] = 8;
  TellDatapath(*r, true, 1024, res);
  ASSERT_EQ(res.told["198.18.200.10:80"].direct.size(), 1u);
  EXPECT_EQ(res.told["198.18.200.10:80"].direct[0].ToString(), "198.18.1.11:8080");
  EXPECT_EQ(r->lb->Stats()[1].failures, 1u) << "the balancer heard of it";
  TellDatapath(*r, true, 1024, res);
  EXPECT_EQ(res.told["198.18.200.10:80"].direct.size(), 1u) << "still out: nothing has connected there since";
  r->lb->OnResult(1, absl::Milliseconds(1), true);
  TellDatapath(*r, true, 1024, res);
  EXPECT_EQ(res.told["198.18.200.10:80"].direct.size(), 2u)
      << "back once a connect through the proxy succeeded";
  // What was seen survives a snapshot: an old failure does not count twice.
  auto t2 = RouteTable::Build(DirectSnapshot({"198.18.1.11", "198.18.1.12"}, {"198.18.1.11", "198.18.1.12"}),
                              t.get());
  TellDatapath(*t2->Find(*SocketAddress::Parse("198.18.200.10:80")), true, 1024, res);
  EXPECT_EQ(res.told["198.18.200.10:80"].direct.size(), 2u);
}

}  // namespace
}  // namespace ringmesh::proxy
