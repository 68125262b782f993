// SPDX-License-Identifier: GPL-2.0
//
// xvs steering program: runs on every director interface and decides, per
// frame, whether xvs or the kernel handles it. Rules, first match wins:
//
//   1. TCP/UDP to a configured virtual service (protocol, VIP, port), map
//      `services`: redirected to the AF_XDP socket of the frame's rx queue
//      (map `xsks`);
//   2. TCP/UDP to one of the director host's own addresses (map
//      `local_addrs`: every address of its network namespace, lo's too):
//      the kernel's. Answers to the host's own traffic — a health check, an
//      ssh session to a real server — stay there even when they come from a
//      NAT real server's service port;
//   3. TCP/UDP from a NAT real-server endpoint (return traffic), map
//      `nat_reals`: redirected;
//   4. ICMP/ICMPv6 errors: quoting a packet from a service (an answer xvs
//      sent) → redirected; else addressed to one of the host's own
//      addresses → the kernel's; else quoting a packet to a NAT real-server
//      endpoint → redirected.
// Everything else — ARP, neighbour discovery, the host's own traffic, later
// IP fragments, other protocols — goes to the kernel (XDP_PASS), so the
// director stays an ordinary, manageable Linux host. The control plane keeps
// the maps equal to its configuration and to the host's addresses.
//
// A frame the rules give xvs whose rx queue has no AF_XDP socket is dropped
// and counted (`no_socket`), not passed: the kernel could only reset the
// connection (or forward a NAT answer untranslated). That is the case of a
// crashed xvs, whose program stays attached while its sockets are gone: its
// connections' packets are lost until the other director takes over, and
// TCP retransmits them there, instead of being reset by this host.
//
// Only what is addressed to this director: a frame the rules above would
// redirect goes to xvs only if its destination MAC is in `own_macs` (the
// interface's own address and the VRRP virtual MACs the director holds on
// it); broadcast, multicast and other hosts' frames (a switch flooding
// frames meant for the other director) are passed to the kernel, which
// drops what is not its own, and counted in `not_for_us`. The test is made
// last, so frames that are not xvs's anyway cost nothing more.
//
// `xvs_steer` is what is attached. `xvs_steer_probe` runs the same classifier
// and returns XDP_TX for "redirect", XDP_PASS otherwise: the tests run it
// with BPF_PROG_TEST_RUN over the pipeline's golden frames, since a redirect
// into an empty `xsks` map falls back to XDP_PASS and cannot be told apart.
// xvs loads it only for those tests.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define INLINE static __attribute__((always_inline)) inline

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;

// The frame is redirected as it came: the worker takes its headroom from
// the bytes every mode leaves in front of a received packet in its UMEM
// chunk (`xsk::worker::HEADROOM`), so that in copy mode the kernel copies
// the packet alone.

// Must match `xsk::prog::Endpoint` byte for byte.
struct endpoint {
	__u8 proto;
	__u8 family; // 4 or 6
	__u16 port;  // network byte order
	__u8 addr[16]; // IPv4 in the first 4 bytes, rest zero
};

// Map sizes are the director's limits (src/limits.rs), which build.rs passes
// as -D defines: the service model never takes more than the maps hold.
#if !defined(XVS_MAX_QUEUES) || !defined(XVS_MAX_SERVICES) || \
	!defined(XVS_MAX_NAT_ENDPOINTS) || !defined(XVS_MAX_LOCAL_ADDRS) || \
	!defined(XVS_MAX_OWN_MACS)
#error "build.rs defines the map sizes from src/limits.rs"
#endif

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XVS_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XVS_MAX_SERVICES);
	__type(key, struct endpoint);
	__type(value, __u8);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XVS_MAX_NAT_ENDPOINTS);
	__type(key, struct endpoint);
	__type(value, __u8);
} nat_reals SEC(".maps");

// Must match `xsk::prog::LocalAddr` byte for byte.
struct local_addr {
	__u8 family; // 4 or 6
	__u8 pad[3];
	__u8 addr[16]; // IPv4 in the first 4 bytes, rest zero
};

// The director host's own addresses: xvs refuses to start on a host with
// more than fit, and says so and keeps the map as it was when addresses
// added later would not fit.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XVS_MAX_LOCAL_ADDRS);
	__type(key, struct local_addr);
	__type(value, __u8);
} local_addrs SEC(".maps");

// Must match `xsk::prog::OwnMac` byte for byte.
struct own_mac {
	__u8 addr[6];
	__u8 pad[2];
};

// The unicast MACs this interface's frames must carry to be xvs's.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XVS_MAX_OWN_MACS);
	__type(key, struct own_mac);
	__type(value, __u8);
} own_macs SEC(".maps");

