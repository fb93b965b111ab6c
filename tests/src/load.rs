//! Load for the end-to-end benchmark: a small, fast HTTP server in the backend namespaces,
//! wrk from the client namespace, TCP connect timing, and a UDP packet generator.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::netns::NetNs;

/// HTTP/1.1 servers answering every request with a short body, one listener per backend
/// namespace, all on one small tokio runtime (so every mode under test gets the same server
/// capacity). UDP sockets are bound too, so datagrams are delivered and silently dropped
/// instead of drawing ICMP errors. Dropping it stops everything.
pub struct BenchServers {
    runtime: Option<tokio::runtime::Runtime>,
    _udp: Vec<UdpSocket>,
}

impl BenchServers {
    pub fn start(backends: &[&NetNs], tcp_port: u16, udp_port: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let mut udp = Vec::new();
        for ns in backends {
            let (listener, socket) = ns.run(move || {
                let tcp = std::net::TcpListener::bind(("0.0.0.0", tcp_port))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l));
                let udp = UdpSocket::bind(("0.0.0.0", udp_port));
                (tcp.map_err(|e| e.to_string()), udp.map_err(|e| e.to_string()))
            });
            let listener = listener.unwrap_or_else(|e| panic!("listen in {}: {e}", ns.name()));
            udp.push(socket.unwrap_or_else(|e| panic!("udp in {}: {e}", ns.name())));
            runtime.spawn(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream));
                }
            });
        }
        Self { runtime: Some(runtime), _udp: udp }
    }
}

impl Drop for BenchServers {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn serve(mut stream: tokio::net::TcpStream) {
    const BODY: &str = "ok\n";
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    loop {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let close = head.contains("connection: close");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n{BODY}",
                BODY.len(),
                if close { "Connection: close\r\n" } else { "" }
            );
            if stream.write_all(reply.as_bytes()).await.is_err() || close {
                return;
            }
            buf.copy_within(end + 4..filled, 0);
            filled -= end + 4;
        }
        if filled == buf.len() {
            return; // a header this long is not ours
        }
    }
}

/// What wrk measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct WrkResult {
    pub requests_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Connect/read/write/timeout errors plus non-2xx answers.
    pub errors: u64,
}

/// Runs wrk from `client` against `url` for `seconds` with `connections` connections on one
/// thread; `close` sends `Connection: close` so every request is a new connection.
pub fn wrk(client: &NetNs, url: &str, seconds: u32, connections: u32, close: bool) -> WrkResult {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", client.name(), "wrk", "-t1", "--latency", "--timeout", "2s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"));
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(url).output().unwrap_or_else(|e| panic!("running wrk: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    parse_wrk(&text).unwrap_or_else(|| panic!("unexpected wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let duration_us = |s: &str| -> Option<f64> {
        let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
        let v: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => v,
            "ms" => v * 1e3,
            "s" => v * 1e6,
            _ => return None,
        })
    };
    let mut r = WrkResult::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => r.requests_per_s = v.parse().ok()?,
            (Some("50%"), Some(v)) => r.p50_us = duration_us(v)?,
            (Some("99%"), Some(v)) => r.p99_us = duration_us(v)?,
            (Some("Socket"), Some("errors:")) => {
                r.errors += line
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            (Some("Non-2xx"), _) => {
                r.errors += line.split_whitespace().last()?.parse::<u64>().ok()?;
            }
            _ => {}
        }
    }
    (r.requests_per_s > 0.0).then_some(r)
}

/// Times `count` TCP connects (SYN → SYN/ACK, as the client's connect() sees it) from
/// `client` to `target`: (p50, p99) in µs.
pub fn connect_times(client: &NetNs, target: SocketAddr, count: usize) -> (f64, f64) {
    let mut us: Vec<f64> = client.run(move || {
        (0..count)
            .map(|_| {
                let start = Instant::now();
                let stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("connect {target}: {e}"));
                let t = start.elapsed().as_secs_f64() * 1e6;
                drop(stream);
                t
            })
            .collect()
    });
    us.sort_by(f64::total_cmp);
    (us[us.len() / 2], us[us.len() * 99 / 100])
}

/// Sends small UDP datagrams (18-byte payload) from `client` to `target` for `duration`
/// from `flows` source ports, batched with sendmmsg: the number sent.
pub fn udp_blast(client: &NetNs, target: SocketAddr, flows: usize, duration: Duration) -> u64 {
    client.run(move || {
        let sockets: Vec<UdpSocket> = (0..flows)
            .map(|_| {
                let s = UdpSocket::bind(("0.0.0.0", 0)).expect("bind udp");
                s.connect(target).expect("connect udp");
                s
            })
            .collect();
        const BATCH: usize = 64;
        let mut payload = *b"lb-bench-udp-18by\n";
        let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
        // SAFETY: zeroed mmsghdr is a valid "no name, no control" message; every header
        // points at the one iovec above, which outlives the calls.
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let deadline = Instant::now() + duration;
        let mut sent = 0u64;
        'outer: loop {
            for s in &sockets {
                if Instant::now() >= deadline {
                    break 'outer;
                }
                // SAFETY: msgs is a valid array of BATCH headers (see above).
                let n =
                    unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
                if n > 0 {
                    sent += n as u64;
                }
            }
        }
        sent
    })
}

/// Packets the node transmitted on `interfaces` so far (its forwarded packets).
pub fn tx_packets(node: &NetNs, interfaces: &[String]) -> u64 {
    let out = Command::new("ip")
        .args(["-n", node.name(), "-j", "-s", "link", "show"])
        .output()
        .unwrap_or_else(|e| panic!("ip -s link: {e}"));
    let links: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ip -j output: {e}"));
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["ifname"].as_str().is_some_and(|n| interfaces.iter().any(|i| i == n)))
        .filter_map(|l| l["stats64"]["tx"]["packets"].as_u64())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_rates_latencies_and_errors() {
        let text = "Running 4s test @ http://198.19.0.10:80/\n  1 threads and 32 connections\n  Latency Distribution\n     50%  250.00us\n     75%  400.00us\n     90%  800.00us\n     99%    1.20ms\n  48000 requests in 4.00s, 3.00MB read\n  Socket errors: connect 2, read 1, write 0, timeout 3\n  Non-2xx or 3xx responses: 4\nRequests/sec:  12000.50\nTransfer/sec:      1.00MB\n";
        let r = parse_wrk(text).expect("parsed");
        assert_eq!(r.requests_per_s, 12000.5);
        assert_eq!((r.p50_us, r.p99_us), (250.0, 1200.0));
        assert_eq!(r.errors, 10);
        assert!(parse_wrk("wrk: connection refused\n").is_none());
    }
}
