//! XDP: direct writes, checksums fixed by hand. A packet at XDP has a complete checksum
//! (it came off the wire), so the RFC 1624 update is exact.

use aya_ebpf::programs::XdpContext;
use lb_common::{addr::FAMILY_V4, maps::IPPROTO_UDP};

use super::{Packet, RewriteError, RewriteOffsets, Side, csum::CsumDelta, header_at, parse::Flow};

pub struct XdpPacket(pub XdpContext);

#[inline(always)]
fn field<T>(p: &XdpPacket, off: usize) -> Result<*mut T, RewriteError> {
    header_at(p, off).ok_or(RewriteError)
}

impl Packet for XdpPacket {
    // Volatile loads of the context fields: otherwise LLVM hoists them into arguments of
    // non-inlined callees, and the verifier rejects arithmetic on a passed-in pkt_end.
    #[inline(always)]
    fn data(&self) -> usize {
        // SAFETY: the context pointer is valid for the whole program run.
        unsafe { core::ptr::read_volatile(&(*self.0.ctx).data) as usize }
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&(*self.0.ctx).data_end) as usize }
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        (self.0.data_end() - self.0.data()) as u32
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
        let port: *mut [u8; 2] = field(self, off.port)?;
        let l4_check: *mut [u8; 2] = field(self, off.l4_check)?;
        let new_port = port_be.to_ne_bytes();
        // SAFETY: every pointer below was bounds-checked by header_at; all have alignment 1.
        unsafe {
            let mut l4 = CsumDelta::new().word(u16::from_ne_bytes(*port), port_be);
            if flow.family == FAMILY_V4 {
                let a: *mut [u8; 4] = field(self, off.addr)?;
                let l3_check: *mut [u8; 2] = field(self, off.l3_check)?;
                let new_addr = [addr[12], addr[13], addr[14], addr[15]];
                let l3 = CsumDelta::new().bytes4(&*a, &new_addr);
                *l3_check = l3.apply(u16::from_ne_bytes(*l3_check)).to_ne_bytes();
                l4 = l4.bytes4(&*a, &new_addr);
                *a = new_addr;
            } else {
                let a: *mut [u8; 16] = field(self, off.addr)?;
                l4 = l4.bytes16(&*a, addr);
                *a = *addr;
            }
            let old_check = u16::from_ne_bytes(*l4_check);
            // An IPv4 UDP checksum of 0 means "none": keep it so.
            if !(flow.proto == IPPROTO_UDP && old_check == 0) {
                let mut check = l4.apply(old_check);
                if flow.proto == IPPROTO_UDP && check == 0 {
                    check = 0xffff;
                }
                *l4_check = check.to_ne_bytes();
            }
            *port = new_port;
        }
        Ok(())
    }
}
