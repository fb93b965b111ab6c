//! `lb-agent` end to end: real manifests in, real traffic through the lab, live edits,
//! a broken edit, and a SIGKILL + restart under load.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lb_tests::{
    agent::AgentLab,
    http::{Batch, KeepAlive, get_many},
    lab::{BACKEND_PORT, LB_IP_V4},
    require_root,
};

fn service() -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.10
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {BACKEND_PORT}, nodePort: 30080}}]
status: {{loadBalancer: {{ingress: [{{ip: {LB_IP_V4}}}]}}}}
"#
    )
}

fn slice(lab: &AgentLab, backends: &[usize]) -> String {
    let endpoints: String = backends
        .iter()
        .map(|&i| format!("- addresses: [{}]\n  nodeName: node\n", lab.net.backends[i].v4))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: shop\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: {BACKEND_PORT}, protocol: TCP}}]\nendpoints:\n{endpoints}"
    )
}

fn names(lab: &AgentLab, idx: &[usize]) -> Vec<String> {
    idx.iter().map(|&i| lab.net.backends[i].name.clone()).collect()
}

fn lb_requests(lab: &AgentLab, n: usize) -> Batch {
    get_many(&lab.net.client, &format!("http://{LB_IP_V4}/"), n)
}

#[test]
fn manifest_edits_move_new_connections_and_keep_established_ones() {
    require_root!();
    let mut lab = AgentLab::new(3);
    lab.write("web.yaml", &service());
    lab.write("web-slice.yaml", &slice(&lab, &[0, 1]));
    lab.start_agent().wait_synced(1);

    let batch = lb_requests(&lab, 60);
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    assert_eq!(batch.by_backend.keys().cloned().collect::<Vec<_>>(), names(&lab, &[0, 1]));

    let mut conn = KeepAlive::connect(&lab.net.client, (LB_IP_V4, 80).into()).expect("connect");
    let mine = conn.get().expect("first request");
    let mine_idx = lab.net.backends.iter().position(|b| b.name == mine).expect("known backend");
    let other = if mine_idx == 0 { 1 } else { 0 };

    // Replace the other backend by backend-2.
    let edited = Instant::now();
    lab.write("web-slice.yaml", &slice(&lab, &[mine_idx, 2]));
    let agent = lab.agent.as_mut().expect("agent");
    agent.wait_synced(2);
    let applied_after = edited.elapsed();
    assert!(
        applied_after < Duration::from_secs(1),
        "edit took {applied_after:?} to reach the maps"
    );

    let batch = lb_requests(&lab, 60);
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    assert!(
        !batch.by_backend.contains_key(&lab.net.backends[other].name),
        "removed backend got new flows: {:?}\n{}",
        batch.by_backend,
        lab.agent.as_ref().expect("agent").log_text()
    );
    assert!(
        batch.by_backend.contains_key(&lab.net.backends[2].name),
        "added backend got no flows: {:?}",
        batch.by_backend
    );
    for _ in 0..5 {
        assert_eq!(conn.get().expect("established connection survives the edit"), mine);
    }
    let log = lab.agent.as_ref().expect("agent").log_text();
    assert!(
        log.contains("applied") && log.contains("shop/web:http/TCP/v4/lb"),
        "one line per applied change:\n{log}"
    );
}

