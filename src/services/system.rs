//! The instance and the cluster as operators see them: status, and
//! closing a connection on whichever instance holds it.

use crate::app::App;
use crate::backend::Envelope;
use crate::conn::close_code;
use crate::protocol::RpcError;
use serde_json::{Value, json};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// This instance and the cluster (the `status` method and `GET /status`).
pub async fn status_of(app: &App) -> Result<Value, RpcError> {
    let instances = app.instance_store().instances().await?;
    let connections = app.presence().connection_counts().await?.connections;
    let sessions = app.session_store().sessions().await?.len();
    let channels = app.channel_store().channels().await?.len();
    Ok(json!({
        "nodeId": app.instance_id,
        "version": VERSION,
        "uptimeMs": app.uptime_ms(),
        "draining": app.is_draining(),
        "ready": app.is_ready(),
        "backend": { "kind": app.health().kind(), "available": app.health().is_available() },
        "local": { "connections": app.hub.len() },
        "cluster": {
            "instances": instances,
            "connections": connections,
            "sessions": sessions,
            "channels": channels,
        },
    }))
}

/// Shared by `client.kick` and `POST /api/disconnect`.
pub async fn kick_conn(app: &App, conn_id: &str, reason: &str) -> Result<(), RpcError> {
    let envelope = Envelope::Kick {
        conn_id: conn_id.to_owned(),
        code: close_code::KICKED,
        reason: reason.chars().take(100).collect(),
    };
    if app.bus().send_to_conn(envelope).await? {
        Ok(())
    } else {
        Err(RpcError::not_found("connection", conn_id))
    }
}
