//! The two forms of a TCP or UDP packet that `Engine::flow` reads: the
//! fast path's [`V4Flow`], whose fields were read once at constant offsets
//! and whose checks and rewrites index the frame at constant offsets too,
//! and the general [`Parsed`] with its key ([`General`]), for every frame
//! `Engine::classify` parses in full. `flow` and what it calls are written
//! once over [`FlowPacket`] and compiled for each form, so both paths take
//! the same steps in the same order; the proptest in `fastpath.rs` holds
//! them to one verdict, the same bytes and the same counts.

use std::net::IpAddr;

use super::flow_cache::FlowCache;
use crate::conntrack::Hit;
use crate::forward::nat;
use crate::neigh::NextHop;
use crate::packet::encap::Inner4;
use crate::packet::rewrite::{self, EthAddrs};
use crate::packet::{FlowKey, Frame, IpVersion, Parsed, TcpFlags, Transport, V4Flow};
use crate::service::{ServiceIndex, ServiceKey, ServiceTable, VirtualService};
use crate::verdict::DropReason;

/// What the flow path reads of a TCP or UDP packet and does to its frame.
/// Every method is meant to be inlined into the path it is called from.
pub(super) trait FlowPacket {
    /// The flow the packet belongs to.
    fn key(&self) -> FlowKey;
    /// The service the packet is for, if it is for one.
    fn service<'t>(&self, services: &'t ServiceTable)
        -> Option<(ServiceIndex, &'t VirtualService)>;
    fn src(&self) -> IpAddr;
    fn sport(&self) -> u16;
    fn dport(&self) -> u16;
    /// The TCP flags, if it is TCP.
    fn flags(&self) -> Option<TcpFlags>;
    /// The IP packet's length (what the traffic counters add).
    fn ip_len(&self) -> usize;
    /// An IPv6 UDP packet with a zero checksum (RFC 8200 forbids it).
    fn is_v6_udp_without_checksum(&self, frame: &[u8]) -> bool;
    /// [`rewrite::complete_partial_checksum`].
    fn complete_partial_checksum(&self, frame: &mut [u8]) -> bool;
    /// [`nat::to_real`], toward the next hop whose MACs are `macs`.
    fn nat_to_real(
        &self,
        frame: &mut [u8],
        rip: IpAddr,
        rport: u16,
        macs: &EthAddrs,
    ) -> Result<(), DropReason>;
    /// [`nat::to_client`].
    fn nat_to_client(
        &self,
        frame: &mut [u8],
        vip: IpAddr,
        vport: u16,
        hop: &NextHop,
    ) -> Result<(), DropReason>;
    /// What TUN's header template reads of an IPv4 packet in `frame`, the
    /// frame it was read from; `None` for IPv6.
    fn inner4(&self, frame: &[u8]) -> Option<Inner4>;
    /// Keeps the hit `c` of this packet's connection, in service `si` at
    /// real server position `ri`, in the flow cache, where the packet's
    /// form is one the cache holds (the fast path's).
    fn remember(&self, flows: &mut FlowCache, c: &Hit, si: ServiceIndex, ri: usize);
    /// Calls `f` with the packet's [`Parsed`] and its frame, for the paths
    /// written over it alone (a reset, TUN's general encapsulation).
    fn with_parsed<R>(
        &self,
        frame: &mut Frame<'_>,
        f: impl FnOnce(&Parsed, &mut Frame<'_>) -> R,
    ) -> R;
}

/// A packet `Engine::classify` parsed in full, and its flow.
pub(super) struct General<'p> {
    pub p: &'p Parsed,
    pub key: FlowKey,
}

