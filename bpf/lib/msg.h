/* sk_msg: move bytes between the two ends of an app<->proxy connection
 * without the TCP stack. Every miss passes: SK_DROP would surface in the
 * app as EACCES. A socket that passed stays on TCP until its reader has
 * taken every byte it sent (for the proxy's sockets: for good; see
 * rm_msg_state), so a reader never finds redirected bytes ahead of earlier
 * TCP data. What a socket has queued at its
 * peer and not yet read is bounded by rm_config.fastpath_budget (why and
 * how: see abi.h, rm_sock_addr and rm_fp_credit). */
#ifndef RINGMESH_BPF_LIB_MSG_H_
#define RINGMESH_BPF_LIB_MSG_H_

#include <linux/bpf.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "lib/addr.h"
#include "lib/decide.h"
#include "lib/maps.h"

/* Minimal kernel types, relocated by CO-RE against the running kernel's
 * BTF (fields are matched by name, so the build needs no vmlinux.h). */
struct sock___rm {
	void *sk_user_data;
} __attribute__((preserve_access_index));

struct sk_psock___rm {
	__u32 msg_tot_len;
} __attribute__((preserve_access_index));

/* sk_user_data carries flag bits (SK_USER_DATA_NOCOPY, _BPF, _PSOCK). */
#define RM_SK_USER_DATA_PTRMASK (~7ULL)

/* Bytes in the peer's redirect queue (its psock's ingress list) that its
 * reader has not taken yet: the kernel's own count. -1 when unknown
 * (kernel before 6.12, peer not recorded, read failed). */
static __always_inline __s64 rm_peer_unread(const struct rm_sock_key *peer)
{
	struct rm_sock_addr *a;
	__u64 ud = 0;
	__u32 len = 0;

	if (!bpf_core_field_exists(struct sk_psock___rm, msg_tot_len))
		return -1;
	a = bpf_map_lookup_elem(&rm_sock_addr, peer);
	if (!a || !a->kaddr)
		return -1;
	if (bpf_probe_read_kernel(&ud, sizeof(ud),
				  (const void *)(a->kaddr + bpf_core_field_offset(struct sock___rm, sk_user_data))))
		return -1;
	ud &= RM_SK_USER_DATA_PTRMASK;
	if (!ud || bpf_probe_read_kernel(&len, sizeof(len),
					 (const void *)(ud + bpf_core_field_offset(struct sk_psock___rm, msg_tot_len))))
		return -1;
	return len;
}

static __always_inline void rm_msg_key(struct sk_msg_md *msg, struct rm_sock_key *self)
{
	if (msg->family == AF_INET) {
		rm_addr_from_v4(self->local_addr, msg->local_ip4);
		rm_addr_from_v4(self->remote_addr, msg->remote_ip4);
	} else {
		RM_ADDR_FROM_CTX_V6(self->local_addr, msg->local_ip6);
		RM_ADDR_FROM_CTX_V6(self->remote_addr, msg->remote_ip6);
	}
	self->netns_cookie = rm_key_netns(bpf_get_netns_cookie(msg), self->local_addr);
	self->local_port = rm_local_port_be(msg->local_port);
	self->remote_port = rm_remote_port_be(msg->remote_port);
}

/* From now on this socket sends over TCP; rm_splice writers that forward
 * through it must stop going around the proxy (see abi.h). */
static __always_inline int rm_commit_tcp(struct rm_msg_state *st, const struct rm_sock_key *self,
					 enum rm_counter why)
{
	struct rm_sock_addr *me;

	if (st)
		st->tcp_committed = RM_MSG_TCP_FOR_GOOD;
	me = bpf_map_lookup_elem(&rm_sock_addr, self);
	if (me)
		me->committed = 1;
	rm_count(why);
	return SK_PASS;
}

/* Over TCP to the proxy, which reads both of its queues: this app socket
 * comes back once the proxy has forwarded all it sent (rm_msg_state). */
static __always_inline int rm_pass_tcp(struct sk_msg_md *msg, struct rm_msg_state *st, enum rm_counter why)
{
	st->tcp_committed = RM_MSG_TCP_UNTIL_FORWARDED;
	st->passed += msg->size;
	rm_count(why);
	return SK_PASS;
}

/* The message went on the fast path: a socket that was on TCP until the
 * proxy caught up is back (counted once per return). */
static __always_inline void rm_back_from_tcp(struct rm_msg_state *st)
{
	if (st->tcp_committed != RM_MSG_TCP_UNTIL_FORWARDED)
		return;
	st->tcp_committed = RM_MSG_FAST;
	rm_count(RM_CTR_MSG_BACK_FROM_TCP);
}

/* Bytes the far end `k` has not read yet, against `limit`: 1 if `size`
 * more fit. Unknown counts as no room. */
static __always_inline int rm_room_at(const struct rm_sock_key *k, __u64 size, __u64 limit)
{
	__s64 unread = rm_peer_unread(k);

	return unread >= 0 && (__u64)unread + size <= limit;
}

enum rm_splice_result {
	RM_SPLICE_NONE = 0,     /* no splice entry, or the proxy has not forwarded all yet */
	RM_SPLICE_CAUGHT_UP,    /* the proxy has forwarded everything; no splice (via on TCP, ...) */
	RM_SPLICE_TARGET_FULL,  /* the proxy has forwarded everything; the far end is full */
	RM_SPLICE_SENT,         /* the message went straight to the far end */
};

/* Straight to the far end when the proxy has forwarded everything this
 * socket sent it, by either path (rm_splice in abi.h). */
