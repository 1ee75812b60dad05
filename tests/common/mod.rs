//! Test harness: real servers on free ports, real WebSocket clients.
//!
//! [`TestServer::start`] builds an instance from a config and serves it on
//! `127.0.0.1:0` in this process (the same `server::run` as `main`).
//! [`Ws`] is a raw JSON WebSocket client that keeps notifications it reads
//! while waiting for a reply, so tests can assert on both. Every wait is
//! bounded by [`WAIT`]. [`frames`] holds the helpers that wait for and
//! answer particular frames, [`cluster`] the in-process cluster setup.

#![allow(dead_code)]

pub mod cluster;
pub mod frames;
pub mod instance;
pub mod replicas;

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use cluster::*;
#[allow(unused_imports)]
pub use frames::*;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use switchyard::config::{AuthMode, Config, StaticCredential};
use switchyard::server::{self, App};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound of every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const READER: &str = "reader-token-0123456789abcdef";
pub const WRITER: &str = "writer-token-0123456789abcdef";
pub const APPROVER: &str = "approver-token-0123456789abcd";
pub const NODE: &str = "node-token-0123456789abcdef01";
pub const API_KEY: &str = "api-key-0123456789abcdef0123";
pub const PASSWORD: &str = "correct horse battery";
pub const JWT_SECRET: &str = "jwt-secret-0123456789abcdef0123456789abcdef";

fn credential(secret: &str, sub: &str, role: &str, scopes: &[&str]) -> StaticCredential {
    StaticCredential {
        secret: secret.into(),
        sub: sub.into(),
        role: role.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        channels: vec!["private:team-*".into()],
    }
}

/// A config with every auth mode but `none`, one credential per role.
pub fn config() -> Config {
    let mut c = Config {
        port: 0,
        ..Config::default()
    };
    c.auth.modes = vec![
        AuthMode::Jwt,
        AuthMode::Token,
        AuthMode::ApiKey,
        AuthMode::Password,
    ];
    c.auth.jwt.secret = Some(JWT_SECRET.into());
    c.auth.tokens = vec![
        credential(ADMIN, "admin", "operator", &["operator.admin"]),
        credential(READER, "reader", "operator", &["operator.read"]),
        credential(
            WRITER,
            "writer",
            "operator",
            &["operator.read", "operator.write"],
        ),
        credential(APPROVER, "approver", "operator", &["operator.approvals"]),
        credential(NODE, "node-1", "node", &[]),
    ];
    c.auth.api_keys = vec![credential(
        API_KEY,
        "service",
        "operator",
        &["operator.admin"],
    )];
    c.auth.password = Some(PASSWORD.into());
    c.auth.password_scopes = vec!["operator.read".into(), "operator.write".into()];
    c.limits.presence_tick_ms = 200;
    c
}

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub app: App,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The Redis this server uses when the suite runs on the Redis backend.
    pub redis: Option<RedisProcess>,
}

/// Whether the behaviour suite runs on the Redis backend
/// (`SWITCHYARD_TEST_BACKEND=redis`).
pub fn redis_mode() -> bool {
    std::env::var("SWITCHYARD_TEST_BACKEND").is_ok_and(|b| b == "redis")
}

impl TestServer {
    /// Start on `config`; in Redis mode with a fresh `redis-server` of its
    /// own unless `config.redis_url` is set already.
    pub async fn start(mut config: Config) -> Self {
        let redis = (redis_mode() && config.redis_url.is_none()).then(RedisProcess::start);
        if let Some(redis) = &redis {
            config.redis_url = Some(redis.url());
        }
        let mut server = Self::start_on(config).await;
        server.redis = redis;
        server
    }

    /// Start exactly on `config` (cluster tests share one Redis).
    pub async fn start_on(config: Config) -> Self {
        Self::start_with(config, None).await
    }

    /// Start on `config`, serving TLS with `tls` (`wss://`, `https://`).
    pub async fn start_tls(config: Config, tls: tokio_rustls::TlsAcceptor) -> Self {
        Self::start_with(config, Some(tls)).await
    }

    async fn start_with(config: Config, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let app = server::build(config).await.expect("server builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(app.clone(), listener, tls, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            app,
            stop: Some(stop),
            task: Some(task),
            redis: None,
        }
    }

    pub async fn default() -> Self {
        Self::start(config()).await
    }

