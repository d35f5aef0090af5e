// The ABI header is the only definition of map keys and values; this test
// proves the C++ compiler and the BPF compiler laid them out identically by
// comparing sizeof/offsetof with the BTF carried in the skeleton's object.
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <cstddef>
#include <string>

#include <gtest/gtest.h>

#include "bpf/include/ringmesh/abi.h"
#include "rm_datapath.skel.h"

namespace {

class AbiBtf : public ::testing::Test {
 protected:
  void SetUp() override {
    size_t sz = 0;
    const void* elf = rm_datapath__elf_bytes(&sz);
    obj_ = bpf_object__open_mem(elf, sz, nullptr);
    ASSERT_NE(obj_, nullptr);
    btf_ = bpf_object__btf(obj_);
    ASSERT_NE(btf_, nullptr);
  }
  void TearDown() override { bpf_object__close(obj_); }

  const btf_type* Struct(const char* name) {
    int id = btf__find_by_name_kind(btf_, name, BTF_KIND_STRUCT);
    if (id < 0) return nullptr;
    return btf__type_by_id(btf_, id);
  }

  // Offset in bytes of member `field` of struct `t`, or -1.
  long MemberOffset(const btf_type* t, const std::string& field) {
    const btf_member* m = btf_members(t);
    for (int i = 0; i < btf_vlen(t); ++i, ++m) {
      if (field == btf__name_by_offset(btf_, m->name_off)) return btf_member_bit_offset(t, i) / 8;
    }
    return -1;
  }

  int MemberCount(const btf_type* t) { return btf_vlen(t); }

  bpf_object* obj_ = nullptr;
  const btf* btf_ = nullptr;
};

#define EXPECT_FIELD(type, field) \
  EXPECT_EQ(MemberOffset(t, #field), static_cast<long>(offsetof(struct type, field))) << #type "." #field

TEST_F(AbiBtf, PodInfo) {
  const btf_type* t = Struct("rm_pod_info");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_pod_info));
  EXPECT_EQ(MemberCount(t), 6);
  EXPECT_FIELD(rm_pod_info, pod_id);
  EXPECT_FIELD(rm_pod_info, flags);
  EXPECT_FIELD(rm_pod_info, proxy_port);
  EXPECT_FIELD(rm_pod_info, n_opt_out_ports);
  EXPECT_FIELD(rm_pod_info, opt_out_ports);
  EXPECT_FIELD(rm_pod_info, _pad);
}

TEST_F(AbiBtf, CidrKey) {
  const btf_type* t = Struct("rm_cidr_key");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_cidr_key));
  EXPECT_EQ(MemberCount(t), 3);
  EXPECT_FIELD(rm_cidr_key, prefixlen);
  EXPECT_FIELD(rm_cidr_key, pod_id);
  EXPECT_FIELD(rm_cidr_key, addr);
}

TEST_F(AbiBtf, OrigDst) {
  const btf_type* t = Struct("rm_orig_dst");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_orig_dst));
  EXPECT_EQ(MemberCount(t), 5);
  EXPECT_FIELD(rm_orig_dst, addr);
  EXPECT_FIELD(rm_orig_dst, port);
  EXPECT_FIELD(rm_orig_dst, family);
  EXPECT_FIELD(rm_orig_dst, pod_id);
  EXPECT_FIELD(rm_orig_dst, netns_cookie);
}

TEST_F(AbiBtf, TupleKey) {
  const btf_type* t = Struct("rm_tuple_key");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_tuple_key));
  EXPECT_EQ(MemberCount(t), 4);
  EXPECT_FIELD(rm_tuple_key, netns_cookie);
  EXPECT_FIELD(rm_tuple_key, addr);
  EXPECT_FIELD(rm_tuple_key, port);
  EXPECT_FIELD(rm_tuple_key, _pad);
}

