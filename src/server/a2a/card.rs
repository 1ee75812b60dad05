//! Agent cards: the gateway's at `GET /.well-known/agent-card.json`
//! (messages to its interface, `POST /a2a`, go to any online agent with
//! capability `agent.run`) and one per agent at `GET
//! /a2a/agents/{agentId}/agent-card.json` (interface `POST
//! /a2a/agents/{agentId}`: messages go to that agent).
//!
//! A card is served without a credential — an A2A client resolves it
//! before it knows how to authenticate — but says nothing about the
//! agents then: the gateway's lists one generic skill, an agent's only its
//! id (whether the agent exists is not told). With a credential holding
//! `operator.read` (as a header, the same ones the interface takes), the
//! gateway's card lists a skill per online agent with capability
//! `agent.run`, and an agent's card its name and tools (404 when it is not
//! online). `GetExtendedAgentCard` answers the same detailed card.
//!
//! The interface URL is built from the request's `Host` (and, from a
//! trusted proxy, `X-Forwarded-Host` / `X-Forwarded-Proto`).

use super::PROTOCOL_VERSION;
use crate::app::App;
use crate::auth::Scope;
use crate::backend::AgentEntry;
use crate::server::http::{HttpError, Peer, api_identity};
use crate::services::agents::{Selector, candidates};
use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;

/// The capability an agent registers to be offered over A2A.
pub const CAPABILITY: &str = "agent.run";

/// `scheme://host` of this gateway as the caller reached it.
pub fn base_url(app: &App, peer: SocketAddr, headers: &HeaderMap) -> String {
    let trusted = app
        .config
        .trusted_proxies
        .iter()
        .any(|net| net.contains(&peer.ip()));
    let forwarded = |name: &str| {
        trusted
            .then(|| headers.get(name)?.to_str().ok())
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = match forwarded("x-forwarded-proto") {
        Some("https") => "https",
        Some("http") => "http",
        _ if app.config.tls.is_some() => "https",
        _ => "http",
    };
    let host = forwarded("x-forwarded-host")
        .or_else(|| headers.get(header::HOST)?.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
        })
        .map_or_else(|| format!("127.0.0.1:{}", app.config.port), str::to_owned);
    format!("{scheme}://{host}")
}

/// An agent id as one URL path segment.
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The path of an agent's interface.
pub fn agent_path(agent_id: &str) -> String {
    format!("/a2a/agents/{}", segment(agent_id))
}

/// A card whose one interface is `url` (`base` is the gateway's own URL).
fn card(name: &str, description: &str, base: &str, url: &str, skills: Vec<Value>) -> Value {
    json!({
        "name": name,
        "description": description,
        "version": crate::services::system::VERSION,
        "provider": { "organization": "Switchyard", "url": base },
        "supportedInterfaces": [{
            "url": url,
            "protocolBinding": "JSONRPC",
            "protocolVersion": PROTOCOL_VERSION,
        }],
        "capabilities": { "streaming": true, "pushNotifications": false, "extendedAgentCard": true },
        "securitySchemes": {
            "bearer": { "httpAuthSecurityScheme": {
                "scheme": "Bearer",
                "description": "A gateway token, JWT or API key with operator.write (operator.read to read tasks)",
            }},
            "apiKey": { "apiKeySecurityScheme": { "location": "header", "name": "X-API-Key" } },
        },
        "securityRequirements": [{ "schemes": { "bearer": {} } }, { "schemes": { "apiKey": {} } }],
        "defaultInputModes": ["text/plain", "application/json"],
        "defaultOutputModes": ["text/plain", "application/json"],
        "skills": skills,
    })
}

/// What the gateway's interface does, whoever asks.
fn routing_skill() -> Value {
    json!({
        "id": CAPABILITY,
        "name": "Run an agent",
        "description": "Each message is a task on an online agent offering agent.run, chosen by the gateway's routing policy (least loaded first)",
        "tags": [CAPABILITY],
    })
}

fn agent_skill(agent: &AgentEntry) -> Value {
    let tools: Vec<&str> = agent.tools.iter().map(|t| t.name.as_str()).collect();
    let mut description = format!("{} ({})", agent.name, agent.kind);
    if !tools.is_empty() {
        description.push_str(&format!("; tools: {}", tools.join(", ")));
    }
    json!({
        "id": agent.agent_id,
        "name": agent.name,
        "description": description,
        "tags": agent.capabilities,
    })
}

/// The gateway's card; detailed lists the online agents as skills.
pub async fn gateway_card(app: &App, base: &str, detailed: bool) -> Result<Value, HttpError> {
    let mut skills = vec![routing_skill()];
    if detailed {
        let selector = Selector {
            capability: Some(CAPABILITY.into()),
            ..Default::default()
        };
        skills.extend(candidates(app, &selector).await?.iter().map(agent_skill));
    }
    Ok(card(
        "Switchyard",
        "A gateway to the agents connected to it: each message becomes a run on an agent",
        base,
        &format!("{base}/a2a"),
        skills,
    ))
}

/// An agent's card; detailed says who it is (404 when not online).
pub async fn agent_card(
    app: &App,
    base: &str,
    agent_id: &str,
    detailed: bool,
) -> Result<Value, HttpError> {
    let url = format!("{base}{}", agent_path(agent_id));
    if !detailed {
        let skill = json!({
            "id": agent_id, "name": agent_id,
            "description": format!("Runs agent {agent_id}"), "tags": [CAPABILITY],
        });
        let description = format!("Agent {agent_id} behind the gateway");
        return Ok(card(agent_id, &description, base, &url, vec![skill]));
    }
    let selector = Selector {
        id: Some(agent_id.to_owned()),
        ..Default::default()
    };
    let agent = candidates(app, &selector)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| HttpError::new(StatusCode::NOT_FOUND, "no such agent online"))?;
    let mut skills: Vec<Value> = agent
        .tools
        .iter()
        .map(|t| {
            json!({
                "id": t.name,
                "name": t.name,
                "description": if t.description.is_empty() { &t.name } else { &t.description },
                "tags": ["tool"],
            })
        })
        .collect();
    if skills.is_empty() {
        skills.push(agent_skill(&agent));
    }
    let description = format!("{} ({}) behind the gateway", agent.name, agent.kind);
    Ok(card(&agent.name, &description, base, &url, skills))
}

/// Whether the request carries a credential good for reading.
async fn reader(app: &App, peer: SocketAddr, headers: &HeaderMap) -> bool {
    api_identity(app, peer, headers, Scope::Read).await.is_ok()
}

pub async fn gateway(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let detailed = reader(&app, peer, &headers).await;
    let base = base_url(&app, peer, &headers);
    Ok(Json(gateway_card(&app, &base, detailed).await?))
}

pub async fn agent(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> Response {
    if agent_id.is_empty() || agent_id.len() > 128 || agent_id.chars().any(char::is_control) {
        return HttpError::new(StatusCode::NOT_FOUND, "no such agent").into_response();
    }
    let detailed = reader(&app, peer, &headers).await;
    let base = base_url(&app, peer, &headers);
    match agent_card(&app, &base, &agent_id, detailed).await {
        Ok(card) => Json(card).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_one_path_segment() {
        assert_eq!(agent_path("echo"), "/a2a/agents/echo");
        assert_eq!(agent_path("a b/c"), "/a2a/agents/a%20b%2Fc");
    }
}
