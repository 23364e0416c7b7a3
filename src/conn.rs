//! Connection limits of both listeners: a [`Gate`] keeps at most `max` connections
//! open (past it the least recently active one is closed to make room for the new one,
//! so idle connections cannot lock out probes and producers) and closes a connection
//! that has received nothing for the idle timeout. A closed connection's reads and
//! writes fail, which ends its HTTP or gRPC connection task. [`tune`] sets the socket
//! options of every accepted connection.
use std::{
    collections::HashMap,
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Idle time before the first TCP keepalive probe, and time between probes.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the kernel drops the connection.
const KEEPALIVE_RETRIES: u32 = 3;

/// Sets TCP_NODELAY (small responses such as acks and health answers are sent at
/// once, not held back by Nagle's algorithm) and TCP keepalive (a peer that vanished
/// without a FIN is noticed by the kernel, also on connections no protocol pings) on
/// an accepted socket. A failure is logged and the connection kept.
pub fn tune(stream: &tokio::net::TcpStream) {
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    if let Err(e) = sock
        .set_tcp_nodelay(true)
        .and_then(|()| sock.set_tcp_keepalive(&keepalive))
    {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY or keepalive on a connection");
    }
}

/// One open connection's standing.
#[derive(Debug)]
struct Slot {
    /// Milliseconds since the gate's start at its last activity.
    last: AtomicU64,
    close: CancellationToken,
}

/// The open connections of one listener.
#[derive(Debug)]
pub struct Gate {
    /// The variable that sets `max`, for the log line of a closed connection.
    name: &'static str,
    max: usize,
    idle: Duration,
    epoch: Instant,
    open: Mutex<(u64, HashMap<u64, Arc<Slot>>)>,
}

impl Gate {
    pub fn new(name: &'static str, max: usize, idle: Duration) -> Arc<Self> {
        Arc::new(Self {
            name,
            max,
            idle,
            epoch: Instant::now(),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Admits `io`, closing the least recently active connection when `max` are open.
    pub fn admit<IO>(self: &Arc<Self>, io: IO) -> Guarded<IO> {
        let slot = Arc::new(Slot {
            last: AtomicU64::new(self.now_ms()),
            close: CancellationToken::new(),
        });
        let id = {
            let mut open = self.open.lock().expect("gate");
            while open.1.len() >= self.max {
                let oldest = open
                    .1
                    .iter()
                    .min_by_key(|(_, s)| s.last.load(Ordering::Relaxed))
                    .map(|(id, _)| *id)
                    .expect("non-empty");
                if let Some(victim) = open.1.remove(&oldest) {
                    victim.close.cancel();
                }
                tracing::debug!(
                    limit = self.name,
                    "closed the least recently active connection"
                );
            }
            open.0 += 1;
            let id = open.0;
            open.1.insert(id, slot.clone());
            id
        };
        Guarded {
            io,
            id,
            closed: Box::pin(slot.close.clone().cancelled_owned()),
            idle: Box::pin(tokio::time::sleep(self.idle)),
            slot,
            gate: self.clone(),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("gate").1.len()
    }
}

/// A connection admitted by a [`Gate`].
pub struct Guarded<IO> {
    io: IO,
    id: u64,
    slot: Arc<Slot>,
    gate: Arc<Gate>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    idle: Pin<Box<Sleep>>,
}

impl<IO> Guarded<IO> {
    /// The connection as accepted.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn refused(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Some(io::Error::other(format!(
                "connection closed for a newer one ({} reached)",
                self.gate.name
            )));
        }
        if self.idle.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle (CONNECTION_IDLE_TIMEOUT)",
            ));
        }
        None
    }

    fn active(&mut self) {
        self.slot.last.store(self.gate.now_ms(), Ordering::Relaxed);
        self.idle.as_mut().reset(Instant::now() + self.gate.idle);
    }
}

impl<IO> Drop for Guarded<IO> {
    fn drop(&mut self) {
        self.gate.open.lock().expect("gate").1.remove(&self.id);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.refused(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.active();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn accepted_sockets_get_nodelay_and_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        tune(&accepted);
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_TIME);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_limit_the_least_recently_active_connection_is_closed() {
        let gate = Gate::new("TEST_MAX", 2, Duration::from_secs(60));
        let (a, mut a_peer) = duplex(64);
        let (b, _b_peer) = duplex(64);
        let (c, _c_peer) = duplex(64);
        let mut a = gate.admit(a);
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut b = gate.admit(b);
        tokio::time::advance(Duration::from_secs(1)).await;
        a_peer.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        a.read_exact(&mut one).await.unwrap();
        let _c = gate.admit(c);
        assert_eq!(gate.open(), 2);
        let e = b.read(&mut one).await.unwrap_err();
        assert!(e.to_string().contains("TEST_MAX"), "{e}");
        a_peer.write_all(b"y").await.unwrap();
        a.read_exact(&mut one).await.unwrap();
        drop(a);
        assert_eq!(gate.open(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_receives_nothing_is_closed_after_the_idle_timeout() {
        let gate = Gate::new("TEST_MAX", 10, Duration::from_secs(5));
        let (a, mut peer) = duplex(64);
        let mut a = gate.admit(a);
        let mut one = [0u8; 1];
        tokio::time::advance(Duration::from_secs(4)).await;
        peer.write_all(b"x").await.unwrap();
        a.read_exact(&mut one).await.unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        peer.write_all(b"y").await.unwrap();
        a.read_exact(&mut one).await.unwrap();
        let e = a.read(&mut one).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