TEST_F(AbiBtf, SockKey) {
  const btf_type* t = Struct("rm_sock_key");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_sock_key));
  EXPECT_EQ(MemberCount(t), 6);
  EXPECT_FIELD(rm_sock_key, netns_cookie);
  EXPECT_FIELD(rm_sock_key, local_addr);
  EXPECT_FIELD(rm_sock_key, remote_addr);
  EXPECT_FIELD(rm_sock_key, local_port);
  EXPECT_FIELD(rm_sock_key, remote_port);
  EXPECT_FIELD(rm_sock_key, _pad);
}

TEST_F(AbiBtf, Config) {
  const btf_type* t = Struct("rm_config");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_config));
  EXPECT_EQ(MemberCount(t), 5);
  EXPECT_FIELD(rm_config, abi_version);
  EXPECT_FIELD(rm_config, fastpath_enabled);
  EXPECT_FIELD(rm_config, fastpath_budget);
  EXPECT_FIELD(rm_config, flow_control);
  EXPECT_FIELD(rm_config, _pad);
}

TEST_F(AbiBtf, Upstream) {
  const btf_type* t = Struct("rm_upstream");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_upstream));
  EXPECT_EQ(MemberCount(t), 2);
  EXPECT_FIELD(rm_upstream, to_local_pod);
  EXPECT_FIELD(rm_upstream, _pad);
}

TEST_F(AbiBtf, ShortDstKey) {
  const btf_type* t = Struct("rm_dst_key");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_dst_key));
  EXPECT_EQ(MemberCount(t), 3);
  EXPECT_FIELD(rm_dst_key, addr);
  EXPECT_FIELD(rm_dst_key, port);
  EXPECT_FIELD(rm_dst_key, _pad);
}

TEST_F(AbiBtf, ShortDst) {
  const btf_type* t = Struct("rm_short_dst");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_short_dst));
  EXPECT_EQ(MemberCount(t), 5);
  EXPECT_FIELD(rm_short_dst, short_lived);
  EXPECT_FIELD(rm_short_dst, direct_left);
  EXPECT_FIELD(rm_short_dst, n_backends);
  EXPECT_FIELD(rm_short_dst, _pad);
  EXPECT_FIELD(rm_short_dst, backends);
}

TEST_F(AbiBtf, DirectBackend) {
  const btf_type* t = Struct("rm_direct_backend");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_direct_backend));
  EXPECT_EQ(MemberCount(t), 3);
  EXPECT_FIELD(rm_direct_backend, addr);
  EXPECT_FIELD(rm_direct_backend, port);
  EXPECT_FIELD(rm_direct_backend, _pad);
}

TEST_F(AbiBtf, DirectConns) {
  const btf_type* t = Struct("rm_direct_conns");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_direct_conns));
  EXPECT_EQ(MemberCount(t), 4);
  EXPECT_FIELD(rm_direct_conns, connects);
  EXPECT_FIELD(rm_direct_conns, failed);
  EXPECT_FIELD(rm_direct_conns, established);
  EXPECT_FIELD(rm_direct_conns, closed);
}

TEST_F(AbiBtf, DirectKey) {
  const btf_type* t = Struct("rm_direct_key");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_direct_key));
  EXPECT_EQ(MemberCount(t), 3);
  EXPECT_FIELD(rm_direct_key, endpoint);
  EXPECT_FIELD(rm_direct_key, pod_id);
  EXPECT_FIELD(rm_direct_key, _pad);
}

TEST_F(AbiBtf, SkDirect) {
  const btf_type* t = Struct("rm_sk_direct");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_sk_direct));
  EXPECT_EQ(MemberCount(t), 4);
  EXPECT_FIELD(rm_sk_direct, vip);
  EXPECT_FIELD(rm_sk_direct, endpoint);
  EXPECT_FIELD(rm_sk_direct, pod_id);
  EXPECT_FIELD(rm_sk_direct, established);
}

TEST_F(AbiBtf, SpliceBytes) {
  const btf_type* t = Struct("rm_splice_bytes");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_splice_bytes));
  EXPECT_EQ(MemberCount(t), 1);
  EXPECT_FIELD(rm_splice_bytes, direct);
}

