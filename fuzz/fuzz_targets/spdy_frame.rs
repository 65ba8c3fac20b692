//! Bytes as a client's side of a SPDY/3.1 connection, read frame by frame with one header decompressor, as the
//! reader task does. Never a panic or a hang; every frame read encodes again and reads back as itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_node_agent::fuzzing::{Frame, HeaderDecoder, HeaderEncoder, encode_frame, read_frame};

fuzz_target!(|data: &[u8]| {
    let mut wire = data;
    let mut dec = HeaderDecoder::new();
    // A second connection for the round trip: its compressor and decompressor see every block in order.
    let (mut enc2, mut dec2) = (HeaderEncoder::new(), HeaderDecoder::new());
    // Reading a slice never waits, so the future completes on its first poll.
    while let Ok(Some(frame)) = futures::executor::block_on(read_frame(&mut wire, &mut dec)) {
        if matches!(frame, Frame::Unknown { .. }) {
            continue;
        }
        let bytes = encode_frame(&frame, &mut enc2).expect("a frame read encodes");
        let mut again = bytes.as_slice();
        let back = futures::executor::block_on(read_frame(&mut again, &mut dec2))
            .expect("an encoded frame reads")
            .expect("an encoded frame is there");
        assert_eq!(back, frame);
        assert!(again.is_empty(), "the encoded frame has {} bytes left over", again.len());
    }
});
