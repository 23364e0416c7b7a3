//! The gRPC port's accept loop: every accepted socket gets TCP_NODELAY and keepalive
//! (`conn::tune`), is admitted through the port's connection gate and, with TLS on, is
//! handshaken with the current certificate (`grpc::tls`), within 10 s and off the
//! accept loop, before tonic serves it. The loop ends when tonic stops taking
//! connections.
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

use crate::{
    conn::{self, Gate, Guarded},
    grpc::tls::Tls,
};

/// Time a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections accepted and not yet taken by tonic.
const BACKLOG: usize = 64;

/// An admitted connection, plaintext or past its TLS handshake.
pub enum Conn {
    Plain(Guarded<TcpStream>),
    Tls(Box<TlsStream<Guarded<TcpStream>>>),
}

/// The connections accepted on `listener`, for tonic's `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    gate: Arc<Gate>,
    tls: Option<Arc<Tls>>,
) -> impl Stream<Item = io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    tokio::spawn(accept(listener, gate, tls, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}

async fn accept(
    listener: TcpListener,
    gate: Arc<Gate>,
    tls: Option<Arc<Tls>>,
    tx: mpsc::Sender<Conn>,
) {
    loop {
        let stream = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    warn!(error = %e, "gRPC accept error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        conn::tune(&stream);
        let admitted = gate.admit(stream);
        let Some(tls) = &tls else {
            if tx.send(Conn::Plain(admitted)).await.is_err() {
                return;
            }
            continue;
        };
        let acceptor = TlsAcceptor::from(tls.current());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(admitted)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Conn::Tls(Box::new(stream))).await;
                }
                Ok(Err(e)) => debug!(error = %e, "gRPC TLS handshake failed"),
                Err(_) => debug!("gRPC TLS handshake timed out"),
            }
        });
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    /// The TCP addresses (which IngestEvents' per-connection stream shares key on),
    /// also under TLS.
    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Conn::Plain(s) => s.get_ref().connect_info(),
            Conn::Tls(s) => s.get_ref().0.get_ref().connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
