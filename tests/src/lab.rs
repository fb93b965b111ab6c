//! The lab: a client, a node running the datapath, a pod on the node, and backend pods
//! serving HTTP, each in its own network namespace.
//!
//! ```text
//!  client ──eth0───ext0── node ──pod0..N──eth0── backend-0..N   (HTTP :8080, answers its name)
//! 198.18.0.2     198.18.0.1   │  198.18.(i+1).1   198.18.(i+1).2
//!                             └──podc──eth0── pod (a client on the node, for ClusterIP)
//!                                198.18.100.1  198.18.100.2
//! ```
//! IPv6 mirrors it under fd00:18::/48. XDP runs on `ext0`; TC ingress on every pod-facing
//! interface; TC egress (reverse NAT) on `ext0` and every pod-facing interface.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use lb_userspace::{
    datapath::{self, BPFFS_ROOT, Datapath, LoadOptions},
    services::ServiceMaps,
};

use crate::{
    fixture::PinDir,
    http::HttpBackend,
    netns::{NetNs, veth},
};

pub const BACKEND_PORT: u16 = 8080;
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const POD_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2);
pub const POD_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0x100, 0, 0, 0, 2);
/// Service addresses: 198.19.0.0/16 and fd00:19::/64 play the service CIDRs.
pub const CLUSTER_IP_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
pub const CLUSTER_IP_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 0x10);
pub const LB_IP_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 10);

pub struct BackendPod {
    pub name: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub http: HttpBackend,
    pub ns: NetNs,
}

/// The namespaces, links and HTTP backends, without a datapath (the agent tests attach
/// one through `lb-agent`).
pub struct Topology {
    // Field order is drop order: servers first, then namespaces.
    pub backends: Vec<BackendPod>,
    pub client: NetNs,
    pub pod: NetNs,
    pub node: NetNs,
    /// `lbt-<pid>-<n>`: every name this lab made starts with it.
    pub prefix: String,
}

/// A [`Topology`] with the datapath loaded and attached in the node.
pub struct Lab {
    // Field order is drop order: programs first, namespaces, then pins.
    pub services: ServiceMaps,
    pub datapath: Datapath,
    pub net: Topology,
    _pins: PinDir,
}

fn backend_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, i as u8 + 1, 2)
}

fn backend_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x18, 0, i as u16 + 1, 0, 0, 0, 2)
}

impl Topology {
    /// Builds client, node, pod and `backends` HTTP backend pods (at most 99).
    pub fn new(backends: usize) -> Self {
        assert!(backends < 100, "at most 99 backends");
        let prefix = crate::unique_prefix();
        let node = NetNs::create(&format!("{prefix}-node"));
        let client = NetNs::create(&format!("{prefix}-client"));
        let pod = NetNs::create(&format!("{prefix}-pod"));
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            node.sysctl(key, "1");
        }
        for key in ["net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"] {
            node.sysctl(key, "0");
        }

        link(&node, "ext0", &client, NODE_V4, CLIENT_V4, NODE_V6, CLIENT_V6, 24);
        // The client stands for a host across a wire: its packets reach XDP with complete
        // checksums, as from a real NIC, not veth's CHECKSUM_PARTIAL.
        client.exec("ethtool", &["-K", "eth0", "tx", "off"]);
        link(
            &node,
            "podc",
            &pod,
            Ipv4Addr::new(198, 18, 100, 1),
            POD_V4,
            Ipv6Addr::new(0xfd00, 0x18, 0, 0x100, 0, 0, 0, 1),
            POD_V6,
            24,
        );

