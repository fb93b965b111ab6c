//! The datapath through BPF_PROG_TEST_RUN: real programs in the kernel, packets built with
//! etherparse, every rewritten field asserted and every checksum recomputed from scratch.

use std::net::{IpAddr, SocketAddr};

use lb_common::{
    addr::to_map,
    counters::DropReason,
    flow::{flow_hash, maglev_slot},
    maglev::{self, MaglevBackend},
    maps::{PROG_TC_EGRESS, PROG_TC_INGRESS},
};
use lb_tests::{
    fixture::TestDatapath,
    packets::{L4, PacketSpec, parse_verified},
    require_root,
};
use lb_userspace::{
    net::Cidr,
    services::{
        Backend, BackendState, Frontend, FrontendKind, Protocol, ServiceProgram, maglev_identity,
    },
    stats,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn backends(addrs: &[&str]) -> Vec<Backend> {
    addrs
        .iter()
        .map(|a| {
            let a = sa(a);
            Backend::active(a.ip(), a.port())
        })
        .collect()
}

const V4_BACKENDS: [&str; 3] = ["198.18.1.2:8080", "198.18.2.2:8080", "198.18.3.2:8080"];
const V6_BACKENDS: [&str; 3] =
    ["[fd00:18:0:1::2]:8080", "[fd00:18:0:2::2]:8080", "[fd00:18:0:3::2]:8080"];

fn frontend(addr: &str, protocol: Protocol, kind: FrontendKind) -> Frontend {
    let a = sa(addr);
    Frontend { addr: a.ip(), port: a.port(), protocol, kind }
}

fn service(id: u32, fe: Vec<Frontend>, be: Vec<Backend>) -> ServiceProgram {
    ServiceProgram::new(id, fe, be)
}

/// The backend lb-common's Maglev and flow hash predict for this packet: what the
/// datapath must have chosen for a new flow.
fn predicted(t: &TestDatapath, svc: &ServiceProgram, p: &PacketSpec) -> SocketAddr {
    let mb: Vec<MaglevBackend> = svc
        .backends
        .iter()
        .filter(|b| b.state == BackendState::Active)
        .map(|b| MaglevBackend {
            id: t.services.backend_id(b.addr, b.port).expect("backend has an id"),
            identity: maglev_identity(b.addr, b.port),
            weight: b.weight,
        })
        .collect();
    let table = maglev::build(&mb, svc.maglev_m).expect("maglev");
    let proto = match p.l4 {
        L4::Tcp { .. } => 6,
        L4::Udp => 17,
    };
    let h = flow_hash(
        &to_map(p.src.ip()),
        &to_map(p.dst.ip()),
        p.src.port().to_be(),
        p.dst.port().to_be(),
        proto,
    );
    let id = table[maglev_slot(h, svc.maglev_m) as usize];
    let b = svc
        .backends
        .iter()
        .find(|b| t.services.backend_id(b.addr, b.port) == Some(id))
        .expect("slot names a backend of the service");
    SocketAddr::new(b.addr, b.port)
}

/// Runs XDP, expects PASS with only the destination rewritten to a backend; returns it.
fn expect_dnat_xdp(t: &mut TestDatapath, p: &PacketSpec) -> SocketAddr {
    parse_verified(&p.build()).unwrap_or_else(|e| panic!("test packet itself is broken: {e}"));
    let r = t.run_xdp(&p.build());
    assert_eq!(r.verdict, XDP_PASS, "service packet {} -> {} not passed on", p.src, p.dst);
    expect_dnat(p, &r.packet)
}

fn expect_dnat(p: &PacketSpec, out: &[u8]) -> SocketAddr {
    let seen =
        parse_verified(out).unwrap_or_else(|e| panic!("DNATed packet {} -> {}: {e}", p.src, p.dst));
    assert_eq!(seen.src, p.src, "source must not change on DNAT");
    assert_ne!(seen.dst, p.dst, "dst {} not DNATed to a backend", p.dst);
    assert_eq!(seen.l4, p.l4, "TCP flags / protocol changed");
    assert_eq!(seen.vlan, p.vlan, "VLAN tag changed");
    assert_eq!(seen.ttl, 64, "TTL changed");
    assert_eq!(seen.payload, p.payload, "payload changed");
    assert_eq!(out.len(), p.build().len(), "packet length changed");
    seen.dst
}

fn expect_untouched_xdp(t: &mut TestDatapath, bytes: &[u8], what: &str) {
    let r = t.run_xdp(bytes);
    assert_eq!(r.verdict, XDP_PASS, "{what}: must pass");
    assert_eq!(r.packet, bytes, "{what}: must pass untouched");
}

fn cluster_ip_v4(t: &mut TestDatapath) -> ServiceProgram {
    let svc = service(
        1,
        vec![frontend("198.19.0.10:80", Protocol::Tcp, FrontendKind::ClusterIp)],
        backends(&V4_BACKENDS),
    );
    t.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));
    svc
}

