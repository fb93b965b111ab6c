//! TC ingress on pod-facing interfaces: east-west traffic from local pods to services.

use aya_ebpf::{
    bindings::TC_ACT_OK, bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext,
};

use crate::{
    lb::{self, Verdict},
    packet::{TcPacket, parse::parse},
};

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    let mut pkt = TcPacket(ctx);
    let Some(flow) = parse(&pkt) else {
        return TC_ACT_OK;
    };
    match lb::ingress(&mut pkt, &flow) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
    }
}
