/* sk_msg: move bytes between the two ends of an app<->proxy connection
 * without the TCP stack. Every miss passes: SK_DROP would surface in the
 * app as EACCES. */
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

	if (!rm_fastpath_enabled()) {
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
	if (bpf_msg_redirect_hash(msg, &rm_sockhash, &peer, BPF_F_INGRESS) == SK_PASS) {
		rm_count(RM_CTR_MSG_REDIRECTED);
		return SK_PASS;
	}
	rm_count(RM_CTR_MSG_PASS_MISS);
	return SK_PASS;
}

#endif /* RINGMESH_BPF_LIB_MSG_H_ */
