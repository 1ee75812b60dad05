//! What happens when a connection opens, authenticates and closes: the
//! hub's registry, the backend's presence entry, implicit channels and the
//! clean-up of subscriptions, sessions and agents (each domain's own
//! disconnect hook). `server` wires [`open`] and [`close`] into the
//! connection layer as its `ConnService`.

use crate::app::App;
use crate::auth::{Credential, Identity, Role, Scope};
use crate::backend::PresenceEntry;
use crate::conn::ConnHandle;
use crate::protocol::{PROTOCOL_VERSION, RpcError, frame, names, now_ms};
use crate::services::{agents, approvals, channels, credentials, devices, reattach, sessions};
use serde_json::json;
use std::sync::Arc;

/// Register a new connection and greet it.
///
/// `welcome` is always the first frame: it is queued before anything else
/// can be (catch-up of pending approvals, live publications), and the
/// connection layer sends nothing before this returns — so the client
/// reads it once its implicit subscriptions are in place, and everything
/// published after it arrives.
pub async fn open(app: &App, conn: &ConnHandle, identity: Option<Identity>) {
    conn.push(welcome(app, conn, identity.is_some()));
    app.hub.register(conn.clone());
    publish_presence(app, conn).await;
    if let Some(identity) = identity {
        authenticated(app, conn, identity).await;
    }
}

/// The `welcome` notification sent right after the upgrade.
fn welcome(app: &App, conn: &ConnHandle, authenticated: bool) -> crate::protocol::Frame {
    frame::notification(
        "welcome",
        &json!({
            "connId": conn.id(),
            "nodeId": app.instance_id,
            "authRequired": app.auth.auth_required(),
            "authenticated": authenticated,
            "protocol": PROTOCOL_VERSION,
            "challenge": devices::challenge(conn.id()),
        }),
    )
}

/// Attach an identity (first authentication or a refresh) and join the
/// implicit channels it is entitled to.
pub async fn authenticated(app: &App, conn: &ConnHandle, identity: Identity) {
    let implicit = implicit_channels(&identity);
    let sub = identity.sub.clone();
    let replaced = conn.state().identity.replace(Arc::new(identity));
    let first = replaced.is_none();
    let previous = replaced
        .as_deref()
        .map(implicit_channels)
        .unwrap_or_default();
    // The hub counts each identity's local connections (its budget goes
    // with the last one).
    if replaced.as_ref().is_none_or(|old| old.sub != sub) {
        app.hub.hold_identity(&sub);
        if let Some(old) = &replaced {
            app.hub.release_identity(&old.sub);
        }
    }
    for channel in previous.iter().filter(|c| !implicit.contains(c)) {
        app.hub.unsubscribe_local(channel, conn.id()).await;
    }
    for channel in implicit.iter().filter(|c| !previous.contains(c)) {
        if let Err(e) = app.hub.subscribe_local(channel, conn).await {
            tracing::warn!(%channel, error = %e, "implicit subscription failed");
        }
    }
    if first {
        // Decisions on its approvals made while it had no connection.
        approvals::returned(app, conn, &sub).await;
    }
    let approver = names::APPROVALS;
    if implicit.iter().any(|c| c == approver) && !previous.iter().any(|c| c == approver) {
        // A new approver: what is already pending, then live requests.
        approvals::catch_up(app, conn).await;
    }
    let pairing = names::PAIRING;
    if implicit.iter().any(|c| c == pairing) && !previous.iter().any(|c| c == pairing) {
        devices::catch_up(app, conn).await;
    }
    let device = conn
        .identity()
        .and_then(|i| devices::device_of(&i).map(str::to_owned));
    if let Some(device) = device {
        // It joined its device channel: a revocation made meanwhile closes it.
        devices::recheck(app, conn, &device).await;
    }
    publish_presence(app, conn).await;
}

