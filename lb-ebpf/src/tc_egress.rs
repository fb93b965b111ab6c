//! TC egress on every interface that leads to clients (external and pod-facing): replies of
//! balanced flows get the frontend's address and port back. Done at egress, after routing,
//! so a NodePort reply whose new source is a local address is never seen by the stack's
//! martian-source check.

use aya_ebpf::{
    bindings::TC_ACT_OK, bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext,
};

use crate::{
    lb::{self, Verdict},
    packet::{TcPacket, parse::parse},
};

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    let mut pkt = TcPacket(ctx);
    let Some(flow) = parse(&pkt) else {
        return TC_ACT_OK;
    };
    match lb::reply(&mut pkt, &flow) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
    }
}
