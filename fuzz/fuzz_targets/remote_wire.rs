//! Arbitrary bytes from a remote-VF peer (an importer an exporter does not trust, or the
//! reverse) into the frame reader: every frame it accepts re-encodes to exactly the bytes it
//! came from, and whatever it refuses ends the stream with an error, never a panic or an
//! allocation past one frame's limit. The reassembler, fed the same bytes in pieces, gives the
//! same frames.
#![no_main]
use accel_remote::link::{Framed, LinkError, Reassembler};
use accel_remote::wire;
use libfuzzer_sys::fuzz_target;
use std::io::{Cursor, Read, Write};

/// A stream that reads the input and swallows writes.
struct Input(Cursor<Vec<u8>>);

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Input {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut link = Framed::new(Input(Cursor::new(data.to_vec())));
    let mut at = 0usize;
    let mut framed = Vec::new();
    loop {
        match link.read_frame() {
            Ok(m) => {
                framed.push(m.clone());
                let f = wire::encode(&m).expect("an accepted message encodes");
                assert_eq!(&data[at..at + f.len()], &f[..], "re-encodes to its bytes");
                at += f.len();
            }
            Err(LinkError::Closed) => {
                assert_eq!(at, data.len());
                break;
            }
            Err(_) => break,
        }
    }
    let piece = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut r = Reassembler::default();
    let mut pieced = Vec::new();
    'feed: for chunk in data.chunks(piece) {
        r.push(chunk);
        loop {
            match r.next_message() {
                Ok(Some(m)) => pieced.push(m),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        assert!(r.held() <= wire::HEADER_SIZE + wire::MAX_PAYLOAD + piece);
    }
    assert_eq!(pieced, framed, "the same frames, whole or in pieces");
});
