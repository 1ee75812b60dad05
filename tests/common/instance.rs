//! Real `switchyard` processes for cluster tests: one gateway binary per
//! [`Instance`] on a free port against a test Redis, with static tokens,
//! killed (and reaped) when dropped.

use super::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Static tokens of every instance (`sub:secret:scopes`).
pub const TOKENS: &str = "admin:admin-token-0123456789abcdef:operator.admin,\
writer:writer-token-0123456789abcdef:operator.read operator.write,\
bob:bob-token-0123456789abcdef0123:operator.read operator.write";
pub const BOB: &str = "bob-token-0123456789abcdef0123";

/// `limits.node_ttl_ms` of every instance.
pub const NODE_TTL: Duration = Duration::from_millis(3000);

/// Kills (and reaps) the child when dropped, whatever happened.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One gateway process of the cluster.
pub struct Instance {
    pub child: Guard,
    pub id: String,
    pub port: u16,
    stderr: PathBuf,
}

impl Instance {
    /// Start instance `id` on a free port against `redis`, waiting (bounded)
    /// for `/health`.
    pub async fn start(redis: &RedisProcess, id: &str, env: &[(&str, &str)]) -> Instance {
        Self::start_url(&redis.url(), id, env).await
    }

    /// [`Instance::start`] against the Redis at `url`.
    pub async fn start_url(url: &str, id: &str, env: &[(&str, &str)]) -> Instance {
        let port = free_port();
        let stderr = temp_path(&format!("{id}.stderr"));
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHYARD_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("SWITCHYARD_LOG", "warn")
            .env("SWITCHYARD_PORT", port.to_string())
            .env("SWITCHYARD_REDIS_URL", url)
            .env("SWITCHYARD_INSTANCE_ID", id)
            .env(
                "SWITCHYARD_LIMITS__NODE_TTL_MS",
                NODE_TTL.as_millis().to_string(),
            )
            .env("SWITCHYARD_LIMITS__PRESENCE_TICK_MS", "60000")
            .env("SWITCHYARD_TOKENS", TOKENS)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let mut instance = Instance {
            child: Guard(cmd.spawn().expect("spawn switchyard")),
            id: id.to_owned(),
            port,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = instance.child.0.try_wait().unwrap() {
                panic!("{id} exited early ({status}): {}", instance.stderr_text());
            }
            if tokio::net::TcpStream::connect(instance.addr())
                .await
                .is_ok()
            {
                let (status, _, _) = http(instance.addr(), "GET", "/health", &[], None).await;
                if status == 200 {
                    return instance;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{id}: no /health within 10 s: {}",
                instance.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub async fn client(&self, token: &str) -> Ws {
        let url = format!("ws://127.0.0.1:{}/ws", self.port);
        let mut ws = Ws::connect_with(&url, &[("authorization", &bearer(token))])
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e:?}", self.id));
        let welcome = ws.expect_push("welcome").await;
        assert_eq!(welcome["nodeId"], self.id.as_str(), "{welcome}");
        ws
    }

    pub async fn ready_status(&self) -> u16 {
        http(self.addr(), "GET", "/ready", &[], None).await.0
    }

    /// Poll `/ready` until 200 (bounded by `deadline`).
    pub async fn ready_again(&self, deadline: Instant) {
        while self.ready_status().await != 200 {
            assert!(
                Instant::now() < deadline,
                "{} not ready again: {}",
                self.id,
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: nothing is cleaned up by the process itself.
    pub fn kill9(&mut self) {
        self.child.0.kill().expect("kill -9");
        self.child.0.wait().expect("reap");
    }

    pub fn sigterm(&self) {
        let pid = self.child.0.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM {pid}");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- stderr of {} ---\n{}", self.id, self.stderr_text());
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// `method` on `ws`, sent again while it meets a backend coming back
/// (-32005), for at most 20 s; the whole reply.
pub async fn call_when_back(
    ws: &mut Ws,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = ws.request(method, params.clone()).await;
        if reply["error"]["code"] != -32005 {
            return reply;
        }
        assert!(Instant::now() < deadline, "{method}: {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config file (in the temp dir, named after `name`) where channels
/// `audit:*` keep their last 100 publications.
pub fn audit_config(name: &str) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(
        &path,
        "[[channels.rules]]\nprefix = \"audit:\"\nsubscribe = \"read\"\npublish = \"write\"\nhistory = 100\n",
    )
    .expect("config file");
    path
}
