/* ringmesh BPF ABI: the only definition of every map key, value and
 * counter shared between the BPF programs (bpf/) and userspace (C++).
 *
 * Rules:
 *  - fixed-width types only, explicit padding, no bitfields: the layout is
 *    checked field by field against the BTF in the skeleton
 *    (tests/bpf/abi_btf_test.cc);
 *  - addresses are 16 bytes; IPv4 is stored v4-mapped (::ffff:a.b.c.d);
 *  - ports are network byte order everywhere in this file;
 *  - bump RM_ABI_VERSION on any incompatible change. The agent refuses to
 *    re-adopt pinned maps written by another ABI version.
 */
#ifndef RINGMESH_ABI_H_
#define RINGMESH_ABI_H_

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define RM_ABI_VERSION 6

/* Names of maps and programs as pinned under <pin-dir>/maps and
 * <pin-dir>/links; they equal the symbol names in ringmesh.bpf.c. */
#define RM_MAP_PODS "rm_pods"
#define RM_MAP_OPT_OUT_CIDRS "rm_opt_out_cidrs"
#define RM_MAP_ORIG_DST "rm_orig_dst"
#define RM_MAP_SOCKHASH "rm_sockhash"
#define RM_MAP_CONFIG "rm_config"
#define RM_MAP_FP_CREDIT "rm_fp_credit"
#define RM_MAP_SOCK_ADDR "rm_sock_addr"
#define RM_MAP_UPSTREAM "rm_upstream"
#define RM_MAP_SPLICE "rm_splice"
#define RM_MAP_SHORT_DST "rm_short_dst"
#define RM_MAP_SPLICE_BYTES "rm_splice_bytes"
#define RM_MAP_DIRECT_CONNS "rm_direct_conns"
#define RM_MAP_COUNTERS "rm_counters"

/* Default capacities; each is configurable in the agent (--max-*). */
#define RM_DEFAULT_MAX_PODS 4096
#define RM_DEFAULT_MAX_OPT_OUT_CIDRS 16384
#define RM_DEFAULT_MAX_ORIG_DST 65536
#define RM_DEFAULT_MAX_SOCKHASH 65536
#define RM_DEFAULT_MAX_SHORT_DST 4096
#define RM_DEFAULT_MAX_DIRECT_CONNS 16384
/* Bytes one socket may send over the sk_msg fast path before it commits to
 * TCP (see rm_config.fastpath_budget). */
#define RM_DEFAULT_FASTPATH_BUDGET (16ULL << 20)
/* Smallest budget the agent accepts (the proxy credits every budget/4). */
#define RM_MIN_FASTPATH_BUDGET (64ULL << 10)

#define RM_MAX_OPT_OUT_PORTS 16

/* rm_pod_info.flags */
#define RM_POD_ENROLLED (1u << 0)
/* Proxy absent: refuse at once (ECONNREFUSED) instead of connecting direct. */
#define RM_POD_FAIL_CLOSED (1u << 1)

/* rm_pods: key = netns cookie (__u64) of the pod's network namespace.
 * Full: the agent cannot enroll more pods and reports it; existing pods are
 * unaffected. */
struct rm_pod_info {
	__u32 pod_id;       /* agent-assigned, nonzero */
	__u32 flags;        /* RM_POD_* */
	__u16 proxy_port;   /* outbound listener on loopback in the pod netns */
	__u16 n_opt_out_ports;
	__u16 opt_out_ports[RM_MAX_OPT_OUT_PORTS]; /* destination ports, bypassed */
	__u32 _pad;
};

/* rm_opt_out_cidrs (LPM trie): prefixlen counts the 32 bits of pod_id plus
 * the address bits (96 + v4 prefix for IPv4). Full: the agent reports an
 * error for that pod and keeps its previous opt-outs. */
struct rm_cidr_key {
	__u32 prefixlen;
	__u32 pod_id;
	__u8 addr[16];
};

/* Original destination of a redirected connection. Stored in socket-local
 * storage at connect() (freed with the socket) and re-keyed into
 * rm_orig_dst at ESTABLISHED under the app socket's local address. */
