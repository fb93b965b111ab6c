//! Manifests → desired datapath state: every row of the semantics table, the seed
//! examples, allocation and validation errors. Pure; no root needed.

use std::{net::IpAddr, path::Path};

use lb_userspace::{
    alloc::{Allocations, Allocator},
    manifests::{Loaded, load_path, load_text},
    model::{Desired, NodeConfig, desired},
    services::{BackendState, FrontendKind, ServiceProgram},
};

fn node() -> NodeConfig {
    let mut n = NodeConfig::new("node-a");
    n.node_addrs = vec!["198.18.0.1".parse().unwrap(), "fd00:18::1".parse().unwrap()];
    n.service_cidrs = vec!["198.19.0.0/16".parse().unwrap(), "fd00:19::/108".parse().unwrap()];
    n.lb_pools = vec!["198.19.255.0/24".parse().unwrap()];
    n.maglev_m = 251;
    n
}

fn run(yaml: &str) -> Desired {
    let mut loaded = Loaded::default();
    load_text(Path::new("test.yaml"), yaml, &mut loaded);
    assert!(loaded.errors.is_empty(), "load errors: {:?}", loaded.errors);
    let mut alloc = Allocator::new(Allocations::default());
    desired(&loaded.objects, &node(), &mut alloc)
}

fn ok(yaml: &str) -> Desired {
    let d = run(yaml);
    assert!(
        d.errors.is_empty(),
        "errors: {:#?}",
        d.errors.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    d
}

fn program<'a>(d: &'a Desired, key: &str) -> &'a ServiceProgram {
    d.programs.get(key).unwrap_or_else(|| {
        panic!("no program {key}; have {:?}", d.programs.keys().collect::<Vec<_>>())
    })
}

fn addrs(p: &ServiceProgram, kind: FrontendKind) -> Vec<String> {
    p.frontends
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| format!("{}:{}", f.addr, f.port))
        .collect()
}

fn backends(p: &ServiceProgram) -> Vec<String> {
    let mut b: Vec<String> = p
        .backends
        .iter()
        .map(|b| {
            format!(
                "{}:{}{}",
                b.addr,
                b.port,
                if b.state == BackendState::Terminating { " (terminating)" } else { "" }
            )
        })
        .collect();
    b.sort();
    b
}

const SLICE: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [198.18.1.2]
  nodeName: node-a
- addresses: [198.18.2.2]
  nodeName: node-b
- addresses: [198.18.3.2]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node-a
- addresses: [198.18.4.2]
  conditions: {ready: false}
"#;

