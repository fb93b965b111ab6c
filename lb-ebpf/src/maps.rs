//! Every map of the datapath. Types, names and default sizes come from `lb_common::maps`;
//! sizes are overridden at load time. All maps are pinned by name so that flows and
//! programming outlive the agent.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use lb_common::{
    counters::{DropReason, TrafficCounters},
    maps::*,
};

#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(DEFAULT_MAX_FRONTENDS, 0);

#[map]
pub static BACKENDS: Array<BackendValue> = Array::pinned(MAX_BACKENDS, 0);

// No prealloc: tables are 4 KiB chunks and most capacity is never used.
#[map]
pub static MAGLEV: HashMap<MaglevKey, MaglevChunk> =
    HashMap::pinned(DEFAULT_MAX_MAGLEV_CHUNKS, BPF_F_NO_PREALLOC);

#[map]
pub static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(DEFAULT_CONNTRACK_SIZE, 0);

#[map]
pub static REVNAT: LruHashMap<CtKey, RevNatValue> = LruHashMap::pinned(DEFAULT_CONNTRACK_SIZE, 0);

#[map]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(DEFAULT_AFFINITY_SIZE, 0);

#[map]
pub static SRC_RANGES: LpmTrie<SourceRangeKey, u8> = LpmTrie::pinned(DEFAULT_SRC_RANGES_SIZE, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(MAX_BACKENDS, 0);

#[map]
pub static SERVICE_STATS: PerCpuArray<TrafficCounters> =
    PerCpuArray::pinned(DEFAULT_MAX_SERVICE_IDS, 0);

#[map]
pub static DROP_STATS: PerCpuArray<u64> = PerCpuArray::pinned(DropReason::COUNT, 0);

#[map]
pub static LB_CONFIG: Array<DatapathConfig> = Array::pinned(1, 0);