struct rm_orig_dst {
	__u8 addr[16];
	__u16 port;
	__u16 family;       /* AF_INET or AF_INET6 */
	__u32 pod_id;
	__u64 netns_cookie;
};

/* rm_orig_dst (LRU hash): the proxy looks this up from an accepted socket
 * (netns cookie of the socket, peer address and port) and deletes it; the
 * sockops program deletes it when the app socket closes first. Full: LRU
 * evicts the oldest entry; the proxy then cannot find that connection's
 * destination and resets it (counted as orig_dst_miss in the proxy). */
struct rm_tuple_key {
	__u64 netns_cookie;
	__u8 addr[16];
	__u16 port;
	__u16 _pad[3];
};

/* rm_sockhash: both ends of an app<->proxy connection, keyed by the
 * socket's own view (local, remote). Full: the socket stays on the normal
 * TCP path (sockhash_full counter); sk_msg passes on every miss. */
struct rm_sock_key {
	__u64 netns_cookie;
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;
	__u16 remote_port;
	__u32 _pad;
};

/* rm_msg_state (socket-local storage of every socket in the sockhash).
 * The receiver reads redirected data before its TCP receive queue, so once
 * a socket has sent over the normal TCP path it may redirect again only
 * when its reader has taken every byte of it:
 * - RM_MSG_TCP_FOR_GOOD: never again. The proxy's sockets (its reader is
 *   an app, which may sit in recv(MSG_WAITALL) inside the TCP queue and
 *   would not see later redirected bytes), and any socket whose peer's
 *   unread count cannot be read (kernels before 6.12).
 * - RM_MSG_TCP_UNTIL_FORWARDED: an app's socket (its reader is the proxy,
 *   which reads both queues). Back on the fast path once the proxy has
 *   forwarded everything it sent, which only the proxy can tell: its
 *   rm_splice entry's `forwarded` equals redirected + passed. */
enum rm_msg_tcp {
	RM_MSG_FAST = 0,
	RM_MSG_TCP_FOR_GOOD = 1,
	RM_MSG_TCP_UNTIL_FORWARDED = 2,
};

struct rm_msg_state {
	__u32 tcp_committed; /* RM_MSG_* */
	__u32 _pad;
	__u64 redirected; /* bytes this socket sent over the fast path to its peer */
	__u64 passed;     /* bytes it sent over TCP while it could come back */
};

/* rm_fp_credit (hash): flow-control credit of the app -> proxy fast path.
 * Key: the proxy end's rm_sock_key (its own view, as in rm_sockhash);
 * written by the proxy every few hundred KiB it has read from that socket,
 * deleted by the proxy when the connection ends and by sockops when the
 * proxy's socket closes. sk_msg on the app's socket counts
 * rm_msg_state.redirected - consumed against rm_config.fastpath_budget, so
 * an app whose proxy keeps reading stays on the fast path however much it
 * sends, and one whose proxy stops reading is held to the budget. */
struct rm_fp_credit {
	__u64 consumed; /* bytes the proxy has read from its socket */
};

/* rm_sock_addr (hash): where the kernel keeps each socket of the sockhash,
 * so that sk_msg on its peer can read how many redirected bytes it has not
 * read yet (the psock's msg_tot_len, Linux 6.12+): the fast path's
 * flow control whoever the reader is, app or proxy. Key: the socket's own
 * rm_sock_key; written by sockops when it inserts the socket, deleted when
 * the socket closes. Read only with bpf_probe_read_kernel, so a stale entry
 * can misjudge one budget check but never fault. Where msg_tot_len does not
 * exist, rm_fp_credit (the proxy's own count) is used instead. */
struct rm_sock_addr {
	__u64 kaddr;     /* struct sock * */
	__u32 committed; /* 1 once this socket sends over TCP for good (rm_msg_state) */
	__u32 app_end;   /* 1: an app's socket (its peer is the proxy's) */
};

