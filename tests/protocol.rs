//! JSON-RPC behaviour over a real socket: framing, batches, every error
//! code of the table, and robustness against malformed input.

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn welcome_then_ping_without_credentials() {
    let server = TestServer::default().await;
    let mut ws = Ws::connect(&server.url("/")).await.expect("connects");
    let welcome = ws.expect_push("welcome").await;
    assert_eq!(welcome["authRequired"], true);
    assert_eq!(welcome["authenticated"], false);
    assert_eq!(welcome["protocol"], 1);
    assert!(welcome["connId"].as_str().is_some_and(|s| !s.is_empty()));
    ws.send_text(r#"{"id":1,"method":"ping"}"#).await;
    let reply = ws.reply_to(json!(1)).await;
    assert_eq!(reply["jsonrpc"], "2.0");
    assert_eq!(reply["result"]["pong"], true);
    assert!(reply["result"]["ts"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn batches_and_notifications() {
    let server = TestServer::default().await;
    let mut ws = server.client(ADMIN).await;
    ws.send_text(r#"[{"id":1,"method":"ping"},{"method":"ping"},{"id":"b","method":"system.ping"},{"id":3,"method":"nope"}]"#)
        .await;
    let reply = loop {
        let frame = ws.next_json().await.expect("reply");
        if frame.is_array() {
            break frame;
        }
    };
    let items = reply.as_array().unwrap();
    assert_eq!(items.len(), 3, "the notification gets no reply: {reply}");
    assert_eq!(items[0]["id"], 1);
    assert_eq!(items[1]["id"], "b");
    assert_eq!(items[2]["error"]["code"], -32601);
    // A notification alone gets nothing back; the next call answers normally.
    ws.send_text(r#"{"jsonrpc":"2.0","method":"ping"}"#).await;
    assert_eq!(ws.call("ping", json!({})).await["pong"], true);
}

/// The next frame that is not a push, as sent.
async fn reply_text(ws: &mut Ws) -> String {
    loop {
        let text = ws.next_text().await.expect("a reply");
        if !text.contains(r#""method":"#) {
            return text;
        }
    }
}

/// Ids come back exactly as written, also numbers a float cannot hold.
#[tokio::test]
async fn ids_are_echoed_as_written() {
    let server = TestServer::default().await;
    let mut ws = server.client(ADMIN).await;
    let ids = [
        "18446744073709551616",
        "123456789012345678901234567890",
        "-9223372036854775809",
        "9007199254740993",
        "1e3",
        "2.50",
        "\"s\"",
    ];
    for id in ids {
        ws.send_text(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#))
            .await;
        let reply = reply_text(&mut ws).await;
        assert!(
            reply.starts_with(&format!(r#"{{"jsonrpc":"2.0","id":{id},"result""#)),
            "{reply}"
        );
    }
    // An invalid request and a batch element keep theirs too.
    ws.send_text(r#"[{"id":1e400,"method":"ping"}]"#).await;
    let reply = reply_text(&mut ws).await;
    assert!(reply.contains(r#""code":-32700"#), "{reply}");
    ws.send_text(r#"[{"id":18446744073709551617,"jsonrpc":"1.0","method":"ping"},{"id":3e0,"method":"ping"}]"#)
        .await;
    let reply = reply_text(&mut ws).await;
    assert!(
        reply.starts_with(r#"[{"jsonrpc":"2.0","id":18446744073709551617,"error""#),
        "{reply}"
    );
    assert!(reply.contains(r#""id":3e0,"result""#), "{reply}");
}

#[tokio::test]
async fn protocol_error_codes() {
    let server = TestServer::default().await;
    let mut ws = server.client(ADMIN).await;
    ws.send_text("{nope").await;
    assert_eq!(ws.reply_to(json!(null)).await["error"]["code"], -32700);
    ws.send_text(r#"{"id":5,"jsonrpc":"1.0","method":"ping"}"#)
        .await;
    assert_eq!(ws.reply_to(json!(5)).await["error"]["code"], -32600);
    let batch = format!("[{}]", vec![r#"{"id":1,"method":"ping"}"#; 101].join(","));
    ws.send_text(&batch).await;
    assert_eq!(ws.reply_to(json!(null)).await["error"]["code"], -32600);
    ws.send_raw(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(ws.reply_to(json!(null)).await["error"]["code"], -32600);
    assert_eq!(ws.error_code("no.such.method", json!({})).await, -32601);
    let reply = ws.request("publish", json!({"channel": 5})).await;
    assert_eq!(reply["error"]["code"], -32602);
    assert_eq!(reply["error"]["data"]["field"], "channel", "{reply}");
}

#[tokio::test]
async fn malformed_input_never_hurts_the_connection() {
    let server = TestServer::default().await;
    let mut ws = server.client(ADMIN).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge_id = format!(r#"{{"id":"{}","method":"ping"}}"#, "x".repeat(100_000));
    let big_number = format!(r#"{{"id":{},"method":"ping"}}"#, "9".repeat(400));
    let inputs = [
        deep.as_str(),
        huge_id.as_str(),
        big_number.as_str(),
        "\u{0}",
        "[]",
        "null",
        "\"s\"",
    ];
    for text in inputs {
        ws.send_text(text).await;
    }
    // Each frame gets exactly one well-formed answer, in order.
    let mut codes = Vec::new();
    while codes.len() < inputs.len() {
        let reply = ws.next_json().await.expect("an answer");
        if reply.get("method").is_some() {
            continue; // welcome, presence ticks
        }
        assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
        codes.push(reply["error"]["code"].as_i64().unwrap_or(0));
    }
    // A 400-digit id does not fit any JSON number type: parse error.
    assert_eq!(codes, [-32600, 0, -32700, -32700, -32600, -32600, -32600]);
    // Every frame was answered or ignored and the connection still works.
    assert_eq!(ws.call("ping", json!({})).await["pong"], true);
    let mut other = server.client(READER).await;
    assert_eq!(other.call("ping", json!({})).await["pong"], true);
}
