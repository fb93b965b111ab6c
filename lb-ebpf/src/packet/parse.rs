//! Ethernet (one 802.1Q/802.1ad tag) → IPv4 (any IHL) / IPv6 → TCP / UDP.
//!
//! Returns `None` for anything the load balancer does not own: other EtherTypes, IPv6
//! extension headers, fragments, other L4 protocols, truncated or inconsistent headers.

use lb_common::{
    addr::{FAMILY_V4, FAMILY_V6, v4_mapped},
    maps::{IPPROTO_TCP, IPPROTO_UDP},
};

use super::{Packet, header_at};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV6_HLEN: usize = 40;
const TCP_HLEN_MIN: usize = 20;
const UDP_HLEN: usize = 8;
/// IPv4 MF flag and fragment offset bits.
const IPV4_FRAG_MASK: u16 = 0x3fff;

// Headers are byte arrays: packet data has no alignment guarantee.
#[repr(C)]
struct EthHdr {
    _dst: [u8; 6],
    _src: [u8; 6],
    proto: [u8; 2],
}

#[repr(C)]
struct VlanHdr {
    _tci: [u8; 2],
    proto: [u8; 2],
}

#[repr(C)]
struct Ipv4Hdr {
    ver_ihl: u8,
    _tos: u8,
    tot_len: [u8; 2],
    _id: [u8; 2],
    frag_off: [u8; 2],
    _ttl: u8,
    proto: u8,
    _check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    vtc_flow: [u8; 4],
    payload_len: [u8; 2],
    next_hdr: u8,
    _hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// The first 14 bytes of TCP (ports … flags); UDP's first 8 are read through the same
/// prefix after a UDP-sized bound check.
#[repr(C)]
struct L4Ports {
    sport: [u8; 2],
    dport: [u8; 2],
}

#[repr(C)]
struct TcpHdr {
    _ports: [u8; 4],
    _seq: [u8; 4],
    _ack: [u8; 4],
    doff_res: u8,
    _flags: u8,
    _window: [u8; 2],
    _check: [u8; 2],
    _urg: [u8; 2],
}

#[repr(C)]
struct UdpHdr {
    _ports: [u8; 4],
    _len: [u8; 2],
    _check: [u8; 2],
}

/// One packet's flow identity and where its headers are.
pub struct Flow {
    pub l3_off: usize,
    pub l4_off: usize,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    pub proto: u8,
    /// IPv4-mapped for IPv4.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport_be: u16,
    pub dport_be: u16,
}

// Not inlined: a BPF function of its own, so its stack frame is not stacked on top of the
// balancing functions' frames (the verifier sums frames along a call chain, max 512 bytes).
#[inline(never)]
pub fn parse<P: Packet>(p: &P) -> Option<Flow> {
    let eth: *const EthHdr = header_at(p, 0)?;
    // SAFETY: header_at checked the bounds; EthHdr has alignment 1.
    let mut ethertype = u16::from_be_bytes(unsafe { (*eth).proto });
    let mut l3_off = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let vlan: *const VlanHdr = header_at(p, ETH_HLEN)?;
        // SAFETY: bounds checked above.
        ethertype = u16::from_be_bytes(unsafe { (*vlan).proto });
        l3_off += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(p, l3_off),
        ETH_P_IPV6 => parse_ipv6(p, l3_off),
        _ => None,
    }
}

#[inline(always)]
fn parse_ipv4<P: Packet>(p: &P, l3_off: usize) -> Option<Flow> {
    let ip: *const Ipv4Hdr = header_at(p, l3_off)?;
    // SAFETY: bounds checked by header_at.
    let ip = unsafe { &*ip };
    if ip.ver_ihl >> 4 != 4 {
        return None;
    }
    // IHL is 4 bits, so ihl <= 60: a bounded offset the verifier accepts.
    let ihl = usize::from(ip.ver_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    if u16::from_be_bytes(ip.frag_off) & IPV4_FRAG_MASK != 0 {
        return None;
    }
    let tot_len = usize::from(u16::from_be_bytes(ip.tot_len));
    let src = v4_mapped(ip.saddr);
    let dst = v4_mapped(ip.daddr);
    let proto = ip.proto;
    let l4_len = tot_len.checked_sub(ihl)?;
    parse_l4(p, l3_off, l3_off + ihl, l4_len, FAMILY_V4, proto, src, dst)
}

#[inline(always)]
fn parse_ipv6<P: Packet>(p: &P, l3_off: usize) -> Option<Flow> {
    let ip: *const Ipv6Hdr = header_at(p, l3_off)?;
    // SAFETY: bounds checked by header_at.
    let ip = unsafe { &*ip };
    if ip.vtc_flow[0] >> 4 != 6 {
        return None;
    }
    let l4_len = usize::from(u16::from_be_bytes(ip.payload_len));
    parse_l4(p, l3_off, l3_off + IPV6_HLEN, l4_len, FAMILY_V6, ip.next_hdr, ip.saddr, ip.daddr)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn parse_l4<P: Packet>(
    p: &P,
    l3_off: usize,
    l4_off: usize,
    l4_len: usize,
    family: u8,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
) -> Option<Flow> {
    match proto {
        IPPROTO_TCP => {
            if l4_len < TCP_HLEN_MIN {
                return None;
            }
            let tcp: *const TcpHdr = header_at(p, l4_off)?;
            // SAFETY: bounds checked by header_at.
            let tcp = unsafe { &*tcp };
            if tcp.doff_res >> 4 < 5 {
                return None;
            }
        }
        IPPROTO_UDP => {
            if l4_len < UDP_HLEN {
                return None;
            }
            let _: *const UdpHdr = header_at(p, l4_off)?;
        }
        _ => return None,
    }
    let ports: *const L4Ports = header_at(p, l4_off)?;
    // SAFETY: bounds checked by header_at (and by the larger checks above).
    let ports = unsafe { &*ports };
    Some(Flow {
        l3_off,
        l4_off,
        family,
        proto,
        src,
        dst,
        sport_be: u16::from_ne_bytes(ports.sport),
        dport_be: u16::from_ne_bytes(ports.dport),
    })
}