impl FlowPacket for General<'_> {
    #[inline(always)]
    fn key(&self) -> FlowKey {
        self.key
    }

    #[inline(always)]
    fn service<'t>(
        &self,
        services: &'t ServiceTable,
    ) -> Option<(ServiceIndex, &'t VirtualService)> {
        services.find(&ServiceKey {
            proto: self.key.proto,
            addr: self.key.dst,
            port: self.key.dport,
        })
    }

    #[inline(always)]
    fn src(&self) -> IpAddr {
        self.p.src
    }

    #[inline(always)]
    fn sport(&self) -> u16 {
        self.p.sport
    }

    #[inline(always)]
    fn dport(&self) -> u16 {
        self.p.dport
    }

    #[inline(always)]
    fn flags(&self) -> Option<TcpFlags> {
        match self.p.transport {
            Transport::Tcp { flags } => Some(flags),
            _ => None,
        }
    }

    #[inline(always)]
    fn ip_len(&self) -> usize {
        self.p.ip_len
    }

    #[inline(always)]
    fn is_v6_udp_without_checksum(&self, frame: &[u8]) -> bool {
        self.p.version == IpVersion::V6
            && self.p.transport == Transport::Udp
            && rewrite::udp_checksum(frame, self.p) == 0
    }

    #[inline(always)]
    fn complete_partial_checksum(&self, frame: &mut [u8]) -> bool {
        rewrite::complete_partial_checksum(frame, self.p)
    }

    #[inline(always)]
    fn nat_to_real(
        &self,
        frame: &mut [u8],
        rip: IpAddr,
        rport: u16,
        macs: &EthAddrs,
    ) -> Result<(), DropReason> {
        nat::to_real(frame, self.p, rip, rport, macs)
    }

    #[inline(always)]
    fn nat_to_client(
        &self,
        frame: &mut [u8],
        vip: IpAddr,
        vport: u16,
        hop: &NextHop,
    ) -> Result<(), DropReason> {
        nat::to_client(frame, self.p, vip, vport, hop)
    }

    #[inline(always)]
    fn inner4(&self, _: &[u8]) -> Option<Inner4> {
        Inner4::of(self.p)
    }

    /// Not held: the cache is the fast path's.
    #[inline(always)]
    fn remember(&self, _: &mut FlowCache, _: &Hit, _: ServiceIndex, _: usize) {}

    #[inline(always)]
    fn with_parsed<R>(
        &self,
        frame: &mut Frame<'_>,
        f: impl FnOnce(&Parsed, &mut Frame<'_>) -> R,
    ) -> R {
        f(self.p, frame)
    }
}

impl FlowPacket for V4Flow {
    #[inline(always)]
    fn key(&self) -> FlowKey {
        V4Flow::key(self)
    }

    #[inline(always)]
    fn service<'t>(
        &self,
        services: &'t ServiceTable,
    ) -> Option<(ServiceIndex, &'t VirtualService)> {
        services.find_v4(self.proto, self.dst, self.dport)
    }

    #[inline(always)]
    fn src(&self) -> IpAddr {
        IpAddr::V4(self.src)
    }

    #[inline(always)]
    fn sport(&self) -> u16 {
        self.sport
    }

    #[inline(always)]
    fn dport(&self) -> u16 {
        self.dport
    }

    #[inline(always)]
    fn flags(&self) -> Option<TcpFlags> {
        V4Flow::flags(self)
    }

    #[inline(always)]
    fn ip_len(&self) -> usize {
        usize::from(self.ip_len)
    }

    #[inline(always)]
    fn is_v6_udp_without_checksum(&self, _: &[u8]) -> bool {
        false
    }

    #[inline(always)]
    fn complete_partial_checksum(&self, frame: &mut [u8]) -> bool {
        rewrite::complete_partial_checksum_v4(frame, self)
    }

    #[inline(always)]
    fn nat_to_real(
        &self,
        frame: &mut [u8],
        rip: IpAddr,
        rport: u16,
        macs: &EthAddrs,
    ) -> Result<(), DropReason> {
        nat::to_real_v4(frame, self, rip, rport, macs)
    }

    #[inline(always)]
    fn nat_to_client(
        &self,
        frame: &mut [u8],
        vip: IpAddr,
        vport: u16,
        hop: &NextHop,
    ) -> Result<(), DropReason> {
        nat::to_client_v4(frame, self, vip, vport, hop)
    }

    #[inline(always)]
    fn inner4(&self, frame: &[u8]) -> Option<Inner4> {
        Some(Inner4::of_flow(self, frame))
    }

    #[inline(always)]
    fn remember(&self, flows: &mut FlowCache, c: &Hit, si: ServiceIndex, ri: usize) {
        if let Some(r) = c.remembered() {
            flows.put(self, r, si, ri);
        }
    }

    #[inline(always)]
    fn with_parsed<R>(
        &self,
        frame: &mut Frame<'_>,
        f: impl FnOnce(&Parsed, &mut Frame<'_>) -> R,
    ) -> R {
        let p = self.parsed(frame.data());
        f(&p, frame)
    }
}