#[test]
fn cluster_ip_tcp_syn_is_dnated_to_the_maglev_backend() {
    require_root!();
    let mut t = TestDatapath::load();
    let svc = cluster_ip_v4(&mut t);
    for sport in [40000, 40001, 40002, 51234] {
        let p = PacketSpec::tcp_syn(sa(&format!("198.18.0.2:{sport}")), sa("198.19.0.10:80"));
        let dst = expect_dnat_xdp(&mut t, &p);
        assert_eq!(dst, predicted(&t, &svc, &p), "backend differs from lb-common's Maglev choice");
    }
    let total_new: u64 = V4_BACKENDS
        .iter()
        .map(|b| {
            let b = sa(b);
            let id = t.services.backend_id(b.ip(), b.port()).expect("id");
            stats::backend(t.services.maps(), id).expect("counters").new_flows
        })
        .sum();
    assert_eq!(total_new, 4, "each SYN is one new flow");
    let svc_stats = stats::service(t.services.maps(), 1).expect("service counters");
    assert_eq!((svc_stats.packets, svc_stats.new_flows), (4, 4));
}

#[test]
fn next_packet_of_a_flow_hits_conntrack_even_after_backend_changes() {
    require_root!();
    let mut t = TestDatapath::load();
    let mut svc = cluster_ip_v4(&mut t);
    let client = sa("198.18.0.2:40000");
    let first = expect_dnat_xdp(&mut t, &PacketSpec::tcp_syn(client, sa("198.19.0.10:80")));

    // The chosen backend starts terminating and two new backends join: Maglev would now
    // send this flow elsewhere, but conntrack keeps it.
    for b in &mut svc.backends {
        if SocketAddr::new(b.addr, b.port) == first {
            b.state = BackendState::Terminating;
        }
    }
    svc.backends.extend(backends(&["198.18.4.2:8080", "198.18.5.2:8080"]));
    t.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));
    let ack = PacketSpec::tcp_ack(client, sa("198.19.0.10:80"));
    assert_eq!(expect_dnat_xdp(&mut t, &ack), first, "established flow moved off its backend");
    let id = t.services.backend_id(first.ip(), first.port()).expect("id");
    let c = stats::backend(t.services.maps(), id).expect("counters");
    assert_eq!((c.packets, c.new_flows), (2, 1), "second packet is a conntrack hit");

    // New flows never go to the terminating backend.
    for sport in 41000..41050 {
        let p = PacketSpec::tcp_syn(sa(&format!("198.18.0.2:{sport}")), sa("198.19.0.10:80"));
        assert_ne!(expect_dnat_xdp(&mut t, &p), first, "new flow sent to a terminating backend");
    }

    // Once the backend is gone, the flow is rebalanced instead of black-holed.
    svc.backends.retain(|b| SocketAddr::new(b.addr, b.port) != first);
    t.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));
    let moved = expect_dnat_xdp(&mut t, &ack);
    assert_ne!(moved, first, "flow still sent to a removed backend");
    assert_eq!(moved, predicted(&t, &svc, &ack));
}

#[test]
fn udp_is_dnated_with_valid_or_absent_checksum() {
    require_root!();
    let mut t = TestDatapath::load();
    let svc = service(
        2,
        vec![frontend("198.19.0.53:53", Protocol::Udp, FrontendKind::ClusterIp)],
        backends(&["198.18.1.2:5353", "198.18.2.2:5353"]),
    );
    t.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));
    let p = PacketSpec::udp(sa("198.18.0.2:33333"), sa("198.19.0.53:53"));
    let dst = expect_dnat_xdp(&mut t, &p);
    assert_eq!(dst, predicted(&t, &svc, &p));
    assert_eq!(dst.port(), 5353);

    let mut no_csum = PacketSpec::udp(sa("198.18.0.2:33334"), sa("198.19.0.53:53"));
    no_csum.udp_no_checksum = true;
    let r = t.run_xdp(&no_csum.build());
    assert_eq!(r.verdict, XDP_PASS);
    let seen = parse_verified(&r.packet).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seen.l4_checksum, 0, "an absent UDP checksum must stay absent");
    assert_eq!(seen.dst, predicted(&t, &svc, &no_csum));

    // A TCP packet to the UDP service's address and port is not the service's.
    let tcp = PacketSpec::tcp_syn(sa("198.18.0.2:33335"), sa("198.19.0.53:53")).build();
    expect_untouched_xdp(&mut t, &tcp, "TCP to a UDP-only service port");
}

