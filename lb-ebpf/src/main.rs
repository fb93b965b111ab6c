//! The kernel side of the load balancer.
//!
//! # Layout
//! - [`xdp_ingress`], [`tc_ingress`], [`tc_egress`]: one thin entry per hook.
//! - [`lb`]: the one service-selection core the hooks share (service → source range →
//!   conntrack → affinity → Maglev) and the reply path's reverse NAT.
//! - [`packet`]: bounds-checked header access, parsing into a [`packet::parse::Flow`], and the
//!   [`packet::Packet`] trait whose two impls are the only place hooks differ (XDP writes
//!   bytes and fixes checksums itself; TC uses the skb helpers that know the checksum state).
//! - [`maps`]: every map, typed by lb-common.
//! - [`stats`]: per-CPU counters.
//!
//! Policy: anything this program does not own (not a service, unparsable, fragments,
//! unknown protocols) passes untouched; what it owns and cannot serve is dropped and counted.
#![no_std]
#![no_main]
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values go by reference: a by-value 40-byte key is another copy on \
              the 512-byte BPF stack"
)]

mod lb;
mod maps;
mod packet;
mod stats;
mod tc_egress;
mod tc_ingress;
mod xdp_ingress;

// Any reachable panic would be an infinite loop, which the verifier rejects at load time; so
// a program that loads cannot panic.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible so that GPL-only helpers (bpf_fib_lookup) stay available.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
