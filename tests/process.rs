//! The real binary: `--help`, configuration errors (exit 64), the
//! development token on loopback, `switchyard token` / `switchyard call`,
//! and SIGTERM draining.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The binary with every inherited `SWITCHYARD_*` variable removed.
fn switchyard() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("SWITCHYARD_LOG", "warn").stdin(Stdio::null());
    cmd
}

/// A finished short-lived command.
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run a command that should end by itself, killing it after `within`.
fn run(mut cmd: Command, within: Duration) -> Finished {
    let out = temp_path("stdout");
    let err = temp_path("stderr");
    cmd.stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = Guard(cmd.spawn().expect("spawn"));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    let status = status.unwrap_or_else(|| {
        panic!("still running after {within:?}\nstdout: {stdout}\nstderr: {stderr}")
    });
    Finished {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Kills (and reaps) the child when dropped, whatever happened.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running gateway process.
struct Server {
    child: Guard,
    port: u16,
    stderr: PathBuf,
}

impl Server {
    /// Start `switchyard` on a free port with `env`, waiting for /health.
    async fn start(env: &[(&str, &str)], args: &[&str]) -> Server {
        let port = free_port();
        let stderr = temp_path("server-stderr");
        let mut cmd = switchyard();
        cmd.args(args)
            .env("SWITCHYARD_PORT", port.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let mut server = Server {
            child: Guard(cmd.spawn().expect("spawn the server")),
            port,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.0.try_wait().unwrap() {
                panic!("server exited early ({status}): {}", server.stderr_text());
            }
            if tokio::net::TcpStream::connect(server.addr()).await.is_ok() {
                let (status, _, _) = http(server.addr(), "GET", "/health", &[], None).await;
                if status == 200 {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no /health within 10 s: {}",
                server.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `switchyard call <method> [params] --url … --token …`.
    fn call(&self, method: &str, params: Option<&Value>, token: &str) -> Finished {
        let mut cmd = switchyard();
        cmd.arg("call").arg(method);
        if let Some(params) = params {
            cmd.arg(params.to_string());
        }
        cmd.args([
            "--url",
            &self.ws_url(),
            "--token",
            token,
            "--timeout-ms",
            "3000",
        ]);
        run(cmd, Duration::from_secs(10))
    }
}

impl Server {
    /// SIGTERM: the graceful shutdown.
    fn sigterm(&self) {
        let pid = self.child.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// Runs the binary with `env`/`args` expecting a configuration error.
fn config_error(env: &[(&str, &str)], args: &[&str]) -> Finished {
    let mut cmd = switchyard();
    cmd.env("SWITCHYARD_PORT", free_port().to_string())
        .envs(env.iter().copied())
        .args(args);
    run(cmd, Duration::from_secs(10))
}

fn assert_config_error(f: &Finished, field: &str) {
    assert_eq!(f.code, Some(64), "exit code; stderr: {}", f.stderr);
    assert!(
        f.stderr.contains("config error") && f.stderr.contains(field),
        "stderr should name {field}: {}",
        f.stderr
    );
}

#[test]
fn help_lists_the_main_options() {
    let mut cmd = switchyard();
    cmd.arg("--help");
    let f = run(cmd, Duration::from_secs(10));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    for needle in [
        "--port",
        "--bind",
        "--jwt-secret",
        "--config",
        "SWITCHYARD_PORT",
    ] {
        assert!(
            f.stdout.contains(needle),
            "--help lacks {needle}:\n{}",
            f.stdout
        );
    }
}

#[test]
fn invalid_configuration_exits_64_naming_the_field() {
    let f = config_error(&[("SWITCHYARD_PORT", "abc")], &[]);
    assert_config_error(&f, "port");

    let f = config_error(&[("SWITCHYARD_LIMITS__MAX_PAYLOAD", "1")], &[]);
    assert_config_error(&f, "limits.max_payload");

    let file = temp_path("unknown.toml");
    std::fs::write(&file, "[limits]\nmax_paylod = 4096\n").unwrap();
    let f = config_error(&[], &["--config", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_config_error(&f, "max_paylod");
    assert!(f.stderr.contains("limits.max_paylod"), "{}", f.stderr);

    let f = config_error(
        &[("SWITCHYARD_AUTH_MODE", "none"), ("SWITCHYARD_BIND", "lan")],
        &[],
    );
    assert_config_error(&f, "auth.modes");

    // Nothing configured beyond loopback: refuses to start.
    let f = config_error(&[], &["--bind", "lan"]);
    assert_eq!(f.code, Some(64), "{}", f.stderr);
    assert!(f.stderr.contains("auth"), "{}", f.stderr);
}

#[tokio::test]
async fn loopback_without_auth_writes_a_dev_token() {
    let token_file = temp_path("dev.token");
    let file = token_file.to_str().unwrap().to_owned();
    let server = Server::start(&[("SWITCHYARD_DEV_TOKEN_FILE", &file)], &[]).await;
    let token = std::fs::read_to_string(&token_file).expect("the dev token file is written");
    let token = token.trim().to_owned();
    assert!(!token.is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the token file is private: {mode:o}");
    }
    assert!(
        !server.stderr_text().contains(&token),
        "the token itself is never logged"
    );

    let f = server.call("status", None, &token);
    assert_eq!(f.code, Some(0), "stderr: {}", f.stderr);
    let status: Value = serde_json::from_str(&f.stdout).expect("call prints JSON");
    assert!(
        status["nodeId"].as_str().is_some_and(|s| !s.is_empty()),
        "{status}"
    );

    let f = server.call("status", None, "sy_dev_wrong");
    assert_ne!(f.code, Some(0), "a wrong token fails: {}", f.stdout);

    // Without credentials the WebSocket opens unauthenticated.
    let mut ws = Ws::connect(&server.ws_url()).await.expect("connects");
    assert_eq!(ws.expect_push("welcome").await["authenticated"], false);
    assert_eq!(ws.error_code("status", json!({})).await, -32000);
    let _ = std::fs::remove_file(&token_file);
}

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn minted_token_is_accepted_with_its_scopes() {
    let secret = "process-secret-0123456789abcdef0123456789";
    let mut cmd = switchyard();
    cmd.env("SWITCHYARD_JWT_SECRET", secret).args([
        "token",
        "--sub",
        "alice",
        "--scope",
        "operator.read",
        "--ttl",
        "60",
    ]);
    let f = run(cmd, Duration::from_secs(10));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let token = f.stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], "alice", "{claims}");
    let exp = claims["exp"].as_u64().expect("exp");
    let now = now_secs();
    assert!(exp > now && exp <= now + 61, "ttl 60: exp {exp}, now {now}");

    // The default subject is `cli`, not a name a configured credential
    // takes (the local cluster's static token is `dev`), so it is accepted
    // beside one.
    let mut cmd = switchyard();
    cmd.env("SWITCHYARD_JWT_SECRET", secret).args(["token"]);
    let f = run(cmd, Duration::from_secs(10));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let default_token = f.stdout.trim().to_owned();
    assert_eq!(claims_of(&default_token)["sub"], "cli");
    let with_dev = Server::start(
        &[
            ("SWITCHYARD_JWT_SECRET", secret),
            (
                "SWITCHYARD_TOKENS",
                "dev:process-dev-token-0123456789abcdef",
            ),
        ],
        &[],
    )
    .await;
    let f = with_dev.call("status", None, &default_token);
    assert_eq!(f.code, Some(0), "stderr: {}", f.stderr);
    drop(with_dev);

    // Without a key there is nothing to sign with.
    let mut cmd = switchyard();
    cmd.args(["token", "--sub", "alice"]);
    let f = run(cmd, Duration::from_secs(10));
    assert_ne!(f.code, Some(0), "{}", f.stdout);

    let server = Server::start(&[("SWITCHYARD_JWT_SECRET", secret)], &[]).await;
    let f = server.call("status", None, &token);
    assert_eq!(f.code, Some(0), "stderr: {}", f.stderr);
    let status: Value = serde_json::from_str(&f.stdout).expect("JSON");
    assert!(status["nodeId"].is_string(), "{status}");

    let params = json!({"channel": "public:x", "event": "e", "data": 1});
    let f = server.call("publish", Some(&params), &token);
    assert_ne!(
        f.code,
        Some(0),
        "read-only token may not publish: {}",
        f.stdout
    );
    assert!(
        f.stdout.trim().is_empty(),
        "no result printed: {}",
        f.stdout
    );

    // A token signed with another secret is refused.
    let forged = jwt(json!({"sub": "alice", "scopes": ["operator.admin"], "exp": now + 60}));
    let f = server.call("status", None, &forged);
    assert_ne!(f.code, Some(0), "{}", f.stdout);
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let server = Server::start(
        &[
            ("SWITCHYARD_JWT_SECRET", JWT_SECRET),
            ("SWITCHYARD_LIMITS__DRAIN_DEADLINE_MS", "2000"),
        ],
        &[],
    )
    .await;
    let mut server = server;
    let token = jwt(json!({"sub": "op", "scopes": ["operator.admin"], "exp": now_secs() + 60}));
    let auth = format!("Bearer {token}");
    let mut ws = Ws::connect_with(&server.ws_url(), &[("authorization", &auth)])
        .await
        .expect("connects");
    ws.call("subscribe", json!({"channels": ["public:x"]}))
        .await;

    let started = Instant::now();
    server.sigterm();

    let shutdown = ws.expect_push("shutdown").await;
    assert!(
        shutdown["reconnectAfterMs"].as_u64().is_some(),
        "{shutdown}"
    );
    assert!(shutdown["reason"].is_string(), "{shutdown}");
    assert_eq!(ws.expect_close_code().await, 1012);

    let deadline = started + Duration::from_secs(2) + Duration::from_millis(1500);
    let status = loop {
        if let Some(status) = server.child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running {:?} after SIGTERM: {}",
            started.elapsed(),
            server.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", server.stderr_text());
    assert!(
        Path::new(&server.stderr).exists(),
        "stderr captured for diagnostics"
    );
}

#[tokio::test]
async fn sigterm_with_a_stuck_client_exits_by_the_deadline() {
    let mut server = Server::start(
        &[
            ("SWITCHYARD_JWT_SECRET", JWT_SECRET),
            ("SWITCHYARD_LIMITS__DRAIN_DEADLINE_MS", "1000"),
        ],
        &[],
    )
    .await;
    let token = jwt(json!({"sub": "op", "scopes": ["operator.admin"], "exp": now_secs() + 60}));
    let auth = format!("Bearer {token}");
    let _stuck = stuck_subscriber(
        ([127, 0, 0, 1], server.port).into(),
        &server.ws_url(),
        &auth,
        "public:stall",
    )
    .await;
    let mut admin = Ws::connect_with(&server.ws_url(), &[("authorization", &auth)])
        .await
        .expect("connects");
    let pad = "p".repeat(128 * 1024);
    for i in 0..64 {
        let params =
            json!({"channel": "public:stall", "event": "fill", "data": {"i": i, "pad": pad}});
        assert_eq!(admin.call("publish", params).await["delivered"], 1);
    }

    let started = Instant::now();
    server.sigterm();
    let shutdown = admin.expect_push("shutdown").await;
    assert!(
        shutdown["reconnectAfterMs"].as_u64().is_some(),
        "{shutdown}"
    );
    assert_eq!(admin.expect_close_code().await, 1012);
    let status = loop {
        if let Some(status) = server.child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_millis(3000),
            "still running {:?} after SIGTERM with a 1 s drain deadline: {}",
            started.elapsed(),
            server.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", server.stderr_text());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the drain waited for the stuck client: {:?}",
        started.elapsed()
    );
}

/// The development admin token must never land in a file others can read,
/// even when the file already existed with loose permissions.
#[cfg(unix)]
#[tokio::test]
async fn dev_token_file_stays_private_when_the_path_existed() {
    use std::os::unix::fs::PermissionsExt;
    // A pre-existing world-readable file.
    let token_file = temp_path("loose.token");
    std::fs::write(&token_file, "old").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = token_file.to_str().unwrap().to_owned();
    let server = Server::start(&[("SWITCHYARD_DEV_TOKEN_FILE", &file)], &[]).await;
    let token = std::fs::read_to_string(&token_file).unwrap();
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    drop(server);
    let _ = std::fs::remove_file(&token_file);
    assert!(token.starts_with("sy_dev_"), "{token}");
    assert_eq!(
        mode & 0o077,
        0,
        "the admin token was written into a file readable by others (mode {:o})",
        mode & 0o777
    );
}

/// A symlink planted at the (predictable) token path must not redirect the
/// admin token into another file.
#[cfg(unix)]
#[tokio::test]
async fn dev_token_is_not_written_through_a_symlink() {
    let link = temp_path("link.token");
    let victim = temp_path("victim.txt");
    std::fs::write(&victim, "victim").unwrap();
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let port = free_port();
    let mut cmd = switchyard();
    cmd.env("SWITCHYARD_PORT", port.to_string())
        .env("SWITCHYARD_DEV_TOKEN_FILE", &link)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = Guard(cmd.spawn().expect("spawn"));
    // Either it refuses to start, or it starts without following the link.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "neither started nor exited");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(child);
    let victim_text = std::fs::read_to_string(&victim).unwrap();
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_file(&victim);
    assert_eq!(
        victim_text, "victim",
        "the token was written through a symlink into another file"
    );
}

/// `switchyard call` without `--token` finds the development token a
/// loopback gateway wrote to its default path for that port.
#[tokio::test]
async fn call_uses_the_default_dev_token_file() {
    let server = Server::start(&[], &[]).await;
    let default_path = std::env::temp_dir().join(format!("switchyard-{}.token", server.port));
    assert!(default_path.exists(), "{}", default_path.display());
    let mut cmd = switchyard();
    cmd.args([
        "call",
        "status",
        "--url",
        &server.ws_url(),
        "--timeout-ms",
        "3000",
    ]);
    let f = run(cmd, Duration::from_secs(10));
    drop(server);
    let _ = std::fs::remove_file(&default_path);
    assert_eq!(f.code, Some(0), "stderr: {}", f.stderr);
    let status: Value = serde_json::from_str(&f.stdout).expect("JSON");
    assert!(status["nodeId"].is_string(), "{status}");
}

/// The development token file belongs to the gateway serving its port: a
/// second gateway started on that busy port fails without replacing it,
/// `switchyard call` names the file when the gateway refuses its token,
/// and the file goes when its gateway stops.
#[tokio::test]
async fn the_dev_token_file_belongs_to_the_gateway_on_its_port() {
    let mut server = Server::start(&[], &[]).await;
    let path = std::env::temp_dir().join(format!("switchyard-{}.token", server.port));
    let token = std::fs::read_to_string(&path).expect("the dev token file");

    let mut second = switchyard();
    second.env("SWITCHYARD_PORT", server.port.to_string());
    let f = run(second, Duration::from_secs(10));
    assert_ne!(f.code, Some(0), "a second gateway on a busy port starts");
    assert!(f.stderr.contains("in use"), "{}", f.stderr);
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some(token.as_str()),
        "the running gateway's token file was replaced"
    );

    let call = |url: String| {
        let mut cmd = switchyard();
        cmd.args(["call", "status", "--url", &url, "--timeout-ms", "3000"]);
        run(cmd, Duration::from_secs(10))
    };
    assert_eq!(call(server.ws_url()).code, Some(0));
    std::fs::write(&path, "sy_dev_stale").unwrap();
    let f = call(server.ws_url());
    std::fs::write(&path, &token).unwrap();
    assert_ne!(f.code, Some(0));
    assert!(
        f.stderr.contains(&path.display().to_string()),
        "a refused token names its file: {}",
        f.stderr
    );

    server.sigterm();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!path.exists(), "the token file outlived its gateway");
}

/// Refusals show in the log at info, with the reason and the setting that
/// governs it, never the credential presented: a foreign `Origin`, a
/// foreign `Host`, wrong credentials and the lock-out that follows.
#[tokio::test]
async fn refusals_are_logged_with_the_setting_that_governs_them() {
    let wrong = "wrong-secret-value-0123456789abcdef";
    let server = Server::start(
        &[
            ("SWITCHYARD_LOG", "info"),
            (
                "SWITCHYARD_TOKENS",
                "ops:ops-token-0123456789abcdef01:operator.admin",
            ),
            ("SWITCHYARD_RATE_LIMITS__AUTH_FAILURES_PER_IP__LIMIT", "2"),
        ],
        &[],
    )
    .await;
    let origin = Ws::connect_with(&server.ws_url(), &[("origin", "https://evil.example")]).await;
    assert!(matches!(origin, Err(ConnectError::Http(403, _))));
    let (status, _, _) = http(
        server.addr(),
        "GET",
        "/api/channels",
        &[("host", "evil.example")],
        None,
    )
    .await;
    assert_eq!(status, 403);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        match Ws::connect_with(&server.ws_url(), &[("authorization", &bearer(wrong))]).await {
            Err(ConnectError::Http(status, _)) => statuses.push(status),
            _ => panic!("a wrong token opened a socket"),
        }
    }
    assert_eq!(statuses, [401, 401, 429]);
    let log = within_log(&server, "locked out").await;
    for expected in [
        "Origin not allowed",
        "https://evil.example",
        "SWITCHYARD_ALLOWED_ORIGINS",
        "Host not allowed",
        "SWITCHYARD_ALLOWED_HOSTS",
        "credentials refused",
        "invalid credentials",
        "address locked out",
        "SWITCHYARD_RATE_LIMITS__AUTH_FAILURES_PER_IP__LIMIT",
    ] {
        assert!(log.contains(expected), "no {expected:?} in the log:\n{log}");
    }
    assert!(!log.contains(wrong), "a credential reached the log");
}

/// The server's log once it contains `needle` (bounded wait).
async fn within_log(server: &Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = server.stderr_text();
        if log.contains(needle) || Instant::now() >= deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `scripts/cluster.sh start` checks the load balancer's port like the
/// others: with haproxy on PATH and that port taken, it fails loudly
/// before starting anything, instead of leaving clients of that port to
/// reach whatever holds it.
#[test]
fn cluster_script_refuses_a_busy_load_balancer_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let lb_port = busy.local_addr().unwrap().port();
    let dir = temp_path("cluster-lb");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // Only its presence matters: the start must stop before running it.
    let haproxy = bin.join("haproxy");
    std::fs::write(&haproxy, "#!/bin/sh\nexit 0\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&haproxy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let redis_port = free_port();
    let ports = format!("{} {} {}", free_port(), free_port(), free_port());
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");
    let mut cmd = Command::new("bash");
    cmd.args([script, "start"])
        .env("PATH", path)
        .env("SY_CLUSTER_DIR", dir.join("state"))
        .env("SY_LB_PORT", lb_port.to_string())
        .env("SY_REDIS_PORT", redis_port.to_string())
        .env("SY_PORTS", ports)
        .env("SWITCHYARD_BIN", BIN);
    let f = run(cmd, Duration::from_secs(30));
    assert_ne!(f.code, Some(0), "started with its load balancer port taken");
    assert!(
        f.stderr.contains(&format!("port {lb_port} is in use")),
        "{}",
        f.stderr
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", redis_port)).is_ok(),
        "redis was started anyway"
    );
    drop(busy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The subcommands' help says what they take, once: `call` names each
/// variable once, `token` lists its own options, not every server flag.
#[test]
fn subcommand_help_is_their_own() {
    let help = |command: &str| {
        let mut cmd = switchyard();
        cmd.args([command, "--help"]);
        let f = run(cmd, Duration::from_secs(10));
        assert_eq!(f.code, Some(0), "{}", f.stderr);
        f.stdout
    };
    let call = help("call");
    assert_eq!(call.matches("SWITCHYARD_URL").count(), 1, "{call}");
    assert_eq!(call.matches("SWITCHYARD_TOKEN").count(), 1, "{call}");
    let token = help("token");
    assert!(token.contains("--jwt-secret"), "{token}");
    for server_flag in ["--redis-url", "--bind", "--tls-cert", "--metrics-port"] {
        assert!(!token.contains(server_flag), "{server_flag} in: {token}");
    }
}

/// No secret reaches the logs at any level: static tokens, API keys, the
/// password and JWTs, good or bad, presented every way a client can (the
/// `Authorization` header, `?token=` on the upgrade, `X-API-Key`, in-band
/// `auth` and `connect`).
#[tokio::test]
async fn no_secret_is_logged_at_any_level() {
    let token = "logtest-token-0123456789abcdef";
    let key = "logtest-apikey-0123456789abcdef";
    let wrong = "logtest-wrong-0123456789abcdef";
    let password = "logtest-password-0123456789";
    let jwt_secret = "logtest-jwt-secret-0123456789abcdef0123456789";
    let tokens = format!("writer:{token}:operator.read operator.write");
    let keys = format!("service:{key}:operator.admin");
    let server = Server::start(
        &[
            ("SWITCHYARD_LOG", "trace"),
            ("SWITCHYARD_AUTH_MODE", "jwt,token,api-key,password"),
            ("SWITCHYARD_TOKENS", &tokens),
            ("SWITCHYARD_API_KEYS", &keys),
            ("SWITCHYARD_PASSWORD", password),
            ("SWITCHYARD_JWT_SECRET", jwt_secret),
        ],
        &[],
    )
    .await;
    let jwt = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let claims = json!({"sub": "alice", "exp": now_secs() + 600, "scopes": ["operator.read"]});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(jwt_secret.as_bytes()),
        )
        .unwrap()
    };
    let url = server.ws_url();
    // Upgrades: header, query string (good and bad).
    for secret in [token, jwt.as_str()] {
        let mut ws = Ws::connect_with(&url, &[("authorization", &bearer(secret))])
            .await
            .expect("upgrade with a good bearer");
        ws.call("ping", json!({})).await;
        let mut ws = Ws::connect(&format!("{url}?token={secret}"))
            .await
            .expect("upgrade with ?token=");
        ws.call("ping", json!({})).await;
    }
    assert!(Ws::connect(&format!("{url}?token={wrong}")).await.is_err());
    assert!(
        Ws::connect_with(&url, &[("authorization", &bearer(wrong))])
            .await
            .is_err()
    );
    // In-band: good and bad.
    let mut ws = Ws::connect(&url).await.expect("anonymous upgrade");
    for params in [
        json!({"password": password}),
        json!({"token": wrong}),
        json!({"apiKey": key}),
    ] {
        ws.request("auth", params).await;
    }
    let mut ws = Ws::connect(&url).await.expect("anonymous upgrade");
    ws.request("connect", json!({"auth": {"token": token}}))
        .await;
    // HTTP API: API key and bearer, good and bad.
    let body = r#"{"channel":"public:logs","event":"e","data":{}}"#;
    for headers in [
        vec![("x-api-key", key.to_owned())],
        vec![("x-api-key", wrong.to_owned())],
        vec![("authorization", bearer(token))],
        vec![("authorization", bearer(&jwt))],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http(server.addr(), "POST", "/api/publish", &headers, Some(body)).await;
    }
    let (status, _, _) = http(
        server.addr(),
        "GET",
        &format!("/status?token={token}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 401, "the API takes no query credentials");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.stderr_text();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the log ran at trace level: {logs}"
    );
    let jwt_signature = jwt.rsplit('.').next().unwrap().to_owned();
    for (what, secret) in [
        ("token", token),
        ("api key", key),
        ("wrong token", wrong),
        ("password", password),
        ("jwt secret", jwt_secret),
        ("jwt", jwt.as_str()),
        ("jwt signature", jwt_signature.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} was logged:\n{logs}");
    }
}
