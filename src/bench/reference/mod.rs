//! `switchyard bench reference`: the ceiling Switchyard is measured
//! against in the same run — a bare WebSocket JSON-RPC server on tokio and
//! tokio-tungstenite with no features.
//!
//! Flow: [`serve`] accepts TCP connections and gives each a task
//! (`conn`): the WebSocket upgrade (a bearer token is taken, not checked),
//! the `welcome` greeting, then a reader answering calls in order (`rpc`)
//! and a writer task draining the connection's bounded queue. `channels`
//! keeps channel → subscribers in memory and fans a publication out by
//! handing the one serialised `notify` frame to every subscriber's queue.
//!
//! On the wire it answers `ping`, `subscribe`, `unsubscribe` and `publish`
//! exactly as Switchyard does (same result shapes, same `notify` frame),
//! so the load generator cannot tell the two apart. Everything else
//! Switchyard does — credential checks, channel rules, presence, history,
//! heartbeats, rate limits, a backend, clustering, batches, sessions,
//! agents — is absent, not imitated: the figures it gives are what a
//! WebSocket JSON-RPC server in Rust does on the same machine.

mod channels;
mod conn;
mod rpc;

use channels::Channels;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Accept connections on `listener` until `shutdown` resolves; then every
/// open connection is closed (1012).
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let channels = Arc::new(Channels::default());
    let server = CancellationToken::new();
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _)) => {
                next_id += 1;
                let conn = conn::serve(tcp, next_id, channels.clone(), server.clone());
                tokio::spawn(conn);
            }
            // Out of descriptors or a connection reset before it was
            // accepted: wait a little rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    server.cancel();
}

/// Bind `addr` and [`serve`] until `shutdown`.
pub async fn run(addr: SocketAddr, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!(
        "switchyard bench reference: listening on {}",
        listener.local_addr()?
    );
    serve(listener, shutdown).await;
    Ok(())
}
