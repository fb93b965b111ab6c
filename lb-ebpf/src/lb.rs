//! The service-selection core both ingress hooks run, and the reply path's reverse NAT.
//!
//! Ingress: frontend lookup → source ranges → conntrack hit (same backend while it exists)
//! → ClientIP affinity → Maglev slot of the 5-tuple hash → conntrack/rev-NAT/affinity
//! entries → DNAT. Each step is a function with one job.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use lb_common::{
    counters::DropReason,
    flow::{flow_hash, maglev_slot},
    maps::*,
};

use crate::{
    maps::{AFFINITY, BACKENDS, CONNTRACK, LB_CONFIG, MAGLEV, REVNAT, SERVICES, SRC_RANGES},
    packet::{Packet, Side, parse::Flow},
    stats,
};

const NS_PER_SEC: u64 = 1_000_000_000;

/// What the hook should do with the packet.
pub enum Verdict {
    /// Hand it on (possibly rewritten).
    Pass,
    /// Drop it; already counted.
    Drop,
}

/// A chosen backend for this packet.
struct Target {
    backend_id: u32,
    backend: BackendValue,
    new_flow: bool,
}

/// Client → frontend traffic: balance it if it is for a service, else leave it alone.
// Not inlined (nor are select_backend and the rewrites): the verifier allows 512 bytes of
// stack summed along a call chain, and LLVM reuses few stack slots within one BPF function,
// so sibling calls keep the deepest chain small.
#[inline(never)]
pub fn ingress<P: Packet>(pkt: &mut P, flow: &Flow) -> Verdict {
    let key = ServiceKey { addr: flow.dst, port_be: flow.dport_be, proto: flow.proto, _pad: 0 };
    // SAFETY: the value is copied out at once.
    let Some(svc) = (unsafe { SERVICES.get(&key) }).copied() else {
        return Verdict::Pass;
    };
    match select_backend(flow, &svc) {
        Ok(t) => {
            let len = pkt.len();
            if pkt.rewrite(flow, Side::Destination, &t.backend.addr, t.backend.port_be).is_err() {
                stats::count_drop(DropReason::RewriteFailed, svc.svc_id);
                return Verdict::Drop;
            }
            stats::count_forward(t.backend_id, svc.svc_id, len, t.new_flow);
            Verdict::Pass
        }
        Err(reason) => {
            stats::count_drop(reason, svc.svc_id);
            Verdict::Drop
        }
    }
}

/// Backend → client traffic of a balanced flow: make it come from the frontend again.
#[inline(never)]
pub fn reply<P: Packet>(pkt: &mut P, flow: &Flow) -> Verdict {
    let key = ct_key(flow);
    // SAFETY: copied out at once.
    let Some(orig) = (unsafe { REVNAT.get(&key) }).copied() else {
        return Verdict::Pass;
    };
    if pkt.rewrite(flow, Side::Source, &orig.addr, orig.port_be).is_err() {
        stats::count_drop(DropReason::RewriteFailed, orig.svc_id);
        return Verdict::Drop;
    }
    Verdict::Pass
}

