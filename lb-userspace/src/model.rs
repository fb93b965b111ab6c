//! Manifests → desired datapath state, as a pure function.
//!
//! For each Service this resolves its addresses (allocating what is left out), its
//! endpoints (EndpointSlices, else v1 Endpoints, else Pods matching the selector) with their
//! readiness, and turns every port and address family into [`ServiceProgram`]s. Frontends
//! that must see different backends or checks go into different programs: ClusterIP
//! (internalTrafficPolicy), NodePort and externalIPs (externalTrafficPolicy), and
//! LoadBalancer addresses (externalTrafficPolicy plus loadBalancerSourceRanges).
//!
//! A Service with any error produces no programs and is listed in
//! [`Desired::failed`]; the agent keeps its last good programming.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::{
    api::core::v1::{Pod, Service, ServicePort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use lb_common::maps::{DEFAULT_MAGLEV_M, DEFAULT_MAX_SERVICE_IDS};

use crate::{
    alloc::{Allocator, NODE_PORT_MAX, NODE_PORT_MIN},
    manifests::{Located, ManifestError, Object, Origin},
    net::Cidr,
    services::{Backend, BackendState, Frontend, FrontendKind, Protocol, ServiceProgram},
};

/// What the agent knows about the node it runs on.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// For Local traffic policies: endpoints whose nodeName is this one are local.
    pub node_name: String,
    /// NodePorts listen on each of these.
    pub node_addrs: Vec<IpAddr>,
    /// Where ClusterIPs are allocated from (one per family).
    pub service_cidrs: Vec<Cidr>,
    /// Where LoadBalancer addresses are allocated from when a Service has none.
    pub lb_pools: Vec<Cidr>,
    pub maglev_m: u32,
    /// Service ids are allocated below this (the datapath's `max_service_ids`).
    pub max_service_ids: u32,
}

impl NodeConfig {
    pub fn new(node_name: &str) -> Self {
        Self {
            node_name: node_name.to_owned(),
            node_addrs: Vec::new(),
            service_cidrs: vec![
                "10.96.0.0/12".parse().expect("literal CIDR"),
                "fd00:10:96::/108".parse().expect("literal CIDR"),
            ],
            lb_pools: Vec::new(),
            maglev_m: DEFAULT_MAGLEV_M,
            max_service_ids: DEFAULT_MAX_SERVICE_IDS,
        }
    }
}

/// How a Service appears to `lbctl` and the logs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSummary {
    /// The manifest file it came from.
    pub file: std::path::PathBuf,
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    /// `80:30080/TCP`-style.
    pub ports: Vec<String>,
    /// Why the datapath has nothing for it (headless, ExternalName), if so.
    pub not_programmed: Option<String>,
}

#[derive(Debug, Default)]
pub struct Desired {
    /// Program key → program. Keys are stable names (`ns/name:port/TCP/v4/cluster`).
    pub programs: BTreeMap<String, ServiceProgram>,
    /// Program key → owning Service (`ns/name`).
    pub owner: BTreeMap<String, String>,
    pub services: BTreeMap<String, ServiceSummary>,
    /// Services with errors this round (`ns/name`): keep their last good programming.
    pub failed: BTreeSet<String>,
    pub errors: Vec<ManifestError>,
}

/// One endpoint address with the ports it offers, normalised from any endpoints source.
#[derive(Clone, Debug)]
struct Endpoint {
    addr: IpAddr,
    state: Option<BackendState>,
    node: Option<String>,
    /// (name, port, protocol) as the source names them: Service port names for
    /// EndpointSlices/Endpoints, container port names for Pods.
    ports: Vec<(String, u16, Protocol)>,
}

enum EndpointSource {
    /// EndpointSlice or Endpoints: ports are named like the Service's ports.
    ByServicePort(Vec<Endpoint>),
    /// Pods: targetPort numbers are used as is, names resolve per Pod.
    Pods(Vec<Endpoint>),
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        meta.name.clone().unwrap_or_default(),
    )
}