#[test]
fn ipv6_tcp_and_udp_are_dnated() {
    require_root!();
    let mut t = TestDatapath::load();
    let tcp_svc = service(
        3,
        vec![frontend("[fd00:19::10]:80", Protocol::Tcp, FrontendKind::ClusterIp)],
        backends(&V6_BACKENDS),
    );
    t.services.apply(&tcp_svc).unwrap_or_else(|e| panic!("{e}"));
    let p = PacketSpec::tcp_syn(sa("[fd00:18::2]:40000"), sa("[fd00:19::10]:80"));
    let dst = expect_dnat_xdp(&mut t, &p);
    assert_eq!(dst, predicted(&t, &tcp_svc, &p));

    let udp_svc = service(
        4,
        vec![frontend("[fd00:19::10]:53", Protocol::Udp, FrontendKind::ClusterIp)],
        backends(&["[fd00:18:0:1::2]:5353"]),
    );
    t.services.apply(&udp_svc).unwrap_or_else(|e| panic!("{e}"));
    let p = PacketSpec::udp(sa("[fd00:18::2]:40000"), sa("[fd00:19::10]:53"));
    assert_eq!(expect_dnat_xdp(&mut t, &p), sa("[fd00:18:0:1::2]:5353"));
}

#[test]
fn node_port_on_a_node_address_is_dnated() {
    require_root!();
    let mut t = TestDatapath::load();
    let svc = service(
        5,
        vec![
            frontend("198.19.0.11:80", Protocol::Tcp, FrontendKind::ClusterIp),
            frontend("198.18.0.1:30080", Protocol::Tcp, FrontendKind::NodePort),
            frontend("[fd00:18::1]:30080", Protocol::Tcp, FrontendKind::NodePort),
        ],
        backends(&V4_BACKENDS),
    );
    // Mixed families in one service program are refused: dual-stack is one program per family.
    let err = t.services.apply(&svc).expect_err("IPv6 NodePort with IPv4 backends");
    assert!(err.to_string().contains("fd00:18::1"), "error names the frontend: {err}");

    let svc = service(5, svc.frontends[..2].to_vec(), svc.backends.clone());
    t.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));
    let p = PacketSpec::tcp_syn(sa("198.18.0.2:40000"), sa("198.18.0.1:30080"));
    let dst = expect_dnat_xdp(&mut t, &p);
    assert_eq!(dst, predicted(&t, &svc, &p));
    // The node's other ports are not the service's.
    let ssh = PacketSpec::tcp_syn(sa("198.18.0.2:40000"), sa("198.18.0.1:22")).build();
    expect_untouched_xdp(&mut t, &ssh, "node traffic to a non-NodePort port");
}

#[test]
fn load_balancer_source_ranges_admit_and_deny() {
    require_root!();
    let mut t = TestDatapath::load();
    let mut svc = service(
        6,
        vec![frontend("198.19.255.10:80", Protocol::Tcp, FrontendKind::LoadBalancer)],
        backends(&V4_BACKENDS),
    );
    svc.source_ranges = vec!["198.18.0.0/24".parse::<Cidr>().expect("cidr")];
    t.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));

    let allowed = PacketSpec::tcp_syn(sa("198.18.0.2:40000"), sa("198.19.255.10:80"));
    assert_eq!(expect_dnat_xdp(&mut t, &allowed), predicted(&t, &svc, &allowed));

    let denied = PacketSpec::tcp_syn(sa("198.18.7.7:40000"), sa("198.19.255.10:80"));
    let r = t.run_xdp(&denied.build());
    assert_eq!(r.verdict, XDP_DROP, "source outside loadBalancerSourceRanges must be dropped");
    assert_eq!(stats::drops(t.services.maps(), DropReason::SourceRange).expect("drops"), 1);
    assert_eq!(stats::service(t.services.maps(), 6).expect("svc").drops, 1);

    // Ranges are replaced, not accumulated.
    svc.source_ranges = vec!["198.18.7.0/24".parse::<Cidr>().expect("cidr")];
    t.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));
    let r = t.run_xdp(&PacketSpec::tcp_syn(sa("198.18.0.2:40001"), sa("198.19.255.10:80")).build());
    assert_eq!(r.verdict, XDP_DROP, "a removed range must stop admitting");
    expect_dnat_xdp(&mut t, &PacketSpec::tcp_syn(sa("198.18.7.7:40001"), sa("198.19.255.10:80")));
}

