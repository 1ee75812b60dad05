//! One reference connection: handshake, greeting, reader, writer.
//!
//! The upgrade is accepted with Switchyard's socket settings (2 KiB read
//! buffer, 2 KiB write batch, 1 MiB messages); a bearer token in the
//! `Authorization` header or `?token=` counts as a credential, unchecked.
//! The connection is greeted with `welcome`, as Switchyard greets it. Then
//! this task reads and answers calls in order, and a writer task drains
//! the connection's bounded queue into the socket, coalescing what is
//! queued (up to 2 KiB) into one write. The connection's token closes it:
//! cancelled by a full queue (slow consumer, close 4008) or by the
//! server's shutdown (close 1012).

use super::channels::{Channels, Peer};
use super::rpc::{Session, refusal};
use crate::protocol::{PROTOCOL_VERSION, RpcError};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<TcpStream>;

/// Frames queued to one connection before it counts as a slow consumer
/// (Switchyard's default `limits.outbound_queue`).
const QUEUE: usize = 1024;
/// Most bytes of queued frames written with one flush.
const WRITE_BATCH: usize = 2 * 1024;
/// Longest upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for room in a full queue for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest close handshake, and longest wait for the writer once the
/// reader is done.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
const WRITER_TIMEOUT: Duration = Duration::from_secs(5);

/// Switchyard's socket settings.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(WRITE_BATCH)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Whether the upgrade request carries a bearer token.
fn has_credential(request: &Request) -> bool {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !t.trim().is_empty());
    let query = request.uri().query().unwrap_or_default();
    bearer
        || query
            .split('&')
            .any(|pair| pair.strip_prefix("token=").is_some_and(|t| !t.is_empty()))
}

/// Serve one accepted TCP connection to its end.
pub async fn serve(tcp: TcpStream, id: u64, channels: Arc<Channels>, server: CancellationToken) {
    let _ = tcp.set_nodelay(true);
    let mut authenticated = false;
    // The error type is tungstenite's `Callback` contract, not ours.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        authenticated = has_credential(request);
        Ok(response)
    };
    let accept = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config()));
    let Ok(Ok(ws)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await else {
        return;
    };
    let (queue, outbound) = mpsc::channel(QUEUE);
    let stop = server.child_token();
    let conn_id = uuid::Uuid::new_v4().simple().to_string();
    let welcome = json!({"jsonrpc": "2.0", "method": "welcome", "params": {
        "connId": conn_id,
        "nodeId": "reference",
        "authRequired": true,
        "authenticated": authenticated,
        "protocol": PROTOCOL_VERSION,
    }});
    // The queue is empty: the welcome always fits.
    let _ = queue.try_send(Utf8Bytes::from(welcome.to_string()));
    let (sink, stream) = ws.split();
    let writer = tokio::spawn(write_loop(sink, outbound, stop.clone(), server));
    let mut session = Session {
        id,
        authenticated,
        peer: Peer {
            queue,
            stop: stop.clone(),
        },
        channels: &channels,
        subscriptions: Vec::new(),
    };
    read_loop(stream, &mut session, &stop).await;
    session.leave_all();
    // The last sender goes: the writer drains what is queued and closes.
    drop(session);
    let abort = writer.abort_handle();
    if tokio::time::timeout(WRITER_TIMEOUT, writer).await.is_err() {
        abort.abort();
    }
}

/// Read and answer calls in order until the client closes or `stop`.
async fn read_loop(
    mut stream: SplitStream<Ws>,
    session: &mut Session<'_>,
    stop: &CancellationToken,
) {
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut stopped => return,
            message = stream.next() => message,
        };
        let reply = match message {
            Some(Ok(Message::Text(text))) => session.handle(text.as_str()),
            Some(Ok(Message::Binary(_))) => Some(refusal(RpcError::invalid_request(
                "binary frames are not supported",
            ))),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            Some(Ok(_)) => None,
        };
        if let Some(reply) = reply
            && !queue_reply(&session.peer.queue, reply).await
        {
            return;
        }
    }
}

/// Queue a reply, waiting (bounded) for room; whether it was queued.
async fn queue_reply(queue: &mpsc::Sender<Utf8Bytes>, reply: String) -> bool {
    match queue.try_send(Utf8Bytes::from(reply)) {
        Ok(()) => true,
        Err(TrySendError::Closed(_)) => false,
        Err(TrySendError::Full(reply)) => {
            matches!(
                tokio::time::timeout(REPLY_TIMEOUT, queue.send(reply)).await,
                Ok(Ok(()))
            )
        }
    }
}

/// Drain the queue into the socket until every sender is gone or `stop`,
/// then send the close frame.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut outbound: mpsc::Receiver<Utf8Bytes>,
    stop: CancellationToken,
    server: CancellationToken,
) {
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut stopped => break,
            first = outbound.recv() => first,
        };
        let Some(first) = first else { break };
        let written = tokio::select! {
            biased;
            _ = &mut stopped => break,
            written = write_batch(&mut sink, &mut outbound, first) => written,
        };
        if !written {
            return;
        }
    }
    let code = if server.is_cancelled() {
        CloseCode::Restart
    } else if stop.is_cancelled() {
        CloseCode::from(4008)
    } else {
        CloseCode::Normal
    };
    let goodbye = async {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::default(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, goodbye).await;
}

/// Write `first` and whatever else is queued, up to [`WRITE_BATCH`]
/// bytes, with one flush; whether the socket took it.
async fn write_batch(
    sink: &mut SplitSink<Ws, Message>,
    outbound: &mut mpsc::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> bool {
    let mut bytes = first.len();
    if sink.feed(Message::Text(first)).await.is_err() {
        return false;
    }
    while bytes < WRITE_BATCH {
        let Ok(more) = outbound.try_recv() else { break };
        bytes += more.len();
        if sink.feed(Message::Text(more)).await.is_err() {
            return false;
        }
    }
    sink.flush().await.is_ok()
}
