//! TLS (rustls): the real binary over HTTPS and its separate metrics
//! port; the TLS listener's accept guards (handshake and header timeouts,
//! connections per address) on an in-process server.

mod common;

use common::instance::Guard;
use common::{
    TestServer, WAIT, closed_within, config, fill_address_cap, free_port, read_text_until, within,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl made a certificate");
    (cert, key)
}

/// `curl -k` the URL until it answers or the wait runs out.
fn curl(url: &str) -> Option<(u16, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "2", "-w", "\n%{http_code}", url])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some((body, code)) = text.rsplit_once('\n')
            && let Ok(code) = code.trim().parse::<u16>()
            && code != 0
        {
            return Some((code, body.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn serves_https_and_metrics_on_their_own_port() {
    let dir = std::env::temp_dir().join(format!("switchyard-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
    let (port, metrics_port) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("SWITCHYARD_PORT", port.to_string())
        .env("SWITCHYARD_METRICS_PORT", metrics_port.to_string())
        .env("SWITCHYARD_TLS_CERT", &cert)
        .env("SWITCHYARD_TLS_KEY", &key)
        .env(
            "SWITCHYARD_JWT_SECRET",
            "tls-test-secret-0123456789abcdef0123",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let _guard = Guard(child);

    let (code, body) = curl(&format!("https://127.0.0.1:{port}/health")).expect("https answers");
    assert_eq!(code, 200);
    assert!(body.contains("\"ok\""), "{body}");
    // Plain HTTP on the TLS port is not served.
    let plain = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{port}/health"))
        .output()
        .expect("curl runs");
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");

    let (code, body) =
        curl(&format!("http://127.0.0.1:{metrics_port}/metrics")).expect("metrics port answers");
    assert_eq!(code, 200);
    assert!(body.contains("switchyard_"), "{body}");
    // The main port is the public one: no metrics there.
    let (code, _) = curl(&format!("https://127.0.0.1:{port}/metrics")).expect("https answers");
    assert_eq!(code, 404);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Accepts any server certificate: these tests are about the listener's
/// guards, not about certificate checks.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An in-process server on TLS with a fresh self-signed certificate.
async fn tls_server(tweak: impl FnOnce(&mut switchyard::config::Config)) -> TestServer {
    let dir = common::temp_path("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
    let acceptor = switchyard::server::serve::tls_acceptor(&cert, &key).expect("TLS settings");
    let mut config = config();
    tweak(&mut config);
    TestServer::start_tls(config, acceptor).await
}

/// A TLS client connection to `server`, handshake done.
async fn tls_connect(server: &TestServer) -> TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// On TLS as on plain TCP: a socket that never starts its handshake, and a
/// TLS client dribbling its request header (first request or a later one
/// on the same connection), are cut off at the header timeout; others are
/// served throughout.
#[tokio::test]
async fn tls_handshakes_and_headers_are_timed() {
    let server = tls_server(|c| c.limits.header_timeout_ms = 500).await;
    let (every, within) = (Some(Duration::from_millis(100)), Duration::from_secs(5));
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, within, None).await,
        "a socket that never started TLS outlived the header timeout"
    );
    let mut slow = tls_connect(&server).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, within, every).await,
        "a dribbled header over TLS outlived the header timeout"
    );
    let mut kept = tls_connect(&server).await;
    for _ in 0..2 {
        kept.write_all(HEALTH).await.unwrap();
        let answer = read_text_until(&mut kept, "}").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    kept.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    assert!(
        closed_within(&mut kept, within, every).await,
        "a later request dribbling its header over TLS outlived the header timeout"
    );
}

/// TCP connections are counted per address at accept on the TLS listener
/// too: one over the cap is closed at once (long before the header
/// timeout), and the slots come back.
#[tokio::test]
async fn tls_connections_per_address_are_capped_at_accept() {
    let server = tls_server(|c| c.limits.max_connections_per_ip = 10).await;
    // The WebSocket cap plus the headroom for HTTP calls and 429s.
    let idle = fill_address_cap(server.addr, 10 + 64).await;
    drop(idle);
    let ok = within(WAIT, || async {
        let mut tls = tls_connect(&server).await;
        tls.write_all(HEALTH).await.unwrap();
        read_text_until(&mut tls, "}")
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(ok, "slots come back when the sockets close");
}