#[test]
fn a_broken_edit_keeps_traffic_flowing_and_is_reported() {
    require_root!();
    let mut lab = AgentLab::new(2);
    lab.write("web.yaml", &service());
    lab.write("web-slice.yaml", &slice(&lab, &[0, 1]));
    lab.start_agent().wait_synced(1);
    assert!(lb_requests(&lab, 20).errors.is_empty());

    // nodePort out of range: the Service is invalid as a whole.
    lab.write("web.yaml", &service().replace("nodePort: 30080", "nodePort: 80"));
    lab.agent.as_mut().expect("agent").wait_synced(2);
    let batch = lb_requests(&lab, 60);
    assert!(batch.errors.is_empty(), "traffic broke after an invalid edit: {:?}", batch.errors);
    assert_eq!(batch.by_backend.len(), 2);
    let log = lab.agent.as_ref().expect("agent").log_text();
    assert!(
        log.contains("web.yaml: document 1: spec.ports[0].nodePort: 80 is outside 30000-32767"),
        "the error names file, document and field:\n{log}"
    );

    // A YAML syntax error in the file: same.
    lab.write("web.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web\n");
    lab.agent.as_mut().expect("agent").wait_synced(3);
    let batch = lb_requests(&lab, 30);
    assert!(batch.errors.is_empty(), "traffic broke after a syntax error: {:?}", batch.errors);
    assert!(lab.agent.as_ref().expect("agent").log_text().contains("not valid YAML"));
}

#[test]
fn sigkill_and_restart_under_load_loses_no_request() {
    require_root!();
    let mut lab = AgentLab::new(3);
    lab.write("web.yaml", &service());
    lab.write("web-slice.yaml", &slice(&lab, &[0, 1, 2]));
    lab.start_agent().wait_synced(1);

    let mut conn = KeepAlive::connect(&lab.net.client, (LB_IP_V4, 80).into()).expect("connect");
    let mine = conn.get().expect("first request");

    // Continuous load: a new connection per request until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let url = format!("http://{LB_IP_V4}/");
        let client = lab.net.client.name().to_owned();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(format!("/run/netns/{client}")).expect("netns");
            // SAFETY: setns affects only this thread.
            assert_eq!(
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) },
                0
            );
            let agent = ureq::AgentBuilder::new()
                .max_idle_connections(0)
                .timeout(Duration::from_secs(5))
                .build();
            let (mut ok, mut errors) = (0u64, Vec::new());
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let sent = t0.elapsed();
                match agent.get(&url).call() {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(format!("request sent at {sent:?}: {e}")),
                }
            }
            (ok, errors)
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    lab.agent.as_mut().expect("agent").stop(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(700)); // no agent at all for a while
    lab.start_agent().wait_synced(1);
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let (ok, errors) = load.join().expect("load thread");
    assert!(
        errors.is_empty(),
        "{} of {} requests failed across the restart: {:?}",
        errors.len(),
        ok as usize + errors.len(),
        &errors[..errors.len().min(3)]
    );
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert_eq!(conn.get().expect("long-lived connection survives the restart"), mine);

    let log = lab.agent.as_ref().expect("agent").log_text();
    assert!(log.contains("adopted_services="), "{log}");
}

#[test]
fn sigterm_leaves_the_datapath_serving_and_cleanup_removes_it() {
    require_root!();
    let mut lab = AgentLab::new(2);
    lab.write("web.yaml", &service());
    lab.write("web-slice.yaml", &slice(&lab, &[0, 1]));
    lab.start_agent().wait_synced(1);
    lab.agent.as_mut().expect("agent").stop(libc::SIGTERM);
    let log = lab.agent.as_ref().expect("agent").log_text();
    assert!(log.contains("stopping; the datapath keeps serving"), "{log}");

    let batch = lb_requests(&lab, 30);
    assert!(batch.errors.is_empty(), "no agent, still served: {:?}", batch.errors);
    assert_eq!(batch.by_backend.len(), 2);

    let out = std::process::Command::new(lb_tests::agent::agent_binary())
        .args(["cleanup", "--pin-dir"])
        .arg(&lab.pins.0)
        .arg("--state-file")
        .arg(lab.dir.0.join("allocations.json"))
        .output()
        .expect("lb-agent cleanup");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!lab.pins.0.exists(), "pins removed");
    assert!(!lab.dir.0.join("allocations.json").exists(), "saved allocations removed");
    // With the links gone, the LoadBalancer address is nobody's: requests fail.
    let batch = get_many(&lab.net.client, &format!("http://{LB_IP_V4}/"), 1);
    assert_eq!(batch.ok(), 0, "datapath still answering after cleanup: {:?}", batch.by_backend);
}
