//! Frame helpers over a [`Ws`]: waiting for pushes and server → client
//! requests that match a predicate (keeping every other frame in
//! `ws.pushed`), answering server requests, pipelined requests with string
//! ids, and polling a method until its reply is as expected. Every wait is
//! bounded by [`WAIT`] or by an explicit limit.

use super::{WAIT, Ws};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often the polling helpers ([`poll_call`], [`super::within`]) retry.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// The connection id from the `welcome` push.
pub async fn conn_id(ws: &mut Ws) -> String {
    let welcome = ws.expect_push("welcome").await;
    welcome["connId"].as_str().expect("connId").to_owned()
}

/// The next whole frame with `method` whose params satisfy `pred`; other
/// frames are kept in `ws.pushed`. Bounded by [`WAIT`].
pub async fn frame_where(ws: &mut Ws, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
    if let Some(i) = ws
        .pushed
        .iter()
        .position(|f| f["method"] == method && pred(&f["params"]))
    {
        return ws.pushed.remove(i).expect("present");
    }
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let frame = ws
                .next_json()
                .await
                .unwrap_or_else(|| panic!("closed while waiting for {method}"));
            if frame["method"] == method && pred(&frame["params"]) {
                return frame;
            }
            ws.pushed.push_back(frame);
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no matching {method} within the wait"))
}

/// Params of the next push with `method` matching `pred` (see
/// [`frame_where`]).
pub async fn push_where(ws: &mut Ws, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
    frame_where(ws, method, pred).await["params"].clone()
}

/// Assert that no frame with `method` matching `pred` arrives within
/// `wait` (nor is buffered already); other frames are kept. Returns whether
/// the connection stayed open for the whole `wait`.
pub async fn no_push_where(
    ws: &mut Ws,
    method: &str,
    wait: Duration,
    pred: impl Fn(&Value) -> bool,
) -> bool {
    let hit = |f: &Value| f["method"] == method && pred(&f["params"]);
    if let Some(f) = ws.pushed.iter().find(|f| hit(f)) {
        panic!("unexpected {method} already buffered: {f}");
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        match tokio::time::timeout(left, ws.next_json()).await {
            Err(_) => return true,
            Ok(None) => return false,
            Ok(Some(frame)) => {
                assert!(!hit(&frame), "unexpected {method}: {frame}");
                ws.pushed.push_back(frame);
            }
        }
    }
}

/// The `offset` of each entry of a history reply's `events`.
pub fn offsets_of(history: &Value) -> Vec<u64> {
    history["events"]
        .as_array()
        .unwrap_or_else(|| panic!("a history reply: {history}"))
        .iter()
        .map(|e| e["offset"].as_u64().expect("offset"))
        .collect()
}

/// Params of the next `notify` push on `channel`.
pub async fn notify_on(ws: &mut Ws, channel: &str) -> Value {
    push_where(ws, "notify", |p| p["channel"] == channel).await
}

/// Assert no `notify` on `channel` arrives within `wait` and the connection
/// stays open meanwhile (other pushes are kept, notifies on other channels
/// too).
pub async fn no_notify_on(ws: &mut Ws, channel: &str, wait: Duration) {
    let open = no_push_where(ws, "notify", wait, |p| p["channel"] == channel).await;
    assert!(open, "closed while checking for notifies on {channel}");
}

/// Assert a `notify` push's channel, event and data, and that it carries a
/// timestamp.
pub fn assert_notify(push: &Value, channel: &str, event: &str, data: &Value) {
    assert_eq!(push["channel"], channel, "{push}");
    assert_eq!(push["event"], event, "{push}");
    assert_eq!(&push["data"], data, "{push}");
    assert!(push["timestamp"].as_u64().is_some_and(|t| t > 0), "{push}");
}

/// The next server → client request `method` whose params match `pred`:
/// (its `srv-` id, its params).
pub async fn server_request_where(
    ws: &mut Ws,
    method: &str,
    pred: impl Fn(&Value) -> bool,
) -> (String, Value) {
    let frame = frame_where(ws, method, pred).await;
    let id = frame["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a server request has a string id: {frame}"))
        .to_owned();
    assert!(id.starts_with("srv-"), "{frame}");
    assert_eq!(frame["jsonrpc"], "2.0", "{frame}");
    (id, frame["params"].clone())
}

