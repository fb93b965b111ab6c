//! Allocation of what a manifest may leave out, as the API server would: ClusterIPs from
//! the service CIDRs, NodePorts from 30000–32767, LoadBalancer addresses from a pool, and
//! the datapath's service ids. Pure: the state is passed in and out, and the agent persists
//! it, so a restart allocates the same values.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use crate::net::Cidr;

pub const NODE_PORT_MIN: u16 = 30000;
pub const NODE_PORT_MAX: u16 = 32767;

/// Everything allocated so far, keyed by a stable name of what it is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocations {
    /// `ns/name/IPv4|IPv6` → cluster IP.
    pub cluster_ips: BTreeMap<String, IpAddr>,
    /// `ns/name/port-name-or-number/protocol` → node port.
    pub node_ports: BTreeMap<String, u16>,
    /// `ns/name/IPv4|IPv6` → LoadBalancer address.
    pub lb_ips: BTreeMap<String, IpAddr>,
    /// Program key → datapath service id.
    pub service_ids: BTreeMap<String, u32>,
}

/// One sync's view: what is taken (explicitly by manifests or by earlier allocations) and
/// which allocations were used, so the rest can be released afterwards.
#[derive(Debug, Default)]
pub struct Allocator {
    pub state: Allocations,
    taken_ips: BTreeSet<IpAddr>,
    taken_ports: BTreeSet<u16>,
    taken_ids: BTreeSet<u32>,
    used: BTreeSet<String>,
    /// Where the next free-address scan starts in each CIDR, so that allocating N
    /// addresses is not N scans from the start.
    cursors: std::collections::HashMap<Cidr, u128>,
    next_port: u16,
    next_id: u32,
}

impl Allocator {
    pub fn new(state: Allocations) -> Self {
        let taken_ips = state.cluster_ips.values().chain(state.lb_ips.values()).copied().collect();
        let taken_ports = state.node_ports.values().copied().collect();
        let taken_ids = state.service_ids.values().copied().collect();
        Self {
            state,
            taken_ips,
            taken_ports,
            taken_ids,
            used: BTreeSet::new(),
            cursors: Default::default(),
            next_port: NODE_PORT_MIN,
            next_id: 1,
        }
    }

    /// Marks an address a manifest asks for explicitly.
    pub fn reserve_ip(&mut self, ip: IpAddr) {
        self.taken_ips.insert(ip);
    }

    pub fn reserve_port(&mut self, port: u16) {
        self.taken_ports.insert(port);
    }

    /// The cluster IP of `key`, allocated from the first CIDR of its family if new.
    pub fn cluster_ip(&mut self, key: &str, cidrs: &[Cidr], v4: bool) -> Option<IpAddr> {
        self.ip(IpKind::Cluster, key, cidrs, v4)
    }

    /// The LoadBalancer address of `key`, allocated from the pool if new.
    pub fn lb_ip(&mut self, key: &str, pools: &[Cidr], v4: bool) -> Option<IpAddr> {
        self.ip(IpKind::LoadBalancer, key, pools, v4)
    }

    fn ip(&mut self, kind: IpKind, key: &str, cidrs: &[Cidr], v4: bool) -> Option<IpAddr> {
        let (prefix, map) = match kind {
            IpKind::Cluster => ("cip:", &mut self.state.cluster_ips),
            IpKind::LoadBalancer => ("lb:", &mut self.state.lb_ips),
        };
        self.used.insert(format!("{prefix}{key}"));
        if let Some(ip) = map.get(key) {
            return Some(*ip);
        }
        let ip = free_ip(cidrs, v4, &self.taken_ips, &mut self.cursors)?;
        self.taken_ips.insert(ip);
        map.insert(key.to_owned(), ip);
        Some(ip)
    }

    pub fn node_port(&mut self, key: &str) -> Option<u16> {
        self.used.insert(format!("np:{key}"));
        if let Some(p) = self.state.node_ports.get(key) {
            return Some(*p);
        }
        let start = self.next_port.clamp(NODE_PORT_MIN, NODE_PORT_MAX);
        let port = (start..=NODE_PORT_MAX)
            .chain(NODE_PORT_MIN..start)
            .find(|p| !self.taken_ports.contains(p))?;
        self.next_port = port.saturating_add(1);
        self.taken_ports.insert(port);
        self.state.node_ports.insert(key.to_owned(), port);
        Some(port)
    }