#[test]
fn service_without_ready_endpoints_drops_and_counts() {
    require_root!();
    let mut t = TestDatapath::load();
    let svc = service(
        7,
        vec![frontend("198.19.0.12:80", Protocol::Tcp, FrontendKind::ClusterIp)],
        vec![],
    );
    t.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));
    let r = t.run_xdp(&PacketSpec::tcp_syn(sa("198.18.0.2:40000"), sa("198.19.0.12:80")).build());
    assert_eq!(r.verdict, XDP_DROP);
    assert_eq!(stats::drops(t.services.maps(), DropReason::NoBackend).expect("drops"), 1);

    // Terminating-only: no new flows either.
    let mut only_terminating = backends(&["198.18.1.2:8080"]);
    only_terminating[0].state = BackendState::Terminating;
    let svc = service(7, svc.frontends.clone(), only_terminating);
    t.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));
    let r = t.run_xdp(&PacketSpec::tcp_syn(sa("198.18.0.2:40001"), sa("198.19.0.12:80")).build());
    assert_eq!(r.verdict, XDP_DROP);
    assert_eq!(stats::drops(t.services.maps(), DropReason::NoBackend).expect("drops"), 2);
}

#[test]
fn traffic_that_is_not_for_a_service_passes_untouched() {
    require_root!();
    let mut t = TestDatapath::load();
    cluster_ip_v4(&mut t);
    let cases = [
        (
            "other destination",
            PacketSpec::tcp_syn(sa("198.18.0.2:40000"), sa("198.18.2.2:8080")).build(),
        ),
        (
            "service address, other port",
            PacketSpec::tcp_syn(sa("198.18.0.2:40000"), sa("198.19.0.10:81")).build(),
        ),
        (
            "UDP to a TCP service",
            PacketSpec::udp(sa("198.18.0.2:40000"), sa("198.19.0.10:80")).build(),
        ),
        ("IPv6 elsewhere", PacketSpec::tcp_syn(sa("[fd00:18::2]:1"), sa("[fd00:18::3]:2")).build()),
    ];
    for (what, bytes) in cases {
        expect_untouched_xdp(&mut t, &bytes, what);
    }
    // ARP (who-has 198.18.0.1), built with etherparse's ARP types.
    let arp = arp_request();
    expect_untouched_xdp(&mut t, &arp, "ARP");
    // ICMP echo to the service address.
    let icmp = icmp_echo_to("198.19.0.10");
    expect_untouched_xdp(&mut t, &icmp, "ICMP to a service address");
    for reason in DropReason::ALL {
        assert_eq!(stats::drops(t.services.maps(), reason).expect("drops"), 0, "no drop counted");
    }
}

#[test]
fn truncated_malformed_and_fragmented_packets_pass_untouched() {
    require_root!();
    let mut t = TestDatapath::load();
    cluster_ip_v4(&mut t);
    let good = PacketSpec::tcp_syn(sa("198.18.0.2:40000"), sa("198.19.0.10:80")).build();
    let l4 = 14 + 20;

    // (BPF_PROG_TEST_RUN needs at least an Ethernet header.)
    for cut in [14, 14 + 10, l4 + 2, l4 + 19] {
        expect_untouched_xdp(&mut t, &good[..cut], &format!("truncated to {cut} bytes"));
    }
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44; // version 4, IHL 4 (16 bytes): invalid
    expect_untouched_xdp(&mut t, &bad_ihl, "IPv4 IHL < 5");
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    expect_untouched_xdp(&mut t, &bad_version, "IP version 6 in an IPv4 frame");
    let mut short_total = good.clone();
    short_total[16..18].copy_from_slice(&30u16.to_be_bytes()); // total length < IHL + TCP
    expect_untouched_xdp(&mut t, &short_total, "IPv4 total length shorter than headers");
    let mut bad_doff = good.clone();
    bad_doff[l4 + 12] = 0x40; // data offset 4 words
    expect_untouched_xdp(&mut t, &bad_doff, "TCP data offset < 5");
    let mut later_fragment = good.clone();
    later_fragment[20..22].copy_from_slice(&0x00b9u16.to_be_bytes()); // offset 185*8
    expect_untouched_xdp(&mut t, &later_fragment, "non-first fragment");
    let mut first_fragment = good.clone();
    first_fragment[20..22].copy_from_slice(&0x2000u16.to_be_bytes()); // MF
    expect_untouched_xdp(
        &mut t,
        &first_fragment,
        "first fragment (its followers could not be balanced)",
    );

    // IPv6 with a hop-by-hop extension header before TCP.
    let v6 = PacketSpec::tcp_syn(sa("[fd00:18::2]:40000"), sa("[fd00:19::10]:80")).build();
    let mut with_ext = v6[..14 + 40].to_vec();
    with_ext[14 + 6] = 0; // next header: hop-by-hop
    with_ext.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // next=TCP, len 0, PadN
    with_ext.extend_from_slice(&v6[14 + 40..]);
    let plen = u16::from_be_bytes([with_ext[18], with_ext[19]]) + 8;
    with_ext[18..20].copy_from_slice(&plen.to_be_bytes());
    expect_untouched_xdp(&mut t, &with_ext, "IPv6 with extension headers");
}