fn protocol(s: Option<&str>) -> Result<Protocol, String> {
    match s.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Err("SCTP is not supported by this datapath (TCP and UDP are)".into()),
        other => Err(format!("unknown protocol {other:?} (TCP or UDP)")),
    }
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// Builds the desired state from everything loaded.
pub fn desired(objects: &[Located], node: &NodeConfig, alloc: &mut Allocator) -> Desired {
    let mut d = Desired::default();
    let mut slices: BTreeMap<(String, String), Vec<Endpoint>> = BTreeMap::new();
    let mut endpoints: BTreeMap<(String, String), Vec<Endpoint>> = BTreeMap::new();
    let mut pods: Vec<(&Origin, &Pod)> = Vec::new();
    let mut services: Vec<(&Origin, &Service)> = Vec::new();

    for obj in objects {
        match &obj.object {
            Object::Service(s) => services.push((&obj.origin, s)),
            Object::Pod(p) => pods.push((&obj.origin, p)),
            Object::EndpointSlice(s) => {
                let (ns, _) = ns_name(&s.metadata);
                let Some(svc) =
                    s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name"))
                else {
                    d.errors.push(ManifestError::at(
                        &obj.origin,
                        "metadata.labels",
                        "EndpointSlice without the kubernetes.io/service-name label belongs to no Service",
                    ));
                    continue;
                };
                let ports: Vec<(String, u16, Protocol)> = s
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        Some((
                            p.name.clone().unwrap_or_default(),
                            port_u16(p.port?)?,
                            protocol(p.protocol.as_deref()).ok()?,
                        ))
                    })
                    .collect();
                let list = slices.entry((ns, svc.clone())).or_default();
                for (i, ep) in s.endpoints.iter().flatten().enumerate() {
                    let c = ep.conditions.as_ref();
                    // Per the API: a nil `ready` or `serving` means true.
                    let ready = c.and_then(|c| c.ready).unwrap_or(true);
                    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                    let state = if ready && !terminating {
                        Some(BackendState::Active)
                    } else if serving && terminating {
                        Some(BackendState::Terminating)
                    } else {
                        None
                    };
                    for (j, a) in ep.addresses.iter().enumerate() {
                        match a.parse::<IpAddr>() {
                            Ok(addr) => list.push(Endpoint {
                                addr,
                                state,
                                node: ep.node_name.clone(),
                                ports: ports.clone(),
                            }),
                            Err(_) => d.errors.push(ManifestError::at(
                                &obj.origin,
                                format!("endpoints[{i}].addresses[{j}]"),
                                format!("{a:?} is not an IP address"),
                            )),
                        }
                    }
                }
            }
            Object::Endpoints(e) => {
                let key = ns_name(&e.metadata);
                let list = endpoints.entry(key).or_default();
                for (i, subset) in e.subsets.iter().flatten().enumerate() {
                    let ports: Vec<(String, u16, Protocol)> = subset
                        .ports
                        .iter()
                        .flatten()
                        .filter_map(|p| {
                            Some((
                                p.name.clone().unwrap_or_default(),
                                port_u16(p.port)?,
                                protocol(p.protocol.as_deref()).ok()?,
                            ))
                        })
                        .collect();
                    for (field, addrs, state) in [
                        ("addresses", &subset.addresses, Some(BackendState::Active)),
                        ("notReadyAddresses", &subset.not_ready_addresses, None),
                    ] {
                        for (j, a) in addrs.iter().flatten().enumerate() {
                            match a.ip.parse::<IpAddr>() {
                                Ok(addr) => list.push(Endpoint {
                                    addr,
                                    state,
                                    node: a.node_name.clone(),
                                    ports: ports.clone(),
                                }),
                                Err(_) => d.errors.push(ManifestError::at(
                                    &obj.origin,
                                    format!("subsets[{i}].{field}[{j}].ip"),
                                    format!("{:?} is not an IP address", a.ip),
                                )),
                            }
                        }
                    }
                }
            }
        }
    }

    services.sort_by_key(|(_, s)| ns_name(&s.metadata));
    let mut frontend_owner: BTreeMap<(IpAddr, u16, Protocol), String> = BTreeMap::new();
    let mut node_port_owner: BTreeMap<(u16, Protocol), String> = BTreeMap::new();
    // Explicit addresses and ports are reserved before anything is allocated.
    for (_, s) in &services {
        if let Some(spec) = &s.spec {
            for ip in spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter()) {
                if let Ok(ip) = ip.parse() {
                    alloc.reserve_ip(ip);
                }
            }
            for p in spec.ports.iter().flatten() {
                if let Some(np) = p.node_port.and_then(port_u16) {
                    alloc.reserve_port(np);
                }
            }
        }
    }

    for (origin, svc) in services {
        let (ns, name) = ns_name(&svc.metadata);
        let id = format!("{ns}/{name}");
        if name.is_empty() {
            d.errors.push(ManifestError::at(origin, "metadata.name", "a Service needs a name"));
            continue;
        }
        let source = if let Some(eps) = slices.remove(&(ns.clone(), name.clone())) {
            EndpointSource::ByServicePort(eps)
        } else if let Some(eps) = endpoints.remove(&(ns.clone(), name.clone())) {
            EndpointSource::ByServicePort(eps)
        } else {
            EndpointSource::Pods(pod_endpoints(&ns, svc, &pods))
        };
        let mut ctx = ServiceCtx { origin, svc, ns: &ns, name: &name, node, errors: Vec::new() };
        let result = ctx.translate(source, alloc, &mut frontend_owner, &mut node_port_owner);
        if ctx.errors.is_empty() {
            if let Some((summary, programs)) = result {
                for (key, program) in programs {
                    d.owner.insert(key.clone(), id.clone());
                    d.programs.insert(key, program);
                }
                d.services.insert(id, summary);
            }
        } else {
            d.errors.append(&mut ctx.errors);
            d.failed.insert(id);
        }
    }
    d
}

