// HbonePool bookkeeping: sharing per key, the stream limit, GOAWAY,
// idle expiry with an injected clock, the connection cap.
#include "userspace/proxy/hbone/hbone_pool.h"

#include <gtest/gtest.h>

namespace ringmesh::proxy::hbone {
namespace {

tls::SpiffeId Sid(const std::string& sa) {
  return *tls::SpiffeId::Parse("spiffe://cluster.local/ns/a/sa/" + sa);
}

class HbonePoolTest : public ::testing::Test {
 protected:
  HbonePoolTest() {
    opts_.clock = [this] { return now_; };
    opts_.max_streams_per_connection = 3;
  }
  absl::Time now_ = absl::FromUnixSeconds(1000);
  HbonePoolOptions opts_;
  HbonePoolKey key_{Sid("src"), Sid("dst"), *IpAddress::Parse("10.0.0.1")};
};

TEST_F(HbonePoolTest, SharesUpToTheStreamLimitThenOpensAnother) {
  HbonePool pool(opts_);
  auto a = pool.Acquire(key_);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->is_new);
  for (int i = 0; i < 2; ++i) {
    auto again = pool.Acquire(key_);
    EXPECT_FALSE(again->is_new);
    EXPECT_EQ(again->id, a->id);
  }
  auto b = pool.Acquire(key_);
  EXPECT_TRUE(b->is_new);
  EXPECT_NE(b->id, a->id);
  pool.Release(a->id);
  auto c = pool.Acquire(key_);  // a has room again
  EXPECT_EQ(c->id, a->id);
  EXPECT_EQ(pool.streams(a->id), 3u);
  EXPECT_EQ(pool.streams(b->id), 1u);
}

TEST_F(HbonePoolTest, KeysDoNotShare) {
  HbonePool pool(opts_);
  auto a = pool.Acquire(key_);
  for (HbonePoolKey other : {HbonePoolKey{Sid("other"), key_.destination, key_.destination_ip},
                             HbonePoolKey{key_.source, Sid("other"), key_.destination_ip},
                             HbonePoolKey{key_.source, key_.destination, *IpAddress::Parse("10.0.0.2")}}) {
    auto b = pool.Acquire(other);
    EXPECT_TRUE(b->is_new);
    EXPECT_NE(b->id, a->id);
  }
  EXPECT_EQ(pool.size(), 4u);
}

TEST_F(HbonePoolTest, DrainingTakesNoNewStreamsAndIsCollectedWhenEmpty) {
  HbonePool pool(opts_);
  auto a = pool.Acquire(key_);
  pool.MarkDraining(a->id);
  auto b = pool.Acquire(key_);
  EXPECT_TRUE(b->is_new);
  EXPECT_TRUE(pool.CollectIdle().empty());  // a still has its stream
  pool.Release(a->id);
  EXPECT_EQ(pool.CollectIdle(), std::vector<HbonePool::ConnId>{a->id});
  EXPECT_EQ(pool.size(), 1u);
}

TEST_F(HbonePoolTest, IdleConnectionsExpireAfterTheTimeout) {
  HbonePool pool(opts_);
  auto a = pool.Acquire(key_);
  pool.Release(a->id);
  now_ += absl::Minutes(5) - absl::Seconds(1);
  EXPECT_TRUE(pool.CollectIdle().empty());
  // Used again: the idle clock restarts.
  EXPECT_EQ(pool.Acquire(key_)->id, a->id);
  now_ += absl::Minutes(10);
  EXPECT_TRUE(pool.CollectIdle().empty());  // busy
  pool.Release(a->id);
  now_ += absl::Minutes(5);
  EXPECT_EQ(pool.CollectIdle(), std::vector<HbonePool::ConnId>{a->id});
  EXPECT_TRUE(pool.Acquire(key_)->is_new);
}

TEST_F(HbonePoolTest, ConnectionCapAndRemove) {
  opts_.max_connections = 2;
  opts_.max_streams_per_connection = 1;
  HbonePool pool(opts_);
  auto a = pool.Acquire(key_);
  auto b = pool.Acquire(key_);
  EXPECT_EQ(pool.Acquire(key_).status().code(), absl::StatusCode::kResourceExhausted);
  pool.Remove(a->id);  // its connect failed
  EXPECT_TRUE(pool.Acquire(key_)->is_new);
  pool.Release(12345);  // unknown ids are ignored
  pool.Remove(12345);
  EXPECT_EQ(pool.size(), 2u);
  EXPECT_EQ(pool.streams(b->id), 1u);
}

}  // namespace
}  // namespace ringmesh::proxy::hbone