#[inline(always)]
fn ct_key(flow: &Flow) -> CtKey {
    CtKey {
        src: flow.src,
        dst: flow.dst,
        sport_be: flow.sport_be,
        dport_be: flow.dport_be,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

#[inline(never)]
fn select_backend(flow: &Flow, svc: &ServiceValue) -> Result<Target, DropReason> {
    if svc.flags & SVC_F_SOURCE_RANGES != 0 && !source_allowed(flow, svc.svc_id) {
        return Err(DropReason::SourceRange);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let ct_key = ct_key(flow);
    if let Some(t) = conntrack_hit(flow, &ct_key, svc, now) {
        return Ok(t);
    }
    if svc.backend_count == 0 {
        return Err(DropReason::NoBackend);
    }
    let mut backend_id = BACKEND_ID_NONE;
    if svc.flags & SVC_F_AFFINITY != 0 {
        backend_id = affinity_hit(flow, svc, now);
    }
    if backend_id == BACKEND_ID_NONE {
        backend_id = maglev_pick(flow, svc)?;
    }
    let backend = usable_backend(backend_id, flow.family, true).ok_or(DropReason::BadBackend)?;

    let ct = CtValue { last_seen_ns: now, backend_id, svc_id: svc.svc_id };
    let _ = CONNTRACK.insert(&ct_key, &ct, 0);
    remember_reply(flow, &backend, svc.svc_id);
    if svc.flags & SVC_F_AFFINITY != 0 {
        let key = AffinityKey { client: flow.src, svc_id: svc.svc_id };
        let value = AffinityValue { last_seen_ns: now, backend_id, _pad: 0 };
        let _ = AFFINITY.insert(&key, &value, 0);
    }
    Ok(Target { backend_id, backend, new_flow: true })
}

#[inline(always)]
fn source_allowed(flow: &Flow, svc_id: u32) -> bool {
    let key = Key::new(SRC_RANGE_SVC_BITS + 128, SourceRangeKey { svc_id, addr: flow.src });
    SRC_RANGES.get(&key).is_some()
}

/// The flow's backend while it exists, even if it is no longer in the Maglev table
/// (terminating, or the backend set changed).
#[inline(always)]
fn conntrack_hit(flow: &Flow, key: &CtKey, svc: &ServiceValue, now: u64) -> Option<Target> {
    let entry = CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: the LRU value stays valid for this program run; fields are copied out.
    let (last_seen, backend_id, svc_id) =
        unsafe { ((*entry).last_seen_ns, (*entry).backend_id, (*entry).svc_id) };
    let age = now.saturating_sub(last_seen);
    if svc_id != svc.svc_id || age > ct_timeout_ns(flow.proto) {
        return None;
    }
    let backend = usable_backend(backend_id, flow.family, false)?;
    if age > NS_PER_SEC {
        // Refresh at most once a second: spares the shared cache line on every packet.
        // SAFETY: as above; a racing writer can only store another recent time.
        unsafe { (*entry).last_seen_ns = now };
        remember_reply(flow, &backend, svc.svc_id);
    }
    Some(Target { backend_id, backend, new_flow: false })
}

#[inline(always)]
fn ct_timeout_ns(proto: u8) -> u64 {
    let cfg = LB_CONFIG.get(0).copied().unwrap_or(DatapathConfig::DEFAULT);
    let secs = if proto == IPPROTO_TCP { cfg.ct_timeout_tcp_s } else { cfg.ct_timeout_udp_s };
    u64::from(secs) * NS_PER_SEC
}

#[inline(always)]
fn affinity_hit(flow: &Flow, svc: &ServiceValue, now: u64) -> u32 {
    let key = AffinityKey { client: flow.src, svc_id: svc.svc_id };
    // SAFETY: copied out at once.
    let Some(a) = (unsafe { AFFINITY.get(&key) }).copied() else {
        return BACKEND_ID_NONE;
    };
    let timeout = u64::from(svc.affinity_timeout_s) * NS_PER_SEC;
    if now.saturating_sub(a.last_seen_ns) > timeout {
        return BACKEND_ID_NONE;
    }
    // Only a backend that still takes new flows keeps the client.
    match usable_backend(a.backend_id, flow.family, true) {
        Some(_) => a.backend_id,
        None => BACKEND_ID_NONE,
    }
}

#[inline(always)]
fn maglev_pick(flow: &Flow, svc: &ServiceValue) -> Result<u32, DropReason> {
    let hash = flow_hash(&flow.src, &flow.dst, flow.sport_be, flow.dport_be, flow.proto);
    let slot = maglev_slot(hash, svc.maglev_m);
    let key = MaglevKey { table_id: svc.table_id, chunk: slot / MAGLEV_CHUNK };
    // SAFETY: read one u32 out of the chunk at once.
    let chunk = unsafe { MAGLEV.get(&key) }.ok_or(DropReason::NoMaglevTable)?;
    // The mask keeps the index provably inside the chunk for the verifier.
    let idx = (slot % MAGLEV_CHUNK) as usize & (MAGLEV_CHUNK as usize - 1);
    chunk.backend_ids.get(idx).map(|&id| u32::from(id)).ok_or(DropReason::NoMaglevTable)
}

#[inline(always)]
fn usable_backend(id: u32, family: u8, for_new_flow: bool) -> Option<BackendValue> {
    let b = BACKENDS.get(id).copied()?;
    let usable = if for_new_flow {
        b.state == BACKEND_STATE_ACTIVE
    } else {
        b.state != BACKEND_STATE_UNUSED
    };
    (usable && b.family == family).then_some(b)
}

/// Records how to reverse-NAT the backend's replies to this client.
#[inline(always)]
fn remember_reply(flow: &Flow, backend: &BackendValue, svc_id: u32) {
    let key = CtKey {
        src: backend.addr,
        dst: flow.src,
        sport_be: backend.port_be,
        dport_be: flow.sport_be,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let value = RevNatValue { addr: flow.dst, port_be: flow.dport_be, _pad: [0; 2], svc_id };
    let _ = REVNAT.insert(&key, &value, 0);
}
