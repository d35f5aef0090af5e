/* sockops: at ESTABLISHED re-key the original destination under the app
 * socket's local address (what the proxy sees as the peer), put the app
 * socket into the sockhash, and clean up if it closes before the proxy
 * took the entry. */
#ifndef RINGMESH_BPF_LIB_SOCKOPS_H_
#define RINGMESH_BPF_LIB_SOCKOPS_H_

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/addr.h"
#include "lib/decide.h"
#include "lib/maps.h"

static __always_inline void rm_sockops_local(const struct bpf_sock_ops *skops, __u8 addr[16])
{
	if (skops->family == AF_INET)
		rm_addr_from_v4(addr, skops->local_ip4);
	else
		RM_ADDR_FROM_CTX_V6(addr, skops->local_ip6);
}

static __always_inline void rm_sockops_remote(const struct bpf_sock_ops *skops, __u8 addr[16])
{
	if (skops->family == AF_INET)
		rm_addr_from_v4(addr, skops->remote_ip4);
	else
		RM_ADDR_FROM_CTX_V6(addr, skops->remote_ip6);
}

static __always_inline void rm_tuple_key_of(const struct bpf_sock_ops *skops, const struct rm_orig_dst *od,
					    struct rm_tuple_key *k)
{
	k->netns_cookie = od->netns_cookie;
	rm_sockops_local(skops, k->addr);
	k->port = rm_local_port_be(skops->local_port);
}

/* This socket's own (local, remote) view, keyed as in msg.h. */
static __always_inline void rm_sockops_key(const struct bpf_sock_ops *skops, __u64 netns_cookie,
					   struct rm_sock_key *k)
{
	rm_sockops_local(skops, k->local_addr);
	rm_sockops_remote(skops, k->remote_addr);
	k->netns_cookie = rm_key_netns(netns_cookie, k->local_addr);
	k->local_port = rm_local_port_be(skops->local_port);
	k->remote_port = rm_remote_port_be(skops->remote_port);
}

/* Inserts this socket into the sockhash under its own (local, remote) view. */
static __always_inline void rm_sockhash_insert(struct bpf_sock_ops *skops, __u64 netns_cookie,
					       enum rm_counter added)
{
	struct rm_sock_key k = {};
	struct rm_sock_addr a = {};
	struct bpf_sock *sk = skops->sk;
	enum rm_counter c;
	long err;

	rm_sockops_key(skops, netns_cookie, &k);
	err = bpf_sock_hash_update(skops, &rm_sockhash, &k, BPF_NOEXIST);
	c = rm_sockhash_insert_counter(err, added);
	if (c != RM_CTR_MAX)
		rm_count(c);
	if (err)
		return;
	if (!sk)
		return;
	/* A kernel address kept as a number: the peer's sk_msg reads through
	 * it with bpf_probe_read_kernel only (msg.h). BPF_ANY: an entry a
	 * missed close left behind is replaced. */
	a.kaddr = (__u64)sk;
	/* An app's socket (client or server end) talks to the proxy's. */
	a.app_end = added == RM_CTR_SOCKHASH_ADDED || added == RM_CTR_SERVER_SOCKHASH_ADDED;
	if (bpf_map_update_elem(&rm_sock_addr, &k, &a, BPF_ANY))
		rm_count(RM_CTR_SOCK_ADDR_FULL);
}

/* 1 when the proxy has seen connections to `od`'s destination to be short
 * (rm_short_dst): both ends of this one stay out of the sockhash. */
static __always_inline int rm_short_route(const struct rm_orig_dst *od)
{
	struct rm_dst_key k = {};

	__builtin_memcpy(k.addr, od->addr, sizeof(k.addr));
	k.port = od->port;
	if (!bpf_map_lookup_elem(&rm_short_dst, &k))
		return 0;
	rm_count(RM_CTR_SOCKHASH_SKIPPED_SHORT);
	return 1;
}

