//! Counters summed over CPUs.

use lb_common::counters::{DropReason, TrafficCounters};

use crate::datapath::Maps;

fn sum(values: &aya::maps::PerCpuValues<TrafficCounters>) -> TrafficCounters {
    let mut total = TrafficCounters { packets: 0, bytes: 0, new_flows: 0, drops: 0 };
    for v in values.iter() {
        total.add(v);
    }
    total
}

pub fn backend(maps: &Maps, backend_id: u32) -> Result<TrafficCounters, aya::maps::MapError> {
    maps.backend_stats.get(&backend_id, 0).map(|v| sum(&v))
}

pub fn service(maps: &Maps, svc_id: u32) -> Result<TrafficCounters, aya::maps::MapError> {
    maps.service_stats.get(&svc_id, 0).map(|v| sum(&v))
}

pub fn drops(maps: &Maps, reason: DropReason) -> Result<u64, aya::maps::MapError> {
    maps.drop_stats.get(&(reason as u32), 0).map(|v| v.iter().sum())
}