fn pod_endpoints(ns: &str, svc: &Service, pods: &[(&Origin, &Pod)]) -> Vec<Endpoint> {
    let Some(selector) =
        svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty())
    else {
        return Vec::new(); // no selector: endpoints come from EndpointSlices/Endpoints only
    };
    let mut out = Vec::new();
    for (_, pod) in pods {
        let (pod_ns, _) = ns_name(&pod.metadata);
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if pod_ns != ns || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let state = match (ready, terminating) {
            (true, false) => Some(BackendState::Active),
            (true, true) => Some(BackendState::Terminating),
            _ => None,
        };
        let ports: Vec<(String, u16, Protocol)> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some((
                    p.name.clone()?,
                    port_u16(p.container_port)?,
                    protocol(p.protocol.as_deref()).ok()?,
                ))
            })
            .collect();
        let mut ips: Vec<String> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|p| p.ip.clone())
            .collect();
        if ips.is_empty() {
            ips.extend(status.and_then(|s| s.pod_ip.clone()));
        }
        for ip in ips {
            if let Ok(addr) = ip.parse() {
                out.push(Endpoint {
                    addr,
                    state,
                    node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                    ports: ports.clone(),
                });
            }
        }
    }
    out
}

struct ServiceCtx<'a> {
    origin: &'a Origin,
    svc: &'a Service,
    ns: &'a str,
    name: &'a str,
    node: &'a NodeConfig,
    errors: Vec<ManifestError>,
}

/// Which program a frontend belongs to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Cluster,
    Node,
    LoadBalancer,
}

impl Scope {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "cluster",
            Self::Node => "node",
            Self::LoadBalancer => "lb",
        }
    }
}

