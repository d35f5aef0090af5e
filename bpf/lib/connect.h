/* connect4/connect6: decide, record the original destination in
 * socket-local storage, rewrite to the proxy listener in the pod netns; or,
 * for a short route the proxy armed with its endpoints, rewrite straight to
 * one of them (socket LB). */
#ifndef RINGMESH_BPF_LIB_CONNECT_H_
#define RINGMESH_BPF_LIB_CONNECT_H_

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/addr.h"
#include "lib/decide.h"
#include "lib/maps.h"

/* Set by the agent before load (skeleton rodata). */
const volatile __u32 rm_proxy_mark = 0x539;

struct rm_dst {
	__u8 addr[16];
	__u16 port; /* network order */
	__u16 family;
};

static __always_inline int rm_cidr_opted_out(__u32 pod_id, const __u8 addr[16])
{
	struct rm_cidr_key k = { .prefixlen = 32 + 128, .pod_id = pod_id };
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&rm_opt_out_cidrs, &k) != NULL;
}

/* Is the proxy's outbound listener open in this socket's netns? A lookup,
 * not a flag: when the proxy dies its listeners close with it, so the very
 * next connect sees it, whoever else is alive. */
static __always_inline int rm_proxy_listening(struct bpf_sock_addr *ctx, __u16 family, __u16 port_be)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	if (family == AF_INET) {
		t.ipv4.daddr = bpf_htonl(0x7f000001);
		t.ipv4.dport = port_be;
		sk = bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	} else {
		t.ipv6.daddr[3] = bpf_htonl(1);
		t.ipv6.dport = port_be;
		sk = bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

static __always_inline void rm_rewrite_to_proxy(struct bpf_sock_addr *ctx, __u16 family, __u16 port_be)
{
	if (family == AF_INET) {
		ctx->user_ip4 = bpf_htonl(0x7f000001);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
	ctx->user_port = port_be;
}

static __always_inline void rm_rewrite_to(struct bpf_sock_addr *ctx, __u16 family, const struct rm_direct_backend *b)
{
	if (family == AF_INET) {
		__u32 v4;
		__builtin_memcpy(&v4, &b->addr[12], 4);
		ctx->user_ip4 = v4;
	} else {
		__u32 w[4];
		__builtin_memcpy(w, b->addr, 16);
		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
	}
	ctx->user_port = b->port;
}

/* Socket LB for a short route (rm_short_dst with backends, see abi.h): 1
 * when the connect was rewritten to a backend. */
static __always_inline int rm_try_direct(struct bpf_sock_addr *ctx, struct bpf_sock *sk, const struct rm_dst *dst,
					 __u32 pod_id)
{
	struct rm_dst_key k = {}, ep = {};
	struct rm_sk_direct *sd;
	struct rm_short_dst *e;
	__u32 left;
	int i;

	if (!rm_fastpath_enabled())
		return 0;
	__builtin_memcpy(k.addr, dst->addr, 16);
	k.port = dst->port;
	e = bpf_map_lookup_elem(&rm_short_dst, &k);
	if (!e)
		return 0;
	left = e->direct_left;
	if (left == 0)
		return 0;
	i = rm_direct_pick(e, dst->addr, bpf_get_prandom_u32());
	if (i < 0 || i >= RM_MAX_DIRECT_BACKENDS)
		return 0;
	e->direct_left = left - 1;
	__builtin_memcpy(ep.addr, e->backends[i].addr, 16);
	ep.port = e->backends[i].port;
	/* For sockops: it counts the connection when it is established and
	 * when it closes, and a connect that fails ends socket LB for the
	 * route. If the storage cannot be had, the socket still goes direct,
	 * uncounted after connect. */
	sd = bpf_sk_storage_get(&rm_sk_direct, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (sd) {
		sd->vip = k;
		sd->endpoint = ep;
		sd->pod_id = pod_id;
		sd->established = 0;
	}
	rm_rewrite_to(ctx, dst->family, &e->backends[i]);
	rm_direct_count(&ep, pod_id, __builtin_offsetof(struct rm_direct_conns, connects));
	rm_count(RM_CTR_CONNECT_DIRECT);
	return 1;
}

/* Always returns 1 (allow): refusing is done by redirecting to a closed
 * port, because a 0 here surfaces as EPERM/EACCES in the app. */
static __always_inline int rm_handle_connect(struct bpf_sock_addr *ctx, const struct rm_dst *dst)
{
	struct rm_connect_facts f = {};
	enum rm_counter why;
	__u64 netns_cookie;
	struct bpf_sock *sk;

	rm_count(RM_CTR_CONNECT_SEEN);
	sk = ctx->sk;
	if (!sk)
		return 1;
	netns_cookie = bpf_get_netns_cookie(ctx);
	f.pod = bpf_map_lookup_elem(&rm_pods, &netns_cookie);
	f.sock_type = ctx->type;
	f.protocol = ctx->protocol;
	f.sock_mark = sk->mark;
	f.proxy_mark = rm_proxy_mark;
	f.dst_port = dst->port;
	f.dst_is_loopback = rm_addr_is_loopback(dst->addr);
	if (f.pod && !f.dst_is_loopback)
		f.dst_cidr_opted_out = rm_cidr_opted_out(f.pod->pod_id, dst->addr);

	why = rm_classify_connect(&f);
	if (why != RM_CTR_REDIRECTED || !f.pod) {
		rm_count(why);
		return 1;
	}

	__u16 proxy_port = f.pod->proxy_port;
	if (rm_ready_action(f.pod, rm_proxy_listening(ctx, dst->family, proxy_port), &why) == RM_ACT_PASS) {
		rm_count(why);
		return 1;
	}
	if (why == RM_CTR_REDIRECTED && rm_try_direct(ctx, sk, dst, f.pod->pod_id))
		return 1;
	if (why == RM_CTR_REDIRECTED) {
		struct rm_orig_dst *od =
			bpf_sk_storage_get(&rm_sk_orig, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!od) {
			/* Cannot remember where it was going: do not redirect
			 * blind; apply the pod's fail mode instead. */
			rm_count(RM_CTR_ORIG_DST_STORAGE_FULL);
			if (!(f.pod->flags & RM_POD_FAIL_CLOSED))
				return 1;
			why = RM_CTR_FAIL_CLOSED;
		} else {
			__builtin_memcpy(od->addr, dst->addr, 16);
			od->port = dst->port;
			od->family = dst->family;
			od->pod_id = f.pod->pod_id;
			od->netns_cookie = netns_cookie;
		}
	}
	rm_count(why);
	rm_rewrite_to_proxy(ctx, dst->family, proxy_port);
	return 1;
}

#endif /* RINGMESH_BPF_LIB_CONNECT_H_ */
