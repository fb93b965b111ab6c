//! Addresses in maps: always 16 bytes in network order. IPv4 is stored IPv4-mapped
//! (`::ffff:a.b.c.d`), so one key type serves both families and an IPv4 address can never
//! collide with an IPv6 one.

/// Address family tag stored in map values (`family` fields).
pub const FAMILY_V4: u8 = 4;
/// Address family tag stored in map values (`family` fields).
pub const FAMILY_V6: u8 = 6;

/// An IPv4 address (network order bytes) as its IPv4-mapped 16-byte form.
#[inline(always)]
pub const fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}

/// Whether a 16-byte address is IPv4-mapped.
#[inline(always)]
pub fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff
}

#[cfg(feature = "std")]
mod std_conv {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// The map form of an address.
    pub fn to_map(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(v4) => super::v4_mapped(v4.octets()),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    /// The address a map field holds.
    pub fn from_map(a: &[u8; 16]) -> IpAddr {
        if super::is_v4_mapped(a) {
            IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*a))
        }
    }
}
#[cfg(feature = "std")]
pub use std_conv::{from_map, to_map};
