/* sk_msg: move bytes between the two ends of an app<->proxy connection
 * without the TCP stack. Every miss passes: SK_DROP would surface in the
 * app as EACCES. A socket that passed once stays on TCP (rm_msg_state),
 * which keeps each direction a redirected prefix followed by TCP data, an
 * order the receiver's read path preserves. What a socket has queued at its
 * peer is bounded by rm_config.fastpath_budget, less the proxy's credit
 * (why and how: see abi.h). */
#ifndef RINGMESH_BPF_LIB_MSG_H_
#define RINGMESH_BPF_LIB_MSG_H_

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/addr.h"
#include "lib/decide.h"
#include "lib/maps.h"

static __always_inline int rm_handle_msg(struct sk_msg_md *msg)
{
	struct rm_sock_key self = {}, peer = {};
	struct rm_msg_state *st;
	struct rm_config *cfg;
	struct rm_fp_credit *credit;
	struct bpf_sock *sk = msg->sk;
	__u64 queued;

	if (!sk)
		return SK_PASS;
	st = bpf_sk_storage_get(&rm_msg_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		/* No state, no ordering guarantee: stay on TCP. This is safe
		 * only because nothing was redirected for this socket before
		 * (the state is created on its first message). */
		rm_count(RM_CTR_MSG_STATE_FULL);
		return SK_PASS;
	}
	if (st->tcp_committed) {
		rm_count(RM_CTR_MSG_PASS_TCP_COMMITTED);
		return SK_PASS;
	}
	cfg = rm_config_get();
	if (!cfg || !cfg->fastpath_enabled) {
		st->tcp_committed = 1;
		rm_count(RM_CTR_MSG_PASS_FASTPATH_OFF);
		return SK_PASS;
	}
	self.netns_cookie = bpf_get_netns_cookie(msg);
	if (msg->family == AF_INET) {
		rm_addr_from_v4(self.local_addr, msg->local_ip4);
		rm_addr_from_v4(self.remote_addr, msg->remote_ip4);
	} else {
		RM_ADDR_FROM_CTX_V6(self.local_addr, msg->local_ip6);
		RM_ADDR_FROM_CTX_V6(self.remote_addr, msg->remote_ip6);
	}
	self.local_port = rm_local_port_be(msg->local_port);
	self.remote_port = rm_remote_port_be(msg->remote_port);
	rm_peer_key(&peer, &self);
	/* Only the proxy's sockets have credit: for the app -> proxy direction
	 * this is what the proxy has read so far, otherwise nothing. */
	credit = bpf_map_lookup_elem(&rm_fp_credit, &peer);
	queued = st->redirected;
	if (credit)
		queued = credit->consumed >= queued ? 0 : queued - credit->consumed;
	if (queued + msg->size > cfg->fastpath_budget) {
		st->tcp_committed = 1;
		rm_count(RM_CTR_MSG_PASS_BUDGET);
		return SK_PASS;
	}
	if (bpf_msg_redirect_hash(msg, &rm_sockhash, &peer, BPF_F_INGRESS) == SK_PASS) {
		st->redirected += msg->size;
		rm_count(RM_CTR_MSG_REDIRECTED);
		return SK_PASS;
	}
	st->tcp_committed = 1;
	rm_count(RM_CTR_MSG_PASS_MISS);
	return SK_PASS;
}

#endif /* RINGMESH_BPF_LIB_MSG_H_ */
