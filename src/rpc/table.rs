//! The method table: one row per method, the single source of its name,
//! aliases, requirement, whether it waits on another party, and handler.
//!
//! A row names its handler, so a method without one does not compile; the
//! index built from the rows is the only lookup ([`lookup`]), so a name
//! and its aliases cannot drift apart. A handler decodes its params and
//! calls its namespace's function (which calls the services).

use super::{Ctx, agents, approvals, channels, params, params_or_default, runs, sessions, system};
use crate::auth::{Requirement, Scope};
use crate::protocol::RpcError;
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

/// What a handler returns: the call's outcome, later.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send + 'a>>;

/// A method's handler: the call's context and its raw params.
pub type Handler = for<'a> fn(&'a Ctx<'a>, Value) -> Reply<'a>;

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
    pub handler: Handler,
}

/// `row!(name | alias…, requirement, in_order | waits, |ctx, p| body)`:
/// `body` runs in the handler's async block with `ctx: &Ctx` and the raw
/// params `p`.
macro_rules! row {
    ($name:literal $(| $alias:literal)*, $req:expr, $mode:ident, |$ctx:ident, $p:ident| $body:expr) => {
        Method {
            name: $name,
            aliases: &[$($alias),*],
            requirement: $req,
            long_running: row!(@$mode),
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

/// Every built-in method.
#[rustfmt::skip]
pub static METHODS: &[Method] = &[
    // system
    row!("ping", Any, in_order, |_c, _p| Ok(system::ping())),
    row!("system.ping", Any, in_order, |_c, _p| Ok(system::ping())),
    row!("connect", Any, in_order, |c, p| system::connect(c, params(p)?).await),
    row!("auth", Any, in_order, |c, p| system::auth(c, p).await),
    row!("health", READ, in_order, |c, _p| system::health(c).await),
    row!("status", READ, in_order, |c, _p| system::status(c).await),
    row!("system.presence", READ, in_order, |c, p| system::presence(c, params_or_default(p)?).await),
    row!("clients.list", ADMIN, in_order, |c, p| system::presence(c, params_or_default(p)?).await),
    row!("client.kick", ADMIN, in_order, |c, p| system::kick(c, params(p)?).await),
    row!("logs.tail", ADMIN, in_order, |c, p| system::logs_tail(c, params(p)?)),
    // channels
    row!("subscribe" | "notify.subscribe", Authenticated, in_order,
        |c, p| channels::subscribe(c, params(p)?).await),
    row!("unsubscribe" | "notify.unsubscribe", Authenticated, in_order,
        |c, p| channels::unsubscribe(c, params(p)?).await),
    row!("publish", WRITE, in_order, |c, p| channels::publish(c, params(p)?).await),
    row!("presence.get", Authenticated, in_order, |c, p| channels::presence(c, params(p)?).await),
    row!("history", Authenticated, in_order, |c, p| channels::history(c, params(p)?).await),
    // sessions
    row!("session.create" | "sessions.create", WRITE, in_order,
        |c, p| sessions::create(c, params(p)?).await),
    row!("session.join" | "sessions.join", WRITE, in_order,
        |c, p| sessions::join(c, params(p)?).await),
    row!("session.invite" | "sessions.invite", WRITE, in_order,
        |c, p| sessions::invite(c, params(p)?).await),
    row!("session.leave" | "sessions.leave", WRITE, in_order,
        |c, p| sessions::leave(c, params(p)?).await),
    row!("session.get" | "sessions.get", READ, in_order,
        |c, p| sessions::get(c, params(p)?).await),
    row!("session.patch" | "sessions.patch", WRITE, in_order,
        |c, p| sessions::patch(c, params(p)?).await),
    row!("session.list" | "sessions.list", READ, in_order,
        |c, _p| sessions::list(c).await),
    row!("session.send" | "sessions.send", WRITE, in_order,
        |c, p| sessions::send(c, params(p)?).await),
    row!("session.history" | "sessions.history", READ, in_order,
        |c, p| sessions::history(c, params(p)?).await),
    row!("session.resume" | "sessions.resume", WRITE, in_order,
        |c, p| sessions::resume(c, params(p)?).await),
    row!("session.close" | "sessions.close", WRITE, in_order,
        |c, p| sessions::close(c, params(p)?).await),
    // nodes and agents
    row!("node.invoke", WRITE, waits, |c, p| agents::invoke(c, params(p)?).await),
    row!("invoke.cancel", WRITE, in_order, |c, p| agents::cancel(c, params(p)?)),
    row!("invoke.progress", NODE, in_order, |c, p| agents::progress(c, params(p)?)),
    row!("agent.register", NODE, in_order, |c, p| agents::register(c, params(p)?).await),
    row!("agent.status", NODE, in_order, |c, p| agents::status(c, params(p)?).await),
    row!("agent.unregister", NODE, in_order,
        |c, p| agents::unregister(c, params_or_default(p)?).await),
    row!("agent.event", NODE, in_order, |c, p| runs::event(c, params(p)?).await),
    row!("agents.list" | "node.list" | "agent.list", READ, in_order,
        |c, p| agents::list(c, params_or_default(p)?).await),
    row!("agents.get" | "node.describe" | "agent.get", READ, in_order,
        |c, p| agents::get(c, params(p)?).await),
    row!("tools.list", READ, in_order, |c, _p| agents::tools(c).await),
    row!("models.list", READ, in_order, |c, _p| agents::models_list(c).await),
    // runs and chat
    row!("agent.run", WRITE, waits, |c, p| runs::run(c, params(p)?).await),
    row!("agent.wait", READ, waits, |c, p| runs::wait(c, params(p)?).await),
    row!("agent.cancel", WRITE, in_order, |c, p| runs::cancel(c, params(p)?).await),
    row!("chat.send", WRITE, waits, |c, p| runs::chat_send(c, params(p)?).await),
    row!("chat.history", READ, in_order, |c, p| runs::chat_history(c, params(p)?).await),
    row!("chat.abort", WRITE, in_order, |c, p| runs::cancel(c, params(p)?).await),
    row!("chat.inject", WRITE, in_order, |c, p| runs::chat_inject(c, params(p)?).await),
    // approvals
    row!("approval.request", NODE, in_order, |c, p| approvals::request(c, params(p)?).await),
    row!("approval.resolve", APPROVALS, in_order, |c, p| approvals::resolve(c, params(p)?).await),
    row!("approval.wait", Authenticated, waits, |c, p| approvals::wait(c, params(p)?).await),
    row!("approval.list", APPROVALS, in_order, |c, _p| approvals::list(c).await),
    row!("approval.history", APPROVALS, in_order,
        |c, p| approvals::history(c, params_or_default(p)?).await),
];

/// The method a name or alias stands for.
pub fn lookup(name: &str) -> Option<&'static Method> {
    static INDEX: OnceLock<HashMap<&'static str, &'static Method>> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let mut index = HashMap::new();
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

#[cfg(test)]
mod tests {
    use super::*;

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
        for unknown in ["sessions.nope", "session", "", "rpc.discover"] {
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
                "agent.run",
                "agent.wait",
                "chat.send",
                "approval.wait"
            ]
        );
    }
}