// Per CPU, summed by the director: slot 0 (`not_for_us`) counts frames the
// rules would have redirected but whose destination MAC is not in
// `own_macs`; slot 1 (`no_socket`), frames for xvs dropped because their rx
// queue had no socket. Must match `xsk::prog::SteerCounter`.
// For the IPv4 keys of services (slot 0), nat_reals (slot 1) and
// local_addrs (slot 2): the first ENDPOINTS_FIRST of them, each as the
// first 8 bytes of its key (an endpoint's protocol, family, port and
// address; a local address's family, padding and address) read as a
// native-endian word, a slot not in use all ones (no key is: a family
// byte is 4 or 6), and whether they are all of the set's IPv4 keys.
// Compared inline, as own_macs_first below: a director with a few IPv4
// services, NAT real servers and addresses makes no hash lookup for them.
#define ENDPOINTS_FIRST 8
#define FIRST_SERVICES 0
#define FIRST_NAT_REALS 1
#define FIRST_LOCAL_ADDRS 2

struct endpoints_first {
	__u64 v4[ENDPOINTS_FIRST];
	__u32 all_v4;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, struct endpoints_first);
} endpoints_first SEC(".maps");

// The first OWN_MACS_FIRST of own_macs (the MACs as native-endian 64-bit
// words, the top two bytes zero; a slot not in use all ones, which no MAC
// is), and whether they are all of it. An array's lookup is inlined by the
// verifier, a hash map's is a call: a director holding up to
// OWN_MACS_FIRST MACs on an interface (its own and a few VRRP virtual
// MACs) answers from this alone.
#define OWN_MACS_FIRST 4

struct own_macs_first {
	__u64 mac[OWN_MACS_FIRST];
	__u32 all;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct own_macs_first);
} own_macs_first SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

#define COUNT_NOT_FOR_US 0
#define COUNT_NO_SOCKET 1

INLINE void count(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &slot);
	if (n)
		*n += 1;
}

#define VLAN_MAX 2
#define IPV6_EXT_MAX 4
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8

struct cursor {
	void *pos;
	void *end;
};

// Addresses are copied out of the packet into `struct addrs` right after
// the header's bounds check, and lookups read only that stack copy: the
// verifier cannot follow packet pointers once the compiler merges the IPv4
// and IPv6 paths.
struct addrs {
	__u8 src[16];
	__u8 dst[16];
};

// 1 or 0: the IPv4 key at `key` is or is not in the set of
// endpoints_first's slot `first`; -1: the slot does not hold the whole set
// and the key is not among the slots, so only the hash map can tell.
INLINE int first_has(__u32 first, const void *key)
{
	struct endpoints_first *f = bpf_map_lookup_elem(&endpoints_first, &first);
	__u64 w;

	if (!f)
		return -1;
	__builtin_memcpy(&w, key, 8);
#pragma unroll
	for (int i = 0; i < ENDPOINTS_FIRST; i++)
		if (f->v4[i] == w)
			return 1;
	return f->all_v4 ? 0 : -1;
}

INLINE int is_member(void *map, __u32 first, __u8 proto, __u8 family, __u16 port,
		     const __u8 *addr)
{
	struct endpoint k = {};
	k.proto = proto;
	k.family = family;
	k.port = port;
	__builtin_memcpy(k.addr, addr, 16);
	if (family == 4) {
		int r = first_has(first, &k);
		if (r >= 0)
			return r;
	}
	return bpf_map_lookup_elem(map, &k) != 0;
}

INLINE int is_local(__u8 family, const __u8 *addr)
{
	struct local_addr k = {};
	k.family = family;
	__builtin_memcpy(k.addr, addr, 16);
	if (family == 4) {
		int r = first_has(FIRST_LOCAL_ADDRS, &k);
		if (r >= 0)
			return r;
	}
	return bpf_map_lookup_elem(&local_addrs, &k) != 0;
}

