//! Benchmark floors, not part of the datapath: what the cheapest XDP programs cost on this
//! machine, so the datapath's cost is reported as a ratio measured in the same run.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// Does nothing: the cost of running any XDP program at all.
#[xdp]
pub fn floor_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Parses Ethernet/IPv4/TCP, swaps MACs, bounces the packet: a minimal "forwarder".
#[xdp]
pub fn floor_tx(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    // Ethernet (14) + IPv4 without options (20) + TCP ports (4).
    if start + 38 > end {
        return xdp_action::XDP_PASS;
    }
    let p = start as *mut u8;
    // SAFETY: 38 bytes are in bounds, checked above.
    unsafe {
        if *p.add(12) != 0x08 || *p.add(13) != 0x00 || *p.add(14) != 0x45 || *p.add(23) != 6 {
            return xdp_action::XDP_PASS;
        }
        for i in 0..6 {
            let (a, b) = (*p.add(i), *p.add(6 + i));
            *p.add(i) = b;
            *p.add(6 + i) = a;
        }
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
