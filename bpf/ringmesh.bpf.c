// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* ringmesh BPF entry points. Each SEC() is a thin wrapper; decisions live
 * in bpf/lib/ headers. Map keys and values: bpf/include/ringmesh/abi.h. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/connect.h"
#include "lib/maps.h"
#include "lib/msg.h"
#include "lib/sockops.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/connect4")
int rm_connect4(struct bpf_sock_addr *ctx)
{
	struct rm_dst dst = { .port = (__u16)ctx->user_port, .family = AF_INET };

	rm_addr_from_v4(dst.addr, ctx->user_ip4);
	return rm_handle_connect(ctx, &dst);
}

SEC("cgroup/connect6")
int rm_connect6(struct bpf_sock_addr *ctx)
{
	struct rm_dst dst = { .port = (__u16)ctx->user_port, .family = AF_INET6 };

	RM_ADDR_FROM_CTX_V6(dst.addr, ctx->user_ip6);
	return rm_handle_connect(ctx, &dst);
}

SEC("sockops")
int rm_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		rm_on_tcp_connect(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		rm_on_active_established(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		rm_on_passive_established(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			rm_on_close(skops);
		break;
	}
	return 1;
}

SEC("sk_msg")
int rm_sk_msg(struct sk_msg_md *msg)
{
	return rm_handle_msg(msg);
}

/* Run by the proxy (BPF_PROG_TEST_RUN), never attached: see rm_unread_args. */
SEC("syscall")
int rm_unread(struct rm_unread_args *args)
{
	struct rm_sock_key k;

	__builtin_memcpy(&k, &args->key, sizeof(k));
	args->unread = rm_peer_unread(&k);
	return 0;
}
