//! The `switchyard` command: `serve` (default), `token`, `call`, `bench`,
//! `openrpc`.
//!
//! Start-up is parse → validate → build → serve; a bad configuration exits
//! with code 64 (EX_USAGE) and a message naming the field.

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use switchyard::auth::{MintClaims, Role};
use switchyard::config::{self, Config, ProcessEnv, ServeArgs};
use switchyard::server;

/// Exit code for configuration errors (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Real-time control plane for AI agents, tools and their operators: a WebSocket + HTTP JSON-RPC gateway."
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Mint a JWT with the configured key (auth.jwt.secret or auth.jwt.private_key).
    Token(TokenArgs),
    /// Send one JSON-RPC call to a running gateway and print the reply.
    Call(CallArgs),
    /// Load generator against running instances (see BENCHMARKS.md).
    Bench(BenchArgs),
    /// Print the protocol reference: the OpenRPC document (as `GET
    /// /openrpc.json` serves it) or, with --markdown, docs/protocol.md.
    Openrpc(OpenRpcArgs),
}

#[derive(Args)]
struct OpenRpcArgs {
    /// Render it as Markdown instead of JSON.
    #[arg(long)]
    markdown: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Instance URLs, comma separated (ws://127.0.0.1:18791/ws,...).
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:18789/ws")]
    urls: Vec<String>,
    /// Bearer token with operator.write [env: SWITCHYARD_TOKEN]; every
    /// scenario but `reference` needs it.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    scenario: BenchScenario,
}

#[derive(Subcommand)]
enum BenchScenario {
    /// Publish → delivery latency from the first URL to the last.
    Latency {
        /// Messages per second, all publishers together.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 4)]
        publishers: usize,
    },
    /// One publisher, many subscribers spread over the URLs.
    Fanout {
        #[arg(long, default_value_t = 10_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 50)]
        messages: u64,
        /// Publications per second.
        #[arg(long, default_value_t = 100)]
        rate: u64,
    },
    /// Idle authenticated connections; memory of the server process.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// PID of the server on the first URL.
        #[arg(long)]
        pid: u32,
        /// Open them all at once, hold them, close them all, and follow the
        /// memory back down (default: open one after another).
        #[arg(long)]
        storm: bool,
        /// Storm: handshakes in flight at once.
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
        /// Storm: how long the connections are held once open.
        #[arg(long, default_value_t = 10)]
        hold_seconds: u64,
        /// Storm: longest wait for the memory to settle after the close.
        #[arg(long, default_value_t = 30)]
        settle_seconds: u64,
        /// Storm: connections of the warm-up wave (opened, closed, settled)
        /// after which "before" is read; more than the gateway's trim
        /// threshold (1 000), so before and after are both trimmed states.
        #[arg(long, default_value_t = 2_000)]
        warm: usize,
    },
    /// `ping` round trips over many connections.
    Ping {
        #[arg(long, default_value_t = 100)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// `node.invoke` from the first URL to a node on the last one.
    Invoke {
        #[arg(long, default_value_t = 20)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Serve the bare reference server (ping, subscribe, publish; no
    /// features) until SIGINT or SIGTERM, to run the scenarios against.
    Reference {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18800")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Args)]
struct TokenArgs {
    /// Subject (`sub` claim).
    #[arg(long, default_value = "cli")]
    sub: String,
    /// Role: operator or node.
    #[arg(long, default_value = "operator")]
    role: String,
    /// Scope to grant (repeatable).
    #[arg(long = "scope", default_values_t = ["operator.admin".to_string()])]
    scopes: Vec<String>,
    /// Extra channel the token may use (repeatable; `*` wildcards).
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// TOML configuration file holding the signing key (`[auth.jwt]`).
    /// Env: SWITCHYARD_CONFIG; the key may also come from
    /// SWITCHYARD_JWT_SECRET or SWITCHYARD_JWT_PRIVATE_KEY.
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
    /// HMAC secret to sign with (at least 32 bytes). Env: SWITCHYARD_JWT_SECRET.
    #[arg(long, value_name = "SECRET")]
    jwt_secret: Option<String>,
}

#[derive(Args)]
struct CallArgs {
    /// Method to call, e.g. `status`.
    method: String,
    /// Params as JSON (default `{}`).
    params: Option<String>,
    /// Gateway URL.
    #[arg(
        long,
        env = "SWITCHYARD_URL",
        default_value = "ws://127.0.0.1:18789/ws"
    )]
    url: String,
    /// Bearer token; defaults to the development token file of a loopback
    /// gateway on the URL's port ($TMPDIR/switchyard-<port>.token).
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How long to wait for the reply, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        None => runtime.block_on(serve(cli.serve)),
        Some(Command::Serve(args)) => runtime.block_on(serve(*args)),
        Some(Command::Token(args)) => token(args),
        Some(Command::Call(args)) => runtime.block_on(call(args)),
        Some(Command::Bench(args)) => runtime.block_on(bench(args)),
        Some(Command::Openrpc(args)) => openrpc(args),
    }
}

fn openrpc(args: OpenRpcArgs) -> ExitCode {
    use switchyard::rpc::openrpc;
    if args.markdown {
        print!("{}", openrpc::markdown::render(openrpc::document()));
    } else {
        let document = serde_json::to_string_pretty(openrpc::document()).unwrap_or_default();
        println!("{document}");
    }
    ExitCode::SUCCESS
}

fn load_config(args: &ServeArgs) -> Result<Config, ExitCode> {
    config::load(args, &ProcessEnv).map_err(|e| {
        eprintln!("switchyard: {e}");
        ExitCode::from(EX_USAGE)
    })
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    switchyard::telemetry::init_logging(&config.log);
    let outcome = start(config).await;
    // Export the spans still batched (blocking HTTP: off the runtime).
    let _ = tokio::task::spawn_blocking(switchyard::otel::shutdown).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(server::StartError::Config(e)) => {
            eprintln!("switchyard: {e}");
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            eprintln!("switchyard: {e}");
            tracing::error!(error = %e, "start failed");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config) -> Result<(), server::StartError> {
    let (config, dev_token) = server::prepare_auth(config)?;
    let ip = config.bind_addr()?;
    let addr = std::net::SocketAddr::new(ip, config.port);
    let tls = config.tls.clone();
    let metrics_port = config.metrics_port;
    let app = server::build(config).await?;
    if let Some(port) = metrics_port {
        let listener = tokio::net::TcpListener::bind((ip, port)).await?;
        let router = server::metrics_router(app.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        instance = %app.instance_id,
        backend = app.backend.kind(),
        tls = tls.is_some(),
        "listening"
    );
    let tls = match tls {
        None => None,
        Some(tls) => Some(
            server::serve::tls_acceptor(&tls.cert, &tls.key)
                .map_err(|e| config::ConfigError::new("tls", e))?,
        ),
    };
    // Only now that the port is ours: a gateway that fails to bind must not
    // replace the token of the one already serving there.
    if let Some(dev_token) = &dev_token {
        dev_token.write()?;
    }
    server::run(app, listener, tls, shutdown_signal()).await;
    if let Some(dev_token) = &dev_token {
        dev_token.remove();
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

fn token(args: TokenArgs) -> ExitCode {
    let serve = ServeArgs {
        config: args.config,
        jwt_secret: args.jwt_secret,
        ..ServeArgs::default()
    };
    let config = match load_config(&serve) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let role: Role = match args.role.parse() {
        Ok(r) => r,
        Err(_) => {
            eprintln!("switchyard: --role must be operator or node");
            return ExitCode::from(EX_USAGE);
        }
    };
    let claims = MintClaims {
        sub: args.sub,
        role,
        scopes: args.scopes,
        channels: args.channels,
        ttl_secs: args.ttl,
        issuer: None,
        audience: None,
    };
    match switchyard::auth::mint(&config.auth.jwt, &claims) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::from(EX_USAGE)
        }
    }
}

async fn call(args: CallArgs) -> ExitCode {
    let params: serde_json::Value =
        match args.params.as_deref().map(serde_json::from_str).transpose() {
            Ok(p) => p.unwrap_or_else(|| serde_json::json!({})),
            Err(e) => {
                eprintln!("switchyard: params are not JSON: {e}");
                return ExitCode::from(EX_USAGE);
            }
        };
    let (token, from_file) = match args.token {
        Some(token) => (Some(token), None),
        None => match dev_token_for(&args.url) {
            Some((token, path)) => (Some(token), Some(path)),
            None => (None, None),
        },
    };
    let mut client = match switchyard::client::Client::connect(&args.url, token.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}");
            match (&from_file, &token) {
                (Some(path), _) => eprintln!(
                    "switchyard: the token came from {} (the development token of a \
                     loopback gateway on that port); pass --token or SWITCHYARD_TOKEN \
                     to use another",
                    path.display()
                ),
                (None, None) => eprintln!(
                    "switchyard: no token: pass --token or SWITCHYARD_TOKEN (a loopback \
                     gateway without configured credentials writes its development \
                     token to {})",
                    url_port(&args.url)
                        .map(|p| server::default_dev_token_path(p).display().to_string())
                        .unwrap_or_else(|| "$TMPDIR/switchyard-<port>.token".into())
                ),
                (None, Some(_)) => {}
            }
            return ExitCode::FAILURE;
        }
    };
    client.set_timeout(std::time::Duration::from_millis(args.timeout_ms));
    match client.call(&args.method, params).await {
        Ok(result) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&result).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard: {e}");
            if let switchyard::client::ClientError::Rpc(rpc) = e
                && let Some(data) = rpc.data
            {
                eprintln!("{data}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: BenchArgs) -> ExitCode {
    use switchyard::bench;
    if let BenchScenario::Reference { listen } = args.scenario {
        return match bench::reference::run(listen, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard bench reference: {listen}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(token) = args.token.as_deref() else {
        eprintln!("switchyard bench: --token (or SWITCHYARD_TOKEN) is required");
        return ExitCode::from(EX_USAGE);
    };
    let urls = &args.urls;
    let outcome = match args.scenario {
        BenchScenario::Latency {
            rate,
            seconds,
            publishers,
        } => bench::latency(urls, token, rate.max(1), seconds, publishers.max(1)).await,
        BenchScenario::Fanout {
            subscribers,
            messages,
            rate,
        } => bench::fanout(urls, token, subscribers, messages, rate.max(1)).await,
        BenchScenario::Idle {
            connections,
            pid,
            storm: false,
            ..
        } => bench::idle(&urls[0], token, connections, pid).await,
        BenchScenario::Idle {
            connections,
            pid,
            storm: true,
            concurrency,
            hold_seconds,
            settle_seconds,
            warm,
        } => {
            let storm = bench::Storm {
                concurrency,
                hold: std::time::Duration::from_secs(hold_seconds),
                settle: std::time::Duration::from_secs(settle_seconds),
                warm,
            };
            bench::storm(&urls[0], token, connections, pid, storm).await
        }
        BenchScenario::Ping {
            connections,
            seconds,
        } => bench::ping(&urls[0], token, connections, seconds).await,
        BenchScenario::Invoke {
            connections,
            seconds,
        } => bench::invoke(urls, token, connections.max(1), seconds).await,
        // Served above.
        BenchScenario::Reference { .. } => return ExitCode::SUCCESS,
    };
    match outcome {
        Ok(result) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The development token of a loopback gateway, read from its token file
/// for the URL's port, and that file.
fn dev_token_for(url: &str) -> Option<(String, std::path::PathBuf)> {
    let path = server::default_dev_token_path(url_port(url)?);
    let token = std::fs::read_to_string(&path).ok()?.trim().to_owned();
    Some((token, path))
}

/// The port of a `ws://host:port/…` URL.
fn url_port(url: &str) -> Option<u16> {
    url.split("://")
        .nth(1)?
        .split('/')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}