    /// A datapath service id (1..) for a program key.
    pub fn service_id(&mut self, key: &str, max: u32) -> Option<u32> {
        self.used.insert(format!("id:{key}"));
        if let Some(id) = self.state.service_ids.get(key) {
            return Some(*id);
        }
        let start = self.next_id.clamp(1, max.max(1));
        let id = (start..max).chain(1..start).find(|i| !self.taken_ids.contains(i))?;
        self.next_id = id + 1;
        self.taken_ids.insert(id);
        self.state.service_ids.insert(key.to_owned(), id);
        Some(id)
    }

    /// Keeps the allocations of `keep` (services that failed validation this round keep
    /// theirs) and of everything used this round; releases the rest.
    pub fn finish(mut self, keep: &dyn Fn(&str) -> bool) -> Allocations {
        let used = std::mem::take(&mut self.used);
        let live = |prefix: &str, k: &String| used.contains(&format!("{prefix}{k}")) || keep(k);
        self.state.cluster_ips.retain(|k, _| live("cip:", k));
        self.state.lb_ips.retain(|k, _| live("lb:", k));
        self.state.node_ports.retain(|k, _| live("np:", k));
        self.state.service_ids.retain(|k, _| live("id:", k));
        self.state
    }
}

/// Which table of addresses an allocation is in (they share one pool of taken addresses).
#[derive(Clone, Copy)]
enum IpKind {
    Cluster,
    LoadBalancer,
}

fn free_ip(
    cidrs: &[Cidr],
    v4: bool,
    taken: &BTreeSet<IpAddr>,
    cursors: &mut std::collections::HashMap<Cidr, u128>,
) -> Option<IpAddr> {
    for cidr in cidrs.iter().filter(|c| c.addr.is_ipv4() == v4) {
        let bits = if v4 { 32 } else { 128 };
        let size: u128 = if u32::from(cidr.prefix_len) >= bits {
            1
        } else {
            1u128.checked_shl(bits - u32::from(cidr.prefix_len)).unwrap_or(u128::MAX)
        };
        let base: u128 = match cidr.addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        // Skip the network address and keep the first few for addresses people pick by hand
        // (the API server keeps .1 for the `kubernetes` Service).
        let first = if size > 16 { 10 } else { 0 };
        let limit = size.min(first + 1_000_000);
        let start = cursors.get(cidr).copied().unwrap_or(first).clamp(first, limit);
        // From the cursor to the end, then from the start up to the cursor.
        for offset in (start..limit).chain(first..start) {
            let n = base + offset;
            let ip = if v4 { IpAddr::V4((n as u32).into()) } else { IpAddr::V6(n.into()) };
            if !taken.contains(&ip) {
                cursors.insert(*cidr, offset + 1);
                return Some(ip);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs() -> Vec<Cidr> {
        vec!["198.19.0.0/16".parse().unwrap(), "fd00:19::/108".parse().unwrap()]
    }

    #[test]
    fn allocations_are_stable_and_avoid_taken_values() {
        let mut a = Allocator::new(Allocations::default());
        a.reserve_ip("198.19.0.10".parse().unwrap());
        a.reserve_port(30000);
        let ip = a.cluster_ip("default/web/IPv4", &cidrs(), true).unwrap();
        assert_eq!(ip, "198.19.0.11".parse::<IpAddr>().unwrap());
        let v6 = a.cluster_ip("default/web/IPv6", &cidrs(), false).unwrap();
        assert_eq!(v6, "fd00:19::a".parse::<IpAddr>().unwrap());
        assert_eq!(a.node_port("default/web/http/TCP"), Some(30001));
        assert_eq!(a.service_id("default/web:http/TCP/v4/cluster", 100), Some(1));
        let state = a.finish(&|_| false);

        // A restart with the saved state gives the same values, in any order.
        let mut b = Allocator::new(state.clone());
        assert_eq!(b.node_port("default/web/http/TCP"), Some(30001));
        assert_eq!(b.cluster_ip("default/web/IPv4", &cidrs(), true), Some(ip));
        assert_eq!(b.service_id("default/web:http/TCP/v4/cluster", 100), Some(1));
        let state = b.finish(&|_| false);
        assert!(state.cluster_ips.contains_key("default/web/IPv4"));
        assert!(
            !state.cluster_ips.contains_key("default/web/IPv6"),
            "unused allocations are released"
        );
    }

    #[test]
    fn exhaustion_is_none() {
        let mut a = Allocator::new(Allocations::default());
        let tiny: Vec<Cidr> = vec!["198.19.0.0/31".parse().unwrap()];
        assert!(a.lb_ip("a", &tiny, true).is_some());
        assert!(a.lb_ip("b", &tiny, true).is_some());
        assert_eq!(a.lb_ip("c", &tiny, true), None);
        assert_eq!(a.lb_ip("d", &tiny, false), None, "no IPv6 pool");
    }
}