#[test]
fn cluster_ip_allocated_with_endpoint_slice_readiness() {
    let d = ok(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---{SLICE}"
    ));
    let p = program(&d, "default/web:http/TCP/v4/cluster");
    assert_eq!(
        addrs(p, FrontendKind::ClusterIp),
        ["198.19.0.10:80"],
        "first free address of the CIDR"
    );
    assert_eq!(
        backends(p),
        ["198.18.1.2:8080", "198.18.2.2:8080", "198.18.3.2:8080 (terminating)"],
        "not-ready endpoints are left out; terminating+serving ones keep flows"
    );
    assert_eq!(d.services["default/web"].cluster_ips, ["198.19.0.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(d.programs.len(), 1, "ClusterIP only");
}

#[test]
fn node_port_explicit_and_allocated_on_every_node_address() {
    let d = ok(r#"
apiVersion: v1
kind: Service
metadata: {name: np, namespace: shop}
spec:
  type: NodePort
  clusterIP: 198.19.0.50
  ports:
  - {name: http, port: 80, nodePort: 30080}
  - {name: admin, port: 81}
"#);
    let http = program(&d, "shop/np:http/TCP/v4/node");
    assert_eq!(addrs(http, FrontendKind::NodePort), ["198.18.0.1:30080"]);
    let admin = program(&d, "shop/np:admin/TCP/v4/node");
    let np = admin.frontends[0].port;
    assert!((30000..=32767).contains(&np) && np != 30080, "allocated NodePort {np}");
    assert_eq!(
        addrs(program(&d, "shop/np:http/TCP/v4/cluster"), FrontendKind::ClusterIp),
        ["198.19.0.50:80"]
    );
    assert_eq!(d.services["shop/np"].ports, ["80:30080/TCP".to_string(), format!("81:{np}/TCP")]);
}

#[test]
fn load_balancer_addresses_from_status_spec_or_pool() {
    let d = ok(r#"
apiVersion: v1
kind: Service
metadata: {name: from-status}
spec: {type: LoadBalancer, ports: [{port: 80}]}
status: {loadBalancer: {ingress: [{ip: 198.19.254.1}]}}
---
apiVersion: v1
kind: Service
metadata: {name: from-spec}
spec: {type: LoadBalancer, loadBalancerIP: 198.19.254.2, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: from-pool}
spec: {type: LoadBalancer, ports: [{port: 80}], externalIPs: [198.19.253.1]}
"#);
    assert_eq!(
        addrs(program(&d, "default/from-status:80/TCP/v4/lb"), FrontendKind::LoadBalancer),
        ["198.19.254.1:80"]
    );
    assert_eq!(
        addrs(program(&d, "default/from-spec:80/TCP/v4/lb"), FrontendKind::LoadBalancer),
        ["198.19.254.2:80"]
    );
    assert_eq!(
        addrs(program(&d, "default/from-pool:80/TCP/v4/lb"), FrontendKind::LoadBalancer),
        ["198.19.255.10:80"]
    );
    // A LoadBalancer also gets a NodePort and a ClusterIP; externalIPs act like LB addresses.
    let node = program(&d, "default/from-pool:80/TCP/v4/node");
    assert_eq!(addrs(node, FrontendKind::ExternalIp), ["198.19.253.1:80"]);
    assert_eq!(addrs(node, FrontendKind::NodePort).len(), 1);
    assert!(d.programs.contains_key("default/from-pool:80/TCP/v4/cluster"));
}

#[test]
fn external_name_and_headless_are_listed_not_programmed() {
    let d = ok(r#"
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: api.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
"#);
    assert!(d.programs.is_empty());
    assert!(d.services["default/ext"].not_programmed.as_deref().unwrap().contains("ExternalName"));
    assert!(d.services["default/db"].not_programmed.as_deref().unwrap().contains("headless"));
}

#[test]
fn named_target_ports_resolve_per_pod() {
    let d = ok(r#"
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, labels: {app: api}}
spec:
  nodeName: node-a
  containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]
status: {podIP: 198.18.1.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-2, labels: {app: api}}
spec:
  containers: [{name: c, ports: [{name: web, containerPort: 9090}]}]
status: {podIP: 198.18.2.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-3, labels: {app: api}}
spec:
  containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]
status: {podIP: 198.18.3.2, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: other}}
spec:
  containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]
status: {podIP: 198.18.4.2, conditions: [{type: Ready, status: "True"}]}
"#);
    assert_eq!(
        backends(program(&d, "default/api:http/TCP/v4/cluster")),
        ["198.18.1.2:8080", "198.18.2.2:9090"]
    );
    assert_eq!(
        backends(program(&d, "default/api:dns/UDP/v4/cluster")),
        ["198.18.1.2:5353", "198.18.2.2:5353"]
    );
}

#[test]
fn dual_stack_gives_a_program_per_family() {
    let d = ok(r#"
apiVersion: v1
kind: Service
metadata: {name: ds}
spec:
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv4, IPv6]
  selector: {app: ds}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: ds-1, labels: {app: ds}}
spec: {containers: [{name: c}]}
status:
  podIPs: [{ip: 198.18.1.2}, {ip: "fd00:18:0:1::2"}]
  conditions: [{type: Ready, status: "True"}]
"#);
    assert_eq!(backends(program(&d, "default/ds:80/TCP/v4/cluster")), ["198.18.1.2:80"]);
    let v6 = program(&d, "default/ds:80/TCP/v6/cluster");
    assert_eq!(backends(v6), ["fd00:18:0:1::2:80"]);
    assert!(v6.frontends[0].addr.is_ipv6());
}

