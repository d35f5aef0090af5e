/* Address helpers: everything is stored 16 bytes wide, IPv4 v4-mapped. */
#ifndef RINGMESH_BPF_LIB_ADDR_H_
#define RINGMESH_BPF_LIB_ADDR_H_

#include <linux/types.h>
#include <bpf/bpf_endian.h>

/* <sys/socket.h> is a libc header and cannot be used with -target bpf. */
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

static __always_inline void rm_addr_from_v4(__u8 out[16], __u32 v4_be)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(&out[12], &v4_be, 4);
}

static __always_inline void rm_addr_from_words(__u8 out[16], __u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	__builtin_memcpy(&out[0], &w0, 4);
	__builtin_memcpy(&out[4], &w1, 4);
	__builtin_memcpy(&out[8], &w2, 4);
	__builtin_memcpy(&out[12], &w3, 4);
}

/* Context fields must be loaded one 4-byte word at a time straight from the
 * ctx pointer: passing &ctx->x_ip6 to a helper lets clang form a "modified
 * ctx pointer", which the verifier rejects, and without volatile clang
 * merges two words into one 8-byte load, which it rejects as well. */
#define RM_CTX_WORD(field, i) (*(volatile __u32 *)&(field)[i])
#define RM_ADDR_FROM_CTX_V6(out, field)                                              \
	rm_addr_from_words(out, RM_CTX_WORD(field, 0), RM_CTX_WORD(field, 1), \
			   RM_CTX_WORD(field, 2), RM_CTX_WORD(field, 3))

static __always_inline int rm_addr_is_loopback(const __u8 a[16])
{
	int mapped = 1, zero = 1;
	for (int i = 0; i < 10; i++)
		if (a[i])
			mapped = zero = 0;
	if (mapped && a[10] == 0xff && a[11] == 0xff)
		return a[12] == 127;
	if (zero && !a[10] && !a[11] && !a[12] && !a[13] && !a[14] && a[15] == 1)
		return 1; /* ::1 */
	return 0;
}

/* The netns part of a socket's rm_sock_key. Loopback addresses repeat in
 * every pod, so an app <-> proxy connection is keyed with its netns; a
 * connection between two pods' addresses crosses namespaces (the proxy's
 * upstream socket lives in the client pod, the server's socket in its own)
 * and pod addresses are unique on a node, so both of its ends use 0. */
static __always_inline __u64 rm_key_netns(__u64 netns_cookie, const __u8 local[16])
{
	return rm_addr_is_loopback(local) ? netns_cookie : 0;
}

/* sock_ops and sk_msg expose remote_port as the network-order port in the
 * upper 16 bits of a u32 on little-endian (the kernel shifts it left by 16),
 * and local_port in host order. */
static __always_inline __u16 rm_remote_port_be(__u32 remote_port)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (__u16)(remote_port >> 16);
#else
	return (__u16)remote_port;
#endif
}

static __always_inline __u16 rm_local_port_be(__u32 local_port)
{
	return bpf_htons((__u16)local_port);
}

#endif /* RINGMESH_BPF_LIB_ADDR_H_ */
