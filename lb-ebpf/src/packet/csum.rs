//! Incremental Internet checksum update (RFC 1624: HC' = ~(~HC + ~m + m')).
//!
//! Words are read and written in memory order (`from_ne_bytes`): one's-complement sums are
//! byte-order independent, so no swapping is needed as long as all words agree.

/// Accumulates `~old + new` over 16-bit words.
#[derive(Clone, Copy)]
pub struct CsumDelta(u32);

impl CsumDelta {
    #[inline(always)]
    pub const fn new() -> Self {
        Self(0)
    }

    #[inline(always)]
    pub fn word(self, old: u16, new: u16) -> Self {
        Self(self.0 + u32::from(!old) + u32::from(new))
    }

    #[inline(always)]
    pub fn bytes4(self, old: &[u8; 4], new: &[u8; 4]) -> Self {
        self.word(u16::from_ne_bytes([old[0], old[1]]), u16::from_ne_bytes([new[0], new[1]]))
            .word(u16::from_ne_bytes([old[2], old[3]]), u16::from_ne_bytes([new[2], new[3]]))
    }

    #[inline(always)]
    pub fn bytes16(self, old: &[u8; 16], new: &[u8; 16]) -> Self {
        let mut d = self;
        // Fixed trip count: unrolled, no loop for the verifier.
        let mut i = 0;
        while i < 16 {
            d = d.word(
                u16::from_ne_bytes([old[i], old[i + 1]]),
                u16::from_ne_bytes([new[i], new[i + 1]]),
            );
            i += 2;
        }
        d
    }

    /// The updated checksum field.
    #[inline(always)]
    pub fn apply(self, check: u16) -> u16 {
        let mut s = u32::from(!check) + (self.0 & 0xffff) + (self.0 >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }
}
