//! The method table: one row per method, the single source of its name,
//! aliases, requirement, whether it waits on another party, the type its
//! params decode into, its entry in the reference, and its handler.
//!
//! A row names its handler and its [`Doc`], so a method without either
//! does not compile; the index built from the rows is the only lookup
//! ([`lookup`]), so a name and its aliases cannot drift apart. The params
//! type a row declares both decodes the call's params and gives their
//! JSON Schema, so the reference (`openrpc`) describes exactly what the
//! handler accepts. A handler calls its namespace's function (which calls
//! the services).

use super::cron;
use super::devices;
use super::doc::{self, Doc};
use super::runtime_config;
use super::{
    Ctx, agent_defs, agents, approvals, channels, openrpc, params, params_or_default, runs,
    sessions, system,
};
use crate::auth::{Requirement, Scope};
use crate::protocol::RpcError;
use crate::services::page::Page;
use schemars::{Schema, SchemaGenerator};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use Requirement::{Any, Authenticated};

const READ: Requirement = Requirement::Scope(Scope::Read);
const WRITE: Requirement = Requirement::Scope(Scope::Write);
const ADMIN: Requirement = Requirement::Scope(Scope::Admin);
const APPROVALS: Requirement = Requirement::Scope(Scope::Approvals);
const NODE: Requirement = Requirement::Node;
const PAIRING: Requirement = Requirement::Scope(Scope::Pairing);

/// What a handler returns: the call's outcome, later.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send + 'a>>;

/// A method's handler: the call's context and its raw params.
pub type Handler = for<'a> fn(&'a Ctx<'a>, Value) -> Reply<'a>;

/// The JSON Schema of a method's params object.
pub type ParamsSchema = fn(&mut SchemaGenerator) -> Schema;

/// One built-in method.
pub struct Method {
    pub name: &'static str,
    /// Other names clients may use (`notify.subscribe`, `sessions.*`, …).
    pub aliases: &'static [&'static str],
    pub requirement: Requirement,
    /// Waits on another party (a node's answer, a decision): the connection
    /// runs it in its own task and keeps serving the client meanwhile.
    /// Every other call runs in order.
    pub long_running: bool,
    /// Its params (`None`: it reads none), from the type they decode into.
    pub params: Option<ParamsSchema>,
    /// Its entry in the reference.
    pub doc: &'static Doc,
    pub handler: Handler,
}

/// `row!(name | alias…, requirement, in_order | waits, doc, |ctx, p: T| body)`:
/// `body` runs in the handler's async block with `ctx: &Ctx` and `p` the
/// params decoded into `T` (-32602 when they do not fit). The params may
/// be left out (`|ctx|`: the method reads none), absent params may mean
/// `T::default()` (`p: T = default`), and a handler may take the raw
/// params with a schema of its own (`p: Value as schema_fn`).
macro_rules! row {
    ($name:literal $(| $alias:literal)*, $req:expr, $mode:ident, $doc:expr,
     |$ctx:ident $($params:tt)*) => {
        row!(@method $name, [$($alias),*], $req, $mode, $doc, |$ctx $($params)*)
    };
    (@method $name:literal, [$($alias:literal),*], $req:expr, $mode:ident, $doc:expr,
     |$ctx:ident| $body:expr) => {
        row!(@build $name, [$($alias),*], $req, $mode, $doc, None, |$ctx, _p| $body)
    };
    (@method $name:literal, [$($alias:literal),*], $req:expr, $mode:ident, $doc:expr,
     |$ctx:ident, $p:ident: Value as $schema:path| $body:expr) => {
        row!(@build $name, [$($alias),*], $req, $mode, $doc, Some($schema), |$ctx, $p| $body)
    };
    (@method $name:literal, [$($alias:literal),*], $req:expr, $mode:ident, $doc:expr,
     |$ctx:ident, $p:ident: $ty:ty = default| $body:expr) => {
        row!(@build $name, [$($alias),*], $req, $mode, $doc, Some(schema_of::<$ty>),
            |$ctx, $p| { let $p: $ty = params_or_default($p)?; $body })
    };
    (@method $name:literal, [$($alias:literal),*], $req:expr, $mode:ident, $doc:expr,
     |$ctx:ident, $p:ident: $ty:ty| $body:expr) => {
        row!(@build $name, [$($alias),*], $req, $mode, $doc, Some(schema_of::<$ty>),
            |$ctx, $p| { let $p: $ty = params($p)?; $body })
    };
    (@build $name:literal, [$($alias:literal),*], $req:expr, $mode:ident, $doc:expr,
     $schema:expr, |$ctx:ident, $p:ident| $body:expr) => {
        Method {
            name: $name,
            aliases: &[$($alias),*],
            requirement: $req,
            long_running: row!(@$mode),
            params: $schema,
            doc: &$doc,
            handler: {
                fn handler<'a>($ctx: &'a Ctx<'a>, $p: Value) -> Reply<'a> {
                    Box::pin(async move { $body })
                }
                handler
            },
        }
    };
    (@waits) => { true };
    (@in_order) => { false };
}

