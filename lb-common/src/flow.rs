//! The flow hash that picks a Maglev slot. Both the datapath and `lbctl explain` call this
//! function, so an explanation is the datapath's decision, not a re-implementation of it.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;
const SEED: u32 = 0x4c42_5631; // "LBV1": changing it moves every flow.

#[inline(always)]
fn mix(h: u32, word: u32) -> u32 {
    let k = word.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
}

/// murmur3-style hash of a 5-tuple; ports are in network order as they sit in the packet.
#[inline(always)]
pub fn flow_hash(src: &[u8; 16], dst: &[u8; 16], sport_be: u16, dport_be: u16, proto: u8) -> u32 {
    let mut h = SEED;
    h = mix(h, word(src, 0));
    h = mix(h, word(src, 4));
    h = mix(h, word(src, 8));
    h = mix(h, word(src, 12));
    h = mix(h, word(dst, 0));
    h = mix(h, word(dst, 4));
    h = mix(h, word(dst, 8));
    h = mix(h, word(dst, 12));
    h = mix(h, (u32::from(u16::from_be(sport_be)) << 16) | u32::from(u16::from_be(dport_be)));
    h = mix(h, u32::from(proto));
    // fmix32
    h ^= 40;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The Maglev slot a flow hash selects in a table of `m` slots.
#[inline(always)]
pub fn maglev_slot(hash: u32, m: u32) -> u32 {
    if m == 0 { 0 } else { hash % m }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        let base = flow_hash(&a, &b, 1000u16.to_be(), 80u16.to_be(), 6);
        assert_ne!(base, flow_hash(&b, &b, 1000u16.to_be(), 80u16.to_be(), 6));
        assert_ne!(base, flow_hash(&a, &a, 1000u16.to_be(), 80u16.to_be(), 6));
        assert_ne!(base, flow_hash(&a, &b, 1001u16.to_be(), 80u16.to_be(), 6));
        assert_ne!(base, flow_hash(&a, &b, 1000u16.to_be(), 81u16.to_be(), 6));
        assert_ne!(base, flow_hash(&a, &b, 1000u16.to_be(), 80u16.to_be(), 17));
    }

    #[test]
    fn source_ports_spread_over_slots() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        let m = 7;
        let mut seen = [0u32; 7];
        for port in 0..7000u16 {
            seen[maglev_slot(flow_hash(&a, &b, port.to_be(), 80u16.to_be(), 6), m) as usize] += 1;
        }
        for count in seen {
            assert!((800..1200).contains(&count), "uneven slot spread {seen:?}");
        }
    }
}
