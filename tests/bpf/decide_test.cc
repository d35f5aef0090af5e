// Branch-by-branch test of the connect decision (bpf/lib/decide.h),
// compiled in userspace: sock_addr programs cannot run under
// BPF_PROG_TEST_RUN, so the logic lives in helpers free of maps and calls.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>

extern "C" {
#include "bpf/lib/decide.h"
}

namespace {

rm_pod_info EnrolledPod() {
  rm_pod_info p{};
  p.pod_id = 7;
  p.flags = RM_POD_ENROLLED;
  p.proxy_port = htons(15001);
  return p;
}

rm_connect_facts Facts(const rm_pod_info* pod) {
  rm_connect_facts f{};
  f.pod = pod;
  f.sock_type = RM_SOCK_STREAM;
  f.protocol = RM_IPPROTO_TCP;
  f.proxy_mark = 0x539;
  f.dst_port = htons(80);
  return f;
}

TEST(Classify, EnrolledTcpIsCandidate) {
  auto pod = EnrolledPod();
  auto f = Facts(&pod);
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_REDIRECTED);
}

TEST(Classify, UdpBypasses) {
  auto pod = EnrolledPod();
  auto f = Facts(&pod);
  f.sock_type = 2;  // SOCK_DGRAM
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_BYPASS_NOT_TCP);
}

TEST(Classify, ProxyMarkBypasses) {
  auto pod = EnrolledPod();
  auto f = Facts(&pod);
  f.sock_mark = 0x539;
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_BYPASS_PROXY_SOCKET);
  f.proxy_mark = 0;  // mark check disabled: a zero mark must not match
  f.sock_mark = 0;
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_REDIRECTED);
}

TEST(Classify, NotEnrolled) {
  auto f = Facts(nullptr);
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_BYPASS_NOT_ENROLLED);
  auto pod = EnrolledPod();
  pod.flags = 0;
  f = Facts(&pod);
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_BYPASS_NOT_ENROLLED);
}

TEST(Classify, LoopbackBypasses) {
  auto pod = EnrolledPod();
  auto f = Facts(&pod);
  f.dst_is_loopback = 1;
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_BYPASS_LOOPBACK);
}

TEST(Classify, OptOutPortsHonourCount) {
  auto pod = EnrolledPod();
  pod.opt_out_ports[0] = htons(22);
  pod.opt_out_ports[1] = htons(80);
  pod.n_opt_out_ports = 1;
  auto f = Facts(&pod);
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_REDIRECTED) << "port 80 is beyond n_opt_out_ports";
  pod.n_opt_out_ports = 2;
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_OPTED_OUT_PORT);
  pod.n_opt_out_ports = 1000;  // corrupt count must not read past the array
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_OPTED_OUT_PORT);
}

TEST(Classify, OptOutCidr) {
  auto pod = EnrolledPod();
  auto f = Facts(&pod);
  f.dst_cidr_opted_out = 1;
  EXPECT_EQ(rm_classify_connect(&f), RM_CTR_OPTED_OUT_CIDR);
}

TEST(ReadyAction, ListeningRedirects) {
  auto pod = EnrolledPod();
  rm_counter why{};
  EXPECT_EQ(rm_ready_action(&pod, 1, &why), RM_ACT_REDIRECT);
  EXPECT_EQ(why, RM_CTR_REDIRECTED);
}

TEST(ReadyAction, AbsentProxyFollowsFailMode) {
  auto pod = EnrolledPod();
  rm_counter why{};
  EXPECT_EQ(rm_ready_action(&pod, 0, &why), RM_ACT_PASS);
  EXPECT_EQ(why, RM_CTR_FAIL_OPEN);
  pod.flags |= RM_POD_FAIL_CLOSED;
  EXPECT_EQ(rm_ready_action(&pod, 0, &why), RM_ACT_REDIRECT);
  EXPECT_EQ(why, RM_CTR_FAIL_CLOSED);
}

TEST(PeerKey, SwapsEnds) {
  rm_sock_key self{};
  self.netns_cookie = 42;
  self.local_addr[15] = 1;
  self.remote_addr[15] = 2;
  self.local_port = 1000;
  self.remote_port = 2000;
  rm_sock_key peer{};
  rm_peer_key(&peer, &self);
  EXPECT_EQ(peer.netns_cookie, 42u);
  EXPECT_EQ(peer.local_addr[15], 2);
  EXPECT_EQ(peer.remote_addr[15], 1);
  EXPECT_EQ(peer.local_port, 2000);
  EXPECT_EQ(peer.remote_port, 1000);
  rm_sock_key back{};
  rm_peer_key(&back, &peer);
  EXPECT_EQ(std::memcmp(&back, &self, sizeof(self)), 0);
}

