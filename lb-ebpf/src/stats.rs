//! Per-CPU counters: no atomics needed, userspace sums over CPUs.

use lb_common::counters::DropReason;

use crate::maps::{BACKEND_STATS, DROP_STATS, SERVICE_STATS};

#[inline(always)]
pub fn count_forward(backend_id: u32, svc_id: u32, bytes: u32, new_flow: bool) {
    let new = u64::from(new_flow);
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend_id) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += u64::from(bytes);
        c.new_flows += new;
    }
    if let Some(c) = SERVICE_STATS.get_ptr_mut(svc_id) {
        // SAFETY: as above.
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += u64::from(bytes);
        c.new_flows += new;
    }
}

#[inline(always)]
pub fn count_drop(reason: DropReason, svc_id: u32) {
    if let Some(c) = DROP_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot.
        unsafe { *c += 1 };
    }
    if let Some(c) = SERVICE_STATS.get_ptr_mut(svc_id) {
        // SAFETY: per-CPU slot.
        unsafe { (*c).drops += 1 };
    }
}