/* rm_splice (hash): the proxy leaves the data path of a connection between
 * two pods of this node. Key: a writer's own rm_sock_key (the app's socket
 * for app -> server, the server's for server -> app). Written by the proxy
 * once both legs are on the fast path, `forwarded` updated after each of
 * its writes through `via`; deleted by the proxy when the connection ends
 * and by sockops when the writer closes.
 *
 * sk_msg on the writer sends a message straight into `target` (the far
 * end) when everything it ever sent toward the proxy has been forwarded:
 * rm_msg_state.redirected + passed == forwarded, and `via` (the proxy's
 * socket toward the far end) never sent over TCP. Then every earlier byte
 * already sits in the far end's queue (the proxy's redirect through `via`
 * is synchronous), so the new one lands behind it.
 *
 * Flow control: the writer goes around the proxy only while the far end
 * has less than half of rm_config.fastpath_budget unread. Past that it
 * sends over TCP to the proxy (RM_MSG_TCP_UNTIL_FORWARDED), whose flow
 * control holds a writer that outruns its reader; the proxy forwards
 * through `via`, which may fill the far end's queue to the whole budget
 * before it too goes over TCP (for good). Once the reader has caught up
 * and the proxy has forwarded all, the writer goes around it again. */
struct rm_splice {
	struct rm_sock_key target; /* the far end's own key */
	struct rm_sock_key via;    /* the proxy's socket toward the far end */
	__u64 forwarded;           /* bytes of this writer the proxy wrote through via */
};

/* rm_unread (BPF_PROG_TYPE_SYSCALL program, pinned by the agent at
 * <pin dir>/progs/rm_unread; the proxy runs it with BPF_PROG_TEST_RUN):
 * how many redirected bytes the socket `key` (its own view, as in
 * rm_sockhash) has not read yet, the same count sk_msg checks against the
 * budget. The proxy asks before it writes into a spliced connection's far
 * end and holds the write while that count is high (rm_splice), which is
 * the only way to wait for a reader that no event reports. */
#define RM_PROG_UNREAD "rm_unread"
struct rm_unread_args {
	struct rm_sock_key key; /* in */
	__s64 unread;           /* out: bytes, or -1 when unknown */
};

/* rm_short_dst (LRU hash): original destinations (a service VIP:port)
 * whose connections the proxy has seen to be short (its route's moving
 * average of forwards per connection is below --splice-after-forwards).
 * sockops leaves both ends of a new app <-> proxy connection to such a
 * destination out of the sockhash: a connect-exchange-close connection
 * would pay for two psocks and gain nothing. Written and deleted by the
 * proxy when its view of the route changes; a stale entry only keeps a
 * destination off the fast path until the proxy's next closed connection
 * to it. Full: LRU evicts the oldest (that destination joins again). */
struct rm_dst_key {
	__u8 addr[16];
	__u16 port;
	__u16 _pad;
};

/* Socket LB (connect.h): a short route whose ready endpoints are all
 * enrolled pods of this node, at most RM_MAX_DIRECT_BACKENDS of them, with
 * a balancing policy that a uniform random choice honours, also carries
 * its endpoints. connect() of an enrolled pod to the VIP:port then goes
 * straight to one of them, chosen at random, while `direct_left` lasts
 * (decremented per connection, without atomics: concurrent connects on
 * several CPUs may take a few more); at 0 connections go through the proxy
 * again, which judges the route on them and re-arms the entry. The proxy
 * rewrites the entry whenever the route's endpoints change, and empties
 * rm_short_dst when it starts. The fast-path kill switch turns this off
 * too. */
#define RM_MAX_DIRECT_BACKENDS 8 /* a power of two: decide.h masks with it */

struct rm_direct_backend {
	__u8 addr[16]; /* same mapping as the VIP: v4-mapped iff the VIP is */
	__u16 port;    /* the endpoint's port, network order */
	__u16 _pad;
};

struct rm_short_dst {
	__u32 short_lived; /* 1 */
	__u32 direct_left; /* connections that may still go straight to a backend */
	__u32 n_backends;  /* 0: never direct (connections go through the proxy) */
	__u32 _pad;
	struct rm_direct_backend backends[RM_MAX_DIRECT_BACKENDS];
};

