//! A link: one ordered, reliable byte stream between an importer and an exporter that carries
//! [`wire`](crate::wire) frames. The conversion (what frames say) never sees how bytes move:
//! [`Link`] is all it uses, so a transport other than TCP with TLS (RDMA, AF_XDP) is another
//! implementation of it, and nothing else changes.
//!
//! [`Framed`] puts frames on any `Read + Write` stream; [`tcp`] makes such streams over TCP
//! with mutual TLS.
use crate::wire::{self, FrameError, Header, Message, WithData, HEADER_SIZE};
use nix::poll::{ppoll, PollFd, PollFlags};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};
use zerocopy::FromBytes;

/// Why a link could not carry a frame. After any of these the link is finished.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer closed the stream between frames.
    #[error("the peer closed the link")]
    Closed,
    /// The stream failed (or ended inside a frame).
    #[error("link: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a valid frame: it is cut off.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
}

/// Frames in both directions over one link. The serving loops at both ends are one thread
/// each that polls the link and its device in turn, so receiving never blocks past the wait
/// asked for, and sending may queue several frames for one write (small jobs share TLS
/// records and TCP segments).
pub trait Link: Send {
    /// Queues one message to go out with the next [`Link::flush`].
    fn queue(&mut self, m: &Message) -> Result<(), LinkError>;
    /// Queues a message that carries bytes, encoded straight from where they are.
    fn queue_data(&mut self, m: WithData<'_>) -> Result<(), LinkError>;
    /// Sends what of the queue the peer has room for now, never waiting (the rest goes with
    /// later flushes and while [`Link::poll`] waits); an error if the peer has taken
    /// nothing for the link's timeout.
    fn flush(&mut self) -> Result<(), LinkError>;
    /// The next message if one arrives within `wait` (zero: only one already here). A header
    /// is checked before its payload is gathered, so a peer can make the receiver hold at
    /// most one frame ([`wire::MAX_PAYLOAD`]).
    fn poll(&mut self, wait: Duration) -> Result<Option<Message>, LinkError>;
    /// How long the link waits for its peer before it gives up on it.
    fn timeout(&self) -> Duration;
    /// A descriptor that becomes ready when the link may have something for [`Link::poll`]
    /// (readable) or room for its backlog (writable), for a loop that waits on the link and
    /// its own events at once. Meaningful once [`Link::poll`] has returned `None`.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Ends the link cleanly: what is queued goes out, then the end of the stream (a TLS
    /// close_notify and a FIN), and what the peer still sends is read and dropped until it
    /// closes too (or `wait` passes). Closing with the peer's bytes unread would make TCP
    /// reset the connection, and a reset can discard what the peer had not read yet.
    fn close(&mut self, wait: Duration);
    /// Bytes queued that the peer has not taken yet: a serving loop stops taking new
    /// requests while this is past [`MAX_BACKLOG`], so a peer that does not read cannot make
    /// it hold more.
    fn backlog(&self) -> usize;

    /// Sends one message and everything queued before it, waiting (at most the link's
    /// timeout) for room.
    fn send(&mut self, m: &Message) -> Result<(), LinkError>;

    /// Receives one message, waiting at most the link's timeout.
    fn recv(&mut self) -> Result<Message, LinkError> {
        self.poll(self.timeout())?
            .ok_or_else(|| LinkError::Io(std::io::ErrorKind::TimedOut.into()))
    }
}

/// A byte stream a [`Framed`] link runs on: readable and writable without blocking, with a
/// descriptor to wait on.
pub trait Stream: Read + Write + Send {
    /// The descriptor to wait on for readiness.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Makes reads and writes return `WouldBlock` instead of waiting.
    fn set_nonblocking(&self) -> std::io::Result<()>;
    /// Says this end sends no more (after what is written).
    fn close_write(&mut self) -> std::io::Result<()>;
}

impl Stream for std::os::unix::net::UnixStream {
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn set_nonblocking(&self) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_nonblocking(self, true)
    }
    fn close_write(&mut self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl Stream for std::net::TcpStream {
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn set_nonblocking(&self) -> std::io::Result<()> {
        std::net::TcpStream::set_nonblocking(self, true)
    }
    fn close_write(&mut self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl<C, D> Stream for rustls::StreamOwned<C, std::net::TcpStream>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>> + Send,
    D: rustls::SideData,
{
    fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
    fn set_nonblocking(&self) -> std::io::Result<()> {
        self.sock.set_nonblocking(true)
    }
    fn close_write(&mut self) -> std::io::Result<()> {
        self.conn.send_close_notify();
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let until = Instant::now() + Duration::from_secs(1);
                    if !wait_ready(self.sock.as_fd(), PollFlags::POLLOUT, until)? {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.sock.shutdown(std::net::Shutdown::Write)
    }
}

/// Frames on a byte stream.
#[derive(Debug)]
pub struct Framed<S> {
    stream: S,
    buf: Vec<u8>,
    reasm: Reassembler,
    /// Encoded frames; those before `out_at` are sent (the rest moves down only once it is
    /// less than what was sent, so a large backlog is not shifted on every write).
    out: Vec<u8>,
    out_at: usize,
    /// TLS holds records the socket had no room for.
    tls_held: bool,
    /// When the stream last took bytes (or had nothing to take).
    progress: Instant,
    timeout: Duration,
    nonblocking: bool,
}

/// Output a serving loop lets wait for a slow peer before it stops taking its requests
/// ([`Link::backlog`]).
pub const MAX_BACKLOG: usize = 4 << 20;

/// How long a link waits for its peer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl<S> Framed<S> {
    /// Frames on `stream`.
    pub fn new(stream: S) -> Self {
        Framed {
            stream,
            buf: Vec::new(),
            reasm: Reassembler::default(),
            out: Vec::new(),
            out_at: 0,
            tls_held: false,
            progress: Instant::now(),
            timeout: DEFAULT_TIMEOUT,
            nonblocking: false,
        }
    }

    /// The same, giving up on the peer after `timeout`.
    pub fn with_timeout(stream: S, timeout: Duration) -> Self {
        Framed {
            timeout,
            ..Self::new(stream)
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, to write to it directly (bytes that bypass the framing: a test of what
    /// the peer does with a frame this crate would never send).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

impl<S: Read> Framed<S> {
    /// Reads one frame from a blocking stream (the stream reader [`Link::poll`]'s
    /// reassembly must agree with; the fuzz target holds them to it).
    pub fn read_frame(&mut self) -> Result<Message, LinkError> {
        let mut h = [0u8; HEADER_SIZE];
        // End of stream before a header's first byte is a close; inside one, an error.
        let mut got = 0;
        while got < HEADER_SIZE {
            match self.stream.read(&mut h[got..]) {
                Ok(0) if got == 0 => return Err(LinkError::Closed),
                Ok(0) => {
                    return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let header = Header::read_from_bytes(&h).map_err(|_| FrameError::Reserved)?;
        let (kind, len) = wire::check_header(&header)?;
        self.buf.resize(len, 0);
        self.stream.read_exact(&mut self.buf)?;
        Ok(wire::decode(kind, &self.buf)?)
    }
}

/// Waits until `fd` is ready for `what`, or `until`; false if the time ran out.
fn wait_ready(fd: BorrowedFd<'_>, what: PollFlags, until: Instant) -> std::io::Result<bool> {
    let left = until.saturating_duration_since(Instant::now());
    let mut fds = [PollFd::new(fd, what)];
    wait_any(&mut fds, left.min(Duration::from_secs(10)))
}

/// Lets this thread's timed waits end when asked, not up to 50 µs later (the kernel's
/// default timer slack, which groups wakeups): the serving loops wait tens of microseconds
/// for a completion.
pub fn precise_timers() {
    let _ = nix::sys::prctl::set_timerslack(1_000);
}

/// Waits until one of `fds` is ready or `wait` passes, to the microsecond (`poll(2)` counts
/// milliseconds, and a loop that waits for a completion must not sleep a whole one); false
/// if the time ran out.
pub fn wait_any(fds: &mut [PollFd<'_>], wait: Duration) -> std::io::Result<bool> {
    let t = nix::sys::time::TimeSpec::from_duration(wait);
    match ppoll(fds, Some(t), None) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

impl<S: Stream> Framed<S> {
    fn nonblocking(&mut self) -> Result<(), LinkError> {
        if !self.nonblocking {
            self.stream.set_nonblocking()?;
            self.nonblocking = true;
            self.progress = Instant::now();
        }
        Ok(())
    }

    /// Bytes queued that the stream has not taken yet (TLS records it holds count as one).
    fn pending(&self) -> usize {
        self.out.len() - self.out_at + usize::from(self.tls_held)
    }

    /// Writes what the stream takes now, never waiting: both ends write and read on one
    /// thread, so a writer that waited for room while its peer did the same would wait
    /// forever. A link whose peer takes nothing for its timeout has failed.
    fn push_out(&mut self) -> Result<(), LinkError> {
        self.nonblocking()?;
        let mut sent = 0;
        let mut blocked = false;
        while self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                // TLS took nothing: its buffer is full of records the socket has no room
                // for. Push them out; if the socket takes none, the rest waits.
                Ok(0) => match self.stream.flush() {
                    Ok(()) => {}
                    Err(e) if would_block(&e) => {
                        blocked = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                },
                Ok(n) => {
                    self.out_at += n;
                    sent += n;
                }
                Err(e) if would_block(&e) => {
                    blocked = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        } else if self.out_at > self.out.len() / 2 {
            self.out.drain(..self.out_at);
            self.out_at = 0;
        }
        if !blocked {
            // TLS may still hold records the socket had no room for.
            match self.stream.flush() {
                Ok(()) => self.tls_held = false,
                Err(e) if would_block(&e) => {
                    self.tls_held = true;
                    blocked = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if sent > 0 || self.pending() == 0 {
            self.progress = Instant::now();
        } else if blocked && self.progress.elapsed() > self.timeout {
            return Err(LinkError::Io(std::io::ErrorKind::TimedOut.into()));
        }
        Ok(())
    }
}

impl<S: Stream> Link for Framed<S> {
    fn queue(&mut self, m: &Message) -> Result<(), LinkError> {
        if self.pending() == 0 {
            self.progress = Instant::now();
        }
        wire::encode_into(m, &mut self.out)?;
        Ok(())
    }

    fn queue_data(&mut self, m: WithData<'_>) -> Result<(), LinkError> {
        if self.pending() == 0 {
            self.progress = Instant::now();
        }
        wire::encode_data_into(m, &mut self.out)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        self.push_out()
    }

    fn send(&mut self, m: &Message) -> Result<(), LinkError> {
        self.queue(m)?;
        let until = Instant::now() + self.timeout;
        loop {
            self.push_out()?;
            if self.pending() == 0 {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(LinkError::Io(std::io::ErrorKind::TimedOut.into()));
            }
            wait_ready(self.stream.fd(), PollFlags::POLLOUT, until)?;
        }
    }

    fn poll(&mut self, wait: Duration) -> Result<Option<Message>, LinkError> {
        self.nonblocking()?;
        let until = Instant::now() + wait;
        loop {
            if let Some(m) = self.reasm.next_message()? {
                return Ok(Some(m));
            }
            // Straight into the reassembler, a piece big enough for many small frames.
            let room = self.reasm.room(READ_SIZE);
            match self.stream.read(room) {
                Ok(0) if self.reasm.held() == 0 => return Err(LinkError::Closed),
                Ok(0) => return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => self.reasm.filled(n),
                Err(e) if would_block(&e) => {
                    if Instant::now() >= until {
                        return Ok(None);
                    }
                    // While waiting to read, what is queued goes out as the peer makes room.
                    let what = if self.pending() > 0 {
                        PollFlags::POLLIN | PollFlags::POLLOUT
                    } else {
                        PollFlags::POLLIN
                    };
                    if !wait_ready(self.stream.fd(), what, until)? {
                        return Ok(None);
                    }
                    if self.pending() > 0 {
                        self.push_out()?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.stream.fd()
    }

    fn backlog(&self) -> usize {
        self.pending()
    }

    fn close(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        while self.pending() > 0 && Instant::now() < until {
            if self.push_out().is_err()
                || !wait_ready(self.stream.fd(), PollFlags::POLLOUT, until).unwrap_or(false)
            {
                break;
            }
        }
        if self.stream.close_write().is_err() {
            return;
        }
        let mut sink = [0u8; 64 << 10];
        while Instant::now() < until {
            match self.stream.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if would_block(&e) => {
                    if !wait_ready(self.stream.fd(), PollFlags::POLLIN, until).unwrap_or(false) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

/// Frames out of bytes that arrive in pieces of any size: for a reader that must not block
/// (one thread both reading a TLS stream and writing to it, polling the device between).
/// A header is checked as soon as it is whole, so a peer can make this hold at most one
/// frame and the piece being added.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// Bytes arrived: `buf[start..end]` is not taken yet (frames are taken in place, and
    /// what is left moves down only when room is asked for, not once per frame).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The checked header of the frame being gathered.
    want: Option<(wire::Kind, usize)>,
}

/// The least a [`Framed`] link reads at once: many small frames per read.
const READ_SIZE: usize = 64 << 10;

impl Reassembler {
    /// Adds bytes that arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        self.room(n)[..n].copy_from_slice(bytes);
        self.filled(n);
    }

    /// Room for at least `min` more bytes, to read into; say how many arrived with [`Reassembler::filled`].
    pub fn room(&mut self, min: usize) -> &mut [u8] {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        // Only what is asked for: a header that promises a large frame reserves nothing
        // before its bytes arrive.
        let want = min;
        if self.buf.len() - self.end < want && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written at the start of the last [`Reassembler::room`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole frame, if one has arrived. After an error the stream is unusable.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let held = &self.buf[self.start..self.end];
        if self.want.is_none() {
            if held.len() < HEADER_SIZE {
                return Ok(None);
            }
            let h =
                Header::read_from_bytes(&held[..HEADER_SIZE]).map_err(|_| FrameError::Reserved)?;
            self.want = Some(wire::check_header(&h)?);
        }
        let Some((kind, len)) = self.want else {
            return Ok(None);
        };
        if held.len() < HEADER_SIZE + len {
            return Ok(None);
        }
        let m = wire::decode(kind, &held[HEADER_SIZE..HEADER_SIZE + len])?;
        self.start += HEADER_SIZE + len;
        self.want = None;
        Ok(Some(m))
    }

    /// Bytes held (at most one frame and the last piece added).
    pub fn held(&self) -> usize {
        self.end - self.start
    }
}

/// TCP with mutual TLS (rustls), the link between hosts.
pub mod tcp {
    use super::Framed;
    use rustls::{ClientConnection, ServerConnection, StreamOwned};
    use std::net::{TcpListener, TcpStream, ToSocketAddrs};
    use std::sync::Arc;
    use std::time::Duration;

    /// An importer's link to its exporter.
    pub type ClientLink = Framed<StreamOwned<ClientConnection, TcpStream>>;
    /// An exporter's link to one importer.
    pub type ServerLink = Framed<StreamOwned<ServerConnection, TcpStream>>;

    /// Why a link could not be made.
    #[derive(Debug, thiserror::Error)]
    pub enum ConnectError {
        /// TCP.
        #[error("{0}")]
        Io(#[from] std::io::Error),
        /// The TLS handshake (a certificate refused, on either side).
        #[error("TLS: {0}")]
        Tls(String),
        /// The server name given is not a name or address.
        #[error("{0:?} is not a host name or address")]
        Name(String),
    }

    fn handshake<C, D>(conn: &mut C, sock: &mut TcpStream) -> Result<(), ConnectError>
    where
        C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
        D: rustls::SideData,
    {
        while conn.is_handshaking() {
            conn.complete_io(sock)
                .map_err(|e| ConnectError::Tls(e.to_string()))?;
        }
        Ok(())
    }

    /// Connects to `addr`, whose certificate must name `server_name`, and completes the
    /// handshake within `timeout` (which also bounds every later read and write's wait).
    pub fn connect(
        addr: impl ToSocketAddrs,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<ClientLink, ConnectError> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|_| ConnectError::Name(server_name.into()))?;
        let mut last = None;
        let mut sock = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut sock = sock
            .ok_or_else(|| last.unwrap_or_else(|| std::io::ErrorKind::AddrNotAvailable.into()))?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let mut conn =
            ClientConnection::new(config, name).map_err(|e| ConnectError::Tls(e.to_string()))?;
        handshake(&mut conn, &mut sock)?;
        Ok(Framed::with_timeout(StreamOwned::new(conn, sock), timeout))
    }

    /// Accepts one importer on `listener` and completes the handshake within `timeout`;
    /// returns the link and the identity its certificate carries
    /// ([`crate::tls::peer_identity`]).
    pub fn accept(
        listener: &TcpListener,
        config: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> Result<(ServerLink, Option<String>), ConnectError> {
        let (sock, _) = listener.accept()?;
        server(sock, config, timeout)
    }

    /// The server's handshake on an accepted connection (on the thread that will serve it,
    /// so a slow or silent client holds up nobody else).
    pub fn server(
        mut sock: TcpStream,
        config: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> Result<(ServerLink, Option<String>), ConnectError> {
        sock.set_nonblocking(false)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let mut conn =
            ServerConnection::new(config).map_err(|e| ConnectError::Tls(e.to_string()))?;
        handshake(&mut conn, &mut sock)?;
        let who = crate::tls::peer_identity(&conn);
        Ok((
            Framed::with_timeout(StreamOwned::new(conn, sock), timeout),
            who,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Hello, Ping, Welcome};

    /// Two ends of an in-process byte stream.
    fn pair() -> (
        Framed<std::os::unix::net::UnixStream>,
        std::os::unix::net::UnixStream,
    ) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (Framed::new(a), b)
    }

    #[test]
    fn frames_cross_a_stream_and_a_close_is_told_apart_from_a_cut() {
        let (mut a, b) = pair();
        let mut b = Framed::new(b);
        let hello = Message::Hello(Hello {
            vf: 2.into(),
            reserved: 0.into(),
            session: 0.into(),
        });
        a.send(&hello).unwrap();
        a.send(&Message::Ping(Ping { nonce: 5.into() })).unwrap();
        assert_eq!(b.recv().unwrap(), hello);
        assert_eq!(b.recv().unwrap(), Message::Ping(Ping { nonce: 5.into() }));
        // Half a frame, then the end: an error, not a close.
        let f = wire::encode(&Message::Welcome(Welcome::default())).unwrap();
        a.get_ref().write_all(&f[..10]).unwrap();
        drop(a);
        assert!(matches!(b.recv(), Err(LinkError::Io(_))));
        let (a, b) = pair();
        let mut b2 = Framed::new(b);
        drop(a);
        assert!(matches!(b2.recv(), Err(LinkError::Closed)));
    }

    #[test]
    fn an_oversized_or_garbage_frame_is_refused_before_its_payload_is_read() {
        let (a, b) = pair();
        let mut b = Framed::new(b);
        // A header that claims 1 GiB: refused at once, nothing more is read or held.
        let mut h = wire::encode(&Message::Ping(Ping::default())).unwrap();
        h[8..12].copy_from_slice(&(1u32 << 30).to_le_bytes());
        a.get_ref().write_all(&h[..HEADER_SIZE]).unwrap();
        assert!(matches!(
            b.recv(),
            Err(LinkError::Frame(FrameError::TooLarge(_)))
        ));
        let (a, b) = pair();
        let mut b = Framed::new(b);
        a.get_ref().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(matches!(
            b.recv(),
            Err(LinkError::Frame(FrameError::Magic(_)))
        ));
    }

    /// Between an importer and an exporter over loopback TCP with mutual TLS: the exporter
    /// learns the importer's name, frames cross both ways; an importer with another CA's
    /// certificate gets no link.
    #[test]
    fn tcp_links_need_both_certificates_and_carry_frames() {
        use crate::testcerts::{ca, leaf, roots};
        use crate::tls::{client_config, server_config};
        use std::time::Duration;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (ca1, other) = (ca("test CA"), ca("other CA"));
        let server = server_config(
            leaf(dir, &ca1, "localhost", true, false),
            roots(dir, &ca1, "ca.crt"),
        )
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let t = Duration::from_secs(5);
            let (mut link, who) = tcp::accept(&listener, server.clone(), t).unwrap();
            let m = link.recv().unwrap();
            link.send(&Message::Welcome(Welcome {
                session: 1.into(),
                credits: 8.into(),
                reserved: 0.into(),
            }))
            .unwrap();
            let second = tcp::accept(&listener, server, t).map(|_| ());
            (who, m, second.map_err(|e| e.to_string()))
        });
        let t5 = Duration::from_secs(5);
        let good = client_config(
            leaf(dir, &ca1, "tenant-a", false, false),
            roots(dir, &ca1, "ca.crt"),
        )
        .unwrap();
        let mut link = tcp::connect(addr, "localhost", good, t5).unwrap();
        let hello = Message::Hello(Hello {
            vf: 0.into(),
            reserved: 0.into(),
            session: 0.into(),
        });
        link.send(&hello).unwrap();
        assert!(matches!(link.recv().unwrap(), Message::Welcome(w) if w.credits.get() == 8));
        let bad = client_config(
            leaf(dir, &other, "intruder", false, false),
            roots(dir, &ca1, "ca.crt"),
        )
        .unwrap();
        // The server refuses the handshake; the client may see that at once or on its
        // first read.
        let refused = tcp::connect(addr, "localhost", bad, t5)
            .map_err(|e| e.to_string())
            .and_then(|mut l| l.recv().map(|_| ()).map_err(|e| e.to_string()));
        assert!(refused.is_err());
        let (who, m, second) = t.join().unwrap();
        assert_eq!(who.as_deref(), Some("tenant-a"));
        assert_eq!(m, hello);
        assert!(second.is_err(), "another CA's importer got a link");
    }

    /// Frames split at every byte boundary, and many in one piece, come out whole and in
    /// order; an oversized header is refused before its payload is gathered.
    #[test]
    fn frames_reassemble_from_pieces_of_any_size() {
        let msgs: Vec<Message> = (0..5u64)
            .map(|i| Message::Ping(Ping { nonce: i.into() }))
            .chain(std::iter::once(Message::Hello(Hello {
                vf: 1.into(),
                reserved: 0.into(),
                session: 0.into(),
            })))
            .collect();
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| wire::encode(m).unwrap()).collect();
        for piece in [1, 3, 16, 17, 1000] {
            let mut r = Reassembler::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(piece) {
                r.push(chunk);
                while let Some(m) = r.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs, "pieces of {piece}");
            assert_eq!(r.held(), 0);
        }
        let mut r = Reassembler::default();
        let mut h = wire::encode(&Message::Ping(Ping::default())).unwrap();
        h[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        r.push(&h[..HEADER_SIZE]);
        assert!(matches!(r.next_message(), Err(FrameError::TooLarge(_))));
    }
}
