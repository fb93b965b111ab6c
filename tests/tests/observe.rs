//! What operators see: `lbctl` tables and JSON, and the Prometheus metrics, on a lab with
//! known state, checked against what the backends actually served.

use std::collections::BTreeMap;

use lb_tests::{
    agent::AgentLab,
    http::{KeepAlive, get_many},
    lab::{BACKEND_PORT, LB_IP_V4},
    require_root,
};

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.10
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: 198.19.255.10}]}}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: kube-system}
spec: {type: ExternalName, externalName: dns.example.com}
"#;

fn slice(lab: &AgentLab) -> String {
    let eps: String =
        lab.net.backends.iter().map(|b| format!("- addresses: [{}]\n", b.v4)).collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: shop\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: {BACKEND_PORT}}}]\nendpoints:\n{eps}"
    )
}

fn served(lab: &AgentLab) -> BTreeMap<String, u64> {
    lab.net.backends.iter().map(|b| (format!("{}:{BACKEND_PORT}", b.v4), b.http.served())).collect()
}

#[test]
fn lbctl_and_metrics_report_what_the_backends_served() {
    require_root!();
    let mut lab = AgentLab::new(3);
    lab.write("web.yaml", SERVICE);
    lab.write("web-slice.yaml", &slice(&lab));
    lab.start_agent().wait_synced(1);

    let batch = get_many(&lab.net.client, &format!("http://{LB_IP_V4}/"), 150);
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    let mut conn = KeepAlive::connect(&lab.net.client, (LB_IP_V4, 80).into()).expect("connect");
    let answered = conn.get().expect("request");
    let served = served(&lab);

    // get services: a kubectl-like table, golden.
    let (code, out, err) = lab.lbctl(&["get", "services"]);
    assert_eq!(code, 0, "{err}");
    let golden = "\
NAMESPACE     NAME   TYPE           CLUSTER-IP    EXTERNAL-IP     PORT(S)        READY   DATAPATH
kube-system   dns    ExternalName   <none>        <none>          <none>         0       not programmed: ExternalName (dns.example.com): DNS only
shop          web    LoadBalancer   198.19.0.10   198.19.255.10   80:30080/TCP   3       programmed
";
    assert_eq!(out, golden);

    // stats -o json: per-backend new flows equal the requests each backend served.
    let (code, out, err) = lab.lbctl(&["-o", "json", "stats"]);
    assert_eq!(code, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).expect("json");
    let flows: BTreeMap<String, u64> = stats["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| (b["backend"].as_str().unwrap().to_owned(), b["new_flows"].as_u64().unwrap()))
        .collect();
    assert_eq!(flows, served, "lbctl stats vs what the backends served");
    assert_eq!(stats["drops"]["no_backend"], 0);

    // explain the live keep-alive flow: conntrack, and the backend that answered.
    let client = conn.local_addr().expect("local addr");
    let (code, out, err) =
        lab.lbctl(&["-o", "json", "explain", &client.to_string(), "198.19.255.10:80"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let e = &v["explanation"];
    assert!(v["live"].is_null(), "no --live, no run");
    assert!(e["reason"].as_str().unwrap().starts_with("conntrack"), "{e}");
    let answered_addr = lab
        .net
        .backends
        .iter()
        .find(|b| b.name == answered)
        .map(|b| format!("{}:{BACKEND_PORT}", b.v4));
    assert_eq!(e["backend"].as_str().map(str::to_owned), answered_addr);
    assert_eq!(e["service"], "shop/web:http/TCP/v4/lb");
    // A flow the datapath has not seen: a Maglev slot; a non-service destination: exit 3.
    let (_, out, _) = lab.lbctl(&["explain", "198.18.0.2:1", "198.19.255.10:80"]);
    assert!(out.contains("why:      new flow: Maglev slot"), "{out}");
    // --live runs the loaded program on a synthetic SYN and agrees with the prediction,
    // without touching live state.
    let flows_before = lab.lbctl(&["-o", "json", "conntrack", "count"]).1;
    let (code, out, err) =
        lab.lbctl(&["-o", "json", "explain", "--live", "198.18.0.2:1", "198.19.255.10:80"]);
    assert_eq!(code, 0, "{err}");
    let live: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(live["live"]["verdict"], "XDP_PASS", "{live}");
    assert_eq!(live["live"]["destination_after"], live["explanation"]["backend"], "{live}");
    assert_eq!(live["live"]["source_after"], "198.18.0.2:1");
    assert_eq!(live["live"]["checksums_ok"], true);
    assert_eq!(
        lab.lbctl(&["-o", "json", "conntrack", "count"]).1,
        flows_before,
        "--live changed live conntrack"
    );
    let (code, _, _) = lab.lbctl(&["explain", "198.18.0.2:1", "198.18.9.9:80"]);
    assert_eq!(code, 3);

    // conntrack and maglev views.
    let (_, out, _) = lab.lbctl(&["-o", "json", "conntrack", "count"]);
    let count: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(count["entries"].as_u64().unwrap() >= 151, "{out}");
    // Per-backend filters add up; flushing one backend's flows removes exactly those.
    let other = lab.net.backends.iter().find(|b| b.name != answered).expect("another backend");
    let other = format!("{}:{BACKEND_PORT}", other.v4);
    let count = |extra: &[&str]| -> u64 {
        let mut args = vec!["-o", "json", "conntrack", "count"];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(&lab.lbctl(&args).1).expect("json");
        v["entries"].as_u64().expect("entries")
    };
    let total = count(&[]);
    let per_backend: u64 = served.keys().map(|b| count(&["--backend", b])).sum();
    assert_eq!(per_backend, total, "per-backend counts add up to the total");
    let before = count(&["--backend", &other]);
    assert_eq!(before, served[&other], "one entry per connection the backend served");
    let (code, out, err) = lab.lbctl(&["-o", "json", "conntrack", "flush", "--backend", &other]);
    assert_eq!(code, 0, "{err}");
    let flushed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(flushed["flushed"].as_u64(), Some(before));
    assert_eq!(count(&["--backend", &other]), 0);
    assert_eq!(count(&[]), total - before);
    assert_eq!(conn.get().expect("the flow of another backend is untouched"), answered);

    let (code, out, _) = lab.lbctl(&["-o", "json", "stats", "--rates", "0.2"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["rates"].as_array().map(Vec::len), Some(3), "{v}");

    let (code, out, _) = lab.lbctl(&["-o", "json", "maglev", "shop/web"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).expect("json");
    let slots: u64 = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["program"] == "shop/web:http/TCP/v4/lb")
        .map(|r| r["slots"].as_u64().unwrap())
        .sum();
    assert_eq!(slots, 1021, "every slot of the table belongs to a backend");
    assert_eq!(lab.lbctl(&["maglev", "shop/nope"]).0, 3);

    // describe: every frontend group of the Service with its backends; YAML output too.
    let (code, out, err) = lab.lbctl(&["-o", "json", "describe", "service", "shop/web"]);
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).expect("json");
    let programs = d["programs"].as_array().expect("programs");
    let keys: Vec<&str> = programs.iter().map(|p| p["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        ["shop/web:http/TCP/v4/cluster", "shop/web:http/TCP/v4/lb", "shop/web:http/TCP/v4/node"]
    );
    for p in programs {
        let states: Vec<&str> = p["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["ready", "ready", "ready"], "{p}");
    }
    let (_, out, _) = lab.lbctl(&["describe", "service", "shop/web"]);
    assert!(
        out.contains("Type:          LoadBalancer")
            && out.contains("198.19.255.10:80/TCP (LoadBalancer)"),
        "{out}"
    );
    assert_eq!(lab.lbctl(&["describe", "service", "shop/nope"]).0, 3);
    let (code, out, _) = lab.lbctl(&["-o", "yaml", "get", "services"]);
    assert_eq!(code, 0);
    assert!(out.contains("name: web") && out.contains("type: LoadBalancer"), "{out}");
    let (code, out, _) =
        lab.lbctl(&["top", "--iterations", "2", "--interval", "0.2", "--sort", "new-flows"]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("lbctl top: 3 backends").count(), 2, "two refreshes:\n{out}");
    assert!(out.contains("shop/web:http"), "{out}");
    let (code, out, _) = lab.lbctl(&["completions", "bash"]);
    assert!(code == 0 && out.contains("_lbctl"), "bash completion script");

    // Metrics: the same per-backend figures, scraped from the agent.
    let body = lab.net.node.run(|| {
        ureq::get("http://127.0.0.1:9108/metrics")
            .call()
            .expect("scrape")
            .into_string()
            .expect("body")
    });
    let mut metric_flows = BTreeMap::new();
    for line in body.lines().filter(|l| l.starts_with("lb_backend_new_flows_total{")) {
        let backend = line
            .split("backend=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("backend label");
        let value: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("value");
        assert!(
            line.contains("namespace=\"shop\"")
                && line.contains("service=\"web\"")
                && line.contains("port=\"http\""),
            "{line}"
        );
        metric_flows.insert(backend.to_owned(), value);
    }
    assert_eq!(metric_flows, served, "metrics vs what the backends served:\n{body}");
    assert!(body.contains("lb_drops_total{reason=\"source_range_denied\"} 0"), "{body}");
    assert!(body.contains("lb_syncs_total 1"), "{body}");
    assert!(body.contains("lb_conntrack_capacity "), "{body}");
}
