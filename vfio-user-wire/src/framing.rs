//! Reading and writing whole messages on a UNIX stream socket, with their descriptors
//! (SCM_RIGHTS). The socket has a read timeout; what to do when it expires is the caller's
//! [`Wait`].

use crate::proto::{Header, HEADER_SIZE, MAX_MSG_FDS};
use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use zerocopy::{FromBytes, IntoBytes};

/// One message: header, body, descriptors.
pub type Message = (Header, Vec<u8>, Vec<OwnedFd>);

/// Why no message was read.
#[derive(Debug)]
pub enum RecvError {
    /// The peer closed the connection (between messages, or in the middle of one).
    Closed,
    /// The header says a size outside `HEADER_SIZE..=max`: the stream is no longer aligned
    /// on message boundaries.
    Framing,
    /// The caller's [`Wait`] gave up.
    TimedOut,
    /// The socket failed.
    Io(Errno),
}

/// What to do when the socket's read timeout expires with nothing (more) to read.
pub trait Wait {
    /// Nothing of a message has arrived yet: `true` returns `Ok(None)` to the caller (a
    /// server's idle poll), `false` keeps waiting.
    fn idle(&mut self) -> bool;
    /// Whether to keep waiting (before a message starts, or inside one).
    fn more(&mut self) -> bool;
}

/// Bytes a [`Reader`] keeps for reading; a larger message grows it while it is read.
const READ_BUF: usize = 64 << 10;
/// Bytes a [`Reader`] starts with.
const MIN_BUF: usize = 4 << 10;
/// Descriptors a [`Reader`] holds for messages not yet complete; more are closed.
const MAX_PENDING_FDS: usize = 4 * MAX_MSG_FDS;

/// Reads whole messages from one stream through a buffer. One system call brings a message's
/// header and body together, and every message already queued (reading the header, then the
/// body, took two per message).
///
/// Descriptors belong to the message holding the last byte of the read that brought them:
/// the kernel ends a read with the bytes that carried descriptors, and a sender passes a
/// message's descriptors with it. Descriptors that would belong to no message are closed.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// Unread bytes: `buf[start..end]`.
    start: usize,
    end: usize,
    /// Stream position of `buf[start]`.
    pos: u64,
    /// Descriptors not yet handed out, each with the stream position just past the read
    /// that brought it.
    fds: Vec<(u64, OwnedFd)>,
}

impl Reader {
    /// An empty reader (its buffer is allocated by the first read).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one message of at most `max` bytes. `Ok(None)`: idle, as [`Wait::idle`] asked.
    /// After an error other than `TimedOut`, the stream is no longer aligned on messages.
    pub fn recv(
        &mut self,
        stream: &UnixStream,
        max: usize,
        wait: &mut impl Wait,
    ) -> Result<Option<Message>, RecvError> {
        loop {
            let need = match self.next_header(max)? {
                Some(h) if self.end - self.start >= h.size as usize => {
                    return Ok(Some(self.take(h)))
                }
                Some(h) => h.size as usize,
                None => HEADER_SIZE,
            };
            match self.fill(stream, need) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(_) => {}
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    let partial = self.start != self.end;
                    if !partial && wait.idle() {
                        return Ok(None);
                    }
                    if !wait.more() {
                        return Err(if partial {
                            RecvError::Framing
                        } else {
                            RecvError::TimedOut
                        });
                    }
                }
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }

    /// The next message's header, once it is here, its size checked against `max`.
    fn next_header(&self, max: usize) -> Result<Option<Header>, RecvError> {
        let Ok((h, _)) = Header::read_from_prefix(&self.buf[self.start..self.end]) else {
            return Ok(None);
        };
        if !(HEADER_SIZE..=max).contains(&(h.size as usize)) {
            return Err(RecvError::Framing);
        }
        Ok(Some(h))
    }

