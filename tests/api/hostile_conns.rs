//! Connection floods from outside against the server as a process, its open-file limit
//! lowered to 256 with prlimit: thousands of idle and slow connections to both ports
//! are closed or refused while `/health` and gRPC health keep answering within a
//! second, and the server never runs out of file descriptors.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use tokio::{io::AsyncWriteExt, net::TcpStream};
use tonic::transport::Channel;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::backends::serving_grpc_server;

/// What an attacking connection does once connected.
#[derive(Clone, Copy)]
enum Kind {
    /// Nothing.
    Idle,
    /// The start of a request (an HTTP request line, the HTTP/2 preface) and nothing more.
    Slow,
}

/// Opens a connection to `port` and starts it as `kind`; None when refused.
async fn attack(port: u16, kind: Kind, grpc: bool) -> Option<TcpStream> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .ok()?
    .ok()?;
    if let Kind::Slow = kind {
        let start: &[u8] = if grpc {
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        } else {
            b"GET /health HTTP/1.1\r\nHost: x\r\n"
        };
        s.write_all(start).await.ok()?;
    }
    Some(s)
}

/// True while the server has not closed `s`.
fn still_open(s: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// One probe of each port on a fresh connection: `/health` 200 and gRPC health SERVING,
/// each within a second. Err says which failed.
async fn probe(http_url: &str, grpc_url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let resp = client
        .get(format!("{http_url}/health"))
        .send()
        .await
        .map_err(|e| format!("/health: {e}"))?;
    if resp.status() != 200 {
        return Err(format!("/health answered {}", resp.status()));
    }
    let check = async {
        let ch = Channel::from_shared(grpc_url.to_string())
            .unwrap()
            .connect()
            .await?;
        let resp = HealthClient::new(ch)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(resp.into_inner().status)
    };
    match tokio::time::timeout(Duration::from_secs(1), check).await {
        Ok(Ok(s)) if s == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(s)) => Err(format!("gRPC health status {s}")),
        Ok(Err(e)) => Err(format!("gRPC health: {e}")),
        Err(_) => Err("gRPC health took over a second".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_and_slow_connections_cannot_lock_out_health_checks() {
    const PER_PORT: usize = 1500;
    // 80 of the 256 descriptors at most go to connections: the rest is headroom for
    // MongoDB's pool, log files and sockets the kernel has not finished closing.
    const GRPC_MAX: usize = 64;
    const HTTP_MAX: usize = 16;
    // The caps fit the lowered limit: 128 connections, the rest for MongoDB, logs and
    // the connections being closed (docs/operations.md, Security).
    let (mut server, _) = serving_grpc_server(
        "flood",
        &[
            ("GRPC_MAX_CONNECTIONS", GRPC_MAX.to_string()),
            ("HTTP_MAX_CONNECTIONS", HTTP_MAX.to_string()),
        ],
    )
    .await;
    let limited = Command::new("prlimit")
        .args(["--nofile=256:256", "--pid", &server.pid().to_string()])
        .status()
        .expect("run prlimit");
    assert!(limited.success());
    let (http, grpc) = (port_of(&server.http_url), port_of(&server.grpc_url));

    let started = Instant::now();
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..PER_PORT {
        let kind = if i % 2 == 0 { Kind::Idle } else { Kind::Slow };
        for (port, is_grpc) in [(http, false), (grpc, true)] {
            match attack(port, kind, is_grpc).await {
                Some(s) => held.push(s),
                None => refused += 1,
            }
        }
        if i % 100 == 0 {
            probe(&server.http_url, &server.grpc_url)
                .await
                .expect("probe while connecting");
        }
    }
    // The flood goes on: 20 new connections per port between probes.
    let mut probes = 0;
    while probes < 20 {
        for _ in 0..20 {
            for (port, is_grpc) in [(http, false), (grpc, true)] {
                match attack(port, Kind::Idle, is_grpc).await {
                    Some(s) => held.push(s),
                    None => refused += 1,
                }
            }
        }
        probe(&server.http_url, &server.grpc_url)
            .await
            .expect("probe under the flood");
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open = held.iter().filter(|s| still_open(s)).count();
    eprintln!(
        "CONNECTION_FLOOD attempted={} held_open={open} closed_by_server={} refused={refused} secs={:.1}",
        held.len() + refused,
        held.len() - open,
        started.elapsed().as_secs_f64()
    );
    assert!(
        open <= GRPC_MAX + HTTP_MAX,
        "{open} attacking connections still open"
    );
    assert!(server.running(), "{}", server.log_tail());
    assert!(
        !server.logs().contains("Too many open files"),
        "the server ran out of file descriptors: {}",
        server.log_tail()
    );
    drop(held);
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
}