/// The next server → client request `method`: (its `srv-` id, its params).
pub async fn server_request(ws: &mut Ws, method: &str) -> (String, Value) {
    server_request_where(ws, method, |_| true).await
}

/// Answer the server request `id` with `result`.
pub async fn answer(ws: &mut Ws, id: &str, result: Value) {
    ws.send_json(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
        .await;
}

/// Answer the server request `id` with an error.
pub async fn answer_error(ws: &mut Ws, id: &str, code: i64, message: &str) {
    ws.send_json(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
        .await;
}

/// Answer the next `invoke` with `{"echo": params}`; returns its params.
pub async fn answer_echo(ws: &mut Ws) -> Value {
    let (id, params) = server_request(ws, "invoke").await;
    answer(ws, &id, json!({"echo": params["params"]})).await;
    params
}

/// `node.invoke {params}` from `caller` while `node` echoes it: the
/// caller's whole reply and the `invoke` params the node saw.
pub async fn invoke_echoed(caller: &mut Ws, node: &mut Ws, params: Value) -> (Value, Value) {
    tokio::join!(caller.request("node.invoke", params), answer_echo(node))
}

/// Serve the next `invoke` with `steps` `invoke.progress` notifications
/// (`data: {step}`), then answer it with `result`.
pub async fn answer_with_progress(node: &mut Ws, steps: usize, result: Value) {
    let (id, _) = server_request(node, "invoke").await;
    for step in 0..steps {
        node.send_json(&json!({"jsonrpc": "2.0", "method": "invoke.progress",
            "params": {"id": id, "data": {"step": step}}}))
            .await;
    }
    answer(node, &id, result).await;
}

/// The `invoke.progress` params pushed to `ws` so far, in order.
pub fn progress_pushed(ws: &Ws) -> Vec<Value> {
    ws.pushed
        .iter()
        .filter(|f| f["method"] == "invoke.progress")
        .map(|f| f["params"].clone())
        .collect()
}

/// Send a request with a string id without waiting for its reply (see
/// [`replies`]).
pub async fn send_request(ws: &mut Ws, id: &str, method: &str, params: Value) {
    ws.send_json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
        .await;
}

/// The replies to `ids`, in whatever order they come, all within [`WAIT`];
/// pushes are kept.
pub async fn replies(ws: &mut Ws, ids: &[&str]) -> HashMap<String, Value> {
    let mut got = HashMap::new();
    let all = tokio::time::timeout(WAIT, async {
        while got.len() < ids.len() {
            let frame = ws.next_reply().await;
            let id = frame["id"].as_str().unwrap_or_default().to_owned();
            assert!(ids.contains(&id.as_str()), "unexpected reply: {frame}");
            got.insert(id, frame);
        }
    })
    .await;
    assert!(all.is_ok(), "replies to {ids:?} within the wait: {got:?}");
    got
}

/// Repeat `method` on `ws` until its whole reply satisfies `pred` or
/// `limit` passed; returns whether it did and the last reply.
pub async fn poll_call(
    ws: &mut Ws,
    limit: Duration,
    method: &str,
    params: Value,
    pred: impl Fn(&Value) -> bool,
) -> (bool, Value) {
    let deadline = Instant::now() + limit;
    loop {
        let reply = ws.request(method, params.clone()).await;
        if pred(&reply) {
            return (true, reply);
        }
        if Instant::now() >= deadline {
            return (false, reply);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Call `method` until `pred` holds on the whole reply, bounded by
/// [`WAIT`] (panicking after); returns that reply.
pub async fn call_until(
    ws: &mut Ws,
    method: &str,
    params: Value,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let (ok, reply) = poll_call(ws, WAIT, method, params.clone(), pred).await;
    assert!(
        ok,
        "{method} {params}: never as expected; last reply {reply}"
    );
    reply
}

/// The `tickAt` of every cron event on `channel` that `ws` receives within
/// `span` (object data of a cron publication carries `cron: {id, tickAt}`).
pub async fn cron_ticks(ws: &mut Ws, channel: &str, span: Duration) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + span;
    let mut ticks = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return ticks;
        }
        match tokio::time::timeout(left, ws.expect_push("notify")).await {
            Ok(push) if push["channel"] == channel => {
                let tick = push["data"]["cron"]["tickAt"].as_u64();
                ticks.push(tick.unwrap_or_else(|| panic!("a tick time: {push}")));
            }
            Ok(_) => {}
            Err(_) => return ticks,
        }
    }
}
