//! HTTP/2 abuse on the gRPC port from a raw client, against the server as a process:
//! more streams on one connection than GRPC_MAX_CONCURRENT_STREAMS are refused, and a
//! client that makes the server reset streams ("MadeYouReset", CVE-2025-8671) or
//! resets its own streams rapidly (CVE-2023-44487) is sent GOAWAY and cut off, while
//! other clients are served.
use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{backends::serving_grpc_server, helpers::*};

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// A request header block for `path`: HPACK literals without indexing or Huffman.
fn headers(path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        b.push(0);
        b.push(k.len() as u8);
        b.extend(k.as_bytes());
        b.push(v.len() as u8);
        b.extend(v.as_bytes());
    }
    b
}

/// A frame the server sent: type, flags, stream, payload.
type Frame = (u8, u8, u32, Vec<u8>);

/// A raw HTTP/2 connection past the handshake, with the server's SETTINGS.
async fn connect(port: u16) -> (TcpStream, Vec<(u16, u32)>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let (kind, _, _, payload) = read_frame(&mut s).await.unwrap();
    assert_eq!(kind, SETTINGS);
    let settings = payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    s.write_all(&frame(SETTINGS, 1, 0, &[])).await.unwrap();
    (s, settings)
}

async fn read_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream, payload))
}

/// Every frame until the server closes the connection or is silent for `quiet`.
async fn frames_until_closed(s: &mut TcpStream, quiet: Duration) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(quiet, read_frame(s)).await {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, true),
            Err(_) => return (frames, false),
        }
    }
}

/// The error code of the GOAWAY among `frames`, if any.
fn goaway_code(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.0 == GOAWAY && f.3.len() >= 8)
        .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
}

/// Sends `bytes` until the server stops reading; false when the connection broke.
async fn send(s: &mut TcpStream, bytes: &[u8]) -> bool {
    s.write_all(bytes).await.is_ok()
}

async fn served(grpc_url: &str) {
    let mut health = HealthClient::new(channel(grpc_url).await);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("another client is served")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_stream_floods_and_reset_floods_are_cut_off_and_others_are_served() {
    let (server, _) = serving_grpc_server("h2abuse", &[]).await;
    let port: u16 = server.grpc_url.rsplit(':').next().unwrap().parse().unwrap();
    let watch = headers("/grpc.health.v1.Health/Watch");
    let empty_message = [0u8; 5];

    // 1. Many streams on one connection: the server advertises and enforces the limit.
    let (mut s, settings) = connect(port).await;
    assert!(
        settings.contains(&(3, 100)),
        "SETTINGS_MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    let mut burst = Vec::new();
    for i in 0..300u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS, id, &watch));
        burst.extend(frame(DATA, END_STREAM, id, &empty_message));
    }
    send(&mut s, &burst).await;
    let (frames, _) = frames_until_closed(&mut s, Duration::from_secs(2)).await;
    let answered: std::collections::BTreeSet<u32> = frames
        .iter()
        .filter(|f| f.0 == HEADERS)
        .map(|f| f.2)
        .collect();
    let refused = frames
        .iter()
        .filter(|f| f.0 == RST_STREAM && f.3 == 7u32.to_be_bytes())
        .count();
    let goaway = goaway_code(&frames);
    eprintln!(
        "H2_STREAMS opened=300 answered={} refused={refused} goaway={goaway:?}",
        answered.len()
    );
    assert!(
        answered.len() <= 100,
        "{} streams answered at once",
        answered.len()
    );
    // Past the limit streams are refused, and a client that keeps opening them is cut
    // off with ENHANCE_YOUR_CALM.
    assert!(refused > 0, "no stream refused");
    assert!(
        refused >= 200 || goaway == Some(0xb),
        "refused {refused}, GOAWAY {goaway:?}"
    );
    served(&server.grpc_url).await;
    drop(s);

    // 2. Frames the server must answer with a reset (WINDOW_UPDATE of 0 on each
    // stream): GOAWAY, closed.
    let (mut s, _) = connect(port).await;
    let check = headers("/grpc.health.v1.Health/Check");
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS, id, &check));
        burst.extend(frame(WINDOW_UPDATE, 0, id, &0u32.to_be_bytes()));
    }
    send(&mut s, &burst).await;
    let (frames, closed) = frames_until_closed(&mut s, Duration::from_secs(5)).await;
    let resets = frames.iter().filter(|f| f.0 == RST_STREAM).count();
    let goaway = goaway_code(&frames);
    eprintln!(
        "H2_MADE_YOU_RESET sent=2000 server_resets={resets} goaway={goaway:?} closed={closed}"
    );
    // The connection is closed with GOAWAY long before every stream was reset:
    // PROTOCOL_ERROR (0x1) when the server takes the frame for a connection error,
    // ENHANCE_YOUR_CALM (0xb) after the allowed number of stream resets.
    assert!(
        matches!(goaway, Some(0x1 | 0xb)) && closed,
        "resets {resets}, goaway {goaway:?}, closed {closed}"
    );
    assert!(
        resets <= 64,
        "the server reset {resets} streams before GOAWAY"
    );
    assert!(resets < 2000, "the server reset all {resets} streams");
    served(&server.grpc_url).await;

    // 3. Rapid reset: open and cancel streams at once, thousands of times.
    let (mut s, _) = connect(port).await;
    let mut burst = Vec::new();
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS, id, &watch));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let sent_all = send(&mut s, &burst).await;
    let (frames, closed) = frames_until_closed(&mut s, Duration::from_secs(5)).await;
    let goaway = goaway_code(&frames);
    eprintln!("H2_RAPID_RESET sent=20000 sent_all={sent_all} goaway={goaway:?} closed={closed}");
    assert!(
        goaway == Some(0xb) && closed,
        "a rapid-reset client kept its connection: {goaway:?}"
    );
    served(&server.grpc_url).await;

    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
}