    /// Takes the next message, whose header is `h` and whose bytes are all here, with its
    /// descriptors (at most [`MAX_MSG_FDS`]; more are closed).
    fn take(&mut self, h: Header) -> Message {
        let size = h.size as usize;
        let body = self.buf[self.start + HEADER_SIZE..self.start + size].to_vec();
        let (from, to) = (self.pos, self.pos + size as u64);
        let mut fds = Vec::new();
        let mut later = Vec::new();
        for (at, fd) in self.fds.drain(..) {
            if at > to {
                later.push((at, fd));
            } else if at > from && fds.len() < MAX_MSG_FDS {
                fds.push(fd);
            }
        }
        self.fds = later;
        self.start += size;
        self.pos = to;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_BUF {
                // A large message is gone: give its room back.
                self.buf.truncate(READ_BUF);
                self.buf.shrink_to_fit();
            }
        }
        (h, body, fds)
    }

    /// One read of whatever is queued, into room for at least `need` unread bytes.
    fn fill(&mut self, stream: &UnixStream, need: usize) -> Result<usize, Errno> {
        // The last read filled the buffer: more may be queued than it holds.
        let filled = !self.buf.is_empty() && self.end == self.buf.len();
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Room grows as reads fill it (a connection's first read zeroed all 64 KiB), and to
        // the whole message being read.
        let room = match self.buf.len() {
            0 => MIN_BUF,
            n if filled => (2 * n).min(READ_BUF).max(n),
            n => n,
        };
        if self.buf.len() < need.max(room) {
            self.buf.resize(need.max(room), 0);
        }
        let mut got = Vec::new();
        let n = crate::sys::recv_with_fds(stream.as_raw_fd(), &mut self.buf[self.end..], &mut got)?;
        let tag = self.pos + (self.end - self.start + n) as u64;
        // Past the bound, descriptors are closed here (dropped), not left in our table.
        let room = MAX_PENDING_FDS.saturating_sub(self.fds.len());
        self.fds
            .extend(got.into_iter().take(room).map(|fd| (tag, fd)));
        self.end += n;
        Ok(n)
    }
}