/* The proxy's upstream socket to an enrolled pod on this node (the proxy
 * marked it in rm_upstream): into the sockhash, so that once the server's
 * end joins (rm_on_server_established) the proxy -> server leg skips the
 * TCP stack too. If the server never joins, the proxy's first write finds
 * no peer and that socket stays on TCP. */
static __always_inline void rm_on_upstream_established(struct bpf_sock_ops *skops, struct bpf_sock *sk)
{
	struct rm_upstream *up;
	__u8 local[16], remote[16];

	up = bpf_sk_storage_get(&rm_upstream, sk, 0, 0);
	if (!up || !up->to_local_pod || !rm_fastpath_enabled())
		return;
	rm_sockops_local(skops, local);
	rm_sockops_remote(skops, remote);
	if (rm_addr_is_loopback(local) || rm_addr_is_loopback(remote))
		return;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	rm_sockhash_insert(skops, bpf_get_netns_cookie(skops), RM_CTR_UPSTREAM_SOCKHASH_ADDED);
}

/* A server socket in an enrolled pod accepting the proxy's upstream
 * connection: that socket is already in the sockhash (it completed its
 * handshake first), so this end joins it. */
static __always_inline void rm_on_server_established(struct bpf_sock_ops *skops, __u64 cookie)
{
	struct rm_sock_key self = {}, peer = {};

	rm_sockops_key(skops, cookie, &self);
	if (self.netns_cookie != 0)
		return; /* loopback: not a pod-to-pod connection */
	rm_peer_key(&peer, &self);
	if (!bpf_map_lookup_elem(&rm_sock_addr, &peer))
		return; /* the client is not the proxy's upstream socket */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	rm_sockhash_insert(skops, cookie, RM_CTR_SERVER_SOCKHASH_ADDED);
}

/* A socket connect() sent straight to an endpoint (socket LB): watched
 * until it closes, to count it established and closed, or failed
 * (rm_on_close). */
