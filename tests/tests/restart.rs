//! A new process adopting pinned maps keeps backend ids (which conntrack refers to) and
//! flows, and cleans up only what it no longer wants.

use std::net::SocketAddr;

use lb_tests::{
    fixture::PinDir,
    packets::{PacketSpec, parse_verified},
    require_root,
};
use lb_userspace::{
    datapath::{Datapath, LoadOptions},
    services::{Backend, Frontend, FrontendKind, Protocol, ServiceMaps, ServiceProgram},
};

const XDP_PASS: u32 = 2;

fn program() -> ServiceProgram {
    let fe = Frontend {
        addr: "198.19.0.10".parse().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
        kind: FrontendKind::ClusterIp,
    };
    let backends = ["198.18.1.2", "198.18.2.2", "198.18.3.2"]
        .iter()
        .map(|a| Backend::active(a.parse().unwrap(), 8080))
        .collect();
    let mut p = ServiceProgram::new(7, vec![fe], backends);
    p.maglev_m = 1021;
    p
}

fn run_syn(dp: &mut Datapath, sport: u16) -> SocketAddr {
    let pkt = PacketSpec::tcp_syn(
        format!("198.18.0.2:{sport}").parse().unwrap(),
        "198.19.0.10:80".parse().unwrap(),
    )
    .build();
    let r = lb_tests::fixture::run(dp.xdp_program().unwrap(), &pkt);
    assert_eq!(r.verdict, XDP_PASS);
    parse_verified(&r.packet).unwrap().dst
}

#[test]
fn adopting_pinned_maps_keeps_ids_and_flows() {
    require_root!();
    let pins = PinDir::unique();
    let p = program();
    let (ids, first_backend) = {
        let (mut dp, maps) = Datapath::load(&LoadOptions::new(&pins.0)).unwrap();
        let mut svc = ServiceMaps::new(maps);
        svc.apply(&p).unwrap();
        let ids: Vec<Option<u32>> =
            p.backends.iter().map(|b| svc.backend_id(b.addr, b.port)).collect();
        (ids, run_syn(&mut dp, 40000))
    };

    // "Restart": a new process loads the same object over the same pins.
    let (mut dp, maps) = Datapath::load(&LoadOptions::new(&pins.0)).unwrap();
    let mut svc = ServiceMaps::adopt(maps).unwrap();
    assert_eq!(svc.service_ids().collect::<Vec<_>>(), [7]);
    // Before anything is re-applied, the adopted maps already serve the flow.
    assert_eq!(run_syn(&mut dp, 40000), first_backend, "conntrack survived");
    svc.apply(&p).unwrap();
    let again: Vec<Option<u32>> =
        p.backends.iter().map(|b| svc.backend_id(b.addr, b.port)).collect();
    assert_eq!(again, ids, "backend ids are kept across the restart");
    svc.retain(&[7].into_iter().collect()).unwrap();
    assert_eq!(run_syn(&mut dp, 40000), first_backend, "flow kept after re-apply and clean-up");
    std::thread::sleep(lb_userspace::services::TABLE_GRACE);
    svc.reap().unwrap();
    let table_chunks = svc.maps().maglev.keys().count();
    assert_eq!(table_chunks, 1, "the old table was deleted, the new one stays (M=1021: one chunk)");

    // What the new process does not want is removed.
    svc.retain(&Default::default()).unwrap();
    std::thread::sleep(lb_userspace::services::TABLE_GRACE);
    svc.reap().unwrap();
    let r = lb_tests::fixture::run(
        dp.xdp_program().unwrap(),
        &PacketSpec::tcp_syn(
            "198.18.0.2:40001".parse().unwrap(),
            "198.19.0.10:80".parse().unwrap(),
        )
        .build(),
    );
    assert_eq!(
        parse_verified(&r.packet).unwrap().dst,
        "198.19.0.10:80".parse().unwrap(),
        "service removed: passes untouched"
    );
    assert_eq!(svc.maps().maglev.keys().count(), 0);
}
