//! End to end through the lab: real namespaces, veths, XDP and TC attached, real HTTP
//! servers answering with their names, real HTTP clients.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use lb_tests::{
    http::{Batch, KeepAlive, get_many},
    lab::{BACKEND_PORT, CLUSTER_IP_V4, CLUSTER_IP_V6, LB_IP_V4, Lab, NODE_V4},
    require_root,
};
use lb_userspace::{
    services::{Backend, Frontend, FrontendKind, Protocol, ServiceProgram},
    stats,
};

const REQUESTS: usize = 300;
const NODE_PORT: u16 = 30080;

fn tcp(addr: impl Into<IpAddr>, port: u16, kind: FrontendKind) -> Frontend {
    Frontend { addr: addr.into(), port, protocol: Protocol::Tcp, kind }
}

/// New flows the datapath counted per backend name.
fn new_flows(lab: &Lab) -> BTreeMap<String, u64> {
    lab.net
        .backends
        .iter()
        .map(|b| {
            // A pod is two backends to the datapath: its IPv4 and its IPv6 address.
            let flows = [IpAddr::V4(b.v4), IpAddr::V6(b.v6)]
                .into_iter()
                .filter_map(|addr| lab.services.backend_id(addr, BACKEND_PORT))
                .map(|id| stats::backend(lab.services.maps(), id).expect("counters").new_flows)
                .sum();
            (b.name.clone(), flows)
        })
        .collect()
}

fn served(lab: &Lab) -> BTreeMap<String, u64> {
    lab.net.backends.iter().map(|b| (b.name.clone(), b.http.served())).collect()
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).collect()
}

/// Sends REQUESTS requests and checks what a user would: all answered, spread over every
/// backend, and the datapath's per-backend counters equal what the backends served.
fn check_balanced(lab: &Lab, what: &str, send: impl FnOnce() -> Batch) {
    let (flows_before, served_before) = (new_flows(lab), served(lab));
    let batch = send();
    assert!(
        batch.errors.is_empty(),
        "{what}: {} failed requests, first: {:?}",
        batch.errors.len(),
        batch.errors.first()
    );
    assert_eq!(batch.ok(), REQUESTS as u64, "{what}: every request answered");
    for b in &lab.net.backends {
        let got = batch.by_backend.get(&b.name).copied().unwrap_or(0);
        assert!(
            got * 100 >= REQUESTS as u64 * 15,
            "{what}: {} served {got} of {REQUESTS} (< 15%): {:?}",
            b.name,
            batch.by_backend
        );
    }
    let flows = delta(&new_flows(lab), &flows_before);
    let served = delta(&served(lab), &served_before);
    assert_eq!(
        flows, served,
        "{what}: datapath per-backend new flows vs requests the backends served"
    );
    assert_eq!(served, batch.by_backend, "{what}: backends served exactly what the client saw");
    eprintln!("{what}: {:?}", batch.by_backend);
}

#[test]
fn cluster_ip_node_port_and_load_balancer_balance_real_http() {
    require_root!();
    let mut lab = Lab::new(3);
    let backends: Vec<Backend> =
        lab.net.backends.iter().map(|b| Backend::active(IpAddr::V4(b.v4), BACKEND_PORT)).collect();
    let svc = ServiceProgram::new(
        1,
        vec![
            tcp(CLUSTER_IP_V4, 80, FrontendKind::ClusterIp),
            tcp(NODE_V4, NODE_PORT, FrontendKind::NodePort),
            tcp(LB_IP_V4, 80, FrontendKind::LoadBalancer),
        ],
        backends,
    );
    lab.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));

    check_balanced(&lab, "ClusterIP from a pod (TC)", || {
        get_many(&lab.net.pod, &format!("http://{CLUSTER_IP_V4}/"), REQUESTS)
    });
    check_balanced(&lab, "NodePort from the client (XDP)", || {
        get_many(&lab.net.client, &format!("http://{NODE_V4}:{NODE_PORT}/"), REQUESTS)
    });
    check_balanced(&lab, "LoadBalancer from the client (XDP)", || {
        get_many(&lab.net.client, &format!("http://{LB_IP_V4}/"), REQUESTS)
    });

    // The dual-stack half: an IPv6 ClusterIP over the same pods' IPv6 addresses.
    let v6 = ServiceProgram::new(
        2,
        vec![tcp(CLUSTER_IP_V6, 80, FrontendKind::ClusterIp)],
        lab.net.backends.iter().map(|b| Backend::active(IpAddr::V6(b.v6), BACKEND_PORT)).collect(),
    );
    lab.services.apply(&v6).unwrap_or_else(|e| panic!("{e}"));
    check_balanced(&lab, "IPv6 ClusterIP from a pod (TC)", || {
        get_many(&lab.net.pod, &format!("http://[{CLUSTER_IP_V6}]/"), REQUESTS)
    });
    check_balanced(&lab, "IPv4 LoadBalancer again, after IPv6 was added", || {
        get_many(&lab.net.client, &format!("http://{LB_IP_V4}/"), REQUESTS)
    });
}

#[test]
fn long_lived_connection_survives_backend_churn() {
    require_root!();
    let mut lab = Lab::new(5);
    let all: Vec<Backend> =
        lab.net.backends.iter().map(|b| Backend::active(IpAddr::V4(b.v4), BACKEND_PORT)).collect();
    let mut svc = ServiceProgram::new(
        1,
        vec![tcp(LB_IP_V4, 80, FrontendKind::LoadBalancer)],
        all[..3].to_vec(),
    );
    lab.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));

    let mut conn = KeepAlive::connect(&lab.net.client, (LB_IP_V4, 80).into())
        .unwrap_or_else(|e| panic!("connecting to the LoadBalancer: {e}"));
    let mine = conn.get().unwrap_or_else(|e| panic!("first request: {e}"));
    let mine_idx =
        lab.net.backends.iter().position(|b| b.name == mine).expect("a backend answered");

    // Add the two spare backends one by one, then remove every other backend but ours.
    let mut steps: Vec<Vec<Backend>> = Vec::new();
    let mut current = svc.backends.clone();
    for extra in &all[3..] {
        current.push(extra.clone());
        steps.push(current.clone());
    }
    for (i, b) in all.iter().enumerate() {
        if i != mine_idx {
            current.retain(|c| c != b);
            steps.push(current.clone());
        }
    }
    for (step, backends) in steps.into_iter().enumerate() {
        svc.backends = backends;
        lab.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));
        for n in 0..5 {
            let got = conn.get().unwrap_or_else(|e| {
                panic!("step {step}, request {n}: long-lived connection broke: {e}")
            });
            assert_eq!(got, mine, "step {step}: long-lived connection moved to another backend");
        }
        // New connections follow the new set.
        let batch = get_many(&lab.net.client, &format!("http://{LB_IP_V4}/"), 20);
        assert!(batch.errors.is_empty(), "step {step}: new connections failed: {:?}", batch.errors);
        for name in batch.by_backend.keys() {
            let i = lab.net.backends.iter().position(|b| &b.name == name).expect("known backend");
            assert!(svc.backends.contains(&all[i]), "step {step}: new flow reached removed {name}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