        let mut pods = Vec::new();
        for i in 0..backends {
            let name = format!("backend-{i}");
            let ns = NetNs::create(&format!("{prefix}-{name}"));
            let (v4, v6) = (backend_v4(i), backend_v6(i));
            let node_v4 = Ipv4Addr::new(198, 18, i as u8 + 1, 1);
            let node_v6 = Ipv6Addr::new(0xfd00, 0x18, 0, i as u16 + 1, 0, 0, 0, 1);
            link(&node, &format!("pod{i}"), &ns, node_v4, v4, node_v6, v6, 24);
            let http = HttpBackend::start(&ns, BACKEND_PORT, &name);
            pods.push(BackendPod { name, v4, v6, http, ns });
        }
        Self { backends: pods, client, pod, node, prefix }
    }

    /// Pod-facing interfaces of the node: `pod0..N` and `podc`.
    pub fn pod_interfaces(&self) -> Vec<String> {
        (0..self.backends.len()).map(|i| format!("pod{i}")).chain(["podc".to_owned()]).collect()
    }

    /// Every namespace this topology made.
    pub fn netns_names(&self) -> Vec<String> {
        [&self.node, &self.client, &self.pod]
            .into_iter()
            .chain(self.backends.iter().map(|b| &b.ns))
            .map(|ns| ns.name().to_owned())
            .collect()
    }
}

/// Which hook balances traffic arriving on the node's external interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalHook {
    Xdp,
    /// `tc_ingress`, as on pod-facing interfaces: on a veth, XDP first copies every packet
    /// into a page with XDP headroom, which TC does not.
    Tc,
}

impl Lab {
    /// Builds the topology with `backends` backend pods and attaches the datapath.
    pub fn new(backends: usize) -> Self {
        Self::with_external_hook(backends, ExternalHook::Xdp)
    }

    pub fn with_external_hook(backends: usize, hook: ExternalHook) -> Self {
        let net = Topology::new(backends);
        let pins = PinDir(PathBuf::from(BPFFS_ROOT).join(&net.prefix));
        let (datapath, maps) = {
            let _inside = net.node.enter();
            let (mut dp, maps) = Datapath::load(&LoadOptions::new(&pins.0))
                .unwrap_or_else(|e| panic!("loading the datapath: {e}"));
            let attach =
                |r: Result<(), datapath::DatapathError>| r.unwrap_or_else(|e| panic!("{e}"));
            attach(match hook {
                ExternalHook::Xdp => dp.attach_xdp("ext0"),
                ExternalHook::Tc => dp.attach_tc_ingress("ext0"),
            });
            attach(dp.attach_tc_egress("ext0"));
            for iface in net.pod_interfaces() {
                attach(dp.attach_tc_ingress(&iface));
                attach(dp.attach_tc_egress(&iface));
            }
            (dp, maps)
        };
        Self { services: ServiceMaps::new(maps), datapath, net, _pins: pins }
    }

    /// Every namespace this lab made.
    pub fn netns_names(&self) -> Vec<String> {
        self.net.netns_names()
    }

    /// The bpffs directory holding this lab's pinned maps.
    pub fn pin_dir(&self) -> &std::path::Path {
        &self._pins.0
    }
}

/// Links `node` to `peer` (`eth0` on the peer's side), with addresses and a default route
/// on the peer via the node.
#[allow(clippy::too_many_arguments)]
fn link(
    node: &NetNs,
    node_if: &str,
    peer: &NetNs,
    node_v4: Ipv4Addr,
    peer_v4: Ipv4Addr,
    node_v6: Ipv6Addr,
    peer_v6: Ipv6Addr,
    len4: u8,
) {
    veth(node, node_if, peer, "eth0");
    node.ip(&["addr", "add", &format!("{node_v4}/{len4}"), "dev", node_if]);
    peer.ip(&["addr", "add", &format!("{peer_v4}/{len4}"), "dev", "eth0"]);
    // nodad: usable at once instead of after duplicate address detection.
    node.ip(&["addr", "add", &format!("{node_v6}/64"), "dev", node_if, "nodad"]);
    peer.ip(&["addr", "add", &format!("{peer_v6}/64"), "dev", "eth0", "nodad"]);
    peer.ip(&["route", "add", "default", "via", &node_v4.to_string()]);
    peer.ip(&["-6", "route", "add", "default", "via", &node_v6.to_string()]);
}
