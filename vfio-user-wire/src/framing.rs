//! Reading and writing whole messages on a UNIX stream socket: the header with any
//! descriptors (SCM_RIGHTS), then the body. The socket has a read timeout; what to do when it
//! expires is the caller's [`Wait`].

use crate::proto::{Header, HEADER_SIZE, MAX_MSG_FDS};
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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

/// Reads one message of at most `max` bytes. `Ok(None)`: idle, as [`Wait::idle`] asked.
pub fn recv(
    stream: &UnixStream,
    max: usize,
    wait: &mut impl Wait,
) -> Result<Option<Message>, RecvError> {
    let mut hdr = [0u8; HEADER_SIZE];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < HEADER_SIZE {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_MSG_FDS]);
        let mut iov = [IoSliceMut::new(&mut hdr[got..])];
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => {
                if let Ok(cm) = m.cmsgs() {
                    for c in cm {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            fds.extend(own_fds(&raw));
                        }
                    }
                }
                if m.bytes == 0 {
                    return Err(RecvError::Closed);
                }
                got += m.bytes;
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {
                if got == 0 && wait.idle() {
                    return Ok(None);
                }
                if !wait.more() {
                    return Err(if got == 0 {
                        RecvError::TimedOut
                    } else {
                        RecvError::Framing
                    });
                }
            }
            Err(e) => return Err(RecvError::Io(e)),
        }
    }
    let (h, _) = Header::read_from_prefix(&hdr).map_err(|_| RecvError::Framing)?;
    let size = h.size as usize;
    if !(HEADER_SIZE..=max).contains(&size) {
        return Err(RecvError::Framing);
    }
    let mut body = vec![0u8; size - HEADER_SIZE];
    let mut have = 0;
    let mut s = stream;
    while have < body.len() {
        match s.read(&mut body[have..]) {
            Ok(0) => return Err(RecvError::Closed),
            Ok(n) => have += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if !wait.more() {
                    return Err(RecvError::Framing);
                }
            }
            Err(e) => {
                return Err(RecvError::Io(Errno::from_raw(
                    e.raw_os_error().unwrap_or(0),
                )))
            }
        }
    }
    Ok(Some((h, body, fds)))
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

/// Takes ownership of descriptors received with SCM_RIGHTS.
#[allow(unsafe_code)]
fn own_fds(raw: &[RawFd]) -> Vec<OwnedFd> {
    raw.iter()
        // SAFETY: the kernel just installed these descriptors in our table for this message
        // alone (SCM_RIGHTS); nothing else owns them.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::flags;

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
        let h = Header {
            msg_id: 7,
            command: 2,
            size: (HEADER_SIZE + 5) as u32,
            flags: flags::TYPE_COMMAND,
            error: 0,
        };
        send(&a, &h, b"hello", &[efd.as_raw_fd()]).unwrap();
        let (rh, body, fds) = recv(&b, 4096, &mut Forever).unwrap().unwrap();
        assert_eq!(
            (rh.msg_id, rh.command, body.as_slice()),
            (7, 2, &b"hello"[..])
        );
        assert_eq!(fds.len(), 1);
        // A size below the header is a framing error; a closed peer is Closed.
        let bad = Header { size: 8, ..h };
        send(&a, &bad, &[], &[]).unwrap();
        assert!(matches!(
            recv(&b, 4096, &mut Forever),
            Err(RecvError::Framing)
        ));
        drop(a);
        assert!(matches!(
            recv(&b, 4096, &mut Forever),
            Err(RecvError::Closed)
        ));
    }
}
