//! Kubernetes' channel protocol over WebSocket (apimachinery's wsstream): every message starts with its channel
//! number, as a byte (binary protocols) or as an ASCII digit followed by base64 (the `base64.` protocols). v5
//! adds a close signal: the two bytes 255, channel.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::Activity;

/// Messages larger than this are refused (the connection fails) rather than buffered.
pub const MAX_MESSAGE: usize = 1 << 20;
const CLOSE_SIGNAL: u8 = 255;

pub enum Out {
    Data(u8, Bytes),
    /// A normal close frame, after everything queued before it.
    Close,
}

pub struct Channels {
    /// Data the client sends, per channel; `None` where the channel takes no input. A receiver ends when the
    /// client closes the channel (v5) or the connection.
    pub inputs: Vec<Option<mpsc::Receiver<Bytes>>>,
    pub tx: mpsc::Sender<Out>,
    pub gone: oneshot::Receiver<()>,
}

#[derive(Debug, Clone, Copy)]
pub struct Framing {
    pub base64: bool,
    pub close_signal: bool,
}

impl Framing {
    pub fn of(protocol: &str) -> Framing {
        Framing { base64: protocol.contains("base64."), close_signal: protocol.starts_with("v5.") }
    }
}

pub fn serve(socket: WebSocket, framing: Framing, channels: usize, readable: &[u8], idle: Duration) -> Channels {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(16);
    let (gone_tx, gone_rx) = oneshot::channel();
    let mut senders: Vec<Option<mpsc::Sender<Bytes>>> = Vec::with_capacity(channels);
    let mut inputs = Vec::with_capacity(channels);
    for ch in 0..channels {
        if readable.contains(&(ch as u8)) {
            let (tx, rx) = mpsc::channel(8);
            senders.push(Some(tx));
            inputs.push(Some(rx));
        } else {
            senders.push(None);
            inputs.push(None);
        }
    }
    let activity = Activity::new();
    let write_activity = activity.clone();
    let writer = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            let msg = match out {
                Out::Data(ch, data) if framing.base64 => {
                    let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
                    text.push((b'0' + ch) as char);
                    base64::engine::general_purpose::STANDARD.encode_string(&data, &mut text);
                    Message::Text(text.into())
                }
                Out::Data(ch, data) => {
                    let mut framed = Vec::with_capacity(1 + data.len());
                    framed.push(ch);
                    framed.extend_from_slice(&data);
                    Message::Binary(framed.into())
                }
                Out::Close => {
                    let close = CloseFrame { code: axum::extract::ws::close_code::NORMAL, reason: "".into() };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    let _ = sink.close().await;
                    return;
                }
            };
            if sink.send(msg).await.is_err() {
                return;
            }
            write_activity.touch();
        }
    });
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = activity.idle(idle) => break,
            };
            activity.touch();
            let data: Bytes = match msg {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Text(t))) => Bytes::copy_from_slice(t.as_str().as_bytes()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            if data.is_empty() {
                continue;
            }
            if framing.close_signal && data[0] == CLOSE_SIGNAL {
                if let [_, ch] = data[..]
                    && let Some(slot) = senders.get_mut(ch as usize)
                {
                    *slot = None;
                }
                continue;
            }
            let (ch, payload) = if framing.base64 {
                let Some(ch) = data[0].checked_sub(b'0') else { continue };
                match base64::engine::general_purpose::STANDARD.decode(&data[1..]) {
                    Ok(p) => (ch, Bytes::from(p)),
                    Err(_) => continue,
                }
            } else {
                (data[0], data.slice(1..))
            };
            if let Some(Some(tx)) = senders.get(ch as usize)
                && !payload.is_empty()
                && tx.send(payload).await.is_err()
            {
                senders[ch as usize] = None;
            }
        }
        drop(senders);
        let _ = gone_tx.send(());
        let abort = writer.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), writer).await.is_err() {
            abort.abort();
        }
    });
    Channels { inputs, tx: out_tx, gone: gone_rx }
}
