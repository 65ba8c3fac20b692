//! A client message of Kubernetes' WebSocket channel protocol, under each framing (the first byte picks base64
//! and v5's close signal). Never a panic; data decoded for a channel encodes and decodes back to itself.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use reef_node_agent::fuzzing::{Framing, Incoming, WsMessage, decode_ws, encode_ws};

fn payload(message: WsMessage) -> Bytes {
    match message {
        WsMessage::Binary(b) => b,
        WsMessage::Text(t) => Bytes::copy_from_slice(t.as_str().as_bytes()),
        other => panic!("encode made a {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, message)) = data.split_first() else { return };
    let framing = Framing { base64: mode & 1 != 0, close_signal: mode & 2 != 0 };
    let message = Bytes::copy_from_slice(message);
    match decode_ws(framing, message.clone()) {
        Incoming::Data(ch, data) => {
            assert!(!data.is_empty(), "empty data delivered");
            // The protocol's channels are single digits; others only exist in hostile input.
            if ch <= 9 {
                assert_eq!(decode_ws(framing, payload(encode_ws(framing, ch, &data))), Incoming::Data(ch, data));
            }
        }
        Incoming::CloseChannel(ch) => {
            assert!(framing.close_signal && message.len() == 2 && message[1] == ch, "close signal from {message:?}");
        }
        Incoming::Skip => {}
    }
    // And the other way: what the server sends on a channel is what a client reads there.
    let ch = (mode >> 2) % 10;
    if !message.is_empty() {
        let framed = payload(encode_ws(framing, ch, &message));
        if !(framing.close_signal && framed[0] == 255) {
            assert_eq!(decode_ws(framing, framed), Incoming::Data(ch, message));
        }
    }
});
