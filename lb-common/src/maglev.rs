//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights.
//!
//! Pure and deterministic: the table depends only on the set of backends (not their order)
//! and M, so the agent, `lbctl explain` and tests all get the same table.

use std::fmt;

/// One backend as Maglev sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// What goes into the table's slots (the datapath's backend id).
    pub id: u32,
    /// A stable identity ("198.18.1.2:8080"): the permutation is derived from it, so a
    /// backend keeps its slots when ids are reassigned or other backends come and go.
    pub identity: String,
    /// Relative share of slots; 0 keeps the backend out of the table.
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaglevError {
    /// M must be prime for every skip to generate a full permutation.
    NotPrime(u32),
    /// More backends than slots.
    TooManyBackends { backends: usize, m: u32 },
    /// Two backends with the same identity would get the same permutation.
    DuplicateIdentity(String),
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPrime(m) => write!(f, "Maglev table size {m} is not a prime > 2"),
            Self::TooManyBackends { backends, m } => {
                write!(f, "{backends} backends do not fit a Maglev table of {m} slots")
            }
            Self::DuplicateIdentity(id) => write!(f, "backend {id} is listed twice"),
        }
    }
}

impl std::error::Error for MaglevError {}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// FNV-1a 64 with a seed, finished with the murmur3 64-bit mixer: two seeds give the two
/// independent hashes Maglev's permutation needs.
fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Builds a table of `m` slots, each holding a backend id. Empty when no backend has weight.
pub fn build(backends: &[MaglevBackend], m: u32) -> Result<Vec<u32>, MaglevError> {
    if m <= 2 || !is_prime(m) {
        return Err(MaglevError::NotPrime(m));
    }
    let mut live: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    if live.is_empty() {
        return Ok(Vec::new());
    }
    if live.len() > m as usize {
        return Err(MaglevError::TooManyBackends { backends: live.len(), m });
    }
    live.sort_by(|a, b| a.identity.cmp(&b.identity));
    if let Some(w) = live.windows(2).find(|w| w[0].identity == w[1].identity) {
        return Err(MaglevError::DuplicateIdentity(w[0].identity.clone()));
    }

    let m64 = u64::from(m);
    let perms: Vec<(u64, u64)> = live
        .iter()
        .map(|b| {
            let offset = hash64(b.identity.as_bytes(), 0x6d61_676c_6576_3031) % m64;
            let skip = hash64(b.identity.as_bytes(), 0x736b_6970_7365_6564) % (m64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let max_weight = live.iter().map(|b| u64::from(b.weight)).max().unwrap_or(1);

    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; m as usize];
    // Each backend's position in its permutation (offset + j * skip) mod M, advanced by
    // addition instead of a multiply and modulo per probe.
    let mut pos: Vec<u64> = perms.iter().map(|(offset, _)| *offset).collect();
    let mut credit = vec![0u64; live.len()];
    let mut filled = 0u32;
    'fill: loop {
        for (i, b) in live.iter().enumerate() {
            // Weighted turns: a backend places one slot per `max_weight` of accumulated weight,
            // so slot counts are proportional to weights.
            credit[i] += u64::from(b.weight);
            if credit[i] < max_weight {
                continue;
            }
            credit[i] -= max_weight;
            let skip = perms[i].1;
            loop {
                let slot = pos[i] as usize;
                pos[i] += skip;
                if pos[i] >= m64 {
                    pos[i] -= m64;
                }
                if table[slot] == EMPTY {
                    table[slot] = b.id;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break 'fill;
            }
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn backends(n: u32) -> Vec<MaglevBackend> {
        (1..=n)
            .map(|i| MaglevBackend {
                id: i,
                identity: format!("198.18.{}.{}:8080", i / 200, i % 200),
                weight: 1,
            })
            .collect()
    }

    fn counts(table: &[u32]) -> HashMap<u32, usize> {
        let mut c = HashMap::new();
        for &id in table {
            *c.entry(id).or_default() += 1;
        }
        c
    }

    #[test]
    fn rejects_non_prime_sizes() {
        assert_eq!(build(&backends(3), 16384), Err(MaglevError::NotPrime(16384)));
        assert_eq!(build(&backends(3), 1), Err(MaglevError::NotPrime(1)));
    }

    #[test]
    fn empty_without_weighted_backends() {
        let mut b = backends(2);
        b.iter_mut().for_each(|b| b.weight = 0);
        assert_eq!(build(&b, 7), Ok(vec![]));
    }

    #[test]
    fn every_slot_is_filled_and_shares_are_even() {
        for (n, m) in [(3u32, 16381u32), (10, 16381), (100, 65537)] {
            let table = build(&backends(n), m).unwrap();
            assert_eq!(table.len(), m as usize);
            let c = counts(&table);
            assert_eq!(c.len(), n as usize, "every backend gets slots");
            let ideal = m as f64 / n as f64;
            for (&id, &slots) in &c {
                assert!(
                    (slots as f64 - ideal).abs() <= ideal * 0.02 + 1.0,
                    "backend {id}: {slots} slots, ideal {ideal:.1}"
                );
            }
        }
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let b = backends(10);
        let mut r = b.clone();
        r.reverse();
        assert_eq!(build(&b, 16381).unwrap(), build(&r, 16381).unwrap());
    }

    #[test]
    fn removing_one_backend_moves_little_else() {
        let b = backends(10);
        let before = build(&b, 16381).unwrap();
        let after = build(&b[1..], 16381).unwrap();
        let moved_others =
            before.iter().zip(&after).filter(|(old, new)| **old != b[0].id && old != new).count();
        // Maglev's bound: with M >> N, few slots of remaining backends change owner.
        assert!(moved_others < 16381 / 100, "{moved_others} slots of surviving backends moved");
    }

    #[test]
    fn weights_give_proportional_shares() {
        let mut b = backends(3);
        b[0].weight = 1;
        b[1].weight = 2;
        b[2].weight = 3;
        let c = counts(&build(&b, 16381).unwrap());
        let share = |id| c[&id] as f64 / 16381.0;
        assert!((share(1) - 1.0 / 6.0).abs() < 0.01, "{c:?}");
        assert!((share(2) - 2.0 / 6.0).abs() < 0.01, "{c:?}");
        assert!((share(3) - 3.0 / 6.0).abs() < 0.01, "{c:?}");
    }

    #[test]
    fn duplicate_identity_is_an_error() {
        let mut b = backends(2);
        b[1].identity = b[0].identity.clone();
        assert!(matches!(build(&b, 7), Err(MaglevError::DuplicateIdentity(_))));
    }
}
