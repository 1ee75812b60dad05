//! The serve loop, plain or TLS: accept under the [`accept`](super::accept)
//! guards, one task per connection, hyper's HTTP/1 with upgrades, and a
//! graceful stop.
//!
//! Per connection:
//! 1. TLS, when configured: the handshake must finish within the header
//!    timeout, in the connection's own task (a slow handshake never holds
//!    the accept loop up).
//! 2. HTTP/1: every request's header must arrive within the header timeout
//!    — the first one and each next one on a kept-alive connection (hyper's
//!    header read timer runs from the moment it waits for a request head,
//!    so an idle kept-alive connection is closed after that long too).
//! 3. A WebSocket upgrade leaves hyper; the socket's own clocks take over.
//!
//! On stop: no more accepts, each connection finishes its request in
//! flight and closes (upgraded sockets were closed by the drain), bounded
//! by [`FINISH_WITHIN`].

use super::accept::GuardedListener;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long requests in flight may take to finish once the server stops.
const FINISH_WITHIN: Duration = Duration::from_secs(5);

/// TLS settings of the listener: the certificate chain and key (PEM).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve `router` on `listener` (over TLS with `tls`) until `stop`
/// resolves; then let connections finish (bounded) and return.
pub async fn serve(
    mut listener: GuardedListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    header_timeout: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    // Each connection holds a receiver of `closing`; the loop waits for
    // all of them to be dropped (`closed()`), as axum's own `serve` does.
    let (closing, _) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        io.set_nodelay();
        let conn = Connection {
            router: router.clone(),
            peer,
            header_timeout,
            closing: closing.subscribe(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => conn.run(io).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => conn.run(stream).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => {
                            metrics::counter!(
                                "switchyard_connections_refused_total",
                                "reason" => "tls_handshake_timeout"
                            )
                            .increment(1);
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    if tokio::time::timeout(FINISH_WITHIN, closing.closed())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight at shutdown were cut off");
    }
}

/// One accepted connection.
struct Connection {
    router: Router,
    peer: SocketAddr,
    header_timeout: Duration,
    closing: watch::Receiver<bool>,
}

impl Connection {
    async fn run<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (peer, router) = (self.peer, self.router.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended");
                }
                return;
            }
            _ = self.closing.wait_for(|closing| *closing) => {}
        }
        conn.as_mut().graceful_shutdown();
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, %peer, "connection ended");
        }
    }
}
