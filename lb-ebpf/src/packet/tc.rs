//! TC: writes through the skb helpers. Packets from local pods usually carry
//! CHECKSUM_PARTIAL (the L4 field holds only the pseudo-header sum); the helpers know the
//! skb's checksum state and update the field the right way for it, which hand-written
//! arithmetic cannot.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use lb_common::{addr::FAMILY_V4, maps::IPPROTO_UDP};

use super::{Packet, RewriteError, RewriteOffsets, Side, parse::Flow};

pub struct TcPacket(pub TcContext);

impl TcPacket {
    #[inline(always)]
    fn load<T>(&self, off: usize) -> Result<T, RewriteError> {
        self.0.load::<T>(off).map_err(|_| RewriteError)
    }
}

#[inline(always)]
fn ok(r: Result<(), i64>) -> Result<(), RewriteError> {
    r.map_err(|_| RewriteError)
}

impl Packet for TcPacket {
    // Volatile for the same reason as in the XDP impl.
    #[inline(always)]
    fn data(&self) -> usize {
        // SAFETY: the skb pointer is valid for the whole program run.
        unsafe { core::ptr::read_volatile(&(*self.0.skb.skb).data) as usize }
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&(*self.0.skb.skb).data_end) as usize }
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        self.0.len()
    }

    #[inline(never)]
    fn rewrite(
        &mut self,
        flow: &Flow,
        side: Side,
        addr: &[u8; 16],
        port_be: u16,
    ) -> Result<(), RewriteError> {
        let off = RewriteOffsets::of(flow, side);
        // UDP over IPv4 may carry no checksum (0); MANGLED_0 keeps it so and turns a
        // computed 0 into 0xffff.
        let udp = if flow.proto == IPPROTO_UDP { u64::from(BPF_F_MARK_MANGLED_0) } else { 0 };
        let pseudo = u64::from(BPF_F_PSEUDO_HDR);
        let ctx = &self.0;

        if flow.family == FAMILY_V4 {
            let old: u32 = self.load(off.addr)?;
            let new = u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]);
            ok(ctx.l4_csum_replace(off.l4_check, old.into(), new.into(), pseudo | udp | 4))?;
            ok(ctx.l3_csum_replace(off.l3_check, old.into(), new.into(), 4))?;
            ok(ctx.store(off.addr, &new, 0))?;
        } else {
            // The helpers take at most 4 bytes at a time: four 32-bit words.
            let mut i = 0;
            while i < 16 {
                let old: u32 = self.load(off.addr + i)?;
                let new = u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
                ok(ctx.l4_csum_replace(off.l4_check, old.into(), new.into(), pseudo | udp | 4))?;
                i += 4;
            }
            ok(ctx.store(off.addr, addr, 0))?;
        }
        let old_port: u16 = self.load(off.port)?;
        ok(ctx.l4_csum_replace(off.l4_check, old_port.into(), port_be.into(), udp | 2))?;
        ok(ctx.store(off.port, &port_be, 0))?;
        Ok(())
    }
}