// An ICMP error addressed to `to`, quoting the packet at `q`: is it xvs's?
INLINE int icmp_error_is_ours(void *q, void *end, int family, const __u8 *to)
{
	struct addrs a = {};
	__u8 proto;
	__u16 *ports;

	if (family == 4) {
		struct iphdr *ip = q;
		if ((void *)(ip + 1) > end)
			return 0;
		// Quoted headers with options are rare; the kernel may keep those.
		if (ip->ihl != 5)
			return 0;
		proto = ip->protocol;
		__builtin_memcpy(a.src, &ip->saddr, 4);
		__builtin_memcpy(a.dst, &ip->daddr, 4);
		ports = (void *)(ip + 1);
	} else {
		struct ipv6hdr *ip6 = q;
		if ((void *)(ip6 + 1) > end)
			return 0;
		proto = ip6->nexthdr;
		__builtin_memcpy(a.src, &ip6->saddr, 16);
		__builtin_memcpy(a.dst, &ip6->daddr, 16);
		ports = (void *)(ip6 + 1);
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if ((void *)(ports + 2) > end)
		return 0;
	// An answer the director sent for a service: quoted source is the VIP.
	if (is_member(&services, FIRST_SERVICES, proto, family, ports[0], a.src))
		return 1;
	// A packet xvs sent on to a NAT real server: quoted destination is it,
	// unless the error is addressed to the host (its own traffic, such as a
	// health check's packet to a real server).
	if (!is_member(&nat_reals, FIRST_NAT_REALS, proto, family, ports[1], a.dst))
		return 0;
	return !is_local(family, to);
}

// 1: xvs handles the frame; 0: the kernel does.
INLINE int steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3;
	__u16 proto_be;
	__u8 proto;
	int family;
	struct addrs a = {};
	void *l4;

	if ((void *)(eth + 1) > end)
		return 0;
	proto_be = eth->h_proto;
	l3 = eth + 1;
#pragma unroll
	for (int i = 0; i < VLAN_MAX; i++) {
		if (proto_be != __builtin_bswap16(ETH_P_8021Q_) && proto_be != __builtin_bswap16(ETH_P_8021AD_))
			break;
		if (l3 + 4 > end)
			return 0;
		proto_be = *(__u16 *)(l3 + 2);
		l3 += 4;
	}

	if (proto_be == __builtin_bswap16(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return 0;
		// Later fragments carry no ports: the kernel's.
		if (ip->frag_off & __builtin_bswap16(0x1fff))
			return 0;
		family = 4;
		proto = ip->protocol;
		__builtin_memcpy(a.src, &ip->saddr, 4);
		__builtin_memcpy(a.dst, &ip->daddr, 4);
		l4 = l3 + ip->ihl * 4;
	} else if (proto_be == __builtin_bswap16(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return 0;
		family = 6;
		proto = ip6->nexthdr;
		__builtin_memcpy(a.src, &ip6->saddr, 16);
		__builtin_memcpy(a.dst, &ip6->daddr, 16);
		l4 = ip6 + 1;
#pragma unroll
		for (int i = 0; i < IPV6_EXT_MAX; i++) {
			if (proto != 0 && proto != 43 && proto != 60 && proto != 44)
				break;
			__u8 *ext = l4;
			if ((void *)(ext + 8) > end)
				return 0;
			if (proto == 44) {
				// Fragment header: only the first fragment has ports.
				if ((*(__u16 *)(ext + 2)) & __builtin_bswap16(0xfff8))
					return 0;
				proto = ext[0];
				l4 += 8;
			} else {
				proto = ext[0];
				l4 += (ext[1] + 1) * 8;
			}
		}
	} else {
		return 0;
	}

	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		__u16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return 0;
		if (is_member(&services, FIRST_SERVICES, proto, family, ports[1], a.dst))
			return 1;
		if (!is_member(&nat_reals, FIRST_NAT_REALS, proto, family, ports[0], a.src))
			return 0;
		// From a NAT real server's endpoint, but to the host itself (rule 2:
		// looked up second so that other traffic costs one lookup less).
		return !is_local(family, a.dst);
	}
	if (proto == IPPROTO_ICMP && family == 4) {
		__u8 *icmp = l4;
		if ((void *)(icmp + 8) > end)
			return 0;
		if (icmp[0] == 3 || icmp[0] == 4 || icmp[0] == 11 || icmp[0] == 12)
			return icmp_error_is_ours(icmp + 8, end, 4, a.dst);
		return 0;
	}
	if (proto == IPPROTO_ICMPV6 && family == 6) {
		__u8 *icmp = l4;
		if ((void *)(icmp + 8) > end)
			return 0;
		if (icmp[0] < 128)
			return icmp_error_is_ours(icmp + 8, end, 6, a.dst);
	}
	return 0;
}

// 1: the destination MAC is one of this director's unicast addresses.
INLINE int addressed_to_us(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct own_mac k = {};

	if ((void *)(eth + 1) > end)
		return 0;
	// The group bit: broadcast and multicast are nobody's in particular.
	if (eth->h_dest[0] & 1)
		return 0;
	__u64 dst = 0;
	__builtin_memcpy(&dst, eth->h_dest, 6);
	__u32 zero = 0;
	struct own_macs_first *first = bpf_map_lookup_elem(&own_macs_first, &zero);
	if (first) {
#pragma unroll
		for (int i = 0; i < OWN_MACS_FIRST; i++)
			if (first->mac[i] == dst)
				return 1;
		if (first->all)
			return 0;
	}
	__builtin_memcpy(k.addr, eth->h_dest, 6);
	return bpf_map_lookup_elem(&own_macs, &k) != 0;
}

// 1: xvs handles the frame; 0: the kernel does. steer(), then the
// destination MAC, counting the frames that fail only the latter.
INLINE int decide(struct xdp_md *ctx)
{
	if (!steer(ctx))
		return 0;
	if (addressed_to_us(ctx))
		return 1;
	count(COUNT_NOT_FOR_US);
	return 0;
}

SEC("xdp")
int xvs_steer(struct xdp_md *ctx)
{
	long verdict;

	if (!decide(ctx))
		return XDP_PASS;
	// The flags' low bits are what a queue without a socket gets.
	verdict = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
	if (verdict == XDP_DROP)
		count(COUNT_NO_SOCKET);
	return verdict;
}

SEC("xdp")
int xvs_steer_probe(struct xdp_md *ctx)
{
	return decide(ctx) ? XDP_TX : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