static __always_inline enum rm_splice_result rm_try_splice(struct sk_msg_md *msg, const struct rm_sock_key *self,
							   const struct rm_msg_state *st,
							   const struct rm_config *cfg)
{
	struct rm_splice *sp;
	struct rm_splice_bytes *n;
	struct rm_sock_addr *via;
	struct rm_sock_key target;

	sp = bpf_map_lookup_elem(&rm_splice, self);
	if (!sp)
		return RM_SPLICE_NONE;
	if (sp->forwarded != st->redirected + st->passed) {
		rm_count(RM_CTR_SPLICE_BEHIND);
		return RM_SPLICE_NONE;
	}
	via = bpf_map_lookup_elem(&rm_sock_addr, &sp->via);
	if (!via || via->committed) {
		rm_count(RM_CTR_SPLICE_VIA_COMMITTED);
		return RM_SPLICE_CAUGHT_UP;
	}
	__builtin_memcpy(&target, &sp->target, sizeof(target));
	/* Half the budget: the rest is the proxy's, whose writes through
	 * `via` land in the same queue (abi.h, rm_splice). */
	if (!rm_room_at(&target, msg->size, cfg->fastpath_budget / 2)) {
		rm_count(RM_CTR_SPLICE_TARGET_FULL);
		return RM_SPLICE_TARGET_FULL;
	}
	if (bpf_msg_redirect_hash(msg, &rm_sockhash, &target, BPF_F_INGRESS) != SK_PASS)
		return RM_SPLICE_CAUGHT_UP;
	/* Counted under the proxy's socket, in an entry only the proxy
	 * deletes (the writer's own may go as soon as it closes). */
	n = bpf_map_lookup_elem(&rm_splice_bytes, &sp->via);
	if (n)
		__sync_fetch_and_add(&n->direct, (__u64)msg->size);
	rm_count(RM_CTR_MSG_SPLICED);
	return RM_SPLICE_SENT;
}

static __always_inline int rm_handle_msg(struct sk_msg_md *msg)
{
	struct rm_sock_key self = {}, peer = {};
	struct rm_msg_state *st;
	struct rm_config *cfg;
	struct rm_fp_credit *credit;
	struct rm_sock_addr *me;
	struct bpf_sock *sk = msg->sk;
	enum rm_splice_result spliced;
	__u64 queued;
	__s64 unread;
	int may_return;

	if (!sk)
		return SK_PASS;
	st = bpf_sk_storage_get(&rm_msg_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		/* No state, no ordering guarantee: stay on TCP. This is safe
		 * only because nothing was redirected for this socket before
		 * (the state is created on its first message). */
		rm_msg_key(msg, &self);
		return rm_commit_tcp(st, &self, RM_CTR_MSG_STATE_FULL);
	}
	if (st->tcp_committed == RM_MSG_TCP_FOR_GOOD) {
		rm_count(RM_CTR_MSG_PASS_TCP_COMMITTED);
		return SK_PASS;
	}
	rm_msg_key(msg, &self);
	cfg = rm_config_get();
	if (!cfg || !cfg->fastpath_enabled)
		return rm_commit_tcp(st, &self, RM_CTR_MSG_PASS_FASTPATH_OFF);
	spliced = rm_try_splice(msg, &self, st, cfg);
	if (spliced == RM_SPLICE_SENT) {
		rm_back_from_tcp(st);
		return SK_PASS;
	}
	/* An app's socket with a reader whose queue can be counted may come
	 * back from TCP (rm_msg_state in abi.h); everything else commits. */
	me = bpf_map_lookup_elem(&rm_sock_addr, &self);
	may_return = me && me->app_end && cfg->flow_control == RM_FLOW_CONTROL_AUTO &&
		     bpf_core_field_exists(struct sk_psock___rm, msg_tot_len);
	/* On TCP until the proxy has forwarded all this socket sent. */
	if (st->tcp_committed == RM_MSG_TCP_UNTIL_FORWARDED && spliced == RM_SPLICE_NONE)
		return rm_pass_tcp(msg, st, RM_CTR_MSG_PASS_UNTIL_FORWARDED);
	/* A writer whose splice waits for a full far end goes to the proxy
	 * over TCP, which holds it back, rather than into the proxy's queue,
	 * which would not (abi.h, rm_splice). */
	if (spliced == RM_SPLICE_TARGET_FULL && may_return)
		return rm_pass_tcp(msg, st, RM_CTR_MSG_PASS_UNTIL_FORWARDED);
	rm_peer_key(&peer, &self);
	unread = cfg->flow_control == RM_FLOW_CONTROL_AUTO ? rm_peer_unread(&peer) : -1;
	if (unread >= 0) {
		queued = unread;
		rm_count(RM_CTR_MSG_PEER_QUEUE_READ);
	} else {
		/* Older kernel: only the proxy's sockets have credit, what the
		 * proxy has read so far; the proxy -> app direction has none. */
		rm_count(RM_CTR_MSG_PEER_QUEUE_UNKNOWN);
		credit = bpf_map_lookup_elem(&rm_fp_credit, &peer);
		queued = st->redirected;
		if (credit)
			queued = credit->consumed >= queued ? 0 : queued - credit->consumed;
	}
	if (queued + msg->size > cfg->fastpath_budget) {
		if (may_return)
			return rm_pass_tcp(msg, st, RM_CTR_MSG_PASS_BUDGET);
		return rm_commit_tcp(st, &self, RM_CTR_MSG_PASS_BUDGET);
	}
	if (bpf_msg_redirect_hash(msg, &rm_sockhash, &peer, BPF_F_INGRESS) == SK_PASS) {
		st->redirected += msg->size;
		rm_back_from_tcp(st);
		rm_count(RM_CTR_MSG_REDIRECTED);
		return SK_PASS;
	}
	return rm_commit_tcp(st, &self, RM_CTR_MSG_PASS_MISS);
}

#endif /* RINGMESH_BPF_LIB_MSG_H_ */
