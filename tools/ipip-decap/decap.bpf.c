// SPDX-License-Identifier: GPL-2.0
//
// ipip-decap: the real-server half of LVS/TUN as an XDP program.
//
// xvs sends a TUN real server the client's packet inside an outer IPv4
// (protocol 4) or IPv6 (next header 41) header. Where the kernel has an `ipip`
// / `ip6tnl` device this program is not needed; where it has none, load it on
// the real server's interface:
//
//     ip link set dev eth0 xdp obj decap.bpf.o sec xdp
//
// It strips the outer header of IPv4-in-IPv4 and IPv6-in-IPv6 frames and passes the inner packet to the kernel, which delivers
// it to the VIP configured on `lo`. Everything else passes untouched. The
// packet core's `packet::encap::decapsulate` is the same operation in Rust
// and is what the unit tests check it against.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#define SEC(name) __attribute__((section(name), used))

static long (*bpf_xdp_adjust_head)(struct xdp_md *ctx, int delta) = (void *)BPF_FUNC_xdp_adjust_head;

#define IPPROTO_IPIP_OUTER 4
#define IPPROTO_IPV6_OUTER 41

static __attribute__((always_inline)) int strip(struct xdp_md *ctx, int outer_len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth;

	if (data + sizeof(struct ethhdr) + outer_len > data_end)
		return XDP_PASS;
	__builtin_memcpy(&eth, data, sizeof(eth));
	if (bpf_xdp_adjust_head(ctx, outer_len))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(struct ethhdr) > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, &eth, sizeof(eth));
	return XDP_PASS;
}

SEC("xdp")
int ipip_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == __builtin_bswap16(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		// Options in the outer header are not expected from xvs; leave such
		// packets to the kernel. Fragments of the outer packet too.
		if (ip->ihl != 5 || ip->protocol != IPPROTO_IPIP_OUTER)
			return XDP_PASS;
		if (ip->frag_off & __builtin_bswap16(0x3fff))
			return XDP_PASS;
		struct iphdr *inner = ip + 1;
		if ((void *)(inner + 1) > data_end || inner->version != 4)
			return XDP_PASS;
		return strip(ctx, sizeof(struct iphdr));
	}
	if (eth->h_proto == __builtin_bswap16(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		if (ip6->nexthdr != IPPROTO_IPV6_OUTER)
			return XDP_PASS;
		struct ipv6hdr *inner = ip6 + 1;
		if ((void *)(inner + 1) > data_end || inner->version != 6)
			return XDP_PASS;
		return strip(ctx, sizeof(struct ipv6hdr));
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
