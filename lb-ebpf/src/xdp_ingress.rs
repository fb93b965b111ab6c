//! XDP on the node's external interfaces: client → service traffic.
//!
//! After the DNAT the packet goes up the stack (XDP_PASS), which routes it to the backend.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::{
    lb::{self, Verdict},
    packet::{XdpPacket, parse::parse},
};

#[xdp]
pub fn xdp_ingress(ctx: XdpContext) -> u32 {
    let mut pkt = XdpPacket(ctx);
    let Some(flow) = parse(&pkt) else {
        return xdp_action::XDP_PASS;
    };
    match lb::ingress(&mut pkt, &flow) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}