TEST_F(AbiBtf, SockAddr) {
  const btf_type* t = Struct("rm_sock_addr");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_sock_addr));
  EXPECT_EQ(MemberCount(t), 3);
  EXPECT_FIELD(rm_sock_addr, kaddr);
  EXPECT_FIELD(rm_sock_addr, committed);
  EXPECT_FIELD(rm_sock_addr, app_end);
}

TEST_F(AbiBtf, Splice) {
  const btf_type* t = Struct("rm_splice");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_splice));
  EXPECT_EQ(MemberCount(t), 3);
  EXPECT_FIELD(rm_splice, target);
  EXPECT_FIELD(rm_splice, via);
  EXPECT_FIELD(rm_splice, forwarded);
}

TEST_F(AbiBtf, FpCredit) {
  const btf_type* t = Struct("rm_fp_credit");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_fp_credit));
  EXPECT_EQ(MemberCount(t), 1);
  EXPECT_FIELD(rm_fp_credit, consumed);
}

TEST_F(AbiBtf, MsgState) {
  const btf_type* t = Struct("rm_msg_state");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size, sizeof(rm_msg_state));
  EXPECT_EQ(MemberCount(t), 4);
  EXPECT_FIELD(rm_msg_state, tcp_committed);
  EXPECT_FIELD(rm_msg_state, _pad);
  EXPECT_FIELD(rm_msg_state, redirected);
  EXPECT_FIELD(rm_msg_state, passed);
}

// Every map's key and value sizes in the object equal the ABI types'.
TEST_F(AbiBtf, MapKeyValueSizes) {
  struct Want {
    const char* map;
    size_t key, value;
  };
  const Want wants[] = {
      {RM_MAP_PODS, sizeof(__u64), sizeof(rm_pod_info)},
      {RM_MAP_OPT_OUT_CIDRS, sizeof(rm_cidr_key), sizeof(__u32)},
      {RM_MAP_ORIG_DST, sizeof(rm_tuple_key), sizeof(rm_orig_dst)},
      {RM_MAP_SOCKHASH, sizeof(rm_sock_key), sizeof(__u64)},
      {RM_MAP_FP_CREDIT, sizeof(rm_sock_key), sizeof(rm_fp_credit)},
      {RM_MAP_SOCK_ADDR, sizeof(rm_sock_key), sizeof(rm_sock_addr)},
      {RM_MAP_SPLICE, sizeof(rm_sock_key), sizeof(rm_splice)},
      {RM_MAP_SHORT_DST, sizeof(rm_dst_key), sizeof(rm_short_dst)},
      {RM_MAP_SPLICE_BYTES, sizeof(rm_sock_key), sizeof(rm_splice_bytes)},
      {RM_MAP_DIRECT_CONNS, sizeof(rm_direct_key), sizeof(rm_direct_conns)},
      {RM_MAP_CONFIG, sizeof(__u32), sizeof(rm_config)},
      {RM_MAP_COUNTERS, sizeof(__u32), sizeof(__u64)},
      {"rm_sk_orig", sizeof(int), sizeof(rm_orig_dst)},
      {"rm_msg_state", sizeof(int), sizeof(rm_msg_state)},
      {"rm_sk_direct", sizeof(int), sizeof(rm_sk_direct)},
  };
  for (const auto& w : wants) {
    bpf_map* m = bpf_object__find_map_by_name(obj_, w.map);
    ASSERT_NE(m, nullptr) << w.map;
    EXPECT_EQ(bpf_map__key_size(m), w.key) << w.map;
    EXPECT_EQ(bpf_map__value_size(m), w.value) << w.map;
  }
  bpf_map* counters = bpf_object__find_map_by_name(obj_, RM_MAP_COUNTERS);
  EXPECT_EQ(bpf_map__max_entries(counters), static_cast<uint32_t>(RM_CTR_MAX));
}

}  // namespace
