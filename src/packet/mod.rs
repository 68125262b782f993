//! Views over frame bytes: parsing, flow keys, checksums, in-place rewrites,
//! IP-in-IP encapsulation and the ICMP errors the director itself sends.

pub mod checksum;
pub mod encap;
mod flow;
mod frame;
pub mod icmp;
mod parse;
pub mod reset;
pub mod rewrite;

pub use flow::{FlowKey, L4Proto};
pub use frame::{Frame, NoRoom};
pub use parse::{
    check_flow, parse, parse_flow, CheckedFlow, IpVersion, ParseError, Parsed, Quoted, TcpFlags,
    Transport, V4Flow, ETH_HEADER_LEN, FLOW_HEADERS,
};
pub use rewrite::{MacAddr, Side};
