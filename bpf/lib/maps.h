/* Map definitions. Key and value types come from ringmesh/abi.h only.
 * Capacities are defaults; the agent resizes them before load. */
#ifndef RINGMESH_BPF_LIB_MAPS_H_
#define RINGMESH_BPF_LIB_MAPS_H_

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ringmesh/abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RM_DEFAULT_MAX_PODS);
	__type(key, __u64);
	__type(value, struct rm_pod_info);
} rm_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, RM_DEFAULT_MAX_OPT_OUT_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rm_cidr_key);
	__type(value, __u32);
} rm_opt_out_cidrs SEC(".maps");

/* Socket-local: lives and dies with the app socket, so a connect that
 * never establishes leaves nothing behind. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rm_orig_dst);
} rm_sk_orig SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rm_msg_state);
} rm_msg_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rm_upstream);
} rm_upstream SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rm_sk_direct);
} rm_sk_direct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RM_DEFAULT_MAX_ORIG_DST);
	__type(key, struct rm_tuple_key);
	__type(value, struct rm_orig_dst);
} rm_orig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, RM_DEFAULT_MAX_SOCKHASH);
	__type(key, struct rm_sock_key);
	__type(value, __u64);
} rm_sockhash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rm_config);
} rm_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RM_DEFAULT_MAX_SOCKHASH);
	__type(key, struct rm_sock_key);
	__type(value, struct rm_fp_credit);
} rm_fp_credit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RM_DEFAULT_MAX_SOCKHASH);
	__type(key, struct rm_sock_key);
	__type(value, struct rm_sock_addr);
} rm_sock_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RM_DEFAULT_MAX_SOCKHASH);
	__type(key, struct rm_sock_key);
	__type(value, struct rm_splice);
} rm_splice SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RM_DEFAULT_MAX_SHORT_DST);
	__type(key, struct rm_dst_key);
	__type(value, struct rm_short_dst);
} rm_short_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RM_DEFAULT_MAX_DIRECT_CONNS);
	__type(key, struct rm_direct_key);
	__type(value, struct rm_direct_conns);
} rm_direct_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RM_DEFAULT_MAX_SOCKHASH);
	__type(key, struct rm_sock_key);
	__type(value, struct rm_splice_bytes);
} rm_splice_bytes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RM_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} rm_counters SEC(".maps");

static __always_inline void rm_count(enum rm_counter c)
{
	__u32 idx = c;
	__u64 *v = bpf_map_lookup_elem(&rm_counters, &idx);
	if (v)
		*v += 1;
}

static __always_inline struct rm_config *rm_config_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&rm_config, &zero);
}

static __always_inline int rm_fastpath_enabled(void)
{
	struct rm_config *cfg = rm_config_get();
	return cfg && cfg->fastpath_enabled;
}

/* The rm_direct_conns counters of (endpoint, source pod) and of the
 * endpoint over all pods (pod 0): field at `off` of both += 1. */
static __always_inline void rm_direct_count(const struct rm_dst_key *endpoint, __u32 pod_id, __u32 off)
{
	struct rm_direct_key k = {};
	struct rm_direct_conns zero = {}, *c;

	k.endpoint = *endpoint;
	for (int i = 0; i < 2; i++) {
		k.pod_id = i == 0 ? pod_id : 0;
		c = bpf_map_lookup_elem(&rm_direct_conns, &k);
		if (!c) {
			/* Another CPU may create it first: then update fails and
			 * the lookup finds theirs. */
			bpf_map_update_elem(&rm_direct_conns, &k, &zero, BPF_NOEXIST);
			c = bpf_map_lookup_elem(&rm_direct_conns, &k);
		}
		if (!c) {
			rm_count(RM_CTR_DIRECT_CONNS_FULL);
			continue;
		}
		if (off < sizeof(*c))
			__sync_fetch_and_add((__u64 *)((__u8 *)c + (off & 31)), 1);
		if (pod_id == 0)
			break;
	}
}

#endif /* RINGMESH_BPF_LIB_MAPS_H_ */