/* rm_direct_conns (LRU hash): connections connect() sent straight to an
 * endpoint (socket LB), for the proxy's metrics, per (endpoint, source
 * pod) and per endpoint over all pods (pod_id 0). Created by the BPF
 * programs at the first count. Full: LRU evicts the oldest counter, which
 * then starts again from 0 (the proxy takes differences and counts a
 * counter that went back from 0). */
struct rm_direct_key {
	struct rm_dst_key endpoint;
	__u32 pod_id; /* the source pod; 0: every source pod */
	__u32 _pad;
};

struct rm_direct_conns {
	__u64 connects;
	__u64 failed;      /* of them, connects that never established (refused, timed out) */
	__u64 established; /* of them, connects that did */
	__u64 closed;      /* of those, connections that have closed */
};

/* rm_sk_direct (socket-local storage, written by connect() when it sends a
 * socket straight to an endpoint): which route, endpoint and source pod.
 * sockops counts such a socket in rm_direct_conns when it is established
 * and when it closes (for istio_tcp_connections_*); if it closes before it
 * is established (refused, timed out) it counts the failure and ends
 * socket LB for the route at once (rm_short_dst.direct_left = 0), so the
 * next connections go through the proxy, which retries on another
 * endpoint and renews the allowance without the failing one. */
struct rm_sk_direct {
	struct rm_dst_key vip;
	struct rm_dst_key endpoint;
	__u32 pod_id;
	__u32 established; /* 1 once connected: its close counts as closed */
};

/* rm_splice_bytes (LRU hash): bytes an rm_splice writer sent around the
 * proxy. Key: the proxy socket it bypasses (rm_splice.via). Created by the
 * proxy when the splice starts, added to by sk_msg, read and deleted by
 * the proxy when the splice ends. Not in rm_sock_addr: that entry goes
 * when its socket closes, and a server that closes with unread bytes
 * resets the connection, closing the proxy's socket before the proxy has
 * read the count. LRU: a proxy killed mid-splice leaves entries that
 * capacity pressure evicts. */
struct rm_splice_bytes {
	__u64 direct;
};

/* rm_upstream (socket-local storage, written by the proxy through the
 * socket's fd before it connects): this upstream socket goes to an enrolled
 * pod on this node, so sockops puts it into the sockhash when it connects
 * and the server's end joins it there (the proxy -> server leg of the fast
 * path). Upstream sockets without it (other nodes, unenrolled pods) never
 * join: they would only pay for a fast path they cannot use. */
struct rm_upstream {
	__u32 to_local_pod; /* 1 */
	__u32 _pad;
};

/* rm_config.flow_control */
#define RM_FLOW_CONTROL_AUTO 0         /* the peer's unread bytes where the kernel counts them, else proxy credit */
#define RM_FLOW_CONTROL_PROXY_CREDIT 1 /* rm_fp_credit only (what kernels before 6.12 allow) */

/* rm_config (array, one entry): runtime switches. */
struct rm_config {
	__u32 abi_version;      /* RM_ABI_VERSION of the agent that wrote it */
	__u32 fastpath_enabled; /* sk_msg redirect kill switch: 0 = off */
	/* Bytes one socket may have queued at its peer over the fast path
	 * (what its peer has not read yet, see rm_sock_addr; on kernels before
	 * 6.12 everything it redirected, less what the proxy reported as read
	 * in rm_fp_credit, so there only app -> proxy is flow-controlled and
	 * proxy -> app has a total budget);
	 * the message that would pass it goes over TCP, and so does everything
	 * after it until the socket's reader has taken it all (for the proxy's
	 * sockets: for good; see rm_msg_state). A splice writer stops at half
	 * of it, the proxy at three quarters (rm_splice). A redirect
	 * lands in the receiver's queue without any receive-window check, so
	 * a receiver that reads slower than its peer writes (a proxy whose
	 * upstream is slow, an app that reads slowly) would otherwise queue
	 * without bound until the kernel's TCP memory limit turns every write
	 * into ENOMEM. This bounds that queue per socket, like a receive
	 * buffer does on the TCP path. */
	__u64 fastpath_budget;
	/* RM_FLOW_CONTROL_*: how the budget learns what the peer has read. */
	__u32 flow_control;
	__u32 _pad;
};

