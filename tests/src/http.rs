//! The backends' HTTP server (answers every request with its own name) and the clients.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::NetNs;

/// A real HTTP server in a backend namespace.
pub struct HttpBackend {
    pub name: String,
    served: Arc<AtomicU64>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl HttpBackend {
    /// Serves on `[::]:port` (IPv4 and IPv6) inside `ns`; every response body is `name`.
    pub fn start(ns: &NetNs, port: u16, name: &str) -> Self {
        let served = Arc::new(AtomicU64::new(0));
        let addr: SocketAddr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        let server = ns
            .run(move || tiny_http::Server::http(addr).map(Arc::new).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("HTTP server {addr} in {}: {e}", ns.name()));
        let thread = {
            let server = Arc::clone(&server);
            let served = Arc::clone(&served);
            let name = name.to_owned();
            std::thread::spawn(move || {
                for req in server.incoming_requests() {
                    served.fetch_add(1, Ordering::Relaxed);
                    let _ = req.respond(tiny_http::Response::from_string(name.clone()));
                }
            })
        };
        Self { name: name.to_owned(), served, server, thread: Some(thread) }
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Outcome of a batch of requests, each on a new connection.
#[derive(Debug, Default)]
pub struct Batch {
    /// Response body (backend name) → count.
    pub by_backend: BTreeMap<String, u64>,
    pub errors: Vec<String>,
}

impl Batch {
    pub fn ok(&self) -> u64 {
        self.by_backend.values().sum()
    }
}

/// `count` GET requests to `url` from inside `ns`, each on its own TCP connection (so each
/// is a new flow for the balancer).
pub fn get_many(ns: &NetNs, url: &str, count: usize) -> Batch {
    let url = url.to_owned();
    ns.run(move || {
        let agent = ureq::AgentBuilder::new()
            .max_idle_connections(0)
            .timeout(Duration::from_secs(5))
            .build();
        let mut batch = Batch::default();
        for i in 0..count {
            match agent.get(&url).set("Connection", "close").call() {
                Ok(resp) => match resp.into_string() {
                    Ok(body) => *batch.by_backend.entry(body).or_default() += 1,
                    Err(e) => batch.errors.push(format!("request {i}: reading body: {e}")),
                },
                Err(e) => batch.errors.push(format!("request {i}: {e}")),
            }
        }
        batch
    })
}

/// One HTTP/1.1 keep-alive connection, used to prove a flow survives backend churn: any
/// reset or reconnect shows up as an error, never hidden by a client's retry.
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    pub fn connect(ns: &NetNs, addr: SocketAddr) -> std::io::Result<Self> {
        let stream = ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self { reader: BufReader::new(stream) })
    }

    /// The client side's address (the flow's source).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.reader.get_ref().local_addr()
    }

    /// Sends one GET and returns the body.
    pub fn get(&mut self) -> std::io::Result<String> {
        self.reader
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n")?;
        let mut content_length = None;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        if !status.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(format!("unexpected status line {status:?}")));
        }
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse::<usize>().ok();
            }
        }
        let len = content_length.ok_or_else(|| std::io::Error::other("no Content-Length"))?;
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}
