//! What becomes of a frame: [`Verdict`], and the [`DropReason`] of every
//! frame xvs discards.
//!
//! A leaf of the crate: the forwarding methods, the pipeline, the workers
//! and the metrics all speak it, and it imports nothing above [`crate::packet`]
//! and the port type of [`crate::neigh`].

use crate::neigh::PortId;
use crate::packet::ParseError;

/// What the caller does with the frame after `Pipeline::process`.
///
/// Two bytes, so that `process` returns it in a register (a larger value
/// goes back through a pointer to the caller's stack, which also keeps a
/// call at the end of `process` from being a jump): a held frame's next
/// hop is not in it but kept by the pipeline
/// ([`Pipeline::held_next_hop`](crate::pipeline::Pipeline::held_next_hop)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame out of this port.
    Transmit { port: PortId },
    /// Send the frame out of `port` once its next hop's MAC is known: it is
    /// rewritten but for its destination MAC, and the kernel has been asked
    /// to resolve the address, which the pipeline gives until the next
    /// frame held (see [`crate::neigh::hold`]).
    Hold { port: PortId },
    /// Discard the frame; the reason has been counted.
    Drop(DropReason),
}

const _: () = assert!(std::mem::size_of::<Verdict>() == 2);

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident => $label:literal,)*) => {
        /// Why a frame was dropped. Every drop increments the counter of its reason.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $($(#[$doc])* $name,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// Reasons that mean "not xvs's": the steering program passes
            /// such frames to the kernel, so each one counted here is a frame
            /// it redirected that the pipeline did not claim.
            pub fn is_unclaimed(self) -> bool {
                matches!(
                    self,
                    DropReason::NotIp
                        | DropReason::OtherProtocol
                        | DropReason::NoConnection
                        | DropReason::IcmpNoConnection
                )
            }

            /// A stable snake_case name, used as the metrics label.
            pub fn label(self) -> &'static str {
                match self {
                    $(DropReason::$name => $label,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Neither IPv4 nor IPv6 (ARP and the like). Unclaimed.
    NotIp => "not_ip",
    /// IP, but neither TCP, UDP nor an ICMP error. Unclaimed.
    OtherProtocol => "other_protocol",
    /// TCP/UDP to no service and from no tracked NAT connection: an answer
    /// to the director host's own traffic, or to a connection that has
    /// expired. Unclaimed.
    NoConnection => "no_connection",
    /// An ICMP error quoting no tracked connection. Unclaimed.
    IcmpNoConnection => "icmp_no_connection",
    /// A header is cut short by the frame or the IP length.
    Truncated => "truncated",
    /// IPv4 IHL < 5 or a wrong version field.
    BadIpHeader => "bad_ip_header",
    /// IPv4 total length below the header length; IPv6 jumbogram.
    BadIpLength => "bad_ip_length",
    BadIpChecksum => "bad_ip_checksum",
    BadIpOptions => "bad_ip_options",
    /// IPv4 LSRR/SSRR option or IPv6 routing header with segments left.
    SourceRoute => "source_route",
    BadExtensionHeader => "bad_extension_header",
    /// A non-first fragment: no ports to find its connection by.
    Fragment => "fragment",
    BadTransportHeader => "bad_transport_header",
    /// An ICMP error whose quote is too short to name a flow.
    BadIcmpQuote => "bad_icmp_quote",
    /// Source address that can never be a client: unspecified, loopback,
    /// multicast, broadcast.
    Martian => "martian",
    /// TCP or UDP port 0.
    ZeroPort => "zero_port",
    /// IPv6 UDP without a checksum (forbidden by RFC 8200).
    UdpZeroChecksum => "udp_zero_checksum",
    /// TTL or hop limit would reach zero on a routed (NAT) path.
    TtlExpired => "ttl_expired",
    /// A TCP segment that matches no connection and does not open one, and
    /// is not answered: a reset itself, or past the resets' rate limit.
    TcpNotSyn => "tcp_not_syn",
    /// The service has no real server that may take a new connection.
    NoRealServer => "no_real_server",
    /// The connection table is full of live connections.
    ConnTableFull => "conn_table_full",
    /// The connection's real server is not in its service (deleted, and
    /// perhaps to be added back): the connection is kept, unless
    /// `expire_nodest_conn` is set, which ends it.
    DestGone => "dest_gone",
    /// No route toward the next hop, or a frame held for its neighbour's MAC
    /// that waited past the bound or found the hold queue full.
    NeighbourUnresolved => "neighbour_unresolved",
    /// Too big for the tunnel and DF clear: xvs does not fragment.
    TunnelTooBig => "tunnel_too_big",
    /// The frame buffer has no room for the encapsulation or ICMP error.
    NoRoom => "no_room",
    /// A real server of the other IP family than the packet.
    AddressFamily => "address_family",
    /// No tunnel source address on the port toward a TUN real server.
    NoTunnelSource => "no_tunnel_source",
}

impl From<ParseError> for DropReason {
    fn from(e: ParseError) -> DropReason {
        match e {
            ParseError::NotIp => DropReason::NotIp,
            ParseError::Truncated => DropReason::Truncated,
            ParseError::BadIpHeader => DropReason::BadIpHeader,
            ParseError::BadIpLength => DropReason::BadIpLength,
            ParseError::BadIpChecksum => DropReason::BadIpChecksum,
            ParseError::BadIpOptions => DropReason::BadIpOptions,
            ParseError::SourceRoute => DropReason::SourceRoute,
            ParseError::BadExtensionHeader => DropReason::BadExtensionHeader,
            ParseError::Fragment => DropReason::Fragment,
            ParseError::BadTransportHeader => DropReason::BadTransportHeader,
            ParseError::BadIcmpQuote => DropReason::BadIcmpQuote,
        }
    }
}