#[test]
fn ipv4_options_and_vlan_tags_are_parsed() {
    require_root!();
    let mut t = TestDatapath::load();
    let svc = cluster_ip_v4(&mut t);
    let mut opts = PacketSpec::tcp_syn(sa("198.18.0.2:40000"), sa("198.19.0.10:80"));
    opts.ipv4_options = vec![1, 1, 1, 1, 1, 1, 1, 0]; // NOPs, end: IHL 7
    assert_eq!(expect_dnat_xdp(&mut t, &opts), predicted(&t, &svc, &opts));
    let mut tagged = PacketSpec::tcp_syn(sa("198.18.0.2:40001"), sa("198.19.0.10:80"));
    tagged.vlan = Some(100);
    assert_eq!(expect_dnat_xdp(&mut t, &tagged), predicted(&t, &svc, &tagged));
}

#[test]
fn replies_are_reverse_nated_at_tc_egress() {
    require_root!();
    let mut t = TestDatapath::load();
    cluster_ip_v4(&mut t);
    let node_port = service(
        12,
        vec![frontend("198.18.0.1:30080", Protocol::Tcp, FrontendKind::NodePort)],
        backends(&V4_BACKENDS),
    );
    t.services.apply(&node_port).unwrap_or_else(|e| panic!("{e}"));
    for (client, vip) in
        [("198.18.0.2:40000", "198.19.0.10:80"), ("198.18.0.2:40001", "198.18.0.1:30080")]
    {
        let (client, vip) = (sa(client), sa(vip));
        let backend = expect_dnat_xdp(&mut t, &PacketSpec::tcp_syn(client, vip));
        let reply = PacketSpec::new(backend, client, L4::Tcp { syn: true, ack: true });
        let r = t.run_tc(PROG_TC_EGRESS, &reply.build());
        assert_eq!(r.verdict, TC_ACT_OK);
        let seen = parse_verified(&r.packet).unwrap_or_else(|e| panic!("reverse-NATed reply: {e}"));
        assert_eq!(seen.src, vip, "reply source not rewritten to the service address");
        assert_eq!(seen.dst, client, "reply destination must stay the client");
        assert_eq!(seen.payload, reply.payload);

        // A reply for a flow the balancer never saw is left alone.
        let stranger =
            PacketSpec::new(backend, sa("198.18.0.2:40999"), L4::Tcp { syn: true, ack: true })
                .build();
        let r = t.run_tc(PROG_TC_EGRESS, &stranger);
        assert_eq!((r.verdict, &r.packet), (TC_ACT_OK, &stranger));
    }

    let v6 = service(
        8,
        vec![frontend("[fd00:19::10]:80", Protocol::Tcp, FrontendKind::ClusterIp)],
        backends(&V6_BACKENDS),
    );
    t.services.apply(&v6).unwrap_or_else(|e| panic!("{e}"));
    let (client, vip) = (sa("[fd00:18::2]:40000"), sa("[fd00:19::10]:80"));
    let backend = expect_dnat_xdp(&mut t, &PacketSpec::tcp_syn(client, vip));
    let reply = PacketSpec::udp(backend, client);
    let r = t.run_tc(PROG_TC_EGRESS, &reply.build());
    assert_eq!(r.packet, reply.build(), "UDP reply to a TCP flow is not that flow's");
    let reply = PacketSpec::new(backend, client, L4::Tcp { syn: true, ack: true });
    let r = t.run_tc(PROG_TC_EGRESS, &reply.build());
    let seen = parse_verified(&r.packet).unwrap_or_else(|e| panic!("IPv6 reply: {e}"));
    assert_eq!((seen.src, seen.dst), (vip, client));
}