/* Per-CPU counters of every decision. X(enum suffix, metric name). */
#define RM_COUNTERS(X)                                            \
	X(CONNECT_SEEN, "connect_seen")                               \
	X(REDIRECTED, "redirected")                                   \
	X(BYPASS_NOT_ENROLLED, "bypass_not_enrolled")                 \
	X(BYPASS_PROXY_SOCKET, "bypass_proxy_socket")                 \
	X(BYPASS_NOT_TCP, "bypass_not_tcp")                           \
	X(BYPASS_LOOPBACK, "bypass_loopback")                         \
	X(OPTED_OUT_PORT, "opted_out_port")                           \
	X(OPTED_OUT_CIDR, "opted_out_cidr")                           \
	X(FAIL_OPEN, "fail_open")                                     \
	X(FAIL_CLOSED, "fail_closed")                                 \
	X(ORIG_DST_STORAGE_FULL, "orig_dst_storage_full")             \
	X(ESTABLISHED_REKEYED, "established_rekeyed")                 \
	X(ORIG_DST_MAP_FULL, "orig_dst_map_full")                     \
	X(ORIG_DST_CLOSED, "orig_dst_closed_before_accept")           \
	X(SOCKHASH_ADDED, "sockhash_added")                           \
	X(SOCKHASH_FULL, "sockhash_full")                             \
	X(SOCKHASH_SKIPPED_FASTPATH_OFF, "sockhash_skipped_fastpath_off") \
	X(MSG_REDIRECTED, "msg_redirected")                           \
	X(MSG_PASS_MISS, "msg_pass_miss")                             \
	X(MSG_PASS_FASTPATH_OFF, "msg_pass_fastpath_off")                 \
	X(MSG_PASS_TCP_COMMITTED, "msg_pass_tcp_committed")               \
	X(MSG_PASS_BUDGET, "msg_pass_budget_spent")                       \
	X(FP_CREDIT_CLOSED, "fp_credit_removed_at_close")                 \
	X(MSG_STATE_FULL, "msg_state_full")                               \
	X(PROXY_SOCKHASH_ADDED, "proxy_sockhash_added")                   \
	X(SOCK_ADDR_FULL, "sock_addr_full")                               \
	X(SOCK_ADDR_CLOSED, "sock_addr_removed_at_close")                 \
	X(MSG_PEER_QUEUE_READ, "msg_peer_queue_read")                     \
	X(MSG_PEER_QUEUE_UNKNOWN, "msg_peer_queue_unknown")               \
	X(UPSTREAM_SOCKHASH_ADDED, "upstream_sockhash_added")             \
	X(SERVER_SOCKHASH_ADDED, "server_sockhash_added")                 \
	X(MSG_SPLICED, "msg_spliced")                                     \
	X(SPLICE_CLOSED, "splice_removed_at_close")                       \
	X(SOCKHASH_SKIPPED_SHORT, "sockhash_skipped_short_route")       \
	X(CONNECT_DIRECT, "connect_direct")                               \
	X(DIRECT_CONNS_FULL, "direct_conns_full")                         \
	X(CONNECT_DIRECT_FAILED, "connect_direct_failed")             \
	X(SPLICE_BEHIND, "msg_splice_proxy_behind")                       \
	X(SPLICE_TARGET_FULL, "msg_splice_target_full")                   \
	X(SPLICE_VIA_COMMITTED, "msg_splice_via_on_tcp")               \
	X(MSG_PASS_UNTIL_FORWARDED, "msg_pass_tcp_until_forwarded")       \
	X(MSG_BACK_FROM_TCP, "msg_back_from_tcp")

#define RM_COUNTER_ENUM(name, str) RM_CTR_##name,
enum rm_counter {
	RM_COUNTERS(RM_COUNTER_ENUM)
	RM_CTR_MAX
};
#undef RM_COUNTER_ENUM

#endif /* RINGMESH_ABI_H_ */