#[test]
fn endpoints_without_selector() {
    let d = ok(r#"
apiVersion: v1
kind: Service
metadata: {name: ext-db}
spec: {ports: [{port: 5432}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: ext-db}
subsets:
- addresses: [{ip: 198.18.9.9}]
  notReadyAddresses: [{ip: 198.18.9.10}]
  ports: [{port: 5432}]
"#);
    assert_eq!(backends(program(&d, "default/ext-db:5432/TCP/v4/cluster")), ["198.18.9.9:5432"]);
}

#[test]
fn session_affinity_and_traffic_policies() {
    let d = ok(&format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: LoadBalancer
  sessionAffinity: ClientIP
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  loadBalancerSourceRanges: [198.18.0.0/24]
  ports: [{{name: http, port: 80}}]
---{SLICE}"#
    ));
    let cluster = program(&d, "default/web:http/TCP/v4/cluster");
    assert_eq!(cluster.affinity_timeout_s, Some(10800), "ClientIP default timeout");
    assert!(cluster.local_only);
    assert_eq!(
        backends(cluster),
        ["198.18.1.2:8080", "198.18.3.2:8080 (terminating)"],
        "internalTrafficPolicy Local"
    );
    let node = program(&d, "default/web:http/TCP/v4/node");
    assert_eq!(
        backends(node),
        backends(cluster),
        "externalTrafficPolicy Local: this node's endpoints"
    );
    assert!(node.source_ranges.is_empty(), "source ranges apply to LoadBalancer addresses");
    let lb = program(&d, "default/web:http/TCP/v4/lb");
    assert_eq!(lb.source_ranges, ["198.18.0.0/24".parse().unwrap()]);
}

#[test]
fn validation_errors_name_file_document_and_field_and_keep_the_rest() {
    let d = run(r#"
apiVersion: v1
kind: Service
metadata: {name: good}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: bad-ip}
spec: {clusterIP: 300.1.1.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: bad-port}
spec: {ports: [{port: 70000}]}
---
apiVersion: v1
kind: Service
metadata: {name: bad-nodeport}
spec: {type: NodePort, ports: [{port: 80, nodePort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: dup-names}
spec: {ports: [{name: a, port: 80}, {name: a, port: 81}]}
---
apiVersion: v1
kind: Service
metadata: {name: no-such-port}
spec: {selector: {app: x}, ports: [{port: 80, targetPort: web}]}
---
apiVersion: v1
kind: Pod
metadata: {name: x, labels: {app: x}}
spec: {containers: [{name: c, ports: [{name: other, containerPort: 1}]}]}
status: {podIP: 198.18.1.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: bad-type}
spec: {type: Magic, ports: [{port: 80}]}
"#);
    let errors: Vec<String> = d.errors.iter().map(ToString::to_string).collect();
    let expect = [
        "test.yaml: document 2: spec.clusterIPs[0]: \"300.1.1.1\" is not an IP address",
        "test.yaml: document 3: spec.ports[0].port: 70000 is not a port",
        "test.yaml: document 4: spec.ports[0].nodePort: 8080 is outside 30000-32767",
        "test.yaml: document 5: spec.ports[1].name: duplicate port name \"a\"",
        "test.yaml: document 6: spec.ports[0].targetPort: no endpoint provides port named \"web\"",
        "test.yaml: document 8: spec.type: unknown type \"Magic\"",
    ];
    for e in expect {
        assert!(errors.iter().any(|got| got.starts_with(e)), "missing error {e:?} in {errors:#?}");
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    assert!(
        d.programs.contains_key("default/good:80/TCP/v4/cluster"),
        "the valid Service is programmed"
    );
    assert_eq!(d.failed.len(), 6);
    assert!(d.programs.keys().all(|k| k.starts_with("default/good")), "no half-programmed Service");
}

#[test]
fn clashes_name_both_services() {
    let d = run(r#"
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {type: NodePort, clusterIP: 198.19.0.5, ports: [{port: 80, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {name: c}
spec: {clusterIP: 198.19.0.5, ports: [{port: 80}]}
"#);
    let errors: Vec<String> = d.errors.iter().map(ToString::to_string).collect();
    assert!(
        errors.iter().any(|e| e.contains("document 2")
            && e.contains("NodePort 30080/TCP is already used by Service default/a")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("document 3")
            && e.contains("198.19.0.5:80/TCP is already used by Service default/a")),
        "{errors:#?}"
    );
    assert!(d.programs.keys().all(|k| k.starts_with("default/a:")));
}

#[test]
fn allocations_survive_a_restart() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {type: NodePort, ports: [{port: 80}]}\n";
    let mut loaded = Loaded::default();
    load_text(Path::new("x.yaml"), yaml, &mut loaded);
    let mut alloc = Allocator::new(Allocations::default());
    let first = desired(&loaded.objects, &node(), &mut alloc);
    let saved = alloc.finish(&|_| false);
    let json = serde_json::to_string(&saved).unwrap();

    // Same inputs in another order, from the saved state.
    loaded.objects.reverse();
    let mut alloc = Allocator::new(serde_json::from_str(&json).unwrap());
    let second = desired(&loaded.objects, &node(), &mut alloc);
    assert_eq!(first.programs, second.programs);
}

#[test]
fn every_seed_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seeds");
    let mut files = lb_userspace::manifests::manifest_files(&dir).unwrap();
    files.sort();
    assert!(files.len() >= 10);
    for file in files {
        let loaded = load_path(&file);
        assert!(loaded.errors.is_empty(), "{}: {:?}", file.display(), loaded.errors);
        let mut alloc = Allocator::new(Allocations::default());
        let d = desired(&loaded.objects, &node(), &mut alloc);
        assert!(
            d.errors.is_empty(),
            "{}: {:?}",
            file.display(),
            d.errors.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
        assert_eq!(d.services.len(), 1, "{}", file.display());
        let s = d.services.values().next().unwrap();
        if s.not_programmed.is_none() {
            assert!(
                !d.programs.is_empty(),
                "{}: programmed Service without programs",
                file.display()
            );
        }
    }
}