#[test]
fn tc_ingress_balances_pod_traffic_like_xdp() {
    require_root!();
    let mut t = TestDatapath::load();
    let svc = cluster_ip_v4(&mut t);
    for sport in [40000, 40001] {
        let p = PacketSpec::tcp_syn(sa(&format!("198.18.100.2:{sport}")), sa("198.19.0.10:80"));
        let r = t.run_tc(PROG_TC_INGRESS, &p.build());
        assert_eq!(r.verdict, TC_ACT_OK);
        assert_eq!(expect_dnat(&p, &r.packet), predicted(&t, &svc, &p));
    }
    let udp_svc = service(
        9,
        vec![frontend("[fd00:19::53]:53", Protocol::Udp, FrontendKind::ClusterIp)],
        backends(&["[fd00:18:0:1::2]:5353"]),
    );
    t.services.apply(&udp_svc).unwrap_or_else(|e| panic!("{e}"));
    let p = PacketSpec::udp(sa("[fd00:18:0:100::2]:5000"), sa("[fd00:19::53]:53"));
    let r = t.run_tc(PROG_TC_INGRESS, &p.build());
    assert_eq!(r.verdict, TC_ACT_OK);
    assert_eq!(expect_dnat(&p, &r.packet), sa("[fd00:18:0:1::2]:5353"));

    let none = service(
        10,
        vec![frontend("198.19.0.13:80", Protocol::Tcp, FrontendKind::ClusterIp)],
        vec![],
    );
    t.services.apply(&none).unwrap_or_else(|e| panic!("{e}"));
    let r = t.run_tc(
        PROG_TC_INGRESS,
        &PacketSpec::tcp_syn(sa("198.18.100.2:1"), sa("198.19.0.13:80")).build(),
    );
    assert_eq!(r.verdict, TC_ACT_SHOT, "no endpoints: dropped at TC too");
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_backend() {
    require_root!();
    let mut t = TestDatapath::load();
    let mut svc = service(
        11,
        vec![frontend("198.19.0.20:80", Protocol::Tcp, FrontendKind::ClusterIp)],
        backends(&V4_BACKENDS),
    );
    svc.affinity_timeout_s = Some(10800);
    t.services.apply(&svc).unwrap_or_else(|e| panic!("{e}"));
    let first =
        expect_dnat_xdp(&mut t, &PacketSpec::tcp_syn(sa("198.18.0.2:40000"), sa("198.19.0.20:80")));
    for sport in 40001..40040 {
        let p = PacketSpec::tcp_syn(sa(&format!("198.18.0.2:{sport}")), sa("198.19.0.20:80"));
        assert_eq!(expect_dnat_xdp(&mut t, &p), first, "affinity broken for source port {sport}");
    }
    // Other clients still spread.
    let mut others = std::collections::BTreeSet::new();
    for host in 3..40 {
        let p = PacketSpec::tcp_syn(sa(&format!("198.18.0.{host}:40000")), sa("198.19.0.20:80"));
        others.insert(expect_dnat_xdp(&mut t, &p));
    }
    assert_eq!(others.len(), 3, "distinct clients should reach every backend");
}

fn arp_request() -> Vec<u8> {
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header};
    let mut out = Vec::new();
    Ethernet2Header {
        source: lb_tests::packets::CLIENT_MAC,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    }
    .write(&mut out)
    .expect("eth");
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &lb_tests::packets::CLIENT_MAC,
        &[198, 18, 0, 2],
        &[0; 6],
        &[198, 18, 0, 1],
    )
    .expect("arp");
    out.extend_from_slice(&arp.to_bytes());
    out
}

fn icmp_echo_to(dst: &str) -> Vec<u8> {
    let dst: std::net::Ipv4Addr = dst.parse().expect("ip");
    let b = etherparse::PacketBuilder::ethernet2(
        lb_tests::packets::CLIENT_MAC,
        lb_tests::packets::NODE_MAC,
    )
    .ipv4([198, 18, 0, 2], dst.octets(), 64)
    .icmpv4_echo_request(1, 1);
    let payload = [0u8; 8];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).expect("icmp");
    let _: IpAddr = IpAddr::V4(dst);
    out
}