/// Sends one message; descriptors go with its first bytes.
pub fn send(stream: &UnixStream, h: &Header, payload: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(h.as_bytes()), IoSlice::new(payload)];
    let total = HEADER_SIZE + payload.len();
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let mut sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    // A short send: the rest without descriptors.
    if sent < total {
        let all: Vec<u8> = [h.as_bytes(), payload].concat();
        while sent < total {
            let n =
                nix::sys::socket::send(stream.as_raw_fd(), &all[sent..], MsgFlags::MSG_NOSIGNAL)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            sent += n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::flags;
    use std::io::Write;

    /// The header of command `command` with id `id` and `payload` bytes.
    fn command(id: u16, command: u16, payload: usize) -> Header {
        Header {
            msg_id: id,
            command,
            size: (HEADER_SIZE + payload) as u32,
            flags: flags::TYPE_COMMAND,
            error: 0,
        }
    }

    struct Forever;
    impl Wait for Forever {
        fn idle(&mut self) -> bool {
            false
        }
        fn more(&mut self) -> bool {
            true
        }
    }

    #[test]
    fn a_message_and_its_descriptors_round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        let efd = nix::sys::eventfd::EventFd::new().unwrap();
        let h = command(7, 2, 5);
        let mut r = Reader::new();
        send(&a, &h, b"hello", &[efd.as_raw_fd()]).unwrap();
        let (rh, body, fds) = r.recv(&b, 4096, &mut Forever).unwrap().unwrap();
        assert_eq!(
            (rh.msg_id, rh.command, body.as_slice()),
            (7, 2, &b"hello"[..])
        );
        assert_eq!(fds.len(), 1);
        // A size below the header is a framing error; a closed peer is Closed.
        let bad = Header { size: 8, ..h };
        send(&a, &bad, &[], &[]).unwrap();
        assert!(matches!(
            r.recv(&b, 4096, &mut Forever),
            Err(RecvError::Framing)
        ));
        drop(a);
        assert!(matches!(
            Reader::new().recv(&b, 4096, &mut Forever),
            Err(RecvError::Closed)
        ));
    }

    /// Messages queued together are read together and come out one by one, each with the
    /// descriptors sent with it; a message larger than the buffer is read whole.
    #[test]
    fn queued_messages_come_out_one_by_one_with_their_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let e1 = nix::sys::eventfd::EventFd::new().unwrap();
        let e2 = nix::sys::eventfd::EventFd::new().unwrap();
        let big = vec![0xAB; 3 * READ_BUF + 5];
        let msgs: [(u16, &[u8], Vec<RawFd>); 5] = [
            (1, b"one", vec![]),
            (2, b"two", vec![e1.as_raw_fd()]),
            (3, b"", vec![]),
            (4, &big, vec![e1.as_raw_fd(), e2.as_raw_fd()]),
            (5, b"five", vec![]),
        ];
        let mut r = Reader::new();
        // Written from another thread: the large one does not fit in the socket's buffer.
        let sent = msgs
            .iter()
            .map(|(id, p, f)| (*id, p.to_vec(), f.clone()))
            .collect::<Vec<_>>();
        let writer = std::thread::spawn(move || {
            for (id, p, f) in sent {
                let h = command(id, 1, p.len());
                send(&a, &h, &p, &f).unwrap();
            }
            a
        });
        let mut got = Vec::new();
        while got.len() < msgs.len() {
            if let Some((h, body, fds)) = r.recv(&b, 1 << 20, &mut Forever).unwrap() {
                got.push((h.msg_id, body, fds.len()));
            }
        }
        let _a = writer.join().unwrap();
        let want: Vec<(u16, Vec<u8>, usize)> = msgs
            .iter()
            .map(|(id, p, f)| (*id, p.to_vec(), f.len()))
            .collect();
        assert_eq!(got, want);
        assert!(
            r.buf.len() <= READ_BUF,
            "the large message's room was given back"
        );
    }

    /// A message that never completes cannot make the reader hold descriptors without bound.
    #[test]
    fn descriptors_ahead_of_their_message_are_bounded() {
        struct Once;
        impl Wait for Once {
            fn idle(&mut self) -> bool {
                true
            }
            fn more(&mut self) -> bool {
                false
            }
        }
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let efd = nix::sys::eventfd::EventFd::new().unwrap();
        let h = command(1, 2, 4096);
        send(&a, &h, &[], &[]).unwrap();
        for _ in 0..3 * MAX_PENDING_FDS {
            let fds = [efd.as_raw_fd()];
            let iov = [IoSlice::new(&[0])];
            let rights = [ControlMessage::ScmRights(&fds)];
            sendmsg::<()>(a.as_raw_fd(), &iov, &rights, MsgFlags::empty(), None).unwrap();
        }
        let mut r = Reader::new();
        assert!(matches!(
            r.recv(&b, 1 << 20, &mut Once),
            Err(RecvError::Framing)
        ));
        assert_eq!(
            r.end - r.start,
            HEADER_SIZE + 3 * MAX_PENDING_FDS,
            "all of it was read"
        );
        assert_eq!(r.fds.len(), MAX_PENDING_FDS);
        // Completed, the message carries no more than one read can bring.
        let rest = vec![0u8; 4096 - 3 * MAX_PENDING_FDS];
        (&a).write_all(&rest).unwrap();
        let (h, body, fds) = r.recv(&b, 1 << 20, &mut Forever).unwrap().unwrap();
        assert_eq!((h.msg_id, body.len(), fds.len()), (1, 4096, MAX_MSG_FDS));
        assert!(r.fds.is_empty());
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// A message with more descriptors than one may carry, up to all a sendmsg can pass,
    /// leaves none of them open: the reader owns (and closes) every one the kernel installed.
    #[test]
    fn descriptors_past_what_a_message_carries_are_all_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let efd = nix::sys::eventfd::EventFd::new().unwrap();
        let mut r = Reader::new();
        let round = |r: &mut Reader| {
            for (id, n) in [
                (1u16, 20usize),
                (2, 40),
                (3, crate::sys::SCM_MAX_FD),
                (4, 17),
            ] {
                let h = command(id, 1, 4);
                let fds = vec![efd.as_raw_fd(); n];
                send(&a, &h, b"body", &fds).unwrap();
                let (rh, body, got) = r.recv(&b, 4096, &mut Forever).unwrap().unwrap();
                assert_eq!((rh.msg_id, body.as_slice()), (id, &b"body"[..]));
                assert_eq!(got.len(), MAX_MSG_FDS);
            }
            assert!(r.fds.is_empty());
        };
        round(&mut r);
        let before = open_fds();
        for _ in 0..20 {
            round(&mut r);
        }
        // Other tests of this process open a few descriptors meanwhile; a leak is hundreds.
        let after = open_fds();
        assert!(
            after < before + MAX_MSG_FDS,
            "{before} -> {after} open descriptors"
        );
    }

    /// A reader starts with a small buffer and grows it while reads fill it.
    #[test]
    fn the_buffer_starts_small_and_grows_with_what_is_queued() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let payload = [5u8; 96];
        for id in 0..100u16 {
            let h = command(id, 1, payload.len());
            send(&a, &h, &payload, &[]).unwrap();
        }
        let mut r = Reader::new();
        let first = r.recv(&b, 4096, &mut Forever).unwrap().unwrap();
        assert_eq!((first.0.msg_id, r.buf.len()), (0, MIN_BUF));
        for id in 1..100u16 {
            let (h, body, _) = r.recv(&b, 4096, &mut Forever).unwrap().unwrap();
            assert_eq!((h.msg_id, body.as_slice()), (id, &payload[..]));
        }
        assert!(
            r.buf.len() > MIN_BUF && r.buf.len() <= READ_BUF,
            "{}",
            r.buf.len()
        );
    }
}