type Programs = Vec<(String, ServiceProgram)>;

impl ServiceCtx<'_> {
    fn err(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ManifestError::at(self.origin, field, reason));
    }

    fn parse_ip(&mut self, field: String, s: &str) -> Option<IpAddr> {
        match s.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(field, format!("{s:?} is not an IP address"));
                None
            }
        }
    }

    fn translate(
        &mut self,
        source: EndpointSource,
        alloc: &mut Allocator,
        frontend_owner: &mut BTreeMap<(IpAddr, u16, Protocol), String>,
        node_port_owner: &mut BTreeMap<(u16, Protocol), String>,
    ) -> Option<(ServiceSummary, Programs)> {
        let id = format!("{}/{}", self.ns, self.name);
        let Some(spec) = self.svc.spec.clone() else {
            self.err("spec", "a Service needs a spec");
            return None;
        };
        let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
        let mut summary = ServiceSummary {
            file: self.origin.file.clone(),
            namespace: self.ns.to_owned(),
            name: self.name.to_owned(),
            type_: type_.clone(),
            cluster_ips: Vec::new(),
            external_ips: Vec::new(),
            ports: Vec::new(),
            not_programmed: None,
        };
        if !matches!(type_.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
            self.err(
                "spec.type",
                format!(
                    "unknown type {type_:?} (ClusterIP, NodePort, LoadBalancer or ExternalName)"
                ),
            );
            return None;
        }
        if type_ == "ExternalName" {
            summary.not_programmed = Some(format!(
                "ExternalName ({}): DNS only",
                spec.external_name.as_deref().unwrap_or("?")
            ));
            return Some((summary, Vec::new()));
        }

        // Ports.
        let ports = spec.ports.clone().unwrap_or_default();
        let mut names = BTreeSet::new();
        let mut checked: Vec<(usize, ServicePort, u16, Protocol)> = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let name = p.name.clone().unwrap_or_default();
            if ports.len() > 1 && name.is_empty() {
                self.err(
                    format!("spec.ports[{i}].name"),
                    "required when a Service has several ports",
                );
            }
            if !name.is_empty() && !names.insert(name.clone()) {
                self.err(format!("spec.ports[{i}].name"), format!("duplicate port name {name:?}"));
            }
            let Some(port) = port_u16(p.port) else {
                self.err(
                    format!("spec.ports[{i}].port"),
                    format!("{} is not a port (1-65535)", p.port),
                );
                continue;
            };
            let proto = match protocol(p.protocol.as_deref()) {
                Ok(proto) => proto,
                Err(e) => {
                    self.err(format!("spec.ports[{i}].protocol"), e);
                    continue;
                }
            };
            if let Some(np) = p.node_port
                && !(i32::from(NODE_PORT_MIN)..=i32::from(NODE_PORT_MAX)).contains(&np)
            {
                self.err(
                    format!("spec.ports[{i}].nodePort"),
                    format!("{np} is outside {NODE_PORT_MIN}-{NODE_PORT_MAX}"),
                );
                continue;
            }
            if let Some(IntOrString::Int(t)) = &p.target_port
                && port_u16(*t).is_none()
            {
                self.err(
                    format!("spec.ports[{i}].targetPort"),
                    format!("{t} is not a port (1-65535)"),
                );
                continue;
            }
            checked.push((i, p.clone(), port, proto));
        }

        let headless = spec.cluster_ip.as_deref() == Some("None");
        if headless {
            summary.not_programmed = Some("headless (clusterIP: None): DNS only".into());
            summary.ports =
                checked.iter().map(|(_, _, port, proto)| format!("{port}/{proto}")).collect();
            return (self.errors.is_empty()).then_some((summary, Vec::new()));
        }

        // Addresses per family.
        let mut cluster_ips: Vec<IpAddr> = Vec::new();
        let explicit: Vec<String> = spec
            .cluster_ips
            .clone()
            .filter(|v| !v.is_empty())
            .or_else(|| spec.cluster_ip.clone().map(|c| vec![c]))
            .unwrap_or_default();
        for (i, ip) in explicit.iter().enumerate() {
            if ip.is_empty() {
                continue;
            }
            if let Some(ip) = self.parse_ip(format!("spec.clusterIPs[{i}]"), ip) {
                cluster_ips.push(ip);
            }
        }
        let families: Vec<bool> = if !cluster_ips.is_empty() {
            cluster_ips.iter().map(IpAddr::is_ipv4).collect()
        } else if let Some(f) = spec.ip_families.as_ref().filter(|f| !f.is_empty()) {
            let mut out = Vec::new();
            for (i, fam) in f.iter().enumerate() {
                match fam.as_str() {
                    "IPv4" => out.push(true),
                    "IPv6" => out.push(false),
                    other => self
                        .err(format!("spec.ipFamilies[{i}]"), format!("unknown family {other:?}")),
                }
            }
            out
        } else if matches!(
            spec.ip_family_policy.as_deref(),
            Some("PreferDualStack" | "RequireDualStack")
        ) {
            let mut fams: Vec<bool> =
                self.node.service_cidrs.iter().map(|c| c.addr.is_ipv4()).collect();
            fams.dedup();
            fams
        } else {
            self.node
                .service_cidrs
                .first()
                .map(|c| vec![c.addr.is_ipv4()])
                .unwrap_or_else(|| vec![true])
        };
        for &v4 in &families {
            if cluster_ips.iter().any(|ip| ip.is_ipv4() == v4) {
                continue;
            }
            let key = format!("{id}/{}", fam_name(v4));
            match alloc.cluster_ip(&key, &self.node.service_cidrs, v4) {
                Some(ip) => cluster_ips.push(ip),
                None => self.err(
                    "spec.clusterIP",
                    format!("no free {} address in the service CIDRs", fam_name(v4)),
                ),
            }
        }
        let mut external_ips: Vec<IpAddr> = Vec::new();
        for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
            if let Some(ip) = self.parse_ip(format!("spec.externalIPs[{i}]"), ip) {
                external_ips.push(ip);
            }
        }
        let mut lb_ips: Vec<IpAddr> = Vec::new();
        if type_ == "LoadBalancer" {
            let ingress = self
                .svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.clone())
                .unwrap_or_default();
            for (i, ing) in ingress.iter().enumerate() {
                if let Some(ip) = &ing.ip
                    && let Some(ip) =
                        self.parse_ip(format!("status.loadBalancer.ingress[{i}].ip"), ip)
                {
                    lb_ips.push(ip);
                }
            }
            if let Some(ip) = spec.load_balancer_ip.as_ref().filter(|s| !s.is_empty())
                && let Some(ip) = self.parse_ip("spec.loadBalancerIP".into(), ip)
                && !lb_ips.contains(&ip)
            {
                lb_ips.push(ip);
            }
            for &v4 in &families {
                if !lb_ips.iter().any(|ip| ip.is_ipv4() == v4)
                    && self.node.lb_pools.iter().any(|c| c.addr.is_ipv4() == v4)
                {
                    let key = format!("{id}/{}", fam_name(v4));
                    match alloc.lb_ip(&key, &self.node.lb_pools, v4) {
                        Some(ip) => lb_ips.push(ip),
                        None => self.err(
                            "status.loadBalancer",
                            format!("the {} LoadBalancer pool is exhausted", fam_name(v4)),
                        ),
                    }
                }
            }
        }
        let mut source_ranges: Vec<Cidr> = Vec::new();
        for (i, r) in spec.load_balancer_source_ranges.iter().flatten().enumerate() {
            match r.trim().parse::<Cidr>() {
                Ok(c) => source_ranges.push(c),
                Err(e) => self.err(format!("spec.loadBalancerSourceRanges[{i}]"), e.to_string()),
            }
        }
        let affinity = match spec.session_affinity.as_deref().unwrap_or("None") {
            "None" => None,
            "ClientIP" => {
                let t = spec
                    .session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .unwrap_or(10800);
                if !(1..=86400).contains(&t) {
                    self.err(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("{t} is outside 1-86400"),
                    );
                }
                Some(t as u32)
            }
            other => {
                self.err(
                    "spec.sessionAffinity",
                    format!("unknown affinity {other:?} (None or ClientIP)"),
                );
                None
            }
        };
        let ext_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let int_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        for (field, v) in [
            ("spec.externalTrafficPolicy", &spec.external_traffic_policy),
            ("spec.internalTrafficPolicy", &spec.internal_traffic_policy),
        ] {
            if let Some(v) = v
                && !matches!(v.as_str(), "Local" | "Cluster")
            {
                self.err(field, format!("unknown policy {v:?} (Cluster or Local)"));
            }
        }
        summary.cluster_ips = cluster_ips.clone();
        summary.external_ips = external_ips.iter().chain(&lb_ips).copied().collect();

        let (eps, by_service_port) = match &source {
            EndpointSource::ByServicePort(e) => (e.as_slice(), true),
            EndpointSource::Pods(e) => (e.as_slice(), false),
        };
        let mut programs: Programs = Vec::new();
        for (i, p, port, proto) in &checked {
            let port_name = p.name.clone().unwrap_or_default();
            let node_port = if matches!(type_.as_str(), "NodePort" | "LoadBalancer") {
                match p.node_port.and_then(port_u16) {
                    Some(np) => Some(np),
                    None => {
                        let key = format!(
                            "{id}/{}/{proto}",
                            if port_name.is_empty() { port.to_string() } else { port_name.clone() }
                        );
                        let np = alloc.node_port(&key);
                        if np.is_none() {
                            self.err(format!("spec.ports[{i}].nodePort"), "no free NodePort");
                        }
                        np
                    }
                }
            } else {
                None
            };
            if let Some(np) = node_port {
                if let Some(other) = node_port_owner.get(&(np, *proto)).filter(|o| **o != id) {
                    self.err(
                        format!("spec.ports[{i}].nodePort"),
                        format!("NodePort {np}/{proto} is already used by Service {other}"),
                    );
                } else {
                    node_port_owner.insert((np, *proto), id.clone());
                }
            }
            summary.ports.push(match node_port {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            });

            // Backends: the target port resolved per endpoint.
            let target = p.target_port.clone().unwrap_or(IntOrString::Int(i32::from(*port)));
            let mut backends: Vec<(Backend, Option<String>)> = Vec::new();
            for ep in eps {
                let Some(state) = ep.state else { continue };
                let resolved = if by_service_port {
                    ep.ports
                        .iter()
                        .find(|(n, _, pr)| *n == port_name && pr == proto)
                        .map(|(_, n, _)| *n)
                } else {
                    match &target {
                        IntOrString::Int(t) => port_u16(*t),
                        IntOrString::String(name) => ep
                            .ports
                            .iter()
                            .find(|(n, _, pr)| n == name && pr == proto)
                            .map(|(_, n, _)| *n),
                    }
                };
                if let Some(bport) = resolved {
                    backends.push((
                        Backend { addr: ep.addr, port: bport, weight: 1, state },
                        ep.node.clone(),
                    ));
                }
            }
            let has_candidates = eps.iter().any(|e| e.state.is_some());
            if backends.is_empty() && has_candidates {
                let want = match &target {
                    IntOrString::String(n) if !by_service_port => format!("named {n:?}"),
                    _ if by_service_port => format!("for Service port {:?}", port_name),
                    IntOrString::Int(t) => t.to_string(),
                    IntOrString::String(n) => n.clone(),
                };
                self.err(
                    format!("spec.ports[{i}].targetPort"),
                    format!("no endpoint provides port {want}/{proto}"),
                );
                continue;
            }

            for &v4 in &families {
                let fam_backends: Vec<(Backend, Option<String>)> =
                    backends.iter().filter(|(b, _)| b.addr.is_ipv4() == v4).cloned().collect();
                let all: Vec<Backend> = fam_backends.iter().map(|(b, _)| b.clone()).collect();
                let local: Vec<Backend> = fam_backends
                    .iter()
                    .filter(|(_, n)| n.as_deref() == Some(self.node.node_name.as_str()))
                    .map(|(b, _)| b.clone())
                    .collect();
                let mut groups: BTreeMap<Scope, Vec<Frontend>> = BTreeMap::new();
                let fe =
                    |addr: IpAddr, port: u16, kind| Frontend { addr, port, protocol: *proto, kind };
                for ip in cluster_ips.iter().filter(|ip| ip.is_ipv4() == v4) {
                    groups.entry(Scope::Cluster).or_default().push(fe(
                        *ip,
                        *port,
                        FrontendKind::ClusterIp,
                    ));
                }
                if let Some(np) = node_port {
                    for ip in self.node.node_addrs.iter().filter(|ip| ip.is_ipv4() == v4) {
                        groups.entry(Scope::Node).or_default().push(fe(
                            *ip,
                            np,
                            FrontendKind::NodePort,
                        ));
                    }
                }
                for ip in external_ips.iter().filter(|ip| ip.is_ipv4() == v4) {
                    groups.entry(Scope::Node).or_default().push(fe(
                        *ip,
                        *port,
                        FrontendKind::ExternalIp,
                    ));
                }
                for ip in lb_ips.iter().filter(|ip| ip.is_ipv4() == v4) {
                    groups.entry(Scope::LoadBalancer).or_default().push(fe(
                        *ip,
                        *port,
                        FrontendKind::LoadBalancer,
                    ));
                }
                for (scope, frontends) in groups {
                    for f in &frontends {
                        let k = (f.addr, f.port, f.protocol);
                        if let Some(other) = frontend_owner.get(&k).filter(|o| **o != id) {
                            self.err(
                                format!("spec.ports[{i}]"),
                                format!(
                                    "{}:{}/{} is already used by Service {other}",
                                    f.addr, f.port, f.protocol
                                ),
                            );
                        } else {
                            frontend_owner.insert(k, id.clone());
                        }
                    }
                    let local_only = match scope {
                        Scope::Cluster => int_local,
                        Scope::Node | Scope::LoadBalancer => ext_local,
                    };
                    let key = format!(
                        "{id}:{}/{proto}/{}/{}",
                        if port_name.is_empty() { port.to_string() } else { port_name.clone() },
                        if v4 { "v4" } else { "v6" },
                        scope.as_str()
                    );
                    let Some(svc_id) = alloc.service_id(&key, self.node.max_service_ids) else {
                        self.err("metadata.name", "no free datapath service id");
                        continue;
                    };
                    let mut program = ServiceProgram::new(
                        svc_id,
                        frontends,
                        if local_only { local.clone() } else { all.clone() },
                    );
                    program.affinity_timeout_s = affinity;
                    program.local_only = local_only;
                    program.maglev_m = self.node.maglev_m;
                    if scope == Scope::LoadBalancer && !source_ranges.is_empty() {
                        program.source_ranges = source_ranges
                            .iter()
                            .filter(|c| c.addr.is_ipv4() == v4)
                            .copied()
                            .collect();
                        if program.source_ranges.is_empty() {
                            // Ranges of the other family only: no source of this family may
                            // reach the addresses, so they are not programmed at all.
                            continue;
                        }
                    }
                    if !program.frontends.is_empty() {
                        programs.push((key, program));
                    }
                }
            }
        }
        Some((summary, programs))
    }
}

fn fam_name(v4: bool) -> &'static str {
    if v4 { "IPv4" } else { "IPv6" }
}