/// The schema of params decoded into `T`.
fn schema_of<T: schemars::JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// Every built-in method.
#[rustfmt::skip]
pub static METHODS: &[Method] = &[
    // system
    row!("ping", Any, in_order, doc::PING, |_c| Ok(system::ping())),
    row!("system.ping", Any, in_order, doc::PING, |_c| Ok(system::ping())),
    row!("connect", Any, in_order, doc::CONNECT,
        |c, p: system::ConnectParams| system::connect(c, p).await),
    row!("auth", Any, in_order, doc::AUTH,
        |c, p: Value as system::auth_params| system::auth(c, p).await),
    row!("health", READ, in_order, doc::HEALTH, |c| system::health(c).await),
    row!("status", READ, in_order, doc::STATUS, |c| system::status(c).await),
    row!("system.presence", READ, in_order, doc::SYSTEM_PRESENCE,
        |c, p: Page = default| system::presence(c, p).await),
    row!("clients.list", ADMIN, in_order, doc::CLIENTS_LIST,
        |c, p: Page = default| system::presence(c, p).await),
    row!("client.kick", ADMIN, in_order, doc::CLIENT_KICK,
        |c, p: system::KickParams| system::kick(c, p).await),
    row!("logs.tail", ADMIN, in_order, doc::LOGS_TAIL,
        |c, p: system::LogsParams| system::logs_tail(c, p)),
    row!("rpc.discover", Any, in_order, doc::RPC_DISCOVER, |_c| Ok(openrpc::document().clone())),
    // channels
    row!("subscribe" | "notify.subscribe", Authenticated, in_order, doc::SUBSCRIBE,
        |c, p: channels::ChannelsParams| channels::subscribe(c, p).await),
    row!("unsubscribe" | "notify.unsubscribe", Authenticated, in_order, doc::UNSUBSCRIBE,
        |c, p: channels::ChannelsParams| channels::unsubscribe(c, p).await),
    row!("publish", WRITE, in_order, doc::PUBLISH,
        |c, p: channels::PublishParams| channels::publish(c, p).await),
    row!("presence.get", Authenticated, in_order, doc::PRESENCE_GET,
        |c, p: channels::PresenceParams| channels::presence(c, p).await),
    row!("history", Authenticated, in_order, doc::HISTORY,
        |c, p: channels::HistoryParams| channels::history(c, p).await),
    // sessions
    row!("session.create" | "sessions.create", WRITE, in_order, doc::SESSION_CREATE,
        |c, p: sessions::CreateParams| sessions::create(c, p).await),
    row!("session.join" | "sessions.join", WRITE, in_order, doc::SESSION_JOIN,
        |c, p: sessions::IdParams| sessions::join(c, p).await),
    row!("session.invite" | "sessions.invite", WRITE, in_order, doc::SESSION_INVITE,
        |c, p: sessions::InviteParams| sessions::invite(c, p).await),
    row!("session.leave" | "sessions.leave", WRITE, in_order, doc::SESSION_LEAVE,
        |c, p: sessions::IdParams| sessions::leave(c, p).await),
    row!("session.get" | "sessions.get", READ, in_order, doc::SESSION_GET,
        |c, p: sessions::IdParams| sessions::get(c, p).await),
    row!("session.patch" | "sessions.patch", WRITE, in_order, doc::SESSION_PATCH,
        |c, p: sessions::PatchParams| sessions::patch(c, p).await),
    row!("session.list" | "sessions.list", READ, in_order, doc::SESSION_LIST,
        |c| sessions::list(c).await),
    row!("session.send" | "sessions.send", WRITE, in_order, doc::SESSION_SEND,
        |c, p: sessions::SendParams| sessions::send(c, p).await),
    row!("session.history" | "sessions.history", READ, in_order, doc::SESSION_HISTORY,
        |c, p: sessions::HistoryParams| sessions::history(c, p).await),
    row!("session.resume" | "sessions.resume", WRITE, in_order, doc::SESSION_RESUME,
        |c, p: sessions::ResumeParams| sessions::resume(c, p).await),
    row!("session.close" | "sessions.close", WRITE, in_order, doc::SESSION_CLOSE,
        |c, p: sessions::IdParams| sessions::close(c, p).await),
    // nodes and agents
    row!("node.invoke", WRITE, waits, doc::NODE_INVOKE,
        |c, p: agents::InvokeParams| agents::invoke(c, p).await),
    row!("invoke.cancel", WRITE, in_order, doc::INVOKE_CANCEL,
        |c, p: agents::CancelParams| agents::cancel(c, p)),
    row!("invoke.progress", NODE, in_order, doc::INVOKE_PROGRESS,
        |c, p: agents::ProgressParams| agents::progress(c, p)),
    row!("agent.register", NODE, in_order, doc::AGENT_REGISTER,
        |c, p: agents::RegisterParams| agents::register(c, p).await),
    row!("agent.status", NODE, in_order, doc::AGENT_STATUS,
        |c, p: agents::StatusParams| agents::status(c, p).await),
    row!("agent.unregister", NODE, in_order, doc::AGENT_UNREGISTER,
        |c, p: agents::UnregisterParams = default| agents::unregister(c, p).await),
    row!("agent.event", NODE, in_order, doc::AGENT_EVENT,
        |c, p: runs::EventParams| runs::event(c, p).await),
    row!("agent.reattach", NODE, waits, doc::AGENT_REATTACH,
        |c, p: runs::ReattachParams| runs::reattach(c, p).await),
    row!("agent.finish", NODE, in_order, doc::AGENT_FINISH,
        |c, p: runs::FinishParams| runs::finish(c, p).await),
    row!("agents.list" | "node.list" | "agent.list", READ, in_order, doc::AGENTS_LIST,
        |c, p: agents::ListParams = default| agents::list(c, p).await),
    row!("agents.get" | "node.describe" | "agent.get", READ, in_order, doc::AGENTS_GET,
        |c, p: agents::GetParams| agents::get(c, p).await),
    row!("tools.list", READ, in_order, doc::TOOLS_LIST, |c| agents::tools(c).await),
    row!("models.list", READ, in_order, doc::MODELS_LIST, |c| agents::models_list(c).await),
    // runs and chat
    row!("agent.run" | "agent", WRITE, waits, doc::AGENT_RUN,
        |c, p: runs::RunParams| runs::run(c, p).await),
    row!("agent.wait", READ, waits, doc::AGENT_WAIT,
        |c, p: runs::WaitParams| runs::wait(c, p).await),
    row!("agent.cancel", WRITE, in_order, doc::AGENT_CANCEL,
        |c, p: runs::CancelParams| runs::cancel(c, p).await),
    row!("chat.send", WRITE, waits, doc::CHAT_SEND,
        |c, p: runs::ChatParams| runs::chat_send(c, p).await),
    row!("chat.history", READ, in_order, doc::CHAT_HISTORY,
        |c, p: runs::HistoryParams| runs::chat_history(c, p).await),
    row!("chat.abort", WRITE, in_order, doc::CHAT_ABORT,
        |c, p: runs::CancelParams| runs::cancel(c, p).await),
    row!("chat.inject", WRITE, in_order, doc::CHAT_INJECT,
        |c, p: runs::InjectParams| runs::chat_inject(c, p).await),
    // approvals
    row!("approval.request", NODE, in_order, doc::APPROVAL_REQUEST,
        |c, p: approvals::RequestParams| approvals::request(c, p).await),
    row!("approval.resolve", APPROVALS, in_order, doc::APPROVAL_RESOLVE,
        |c, p: approvals::ResolveParams| approvals::resolve(c, p).await),
    row!("approval.wait", Authenticated, waits, doc::APPROVAL_WAIT,
        |c, p: approvals::WaitParams| approvals::wait(c, p).await),
    row!("approval.list", APPROVALS, in_order, doc::APPROVAL_LIST,
        |c| approvals::list(c).await),
    row!("approval.history", APPROVALS, in_order, doc::APPROVAL_HISTORY,
        |c, p: approvals::HistoryParams = default| approvals::history(c, p).await),
    // agent definitions and cluster-wide agent views
    row!("agents.create", ADMIN, in_order, doc::AGENTS_CREATE,
        |c, p: agent_defs::CreateParams| agent_defs::create(c, p).await),
    row!("agents.update", ADMIN, in_order, doc::AGENTS_UPDATE,
        |c, p: agent_defs::UpdateParams| agent_defs::update(c, p).await),
    row!("agents.delete", ADMIN, in_order, doc::AGENTS_DELETE,
        |c, p: agent_defs::DeleteParams| agent_defs::delete(c, p).await),
    row!("agents.broadcast", WRITE, in_order, doc::AGENTS_BROADCAST,
        |c, p: agent_defs::BroadcastParams| agent_defs::broadcast(c, p).await),
    row!("agents.stats", READ, in_order, doc::AGENTS_STATS, |c| agent_defs::stats(c).await),
    // runtime config
    row!("config.get", ADMIN, in_order, doc::CONFIG_GET,
        |c, p: runtime_config::GetParams = default| runtime_config::get(c, p)),
    row!("config.set", ADMIN, in_order, doc::CONFIG_SET,
        |c, p: runtime_config::SetParams| runtime_config::set(c, p).await),
    row!("config.patch", ADMIN, in_order, doc::CONFIG_PATCH,
        |c, p: runtime_config::PatchParams| runtime_config::patch(c, p).await),
    row!("config.apply", ADMIN, in_order, doc::CONFIG_APPLY,
        |c, p: runtime_config::ApplyParams| runtime_config::apply(c, p).await),
    row!("config.history", ADMIN, in_order, doc::CONFIG_HISTORY,
        |c, p: runtime_config::HistoryParams = default| runtime_config::history(c, p).await),
    // devices and pairing
    row!("device.pair.request" | "node.pair.request", Any, in_order, doc::DEVICE_PAIR_REQUEST,
        |c, p: devices::RequestParams| devices::request(c, p).await),
    row!("device.pair.approve" | "node.pair.approve", PAIRING, in_order, doc::DEVICE_PAIR_APPROVE,
        |c, p: devices::ApproveParams| devices::approve(c, p).await),
    row!("device.pair.reject" | "node.pair.reject", PAIRING, in_order, doc::DEVICE_PAIR_REJECT,
        |c, p: devices::RejectParams| devices::reject(c, p).await),
    row!("device.list", PAIRING, in_order, doc::DEVICE_LIST,
        |c, p: devices::ListParams = default| devices::list(c, p).await),
    row!("device.get", PAIRING, in_order, doc::DEVICE_GET,
        |c, p: devices::DeviceParams| devices::get(c, p).await),
    row!("device.revoke", PAIRING, in_order, doc::DEVICE_REVOKE,
        |c, p: devices::RevokeParams| devices::revoke(c, p).await),
    row!("device.token.rotate", Authenticated, in_order, doc::DEVICE_TOKEN_ROTATE,
        |c, p: devices::DeviceParams| devices::rotate(c, p).await),
    row!("device.history", PAIRING, in_order, doc::DEVICE_HISTORY,
        |c, p: devices::HistoryParams = default| devices::history(c, p).await),
    // cron
    row!("cron.add", ADMIN, in_order, doc::CRON_ADD,
        |c, p: cron::AddParams| cron::add(c, p).await),
    row!("cron.update", ADMIN, in_order, doc::CRON_UPDATE,
        |c, p: cron::UpdateParams| cron::update(c, p).await),
    row!("cron.get", ADMIN, in_order, doc::CRON_GET,
        |c, p: cron::IdParams| cron::get(c, p).await),
    row!("cron.list", ADMIN, in_order, doc::CRON_LIST, |c| cron::list(c).await),
    row!("cron.run", ADMIN, waits, doc::CRON_RUN,
        |c, p: cron::IdParams| cron::run(c, p).await),
    row!("cron.remove", ADMIN, in_order, doc::CRON_REMOVE,
        |c, p: cron::IdParams| cron::remove(c, p).await),
    row!("cron.runs", ADMIN, in_order, doc::CRON_RUNS,
        |c, p: cron::RunsParams| cron::runs(c, p).await),
];