void V4Mapped(__u8 out[16], uint8_t last) {
  std::memset(out, 0, 16);
  out[10] = out[11] = 0xff;
  out[12] = 198;
  out[13] = 18;
  out[14] = 1;
  out[15] = last;
}

TEST(DirectPick, NoBackendsGoesThroughTheProxy) {
  rm_short_dst e{};
  __u8 vip[16];
  V4Mapped(vip, 200);
  EXPECT_EQ(rm_direct_pick(&e, vip, 12345), -1);
  e.n_backends = RM_MAX_DIRECT_BACKENDS + 1;  // corrupt: never index past the array
  EXPECT_EQ(rm_direct_pick(&e, vip, 12345), -1);
}

TEST(DirectPick, SpreadsOverEveryBackend) {
  rm_short_dst e{};
  e.n_backends = 3;
  for (int i = 0; i < 3; ++i) V4Mapped(e.backends[i].addr, static_cast<uint8_t>(10 + i));
  __u8 vip[16];
  V4Mapped(vip, 200);
  int seen[3] = {};
  for (__u32 rnd = 0; rnd < 300; ++rnd) {
    const int i = rm_direct_pick(&e, vip, rnd * 2654435761u);
    ASSERT_GE(i, 0);
    ASSERT_LT(i, 3);
    ++seen[i];
  }
  for (int n : seen) EXPECT_GT(n, 50);
}

TEST(DirectPick, FamilyMustMatchTheSocket) {
  rm_short_dst e{};
  e.n_backends = 1;
  e.backends[0].addr[15] = 1;  // a v6 address
  __u8 vip[16];
  V4Mapped(vip, 200);
  EXPECT_EQ(rm_direct_pick(&e, vip, 0), -1) << "a v4 socket cannot connect to a v6 backend";
  V4Mapped(e.backends[0].addr, 10);
  EXPECT_EQ(rm_direct_pick(&e, vip, 0), 0);
}

// sockops' sockhash insert (rm_sockhash_insert in bpf/lib/sockops.h) counts
// what rm_sockhash_insert_counter says for bpf_sock_hash_update's result.
static_assert(RM_E2BIG == E2BIG && RM_ENOMEM == ENOMEM && RM_EEXIST == EEXIST, "BPF errno copies drifted");

TEST(SockhashInsert, SuccessCountsTheCallersCounter) {
  EXPECT_EQ(rm_sockhash_insert_counter(0, RM_CTR_SOCKHASH_ADDED), RM_CTR_SOCKHASH_ADDED);
  EXPECT_EQ(rm_sockhash_insert_counter(0, RM_CTR_PROXY_SOCKHASH_ADDED), RM_CTR_PROXY_SOCKHASH_ADDED);
}

TEST(SockhashInsert, OnlyRealFullnessCountsFull) {
  EXPECT_EQ(rm_sockhash_insert_counter(-E2BIG, RM_CTR_SOCKHASH_ADDED), RM_CTR_SOCKHASH_FULL)
      << "at max_entries";
  EXPECT_EQ(rm_sockhash_insert_counter(-ENOMEM, RM_CTR_SOCKHASH_ADDED), RM_CTR_SOCKHASH_FULL);
}

TEST(SockhashInsert, AlreadyPresentIsNotFull) {
  // BPF_NOEXIST on a key already in the map: the normal -EEXIST, no counter.
  EXPECT_EQ(rm_sockhash_insert_counter(-EEXIST, RM_CTR_SOCKHASH_ADDED), RM_CTR_MAX);
  EXPECT_EQ(rm_sockhash_insert_counter(-EEXIST, RM_CTR_SERVER_SOCKHASH_ADDED), RM_CTR_MAX);
  // Nor is a socket the sockhash does not take (state, protocol).
  EXPECT_EQ(rm_sockhash_insert_counter(-EOPNOTSUPP, RM_CTR_SOCKHASH_ADDED), RM_CTR_MAX);
  EXPECT_EQ(rm_sockhash_insert_counter(-EINVAL, RM_CTR_SOCKHASH_ADDED), RM_CTR_MAX);
}

}  // namespace
