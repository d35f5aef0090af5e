/* Decision logic of the connect hooks.
 *
 * Pure functions over facts the entry point gathered (no helpers, no
 * maps), so tests/bpf/decide_test.cc compiles this header in userspace and
 * checks every branch; sock_addr programs cannot run under
 * BPF_PROG_TEST_RUN. The hooks themselves are proven by namespace tests.
 */
#ifndef RINGMESH_BPF_LIB_DECIDE_H_
#define RINGMESH_BPF_LIB_DECIDE_H_

#include "ringmesh/abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define RM_SOCK_STREAM 1
#define RM_IPPROTO_TCP 6

/* What the connect hook knows when it decides. */
struct rm_connect_facts {
	const struct rm_pod_info *pod; /* NULL: netns not enrolled */
	__u32 sock_type;
	__u32 protocol;
	__u32 sock_mark;
	__u32 proxy_mark;
	__u16 dst_port;        /* network byte order */
	__u8 dst_is_loopback;
	__u8 dst_cidr_opted_out;
};

/* Returns RM_CTR_REDIRECTED when the connection is a redirect candidate,
 * else the counter naming why it is left alone. */
static __always_inline enum rm_counter rm_classify_connect(const struct rm_connect_facts *f)
{
	if (f->sock_type != RM_SOCK_STREAM ||
	    (f->protocol != RM_IPPROTO_TCP && f->protocol != 0))
		return RM_CTR_BYPASS_NOT_TCP;
	/* The proxy's own upstream sockets carry its mark; without this check a
	 * proxy running inside an attached cgroup would loop to itself. */
	if (f->proxy_mark && f->sock_mark == f->proxy_mark)
		return RM_CTR_BYPASS_PROXY_SOCKET;
	if (!f->pod || !(f->pod->flags & RM_POD_ENROLLED))
		return RM_CTR_BYPASS_NOT_ENROLLED;
	if (f->dst_is_loopback)
		return RM_CTR_BYPASS_LOOPBACK;
	__u16 n = f->pod->n_opt_out_ports;
	if (n > RM_MAX_OPT_OUT_PORTS)
		n = RM_MAX_OPT_OUT_PORTS;
	for (int i = 0; i < RM_MAX_OPT_OUT_PORTS; i++) {
		if (i >= n)
			break;
		if (f->pod->opt_out_ports[i] == f->dst_port)
			return RM_CTR_OPTED_OUT_PORT;
	}
	if (f->dst_cidr_opted_out)
		return RM_CTR_OPTED_OUT_CIDR;
	return RM_CTR_REDIRECTED;
}

enum rm_action {
	RM_ACT_PASS = 0,     /* connect goes where the app asked */
	RM_ACT_REDIRECT = 1, /* rewrite to the proxy listener in the pod netns */
};

/* Candidate connection: proxy listening -> redirect; proxy absent ->
 * the pod's fail mode. Fail-closed also "redirects": nothing listens on
 * the proxy port, so the app gets ECONNREFUSED at once (never EACCES,
 * which returning 0 from the hook would give, and never a hang). */
static __always_inline enum rm_action rm_ready_action(const struct rm_pod_info *pod, int proxy_listening,
						      enum rm_counter *why)
{
	if (proxy_listening) {
		*why = RM_CTR_REDIRECTED;
		return RM_ACT_REDIRECT;
	}
	if (pod->flags & RM_POD_FAIL_CLOSED) {
		*why = RM_CTR_FAIL_CLOSED;
		return RM_ACT_REDIRECT;
	}
	*why = RM_CTR_FAIL_OPEN;
	return RM_ACT_PASS;
}

static __always_inline int rm_addr_v4_mapped(const __u8 a[16])
{
	for (int i = 0; i < 10; i++)
		if (a[i])
			return 0;
	return a[10] == 0xff && a[11] == 0xff;
}

/* Socket LB: the index of the backend of short route `e` that a connect to
 * `dst` goes straight to (`rnd` a random number), or -1 to go through the
 * proxy: no backends, or the chosen one's address family does not match
 * the socket's (a v4-mapped VIP needs a v4-mapped backend). Does not look
 * at or spend e->direct_left. */
static __always_inline int rm_direct_pick(const struct rm_short_dst *e, const __u8 dst[16], __u32 rnd)
{
	__u32 n = e->n_backends;

	if (n == 0 || n > RM_MAX_DIRECT_BACKENDS)
		return -1;
	__u32 i = rnd % n;
	/* The verifier does not bound a modulo; the compiler would drop a
	 * bound it can prove, so hide i from it before masking (a no-op: i < n
	 * <= RM_MAX_DIRECT_BACKENDS, a power of two). */
	asm volatile("" : "+r"(i));
	i &= RM_MAX_DIRECT_BACKENDS - 1;
	if (rm_addr_v4_mapped(e->backends[i].addr) != rm_addr_v4_mapped(dst))
		return -1;
	return (int)i;
}

/* Sockhash key of the socket at the other end of an app<->proxy pair, from
 * one end's own (local, remote) view. */
static __always_inline void rm_peer_key(struct rm_sock_key *peer, const struct rm_sock_key *self)
{
	peer->netns_cookie = self->netns_cookie;
	for (int i = 0; i < 16; i++) {
		peer->local_addr[i] = self->remote_addr[i];
		peer->remote_addr[i] = self->local_addr[i];
	}
	peer->local_port = self->remote_port;
	peer->remote_port = self->local_port;
	peer->_pad = 0;
}

/* Linux errno values (asm-generic/errno-base.h, the same on every
 * architecture); BPF programs have no <errno.h>. */
#define RM_E2BIG 7
#define RM_ENOMEM 12
#define RM_EEXIST 17

/* The counter to bump for one bpf_sock_hash_update(..., BPF_NOEXIST) of a
 * socket that counts `added` when inserted, given the helper's result
 * `err`; RM_CTR_MAX: count nothing. Only a map at max_entries (-E2BIG) or
 * out of memory (-ENOMEM) is "full": -EEXIST is the normal result for a
 * key already present, and other errors (a socket state or protocol the
 * sockhash does not take) say nothing about capacity, so sockhash_full
 * stays a sizing signal for --max-sockhash. */
static __always_inline enum rm_counter rm_sockhash_insert_counter(long err, enum rm_counter added)
{
	if (err == 0)
		return added;
	if (err == -RM_E2BIG || err == -RM_ENOMEM)
		return RM_CTR_SOCKHASH_FULL;
	return RM_CTR_MAX;
}

#endif /* RINGMESH_BPF_LIB_DECIDE_H_ */
