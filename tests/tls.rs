//! TLS (rustls) and the separate metrics port, on the real binary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

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
    let _guard = Killed(child);

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
    let _ = std::fs::remove_dir_all(&dir);
}
