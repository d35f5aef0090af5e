/* kshortcut: the "K" peer of scripts/bench — the same-node ceiling.
 *
 * Two pods talk directly (no proxy); sockops puts both ends of every
 * established IPv4 TCP connection between bench addresses (198.18.0.0/15)
 * into a sockhash keyed by the 4-tuple, and sk_msg redirects each write
 * straight into the peer socket's receive queue, skipping the TCP stack and
 * the veths in between. This is the best a kernel shortcut can do for
 * same-node traffic; ringmesh's fast path can at most approach it.
 *
 * Ordering: a socket whose write once found no peer (its first bytes went
 * over TCP) is marked and never redirects afterwards, so each direction is
 * a redirected prefix followed by TCP bytes — an order the reader keeps.
 *
 * Attached only to the benchmark node's cgroup, by bench/kshortcut.cc,
 * only while the K peer runs. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kshortcut assumes a little-endian target (remote_port in the upper 16 bits)"
#endif

char LICENSE[] SEC("license") = "GPL";

struct ks_key {
	__u32 local_ip;    /* network order */
	__u32 remote_ip;   /* network order */
	__u16 local_port;  /* network order */
	__u16 remote_port; /* network order */
};

enum ks_counter {
	KS_SOCKHASH_ADDED = 0,
	KS_SOCKHASH_FULL,
	KS_MSG_REDIRECTED,
	KS_MSG_PASS_MISS,
	KS_MSG_PASS_COMMITTED,
	KS_MSG_NO_STATE,
	KS_NR_COUNTERS,
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct ks_key);
	__type(value, __u64);
} ks_sockhash SEC(".maps");

/* Per socket: 1 once a write passed over TCP. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} ks_committed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} ks_counters SEC(".maps");

static __always_inline void ks_count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&ks_counters, &c);

	if (v)
		*v += 1;
}

/* 198.18.0.0/15, network order */
static __always_inline int ks_bench_addr(__u32 ip_be)
{
	return (bpf_ntohl(ip_be) & 0xfffe0000u) == 0xc6120000u;
}

SEC("sockops")
int ks_sockops(struct bpf_sock_ops *skops)
{
	struct ks_key k = {};
	__u32 op = skops->op;

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET)
		return 1;
	if (!ks_bench_addr(skops->local_ip4) || !ks_bench_addr(skops->remote_ip4))
		return 1;
	k.local_ip = skops->local_ip4;
	k.remote_ip = skops->remote_ip4;
	k.local_port = bpf_htons((__u16)skops->local_port);
	k.remote_port = (__u16)(skops->remote_port >> 16);
	if (bpf_sock_hash_update(skops, &ks_sockhash, &k, BPF_NOEXIST))
		ks_count(KS_SOCKHASH_FULL);
	else
		ks_count(KS_SOCKHASH_ADDED);
	return 1;
}

SEC("sk_msg")
int ks_msg(struct sk_msg_md *msg)
{
	struct ks_key peer = {};
	struct bpf_sock *sk = msg->sk;
	__u32 *committed;

	if (!sk)
		return SK_PASS;
	committed = bpf_sk_storage_get(&ks_committed, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!committed) {
		ks_count(KS_MSG_NO_STATE);
		return SK_PASS;
	}
	if (*committed) {
		ks_count(KS_MSG_PASS_COMMITTED);
		return SK_PASS;
	}
	peer.local_ip = msg->remote_ip4;
	peer.remote_ip = msg->local_ip4;
	peer.local_port = (__u16)(msg->remote_port >> 16);
	peer.remote_port = bpf_htons((__u16)msg->local_port);
	if (bpf_msg_redirect_hash(msg, &ks_sockhash, &peer, BPF_F_INGRESS) == SK_PASS) {
		ks_count(KS_MSG_REDIRECTED);
		return SK_PASS;
	}
	*committed = 1;
	ks_count(KS_MSG_PASS_MISS);
	return SK_PASS;
}
