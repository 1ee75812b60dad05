//! The accept loop's guards, in front of HTTP: what a client can hold
//! before it has said anything useful.
//!
//! - **TCP connections per peer address**, counted at accept (a cap of
//!   `limits.max_connections_per_ip` + [`TCP_HEADROOM`]; trusted proxies
//!   are exempt, their clients are counted by forwarded address at the
//!   upgrade). A socket over the cap is closed before any byte is read.
//! - **Handshakes in progress**, all peers together
//!   (`limits.max_pending_handshakes`): a connection holds a slot until the
//!   server first writes to it (an answer, or `101 Switching Protocols`).
//! - **Header timeout** (`limits.header_timeout_ms`): until that first
//!   write, reads fail once the deadline passes, so a client dribbling
//!   header lines is cut off instead of holding a socket and a task.
//!
//! After the first write the connection is ordinary: no timer is left in
//! it, and a WebSocket's own clocks take over.

use axum::serve::Listener;
use ipnet::IpNet;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// TCP connections a peer address may hold beyond its WebSocket cap: room
/// for HTTP calls, and for an upgrade over the cap to get its 429.
pub const TCP_HEADROOM: usize = 64;

/// The guards' settings.
#[derive(Debug, Clone)]
pub struct Guards {
    pub max_per_ip: usize,
    pub max_pending: usize,
    pub header_timeout: Duration,
    /// Peers exempt from the per-address cap.
    pub trusted: Vec<IpNet>,
}

type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A TCP listener with the guards applied.
pub struct GuardedListener {
    inner: TcpListener,
    guards: Guards,
    per_ip: PerIp,
    pending: Arc<Semaphore>,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, guards: Guards) -> Self {
        let pending = Arc::new(Semaphore::new(guards.max_pending));
        Self {
            inner,
            guards,
            per_ip: PerIp::default(),
            pending,
        }
    }

    /// Take `ip`'s slot, unless it is at its cap (trusted peers always
    /// get one, uncounted).
    fn take_slot(&self, ip: IpAddr) -> Option<Option<TcpSlot>> {
        if self.guards.trusted.iter().any(|net| net.contains(&ip)) {
            return Some(None);
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.guards.max_per_ip {
            return None;
        }
        *n += 1;
        Some(Some(TcpSlot {
            per_ip: self.per_ip.clone(),
            ip,
        }))
    }
}

impl Listener for GuardedListener {
    type Io = GuardedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedIo, SocketAddr) {
        loop {
            let (tcp, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (EMFILE) or the like: back off
                    // instead of spinning; connections already open go on.
                    tracing::warn!(error = %e, "accept failed");
                    metrics::counter!("switchyard_accept_errors_total").increment(1);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ip = addr.ip().to_canonical();
            let Some(slot) = self.take_slot(ip) else {
                metrics::counter!("switchyard_connections_refused_total", "reason" => "per_ip")
                    .increment(1);
                continue;
            };
            let Ok(permit) = self.pending.clone().try_acquire_owned() else {
                metrics::counter!("switchyard_connections_refused_total", "reason" => "pending")
                    .increment(1);
                continue;
            };
            let io = GuardedIo {
                tcp,
                _slot: slot,
                handshake: Some(Box::new(Handshake {
                    _permit: permit,
                    deadline: Box::pin(tokio::time::sleep(self.guards.header_timeout)),
                })),
            };
            return (io, addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A counted connection of one peer address; uncounted on drop.
struct TcpSlot {
    per_ip: PerIp,
    ip: IpAddr,
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// What a connection holds until the server first writes to it.
struct Handshake {
    _permit: OwnedSemaphorePermit,
    deadline: Pin<Box<Sleep>>,
}

/// An accepted socket under the guards.
pub struct GuardedIo {
    tcp: TcpStream,
    _slot: Option<TcpSlot>,
    /// Boxed, and dropped at the first write: an established connection
    /// carries one empty pointer.
    handshake: Option<Box<Handshake>>,
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Pending => {}
            ready => return ready,
        }
        if let Some(handshake) = &mut this.handshake
            && handshake.deadline.as_mut().poll(cx).is_ready()
        {
            metrics::counter!("switchyard_connections_refused_total", "reason" => "header_timeout")
                .increment(1);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request headers not received in time",
            )));
        }
        Poll::Pending
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // The server answers: the handshake is over.
        this.handshake = None;
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.handshake = None;
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl GuardedIo {
    /// Frames are small and latency-bound: no Nagle delay.
    pub fn set_nodelay(&self) {
        if let Err(e) = self.tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    }
}