/// The method a name or alias stands for.
///
/// The index hashes with foldhash rather than the standard library's
/// SipHash (210 instructions per lookup against 476, and every call makes
/// one): the keys are this fixed table, so a client's names can only
/// miss, never crowd a bucket.
pub fn lookup(name: &str) -> Option<&'static Method> {
    type Index = HashMap<&'static str, &'static Method, foldhash::fast::RandomState>;
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let mut index = Index::default();
            for method in METHODS {
                for name in std::iter::once(&method.name).chain(method.aliases) {
                    index.insert(*name, method);
                }
            }
            index
        })
        .get(name)
        .copied()
}

/// A method's metric handles. Resolved at its first call, after which a
/// call only adds to them: the macros would build, hash and look up the
/// labelled key on every call.
pub struct MethodMetrics {
    /// `switchyard_messages_in_total{method}`
    pub calls: metrics::Counter,
    /// `switchyard_rpc_duration_seconds{method}`
    pub duration: metrics::Histogram,
}

impl Method {
    /// This method's metric handles (a row of [`METHODS`] only).
    pub fn metrics(&'static self) -> &'static MethodMetrics {
        static HANDLES: OnceLock<Vec<OnceLock<MethodMetrics>>> = OnceLock::new();
        let handles = HANDLES.get_or_init(|| METHODS.iter().map(|_| OnceLock::new()).collect());
        let offset = (self as *const Method as usize).wrapping_sub(METHODS.as_ptr() as usize);
        let index = offset / std::mem::size_of::<Method>();
        debug_assert!(
            std::ptr::eq(&METHODS[index], self),
            "{} is a row",
            self.name
        );
        handles[index].get_or_init(|| MethodMetrics {
            calls: metrics::counter!("switchyard_messages_in_total", "method" => self.name),
            duration: metrics::histogram!("switchyard_rpc_duration_seconds", "method" => self.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_has_metric_handles_of_its_own() {
        let slots: std::collections::HashSet<*const MethodMetrics> =
            METHODS.iter().map(|m| m.metrics() as *const _).collect();
        assert_eq!(slots.len(), METHODS.len());
        for method in METHODS {
            for name in std::iter::once(&method.name).chain(method.aliases) {
                let found = lookup(name).expect("a row");
                assert!(std::ptr::eq(found.metrics(), method.metrics()), "{name}");
            }
        }
    }

    #[test]
    fn names_and_aliases_are_unique() {
        let mut names: Vec<&str> = METHODS
            .iter()
            .flat_map(|m| std::iter::once(m.name).chain(m.aliases.iter().copied()))
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a name or alias appears twice");
    }

    #[test]
    fn every_name_and_alias_resolves_to_its_row() {
        for method in METHODS {
            for name in std::iter::once(&method.name).chain(method.aliases) {
                let found = lookup(name).unwrap_or_else(|| panic!("{name} not found"));
                assert_eq!(found.name, method.name, "{name}");
            }
        }
        for alias in [
            "notify.subscribe",
            "sessions.list",
            "node.describe",
            "agent.list",
        ] {
            assert!(lookup(alias).is_some(), "{alias}");
        }
        for unknown in ["sessions.nope", "session", "", "rpc.describe"] {
            assert!(lookup(unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn calls_that_wait_on_another_party_run_in_their_own_task() {
        let waiting: Vec<&str> = METHODS
            .iter()
            .filter(|m| m.long_running)
            .map(|m| m.name)
            .collect();
        assert_eq!(
            waiting,
            [
                "node.invoke",
                "agent.reattach",
                "agent.run",
                "agent.wait",
                "chat.send",
                "approval.wait",
                "cron.run"
            ]
        );
    }
}
