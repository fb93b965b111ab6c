//! kube-proxy's own datapath mechanisms, written as kube-proxy writes them, for the
//! end-to-end benchmark to measure against in the same lab.
//!
//! - nftables mode: one verdict-map lookup on (daddr, protocol, dport) jumps to the
//!   Service's chain, which picks an endpoint chain with `numgen random` and DNATs.
//! - iptables mode: `KUBE-SERVICES` is a list with one rule per Service port, walked in order
//!   until one matches; the Service chain picks an endpoint with `statistic --mode random`
//!   and the endpoint chain DNATs.
//!
//! Both include kube-proxy's hairpin mark and masquerade chain so the per-packet work is
//! the same shape as on a node. Filter-table firewall chains (no-endpoint rejects, source
//! ranges) are left out: they do not touch a Service with endpoints.

use std::{fmt::Write as _, net::SocketAddrV4};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One Service port as kube-proxy would program it.
#[derive(Clone, Debug)]
pub struct BaselineService {
    pub name: String,
    pub frontend: SocketAddrV4,
    pub proto: Proto,
    pub endpoints: Vec<SocketAddrV4>,
}

/// An `nft -f` script for kube-proxy's nftables mode.
pub fn nftables_ruleset(services: &[BaselineService]) -> String {
    let mut s = String::with_capacity(services.len() * 400);
    s.push_str(
        "table ip kube-proxy {
\tchain mark-for-masquerade {
\t\tmeta mark set meta mark or 0x4000
\t}
\tchain masquerading {
\t\tmeta mark & 0x4000 == 0 return
\t\tmeta mark set meta mark xor 0x4000
\t\tmasquerade fully-random
\t}
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump services
\t}
\tchain nat-output {
\t\ttype nat hook output priority -100; policy accept;
\t\tjump services
\t}
\tchain nat-postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tjump masquerading
\t}
\tmap service-ips {
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
",
    );
    if !services.is_empty() {
        s.push_str("\t\telements = {\n");
        for (i, svc) in services.iter().enumerate() {
            let _ = writeln!(
                s,
                "\t\t\t{} . {} . {} : goto service-{i},",
                svc.frontend.ip(),
                svc.proto.as_str(),
                svc.frontend.port()
            );
        }
        s.push_str("\t\t}\n");
    }
    s.push_str(
        "\t}\n\tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t}\n",
    );
    for (i, svc) in services.iter().enumerate() {
        let _ = writeln!(s, "\tchain service-{i} {{");
        let _ = write!(s, "\t\tnumgen random mod {} vmap {{", svc.endpoints.len());
        for e in 0..svc.endpoints.len() {
            let _ = write!(s, " {e} : goto endpoint-{i}-{e},");
        }
        s.push_str(" }\n\t}\n");
        for (e, ep) in svc.endpoints.iter().enumerate() {
            let _ = writeln!(
                s,
                "\tchain endpoint-{i}-{e} {{\n\t\tip saddr {} jump mark-for-masquerade\n\t\tmeta l4proto {} dnat to {ep}\n\t}}",
                ep.ip(),
                svc.proto.as_str()
            );
        }
    }
    s.push_str("}\n");
    s
}

/// An `iptables-restore` input for kube-proxy's iptables mode (nat table). Services are
/// listed in the given order, as kube-proxy lists them in `KUBE-SERVICES`.
pub fn iptables_restore(services: &[BaselineService]) -> String {
    let mut s = String::with_capacity(services.len() * 600);
    s.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
    s.push_str(":KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n");
    for (i, svc) in services.iter().enumerate() {
        let _ = writeln!(s, ":KUBE-SVC-{i} - [0:0]");
        for e in 0..svc.endpoints.len() {
            let _ = writeln!(s, ":KUBE-SEP-{i}-{e} - [0:0]");
        }
    }
    s.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
    );
    for (i, svc) in services.iter().enumerate() {
        let proto = svc.proto.as_str();
        let _ = writeln!(
            s,
            "-A KUBE-SERVICES -d {}/32 -p {proto} -m comment --comment \"{} cluster IP\" -m {proto} --dport {} -j KUBE-SVC-{i}",
            svc.frontend.ip(),
            svc.name,
            svc.frontend.port()
        );
        let n = svc.endpoints.len();
        for (e, ep) in svc.endpoints.iter().enumerate() {
            // Endpoint e of n is taken with probability 1/(n-e) among those left: uniform.
            if e + 1 < n {
                let _ = writeln!(
                    s,
                    "-A KUBE-SVC-{i} -m statistic --mode random --probability {:.11} -j KUBE-SEP-{i}-{e}",
                    1.0 / (n - e) as f64
                );
            } else {
                let _ = writeln!(s, "-A KUBE-SVC-{i} -j KUBE-SEP-{i}-{e}");
            }
            let _ = writeln!(s, "-A KUBE-SEP-{i}-{e} -s {}/32 -j KUBE-MARK-MASQ", ep.ip());
            let _ = writeln!(
                s,
                "-A KUBE-SEP-{i}-{e} -p {proto} -m {proto} -j DNAT --to-destination {ep}"
            );
        }
    }
    s.push_str("COMMIT\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(i: u8, endpoints: usize) -> BaselineService {
        BaselineService {
            name: format!("bench/svc-{i}:http"),
            frontend: SocketAddrV4::new([198, 19, 0, i].into(), 80),
            proto: Proto::Tcp,
            endpoints: (0..endpoints)
                .map(|e| SocketAddrV4::new([198, 18, 1, e as u8 + 2].into(), 8080))
                .collect(),
        }
    }

    #[test]
    fn nftables_maps_each_service_port_to_its_chain_and_spreads_over_endpoints() {
        let rules = nftables_ruleset(&[svc(1, 3), svc(2, 1)]);
        assert!(rules.contains("198.19.0.1 . tcp . 80 : goto service-0,"));
        assert!(rules.contains("198.19.0.2 . tcp . 80 : goto service-1,"));
        assert!(rules.contains(
            "numgen random mod 3 vmap { 0 : goto endpoint-0-0, 1 : goto endpoint-0-1, 2 : goto endpoint-0-2, }"
        ));
        assert!(rules.contains("meta l4proto tcp dnat to 198.18.1.4:8080"));
    }

    #[test]
    fn iptables_probabilities_make_a_uniform_choice() {
        let rules = iptables_restore(&[svc(1, 4)]);
        for p in ["0.25000000000", "0.33333333333", "0.50000000000"] {
            assert!(rules.contains(&format!("--probability {p} -j")), "{p} in\n{rules}");
        }
        assert!(rules.contains("-A KUBE-SVC-0 -j KUBE-SEP-0-3\n"));
        assert!(rules.contains("--dport 80 -j KUBE-SVC-0\n"));
        assert!(rules.ends_with("COMMIT\n"));
    }
}
