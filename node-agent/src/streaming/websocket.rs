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

/// What one client message asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// v5's close signal: the client is done sending on this channel.
    CloseChannel(u8),
    /// Input for a channel, never empty.
    Data(u8, Bytes),
    /// Nothing to deliver: an empty message, a malformed close signal, or text that is not base64.
    Skip,
}

/// A client message, binary or text alike, as the channel protocol reads it.
pub fn decode(framing: Framing, data: Bytes) -> Incoming {
    let Some(&first) = data.first() else { return Incoming::Skip };
    if framing.close_signal && first == CLOSE_SIGNAL {
        return match data[..] {
            [_, ch] => Incoming::CloseChannel(ch),
            _ => Incoming::Skip,
        };
    }
    let (ch, payload) = if framing.base64 {
        let Some(ch) = first.checked_sub(b'0') else { return Incoming::Skip };
        match base64::engine::general_purpose::STANDARD.decode(&data[1..]) {
            Ok(p) => (ch, Bytes::from(p)),
            Err(_) => return Incoming::Skip,
        }
    } else {
        (first, data.slice(1..))
    };
    if payload.is_empty() { Incoming::Skip } else { Incoming::Data(ch, payload) }
}

/// One message of output on channel `ch` (the protocol's channels are single digits: 0 to 9).
pub fn encode(framing: Framing, ch: u8, data: &[u8]) -> Message {
    if framing.base64 {
        let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        text.push((b'0' + ch) as char);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
        Message::Text(text.into())
    } else {
        let mut framed = Vec::with_capacity(1 + data.len());
        framed.push(ch);
        framed.extend_from_slice(data);
        Message::Binary(framed.into())
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
                Out::Data(ch, data) => encode(framing, ch, &data),
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
            match decode(framing, data) {
                Incoming::Skip => {}
                Incoming::CloseChannel(ch) => {
                    if let Some(slot) = senders.get_mut(ch as usize) {
                        *slot = None;
                    }
                }
                Incoming::Data(ch, payload) => {
                    if let Some(Some(tx)) = senders.get(ch as usize)
                        && tx.send(payload).await.is_err()
                    {
                        senders[ch as usize] = None;
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    const BINARY: Framing = Framing { base64: false, close_signal: false };
    const BASE64_V5: Framing = Framing { base64: true, close_signal: true };

    fn bytes(b: &[u8]) -> Bytes {
        Bytes::copy_from_slice(b)
    }

    #[test]
    fn a_message_names_its_channel_in_its_first_byte_or_digit() {
        assert_eq!(decode(BINARY, bytes(b"\x00ls\n")), Incoming::Data(0, bytes(b"ls\n")));
        assert_eq!(decode(BASE64_V5, bytes(b"0bHMK")), Incoming::Data(0, bytes(b"ls\n")));
    }

    #[test]
    fn empty_undecodable_and_malformed_close_messages_deliver_nothing() {
        assert_eq!(decode(BINARY, bytes(b"")), Incoming::Skip);
        assert_eq!(decode(BINARY, bytes(b"\x00")), Incoming::Skip);
        assert_eq!(decode(BASE64_V5, bytes(b"0!!")), Incoming::Skip);
        assert_eq!(decode(BASE64_V5, bytes(b"\x01x")), Incoming::Skip, "below '0' is no channel");
        assert_eq!(decode(BASE64_V5, bytes(b"\xff\x00\x00")), Incoming::Skip);
    }

    #[test]
    fn v5_close_signals_close_a_channel_and_older_protocols_read_them_as_data() {
        assert_eq!(decode(BASE64_V5, bytes(b"\xff\x00")), Incoming::CloseChannel(0));
        assert_eq!(decode(BINARY, bytes(b"\xff\x00")), Incoming::Data(255, bytes(b"\x00")));
    }

    #[test]
    fn what_is_encoded_on_a_channel_decodes_on_that_channel() {
        for framing in [BINARY, BASE64_V5] {
            let message = match encode(framing, 2, b"out") {
                Message::Binary(b) => b,
                Message::Text(t) => bytes(t.as_str().as_bytes()),
                other => panic!("{other:?}"),
            };
            assert_eq!(decode(framing, message), Incoming::Data(2, bytes(b"out")));
        }
    }
}
