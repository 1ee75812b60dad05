//! The TLS-only Redis processes of `tests/redis_secure.rs` and their
//! certificates: a single server, a Redis Cluster, a Sentinel with its
//! master, all with the same ACL users, on free ports, killed on drop.

use super::common::{free_port, poll_output, temp_path};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard::config::RedisTlsConfig;

/// The gateway's Redis user: its name, its password, and the rules of
/// `ACL SETUSER` after them, as docs/security.md gives them.
pub const USER: &str = "switchyard";
pub const PASSWORD: &str = "sy-redis-pw-5e1f0c";
pub const ACL: &str = "~sy:* &sy:* &sy:notify:* +@all -@admin -@dangerous +info +role";
/// An administrator of the test Redis, for `ACL LOG` and cluster setup.
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-pw-77c2";
/// The Sentinel's own user for clients (`sentinelUsername`).
pub const SENTINEL_USER: &str = "sy-sentinel";
pub const SENTINEL_PASSWORD: &str = "sentinel-pw-a9d4";
/// The rules of that user on the Sentinel.
pub const SENTINEL_ACL: &str = "-@all +sentinel|get-master-addr-by-name +sentinel|sentinels";

/// Certificates of one test, in a directory removed on drop.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA; a server certificate for 127.0.0.1 and localhost (server and
    /// client use: cluster nodes present it to each other); a client
    /// certificate for the gateway. P-256 keys, quick to make.
    pub fn new() -> Pki {
        let dir = temp_path("redis-pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let pki = Pki { dir };
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        pki.openssl(&[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sy test CA",
        ])
        .args(key)
        .args(["-keyout", "ca.key", "-out", "ca.crt"])
        .run();
        for (name, cn, ext) in [
            (
                "server",
                "localhost",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
                 extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
            ),
            (
                "client",
                "switchyard",
                "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
            ),
        ] {
            std::fs::write(pki.dir.join(format!("{name}.ext")), ext).expect("ext file");
            pki.openssl(&["req", "-nodes", "-subj", &format!("/CN={cn}")])
                .args(key)
                .args(["-keyout", &format!("{name}.key")])
                .args(["-out", &format!("{name}.csr")])
                .run();
            pki.openssl(&[
                "x509", "-req", "-days", "2", "-CA", "ca.crt", "-CAkey", "ca.key",
            ])
            .args(["-CAcreateserial", "-in", &format!("{name}.csr")])
            .args(["-out", &format!("{name}.crt")])
            .args(["-extfile", &format!("{name}.ext")])
            .run();
        }
        pki
    }

    fn openssl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(&self.dir);
        cmd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// What the gateway needs to trust the test CA, and with `client`
    /// also to present its client certificate.
    pub fn gateway(&self, client: bool) -> RedisTlsConfig {
        RedisTlsConfig {
            ca: Some(self.path("ca.crt")),
            cert: client.then(|| self.path("client.crt")),
            key: client.then(|| self.path("client.key")),
        }
    }

    /// The TLS arguments of a server; with `mutual`, clients must present
    /// a certificate of the CA.
    fn server_args(&self, mutual: bool) -> Vec<String> {
        let path = |name| self.path(name).display().to_string();
        let auth_clients = if mutual { "yes" } else { "no" };
        [
            "--tls-cert-file",
            &path("server.crt"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("ca.crt"),
            "--tls-auth-clients",
            auth_clients,
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

trait Run {
    fn run(&mut self);
}

impl Run for Command {
    /// Run to completion, panicking with its output on failure.
    fn run(&mut self) {
        let out = self.output().expect("the command runs");
        assert!(
            out.status.success(),
            "{self:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The ACL users of every data node: `default` off, the administrator,
/// the gateway's user, and the one the Sentinel monitors with.
fn user_args() -> Vec<String> {
    let mut args: Vec<String> = vec!["--user".into(), "default".into(), "off".into()];
    for line in [
        format!("{ADMIN_USER} on >{ADMIN_PASSWORD} ~* &* +@all"),
        format!("{USER} on >{PASSWORD} {ACL}"),
        // What Redis documents for a Sentinel's monitoring user.
        "sentinel-mon on >mon-pw allchannels +multi +slaveof +ping +exec +subscribe \
         +config|rewrite +role +publish +info +client|setname +client|kill +script|kill"
            .to_owned(),
    ] {
        args.push("--user".into());
        args.extend(line.split(' ').map(str::to_owned));
    }
    args
}

/// TLS-only Redis processes of one test, killed on drop.
pub struct SecureRedis {
    children: Vec<Child>,
    /// The data nodes (one, or the cluster's masters).
    data_ports: Vec<u16>,
    /// The Sentinel, when there is one.
    sentinel_port: Option<u16>,
    pub url: String,
    dir: PathBuf,
    /// `redis-cli` options reaching these servers over TLS.
    cli_tls: Vec<String>,
}

impl SecureRedis {
    fn empty(pki: &Pki) -> SecureRedis {
        let dir = temp_path("redis-data");
        std::fs::create_dir_all(&dir).expect("redis dir");
        let path = |name| pki.path(name).display().to_string();
        SecureRedis {
            children: Vec::new(),
            data_ports: Vec::new(),
            sentinel_port: None,
            url: String::new(),
            dir,
            cli_tls: vec![
                "--tls".into(),
                "--cacert".into(),
                path("ca.crt"),
                "--cert".into(),
                path("client.crt"),
                "--key".into(),
                path("client.key"),
            ],
        }
    }

    /// Start, retrying on fresh ports when one was taken meanwhile.
    fn start(pki: &Pki, spawn: impl Fn(&mut SecureRedis) -> Result<(), String>) -> SecureRedis {
        let mut last = String::new();
        for _ in 0..5 {
            let mut redis = SecureRedis::empty(pki);
            match spawn(&mut redis) {
                Ok(()) => return redis,
                Err(e) => last = e,
            }
        }
        panic!("TLS redis did not start: {last}");
    }

    /// One server; with `mutual`, clients need a certificate.
    pub fn single(pki: &Pki, mutual: bool) -> SecureRedis {
        SecureRedis::start(pki, |redis| {
            let port = redis.spawn_data_node(pki, mutual, &[])?;
            redis.url = format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{port}");
            Ok(())
        })
    }

    /// Three masters with TLS on the cluster bus too.
    pub fn cluster(pki: &Pki) -> SecureRedis {
        SecureRedis::start(pki, |redis| {
            for _ in 0..3 {
                redis.spawn_data_node(
                    pki,
                    false,
                    &["--cluster-enabled yes", "--tls-cluster yes"],
                )?;
            }
            let nodes: Vec<String> = redis
                .data_ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect();
            let mut create = redis.cli(None);
            create.arg("--cluster").arg("create").args(&nodes);
            create.args(["--cluster-replicas", "0", "--cluster-yes"]);
            let out = create.output().expect("redis-cli --cluster create");
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            for port in redis.data_ports.clone() {
                redis.wait_for(port, &["CLUSTER", "INFO"], "cluster_state:ok")?;
            }
            let [first, rest @ ..] = &redis.data_ports[..] else {
                unreachable!("three nodes")
            };
            let others: Vec<String> = rest.iter().map(|p| format!("node=127.0.0.1:{p}")).collect();
            redis.url = format!(
                "rediss-cluster://{USER}:{PASSWORD}@127.0.0.1:{first}?{}",
                others.join("&")
            );
            Ok(())
        })
    }

    /// A master and a Sentinel watching it, both on TLS only; the Sentinel
    /// talks TLS to the master too (`tls-replication yes`) and has its own
    /// ACL user for clients.
    pub fn sentinel(pki: &Pki, sentinel_password: &str) -> SecureRedis {
        SecureRedis::start(pki, |redis| {
            let master = redis.spawn_data_node(pki, false, &["--tls-replication yes"])?;
            let port = free_port();
            let path = |name| pki.path(name).display().to_string();
            let conf = redis.dir.join("sentinel.conf");
            let text = format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
                 tls-auth-clients no\ntls-replication yes\n\
                 sentinel monitor mymaster 127.0.0.1 {master} 1\n\
                 sentinel auth-user mymaster sentinel-mon\nsentinel auth-pass mymaster mon-pw\n\
                 user default off\nuser {ADMIN_USER} on >{ADMIN_PASSWORD} +@all\n\
                 user {SENTINEL_USER} on >{SENTINEL_PASSWORD} {SENTINEL_ACL}\n",
                dir = redis.dir.display(),
                cert = path("server.crt"),
                key = path("server.key"),
                ca = path("ca.crt"),
            );
            std::fs::write(&conf, text).expect("sentinel.conf");
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel starts");
            redis.children.push(child);
            let addr = ["SENTINEL", "get-master-addr-by-name", "mymaster"];
            redis.wait_for(port, &addr, &master.to_string())?;
            redis.sentinel_port = Some(port);
            redis.url = format!(
                "rediss-sentinel://{USER}:{PASSWORD}@127.0.0.1:{port}/0?\
                 sentinelServiceName=mymaster&sentinelUsername={SENTINEL_USER}&\
                 sentinelPassword={sentinel_password}"
            );
            Ok(())
        })
    }

    /// A data node on a free TLS port (no plain TCP port at all), with
    /// the ACL users and `extra` options (`"--name value"`).
    fn spawn_data_node(&mut self, pki: &Pki, mutual: bool, extra: &[&str]) -> Result<u16, String> {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(pki.server_args(mutual))
            .args(user_args())
            .args(extra.iter().flat_map(|o| o.split(' ')))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.children
            .push(cmd.spawn().expect("redis-server starts (with TLS)"));
        self.data_ports.push(port);
        self.wait_for(port, &["PING"], "PONG")?;
        Ok(port)
    }

    /// `redis-cli` over TLS as the administrator (on `port` if given).
    pub fn cli(&self, port: Option<u16>) -> Command {
        let mut cmd = Command::new("redis-cli");
        cmd.args(&self.cli_tls).args([
            "--user",
            ADMIN_USER,
            "--pass",
            ADMIN_PASSWORD,
            "--no-auth-warning",
        ]);
        if let Some(port) = port {
            cmd.args(["-p", &port.to_string()]);
        }
        cmd
    }

    /// Poll `redis-cli args` on `port` until its output contains `expect`
    /// (bounded; early out when a process died).
    fn wait_for(&mut self, port: u16, args: &[&str], expect: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let cli = self.cli(Some(port));
        let answered = poll_output(&mut self.children, deadline, expect, || {
            let mut cmd = Command::new(cli.get_program());
            cmd.args(cli.get_args()).args(args);
            cmd
        });
        if answered {
            return Ok(());
        }
        self.kill();
        Err(format!("port {port} never answered {expect} to {args:?}"))
    }

    /// What the data nodes refused the gateway's user, and the Sentinel
    /// the gateway's sentinel user (`ACL LOG`), as `reason object`
    /// (`command info`, `channel sy:notify:*`).
    pub fn refusals(&self) -> Vec<String> {
        let mut refused = Vec::new();
        let data = self.data_ports.iter().map(|&port| (port, USER));
        let sentinel = self.sentinel_port.map(|port| (port, SENTINEL_USER));
        for (port, user) in data.chain(sentinel) {
            let out = self.cli(Some(port)).args(["ACL", "LOG"]).output();
            let text = String::from_utf8_lossy(&out.expect("ACL LOG").stdout).into_owned();
            // Each entry is `count`, `reason`, …, `object`, `username`, …
            // field names and values on lines of their own.
            let lines: Vec<&str> = text.lines().collect();
            let mut entry = HashMap::new();
            for pair in lines.chunks(2) {
                let [field, value] = pair else { break };
                if *field == "count" && !entry.is_empty() {
                    refused.extend(refusal(&std::mem::take(&mut entry), user));
                }
                entry.insert(*field, *value);
            }
            refused.extend(refusal(&entry, user));
        }
        refused
    }

    fn kill(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SecureRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An `ACL LOG` entry of `user`, as `user: reason object`.
fn refusal(entry: &HashMap<&str, &str>, user: &str) -> Option<String> {
    (entry.get("username") == Some(&user)).then(|| {
        let field = |name| entry.get(name).copied().unwrap_or("?");
        format!("{user}: {} {}", field("reason"), field("object"))
    })
}
