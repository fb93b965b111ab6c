//! Packet access shared by the hooks.
//!
//! [`Packet`] is the only thing the hooks implement differently: bounds for direct access, the
//! frame length, and how an address/port rewrite reaches the packet with valid checksums.

pub mod csum;
pub mod parse;
mod tc;
mod xdp;

pub use tc::TcPacket;
pub use xdp::XdpPacket;

use parse::Flow;

/// Which end of a flow a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// DNAT: client → frontend becomes client → backend.
    Destination,
    /// Reverse NAT: backend → client becomes frontend → client.
    Source,
}

/// The rewrite could not be applied (a helper failed or the packet shrank under us).
pub struct RewriteError;

pub trait Packet {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Bytes on the wire, for counters.
    fn len(&self) -> u32;
    /// Replaces one side's address and port, keeping IPv4 and TCP/UDP checksums valid.
    fn rewrite(
        &mut self,
        flow: &Flow,
        side: Side,
        addr: &[u8; 16],
        port_be: u16,
    ) -> Result<(), RewriteError>;
}

/// A pointer to a `T` at `offset`, if the packet holds it whole. Every header access goes
/// through here so the verifier always sees the same `start + off + size <= end` check.
#[inline(always)]
pub fn header_at<P: Packet, T>(p: &P, offset: usize) -> Option<*mut T> {
    let start = p.data();
    let end = p.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Byte offsets of the fields a rewrite touches, derived once from the parsed flow.
pub struct RewriteOffsets {
    pub addr: usize,
    pub port: usize,
    /// The TCP or UDP checksum.
    pub l4_check: usize,
    /// The IPv4 header checksum (unused for IPv6).
    pub l3_check: usize,
}

impl RewriteOffsets {
    #[inline(always)]
    pub fn of(flow: &Flow, side: Side) -> Self {
        let v4 = flow.family == lb_common::addr::FAMILY_V4;
        let addr_in_l3 = match (v4, side) {
            (true, Side::Source) => 12,
            (true, Side::Destination) => 16,
            (false, Side::Source) => 8,
            (false, Side::Destination) => 24,
        };
        let port_in_l4 = if side == Side::Source { 0 } else { 2 };
        let check_in_l4 = if flow.proto == lb_common::maps::IPPROTO_TCP { 16 } else { 6 };
        Self {
            addr: flow.l3_off + addr_in_l3,
            port: flow.l4_off + port_in_l4,
            l4_check: flow.l4_off + check_in_l4,
            l3_check: flow.l3_off + 10,
        }
    }
}