static __always_inline void rm_on_tcp_connect(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	if (sk && bpf_sk_storage_get(&rm_sk_direct, sk, 0, 0))
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline int rm_direct_established(struct bpf_sock *sk)
{
	struct rm_sk_direct *sd = bpf_sk_storage_get(&rm_sk_direct, sk, 0, 0);

	if (!sd)
		return 0;
	sd->established = 1;
	rm_direct_count(&sd->endpoint, sd->pod_id, __builtin_offsetof(struct rm_direct_conns, established));
	return 1;
}

/* A direct socket closed: counted closed, or, closed before it was
 * established, counted failed, and the route's next connections go
 * through the proxy (rm_sk_direct in abi.h). 0: not a direct socket. */
static __always_inline int rm_direct_closed(struct bpf_sock *sk)
{
	struct rm_sk_direct *sd = bpf_sk_storage_get(&rm_sk_direct, sk, 0, 0);
	struct rm_short_dst *e;

	if (!sd)
		return 0;
	if (sd->established) {
		rm_direct_count(&sd->endpoint, sd->pod_id, __builtin_offsetof(struct rm_direct_conns, closed));
	} else {
		rm_count(RM_CTR_CONNECT_DIRECT_FAILED);
		rm_direct_count(&sd->endpoint, sd->pod_id, __builtin_offsetof(struct rm_direct_conns, failed));
		e = bpf_map_lookup_elem(&rm_short_dst, &sd->vip);
		if (e)
			e->direct_left = 0;
	}
	bpf_sk_storage_delete(&rm_sk_direct, sk);
	return 1;
}

static __always_inline void rm_on_active_established(struct bpf_sock_ops *skops)
{
	struct rm_tuple_key tk = {};
	struct rm_orig_dst *od;
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return;
	od = bpf_sk_storage_get(&rm_sk_orig, sk, 0, 0);
	if (!od) {
		if (rm_direct_established(sk))
			return;
		rm_on_upstream_established(skops, sk);
		return;
	}
	rm_tuple_key_of(skops, od, &tk);
	if (bpf_map_update_elem(&rm_orig_dst, &tk, od, BPF_ANY))
		rm_count(RM_CTR_ORIG_DST_MAP_FULL);
	else
		rm_count(RM_CTR_ESTABLISHED_REKEYED);
	/* Ask for state changes so a close before accept removes the entry. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);

	if (!rm_fastpath_enabled()) {
		rm_count(RM_CTR_SOCKHASH_SKIPPED_FASTPATH_OFF);
		return;
	}
	if (rm_short_route(od))
		return;
	rm_sockhash_insert(skops, od->netns_cookie, RM_CTR_SOCKHASH_ADDED);
}

/* The proxy's end of an app<->proxy connection: a passively established
 * socket on the pod's proxy port on loopback, in an enrolled netns. It is
 * inserted here, before the app can send its first byte, rather than by the
 * proxy after accept(): a first write that found no peer would commit the
 * app's socket to the TCP path for good (see msg.h). Runs when sockops is
 * attached to a cgroup holding the proxy (the node cgroup in tests,
 * kubepods in a cluster). */
static __always_inline void rm_on_passive_established(struct bpf_sock_ops *skops)
{
	struct rm_tuple_key tk = {};
	struct rm_orig_dst *od;
	struct rm_pod_info *pod;
	__u8 local[16];
	__u64 cookie;

	cookie = bpf_get_netns_cookie(skops);
	pod = bpf_map_lookup_elem(&rm_pods, &cookie);
	if (!pod || !(pod->flags & RM_POD_ENROLLED))
		return;
	rm_sockops_local(skops, local);
	if (rm_local_port_be(skops->local_port) != pod->proxy_port || !rm_addr_is_loopback(local)) {
		if (rm_fastpath_enabled())
			rm_on_server_established(skops, cookie);
		return;
	}
	/* Its close removes the proxy's credit entry, should the proxy not
	 * (killed mid-connection); the proxy credits whether or not the fast
	 * path was on when the connection began. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	if (!rm_fastpath_enabled())
		return;
	/* The app's end re-keyed its original destination under its own
	 * address at its ESTABLISHED, which came first (it sent the ACK that
	 * made this one): a short route leaves this end out too. */
	tk.netns_cookie = cookie;
	rm_sockops_remote(skops, tk.addr);
	tk.port = rm_remote_port_be(skops->remote_port);
	od = bpf_map_lookup_elem(&rm_orig_dst, &tk);
	if (od && rm_short_route(od))
		return;
	rm_sockhash_insert(skops, cookie, RM_CTR_PROXY_SOCKHASH_ADDED);
}

/* The closing socket's entries, keyed by its own view exactly as when it
 * was inserted (rm_sockops_key: its netns for loopback, 0 pod-to-pod). */
static __always_inline void rm_forget_sock(struct bpf_sock_ops *skops, int proxy_end)
{
	struct rm_sock_key k = {};

	rm_sockops_key(skops, bpf_get_netns_cookie(skops), &k);
	if (proxy_end && bpf_map_delete_elem(&rm_fp_credit, &k) == 0)
		rm_count(RM_CTR_FP_CREDIT_CLOSED);
	if (bpf_map_delete_elem(&rm_splice, &k) == 0)
		rm_count(RM_CTR_SPLICE_CLOSED);
	if (bpf_map_delete_elem(&rm_sock_addr, &k) == 0)
		rm_count(RM_CTR_SOCK_ADDR_CLOSED);
}

static __always_inline void rm_on_close(struct bpf_sock_ops *skops)
{
	struct rm_tuple_key tk = {};
	struct rm_orig_dst *od;
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return;
	if (rm_direct_closed(sk))
		return;
	od = bpf_sk_storage_get(&rm_sk_orig, sk, 0, 0);
	if (!od) {
		rm_forget_sock(skops, 1); /* a proxy end (or nothing of ours) */
		return;
	}
	rm_forget_sock(skops, 0);
	rm_tuple_key_of(skops, od, &tk);
	if (bpf_map_delete_elem(&rm_orig_dst, &tk) == 0)
		rm_count(RM_CTR_ORIG_DST_CLOSED);
}

#endif /* RINGMESH_BPF_LIB_SOCKOPS_H_ */