    /// Build an instance on `config` that must fail to start, within
    /// [`WAIT`]: the start error as `main` prints it.
    pub async fn start_error(config: Config) -> String {
        match tokio::time::timeout(WAIT, server::build(config)).await {
            Err(_) => panic!("the start neither failed nor succeeded within {WAIT:?}"),
            Ok(Ok(app)) => panic!("instance {} started", app.instance_id),
            Ok(Err(e)) => e.to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The status code of `GET /ready`.
    pub async fn ready_status(&self) -> u16 {
        http(self.addr, "GET", "/ready", &[], None).await.0
    }

    /// Connect to `/ws` with a bearer token, expecting success. Returns once
    /// the server has finished opening the connection (its `welcome`
    /// arrived; it stays available to `expect_push`).
    pub async fn client(&self, token: &str) -> Ws {
        let mut ws = Ws::connect_with(&self.url("/ws"), &[("authorization", &bearer(token))])
            .await
            .expect("connects");
        let welcome = ws.expect_push("welcome").await;
        ws.pushed
            .push_front(json!({"jsonrpc": "2.0", "method": "welcome", "params": welcome}));
        ws
    }

    /// Trigger shutdown and wait for the server to finish draining.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }

    pub fn trigger_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw JSON-RPC WebSocket client.
pub struct Ws {
    socket: Socket,
    /// Notifications and server requests read while waiting for replies.
    pub pushed: VecDeque<Value>,
    next_id: u64,
    pub protocol: Option<String>,
}

/// How a connection attempt can end.
#[derive(Debug)]
pub enum ConnectError {
    /// Refused with this HTTP status before the upgrade.
    Http(u16, Option<String>),
    Other(String),
}

impl Ws {
    pub async fn connect(url: &str) -> Result<Ws, ConnectError> {
        Self::connect_with(url, &[]).await
    }

    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Ws, ConnectError> {
        let mut request = url.into_client_request().expect("request");
        for (name, value) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName =
                name.parse().expect("header name");
            request
                .headers_mut()
                .append(name, HeaderValue::from_str(value).expect("header value"));
        }
        let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
        match tokio::time::timeout(WAIT, connect).await {
            Err(_) => Err(ConnectError::Other("connect timed out".into())),
            Ok(Err(WsError::Http(response))) => {
                let retry = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Err(ConnectError::Http(response.status().as_u16(), retry))
            }
            Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
            Ok(Ok((socket, response))) => {
                let protocol = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok(Ws {
                    socket,
                    pushed: VecDeque::new(),
                    next_id: 1,
                    protocol,
                })
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) -> Result<(), WsError> {
        self.socket.send(msg).await
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Next text frame as JSON, or None when the socket closed.
    pub async fn next_json(&mut self) -> Option<Value> {
        let text = self.next_text().await?;
        Some(serde_json::from_str(&text).expect("server sends JSON"))
    }

    /// Next text frame as sent, or None when the socket closed.
    pub async fn next_text(&mut self) -> Option<String> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame within the wait")?;
            match msg {
                Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Send a request and return the whole response object.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.reply_to(json!(id)).await
    }

    /// The next response (a frame without `method`), keeping pushes aside.
    pub async fn next_reply(&mut self) -> Value {
        loop {
            let frame = self
                .next_json()
                .await
                .expect("connection open while waiting for a reply");
            if frame.get("method").is_none() {
                return frame;
            }
            self.pushed.push_back(frame);
        }
    }

    /// Wait for the response with `id`, keeping pushes aside.
    pub async fn reply_to(&mut self, id: Value) -> Value {
        let frame = self.next_reply().await;
        assert!(
            frame["id"] == id,
            "unexpected frame while waiting for {id}: {frame}"
        );
        frame
    }

    /// Call and return `result`, panicking on an error reply.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let reply = self.request(method, params).await;
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    /// Call and return the error code.
    pub async fn error_code(&mut self, method: &str, params: Value) -> i64 {
        let reply = self.request(method, params).await;
        reply["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("{method} should fail: {reply}"))
    }

    /// The next push with this method (from the buffer or the socket).
    pub async fn expect_push(&mut self, method: &str) -> Value {
        if let Some(i) = self.pushed.iter().position(|f| f["method"] == method) {
            return self.pushed.remove(i).expect("present")["params"].clone();
        }
        loop {
            let frame = self
                .next_json()
                .await
                .unwrap_or_else(|| panic!("closed while waiting for {method}"));
            if frame["method"] == method {
                return frame["params"].clone();
            }
            self.pushed.push_back(frame);
        }
    }

    /// Assert no push with this method arrives within `wait`.
    pub async fn expect_no_push(&mut self, method: &str, wait: Duration) {
        assert!(
            !self.pushed.iter().any(|f| f["method"] == method),
            "unexpected {method} already buffered"
        );
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match tokio::time::timeout(left, self.socket.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let frame: Value = serde_json::from_str(t.as_str()).expect("JSON");
                    assert_ne!(frame["method"], method, "unexpected {method}: {frame}");
                    self.pushed.push_back(frame);
                }
                Ok(Some(Ok(_))) => continue,
                Ok(_) => return,
            }
        }
    }

    /// Read until the server closes; returns the close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the server closes within the wait");
            match msg {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(Message::Text(t))) => {
                    if let Ok(v) = serde_json::from_str(t.as_str()) {
                        self.pushed.push_back(v);
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The close code the server sent.
    pub async fn expect_close_code(&mut self) -> u16 {
        let frame = self.expect_close().await.expect("a close frame");
        u16::from(frame.code)
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// Mint an HS256 JWT with the test secret.
pub fn jwt(claims: Value) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("encode")
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A JWT for operator `sub` with read+write, valid for ten minutes.
pub fn writer_jwt(sub: &str) -> String {
    jwt(json!({
        "sub": sub,
        "role": "operator",
        "scopes": ["operator.read", "operator.write"],
        "exp": now_secs() + 600,
    }))
}

/// A JWT for node identity `sub`, valid for ten minutes.
pub fn node_jwt(sub: &str) -> String {
    jwt(json!({"sub": sub, "role": "node", "exp": now_secs() + 600}))
}

/// A connection of operator `sub` (read+write), minted as a JWT.
pub async fn as_user(server: &TestServer, sub: &str) -> Ws {
    server.client(&writer_jwt(sub)).await
}

/// A node connection (NODE token) that declared `caps` at `connect`;
/// returns it and its connection id.
pub async fn caps_node(server: &TestServer, caps: &[&str]) -> (Ws, String) {
    let mut node = server.client(NODE).await;
    let hello = node
        .call(
            "connect",
            json!({"client": {"name": "node-app"}, "caps": caps}),
        )
        .await;
    assert_eq!(hello["role"], "node", "{hello}");
    let id = hello["connId"].as_str().expect("connId").to_owned();
    (node, id)
}

/// The value of an `Authorization` header carrying `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The strings `items` as a set, to compare with id sets.
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The entries under `key` of a list reply, asserting that its `count`
/// matches their number.
pub fn counted<'a>(list: &'a Value, key: &str) -> &'a Vec<Value> {
    let entries = list[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} listed: {list}"));
    assert_eq!(list["count"].as_u64(), Some(entries.len() as u64), "{list}");
    entries
}

/// The string `field` of every entry under `key` of a list reply (see
/// [`counted`]).
pub fn listed_ids(list: &Value, key: &str, field: &str) -> BTreeSet<String> {
    counted(list, key)
        .iter()
        .map(|e| e[field].as_str().expect(field).to_owned())
        .collect()
}

/// Poll `f` until it returns true or `limit` passed; whether it did.
pub async fn within<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    false
}

/// Poll `f` until it returns true or the wait runs out.
pub async fn eventually<F, Fut>(f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(WAIT, f).await
}

/// Make `hist:` channels keep their newest `keep` publications (no
/// presence on them, so only `notify` frames arrive).
pub fn keep_history(c: &mut Config, keep: usize) {
    use switchyard::config::{Access, ChannelRule};
    let mut rule = ChannelRule::new("hist:", Access::Authenticated, Access::Write, false);
    rule.access.history = keep;
    c.channels.rules.insert(0, rule);
}

/// Wait until session `id` has no owner (its owner's socket closed);
/// whether that happened within the wait.
pub async fn detached(server: &TestServer, id: &str) -> bool {
    eventually(|| {
        let app = server.app.clone();
        async move {
            app.backend
                .session(id)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.owner.is_none())
        }
    })
    .await
}

/// A tiny HTTP client over a raw TCP stream (no extra dependency):
/// returns (status, headers text, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let body = body.unwrap_or("");
    // A `host` among `headers` replaces the default one.
    let own_host = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
    let mut request = if own_host {
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n")
    } else {
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n")
    };
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, head.to_owned(), body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A Redis of a test's own on free ports, killed on drop; it keeps
/// nothing on disk, so a restart starts empty. One `redis-server`; with
/// `SWITCHYARD_TEST_REDIS=cluster` a Redis Cluster of three masters
/// (`--cluster-enabled yes` + `redis-cli --cluster create`); with
/// `SWITCHYARD_TEST_REDIS=sentinel` a master watched by a Sentinel, reached
/// through the Sentinel.
pub struct RedisProcess {
    children: Vec<std::process::Child>,
    /// The (first) node's port.
    pub port: u16,
    ports: Vec<u16>,
    dir: std::path::PathBuf,
    /// Writes an append-only file (fsync every second) in `dir`, which a
    /// restart replays ([`RedisProcess::start_persistent`]).
    persistent: bool,
}

/// Whether the server closed `stream` (EOF or reset) within `within`,
/// sending `drip` (a header line) every `every` meanwhile when given.
pub async fn closed_within<S>(stream: &mut S, within: Duration, drip: Option<Duration>) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 256];
    loop {
        let step = drip.unwrap_or(within);
        let until = (tokio::time::Instant::now() + step).min(deadline);
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) if tokio::time::Instant::now() >= deadline => return false,
            Err(_) => {
                if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return true;
                }
            }
        }
    }
}