/// `global`, `user:<sub>`, for approvers `approval`, for pairing operators
/// `$pairing`, for a device `$device:<id>`. (`conn:<id>` is
/// not a subscription: publications to it are routed to the connection's
/// instance directly, see `channels::publish_event`, which spares a channel
/// and a Redis subscription per socket.)
pub fn implicit_channels(identity: &Identity) -> Vec<String> {
    let mut implicit = vec![names::GLOBAL.to_owned(), names::user_channel(&identity.sub)];
    if identity.satisfies(crate::auth::Requirement::Scope(Scope::Approvals)) {
        implicit.push(names::APPROVALS.to_owned());
    }
    if identity.satisfies(crate::auth::Requirement::Scope(Scope::Pairing)) {
        implicit.push(names::PAIRING.to_owned());
    }
    if let Some(device) = devices::device_of(identity) {
        implicit.push(names::device_channel(device));
    }
    implicit
}

/// Write this connection's presence entry to the backend.
pub async fn publish_presence(app: &App, conn: &ConnHandle) {
    let (identity, client) = {
        let state = conn.state();
        (state.identity.clone(), state.client.clone())
    };
    let entry = PresenceEntry {
        conn_id: conn.id().to_owned(),
        node_id: app.instance_id.clone(),
        generation: app.generation,
        identity: identity.as_ref().map(|i| i.sub.clone()),
        role: identity.as_ref().map(|i| i.role.to_string()),
        client,
        connected_at: conn.connected_at(),
        last_seen: now_ms(),
    };
    if let Err(e) = app.presence().put_connection(entry).await {
        tracing::warn!(error = %e, "presence update failed");
    }
}

/// Undo everything the connection did to shared state.
pub async fn close(app: &App, conn: &ConnHandle) {
    conn.fail_pending();
    let (explicit, identity) = {
        let mut state = conn.state();
        (
            std::mem::take(&mut state.subscriptions),
            state.identity.clone(),
        )
    };
    // Derived from the identity rather than stored: nothing per socket.
    let implicit = identity
        .as_deref()
        .map(implicit_channels)
        .unwrap_or_default();
    for channel in &explicit {
        channels::leave(app, conn, channel).await;
    }
    for channel in &implicit {
        app.hub.unsubscribe_local(channel, conn.id()).await;
    }
    sessions::on_disconnect(app, conn).await;
    reattach::on_disconnect(app, conn).await;
    agents::on_disconnect(app, conn).await;
    app.hub.unregister(conn.id());
    if let Err(e) = app.presence().remove_connection(conn.id()).await {
        tracing::warn!(error = %e, "removing presence failed");
    }
    if let Some(identity) = identity {
        app.hub.release_identity(&identity.sub);
    }
}

/// `identity` in the role a client asked for: its own, or `node` for an
/// admin (admins may act as nodes: an admin connection that asks for it
/// counts as a node, with its scopes unchanged). Any other mismatch is
/// refused.
pub fn in_role(identity: Identity, want: &str) -> Result<Identity, RpcError> {
    if want == identity.role.as_str() {
        return Ok(identity);
    }
    if want == Role::Node.as_str() && identity.is_admin() {
        return Ok(Identity {
            role: Role::Node,
            ..identity
        });
    }
    Err(RpcError::forbidden(format!(
        "credentials are for role {}, not {want}",
        identity.role
    )))
}

/// Put an authenticated connection in the role its client asked for (see
/// [`in_role`]).
pub async fn assume_role(app: &App, conn: &ConnHandle, want: &str) -> Result<(), RpcError> {
    let Some(current) = conn.identity() else {
        return Ok(());
    };
    if current.role.as_str() == want {
        return Ok(());
    }
    let identity = in_role(Identity::clone(&current), want)?;
    conn.state().identity = Some(Arc::new(identity));
    publish_presence(app, conn).await;
    Ok(())
}

/// Check credentials (under the IP's failed-auth window) and attach the
/// identity to the connection, unless `role` names a different role.
pub async fn authenticate(
    app: &App,
    conn: &ConnHandle,
    credential: Credential,
    role: Option<&str>,
) -> Result<Arc<Identity>, RpcError> {
    let identity =
        credentials::verify_on(app, conn.ip(), &credential, "in_band", Some(conn)).await?;
    if let Some(current) = conn.identity()
        && current.sub != identity.sub
    {
        return Err(RpcError::forbidden("a connection cannot change identity"));
    }
    let identity = match role {
        Some(want) => in_role(identity, want)?,
        None => identity,
    };
    authenticated(app, conn, identity).await;
    conn.identity()
        .ok_or_else(|| RpcError::internal(&"identity vanished after authentication"))
}