/// Read from `stream` until what was read ends with `end` (bounded by
/// [`WAIT`]); what was read.
pub async fn read_text_until<S>(stream: &mut S, end: &str) -> String
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !text.ends_with(end) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed after {text:?}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("within the wait");
    text
}

/// Run `cmd` to its end, as `Command::output` does, but within `limit`:
/// past it the program is killed and the result is a `TimedOut` error.
/// (`redis-cli --cluster create`, for one, waits for its nodes to agree
/// with no end of its own.)
pub fn output_within(
    cmd: &mut std::process::Command,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drain both pipes as the program writes, so a full pipe never holds it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{cmd:?} did not end within {limit:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// How long one `redis-cli` command the tests run may take.
pub const CLI_LIMIT: Duration = Duration::from_secs(10);

/// Run `command()` every 20 ms until its output holds `expect` (true) or
/// `deadline` passes or one of `children` exits (false).
pub fn poll_output(
    children: &mut [std::process::Child],
    deadline: std::time::Instant,
    expect: &str,
    mut command: impl FnMut() -> std::process::Command,
) -> bool {
    while std::time::Instant::now() < deadline {
        let out = output_within(&mut command(), CLI_LIMIT);
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(expect)) {
            return true;
        }
        if children
            .iter_mut()
            .any(|c| c.try_wait().ok().flatten().is_some())
        {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Hold `cap` idle TCP connections to `addr` (what its per-address cap
/// allows) and check that one more is closed at once (within 2 s, before
/// any header timeout). The held connections, to drop when done.
pub async fn fill_address_cap(addr: SocketAddr, cap: usize) -> Vec<TcpStream> {
    let mut idle = Vec::new();
    for _ in 0..cap {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Let the server accept them all before the one over the cap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_within(&mut over, Duration::from_secs(2), None).await,
        "the socket over the cap stayed open"
    );
    idle
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A fresh path in the temp dir, unique per test process and call.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("sy-test-{}-{n}-{name}", std::process::id()))
}

/// Whether test Redis instances are Redis Clusters.
pub fn redis_cluster_mode() -> bool {
    std::env::var("SWITCHYARD_TEST_REDIS").is_ok_and(|t| t == "cluster")
}

/// Whether test Redis instances are reached through a Sentinel.
pub fn redis_sentinel_mode() -> bool {
    std::env::var("SWITCHYARD_TEST_REDIS").is_ok_and(|t| t == "sentinel")
}

impl RedisProcess {
    /// Start on free ports. A port found free can be taken by a parallel
    /// test before redis-server binds it; then the whole start is retried
    /// on fresh ports.
    pub fn start() -> Self {
        let nodes = if redis_cluster_mode() {
            3
        } else if redis_sentinel_mode() {
            2
        } else {
            1
        };
        Self::start_nodes(nodes, false)
    }

    /// One `redis-server` (whatever `SWITCHYARD_TEST_REDIS` says) with the
    /// append-only file on (`appendfsync everysec`), as the shipped
    /// deployments run it: [`RedisProcess::crash_and_restart`] keeps the
    /// data written more than a second before.
    pub fn start_persistent() -> Self {
        assert!(
            !redis_sentinel_mode(),
            "a persistent test Redis is a single server"
        );
        Self::start_nodes(1, true)
    }

    fn start_nodes(nodes: usize, persistent: bool) -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
            let dir = std::env::temp_dir().join(format!("switchyard-redis-{}", ports[0]));
            let _ = std::fs::remove_dir_all(&dir);
            let mut redis = Self {
                children: Vec::new(),
                port: ports[0],
                ports,
                dir,
                persistent,
            };
            match redis.try_spawn() {
                Ok(()) => return redis,
                Err(e) => {
                    eprintln!("redis did not start ({e}); again on fresh ports");
                    last_error = e;
                }
            }
        }
        panic!("could not start redis: {last_error}");
    }

    pub fn url(&self) -> String {
        if redis_sentinel_mode() && !self.persistent {
            return format!(
                "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=mymaster",
                self.ports[1]
            );
        }
        match &self.ports[..] {
            [one] => format!("redis://127.0.0.1:{one}"),
            [first, rest @ ..] => {
                let nodes: Vec<String> =
                    rest.iter().map(|p| format!("node=127.0.0.1:{p}")).collect();
                format!("redis-cluster://127.0.0.1:{first}?{}", nodes.join("&"))
            }
            [] => unreachable!("at least one node"),
        }
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        if !self.persistent {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        std::fs::create_dir_all(&self.dir).expect("redis dir");
        if redis_sentinel_mode() && !self.persistent {
            return self.spawn_sentinel();
        }
        let clustered = self.ports.len() > 1;
        let aof: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "everysec"]
        } else {
            &["--appendonly", "no"]
        };
        for &port in &self.ports.clone() {
            let mut cmd = std::process::Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--protected-mode", "no"])
                .args(aof)
                .arg("--dir")
                .arg(&self.dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            if clustered {
                cmd.args(["--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
            }
            self.children.push(
                cmd.spawn()
                    .expect("redis-server starts (apt-get install redis-server)"),
            );
            self.wait_for_own(port)?;
        }
        if clustered {
            let mut create = std::process::Command::new("redis-cli");
            create.args(["--cluster", "create"]);
            for port in &self.ports {
                create.arg(format!("127.0.0.1:{port}"));
            }
            // Nodes that never agree (one's bus port unreachable) would
            // hold `redis-cli` for ever: start over on fresh ports instead.
            create.args(["--cluster-replicas", "0", "--cluster-yes"]);
            let out = output_within(&mut create, Duration::from_secs(30));
            let failed = match out {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(String::from_utf8_lossy(&out.stdout).to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(failed) = failed {
                self.kill();
                return Err(format!("cluster create: {failed}"));
            }
            for &port in &self.ports.clone() {
                self.wait_for(port, "cluster_state:ok", &["CLUSTER", "INFO"])?;
            }
        }
        Ok(())
    }

    /// A master on `ports[0]` and a Sentinel on `ports[1]` watching it.
    fn spawn_sentinel(&mut self) -> Result<(), String> {
        let (master, sentinel) = (self.ports[0], self.ports[1]);
        let child = std::process::Command::new("redis-server")
            .args(["--port", &master.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.children.push(child);
        self.wait_for_own(master)?;
        let conf = self.dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master} 1\n"
            ),
        )
        .expect("sentinel.conf");
        let child = std::process::Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        self.children.push(child);
        self.wait_for(
            sentinel,
            &master.to_string(),
            &["SENTINEL", "get-master-addr-by-name", "mymaster"],
        )
    }

    /// Wait until the server just spawned answers on `port`, and is the one
    /// answering: a parallel test may have taken the port first, and its
    /// server would answer a mere `PING` (and then be fought over).
    fn wait_for_own(&mut self, port: u16) -> Result<(), String> {
        let pid = self.children.last().expect("a server just spawned").id();
        self.wait_for(port, &format!("process_id:{pid}\r\n"), &["INFO", "server"])
    }

    /// Poll `redis-cli -p port args` until its output contains `expect`.
    /// Gives up early when a node died (its port was taken). On failure
    /// every node is killed.
    fn wait_for(&mut self, port: u16, expect: &str, args: &[&str]) -> Result<(), String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let answered = poll_output(&mut self.children, deadline, expect, || {
            let mut cli = std::process::Command::new("redis-cli");
            cli.args(["-p", &port.to_string()]).args(args);
            cli
        });
        if answered {
            return Ok(());
        }
        self.kill();
        Err(format!("redis on port {port} never answered {expect}"))
    }

    /// Run `redis-cli` against this Redis (cluster-aware); its stdout when
    /// it succeeded.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let mut cmd = std::process::Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if redis_cluster_mode() {
            cmd.arg("-c");
        }
        let out = output_within(cmd.args(args), CLI_LIMIT).ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The port of every node commands go to: the master (single or behind
    /// the Sentinel), or each master of the Redis Cluster.
    pub fn data_ports(&self) -> Vec<u16> {
        if !redis_cluster_mode() {
            return vec![self.port];
        }
        let nodes = self.cli(&["CLUSTER", "NODES"]).expect("CLUSTER NODES");
        nodes
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter_map(|addr| addr.split('@').next()?.rsplit(':').next()?.parse().ok())
            .collect()
    }

    /// `CLIENT KILL TYPE <kind>` (`normal`, `pubsub`) on every data node;
    /// the number of connections killed.
    pub fn kill_clients(&self, kind: &str) -> u32 {
        self.data_ports()
            .iter()
            .map(|port| {
                let mut cli = std::process::Command::new("redis-cli");
                cli.args(["-p", &port.to_string(), "CLIENT", "KILL", "TYPE", kind]);
                let out = output_within(&mut cli, CLI_LIMIT).expect("redis-cli CLIENT KILL");
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<u32>()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// How often `command` (lower case) ran so far, summed over every node
    /// (`INFO commandstats`; a node that cannot tell counts 0).
    pub fn command_calls(&self, command: &str) -> u64 {
        let field = format!("cmdstat_{command}:calls=");
        self.ports
            .iter()
            .filter_map(|port| {
                let mut cli = std::process::Command::new("redis-cli");
                cli.args(["-p", &port.to_string(), "INFO", "commandstats"]);
                let out = output_within(&mut cli, CLI_LIMIT).ok()?;
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let calls = text.lines().find_map(|l| l.strip_prefix(&field))?;
                calls.split(',').next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// Kill every node (SIGKILL): the data is gone.
    pub fn kill(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same ports, empty.
    pub fn restart(&mut self) {
        assert!(
            !self.persistent,
            "restart of a persistent Redis keeps its data"
        );
        self.kill();
        self.spawn();
    }

    /// SIGKILL, then start again on the same port from the same append-only
    /// file (a persistent Redis only), waiting until it answers.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Start a killed persistent Redis again from its append-only file,
    /// waiting until it answers.
    pub fn start_again(&mut self) {
        assert!(self.persistent, "only a persistent Redis keeps its data");
        self.spawn();
    }

    /// A copy of the append-only files as they are now, for
    /// [`RedisProcess::crash_and_restart_from`]. Synced every second: call
    /// it at least that long after the writes it must hold.
    pub fn save_files(&self) -> std::path::PathBuf {
        assert!(self.persistent, "only a persistent Redis writes files");
        let saved = self.dir.with_extension("saved");
        let _ = std::fs::remove_dir_all(&saved);
        copy_dir(&self.dir.join("appendonlydir"), &saved);
        saved
    }

    /// SIGKILL, then start again from the files [`RedisProcess::save_files`]
    /// copied: every write since is lost, as the last second of writes is
    /// when a crash beats `appendfsync everysec`.
    pub fn crash_and_restart_from(&mut self, saved: &std::path::Path) {
        self.kill();
        let files = self.dir.join("appendonlydir");
        std::fs::remove_dir_all(&files).expect("remove the append-only files");
        copy_dir(saved, &files);
        let _ = std::fs::remove_dir_all(saved);
        self.start_again();
    }
}

/// Copy the files of directory `from` into a new directory `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the directory") {
        let entry = entry.expect("a directory entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A WebSocket on a socket with a tiny receive buffer that subscribes to
/// `channel` (with `authorization` as its Authorization header) and then
/// never reads again, so the server's queue to it backs up quickly.
pub async fn stuck_subscriber(
    addr: SocketAddr,
    url: &str,
    authorization: &str,
    channel: &str,
) -> WebSocketStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let stream = socket.connect(addr).await.expect("connect");
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(authorization).expect("header value"),
    );
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"channels": [channel]}});
    ws.send(Message::Text(call.to_string().into()))
        .await
        .expect("send");
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("reply")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if v["id"] == 1 {
                assert!(v.get("error").is_none(), "{v}");
                return ws;
            }
        }
    }
}
