//! Arbitrary bytes and descriptors to the device model's vfio-user message handling, for the
//! PF and a VF, after a valid VERSION or instead of it. Each input is one client connection
//! over the run's socket pair, served in process on this thread; afterwards the device must
//! still serve a new client. Two device models serve the whole run: one for the PF's inputs,
//! which may do anything a PF's client can (reset the device, end SR-IOV), and one whose PF no
//! input touches, for VF 0's inputs, so that VF exists for the whole run (with one device, the
//! first PF reset removed it, and every later VF input met a function that was gone).
//!
//! Input: one byte (bit 0: PF or VF 0; bit 1: no VERSION first; bit 2: another client owns
//! the function's DMA, interrupts and reset throughout), then segments, each sent
//! with one `sendmsg`: a control byte (low 2 bits: how many descriptors ride with it; bit 2:
//! [`FLOOD`]), one byte per descriptor choosing it from a fixed pool (memfds of several sizes,
//! an eventfd, both ends of a pipe, a socket, /dev/null), a 16-bit length, and the bytes. What
//! does not parse as a segment is sent as plain bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use shared_abi::resources::VfSpec;
use sim::device::{Device, Func};
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Inputs larger than this are skipped: the whole input is queued in the socket before the
/// device reads it, so it must fit the socket's buffer.
const MAX_INPUT: usize = 64 << 10;

/// Control-byte bit: the segment's descriptors are repeated to more than one message may
/// carry (`MAX_MSG_FDS`), by the control byte's top 5 bits, up to all one sendmsg passes.
const FLOOD: u8 = 1 << 2;
/// Descriptors one sendmsg can pass (the kernel's SCM_MAX_FD).
const SCM_MAX_FD: usize = 253;

struct Rig {
    /// The device the PF's inputs go to.
    pf_dev: sim::inprocess::InProcess,
    /// The device VF 0's inputs go to; its PF serves no input.
    vf_dev: sim::inprocess::InProcess,
    /// The client's end of the socket pair every input's connection runs over, and the
    /// device's. Both are non-blocking; both directions have large buffers (the forced size
    /// needs CAP_NET_ADMIN; without it the kernel's maximum applies): an input's bytes are
    /// queued before the device reads them, and its replies wait until it is done.
    client: UnixStream,
    server: UnixStream,
    /// Descriptors a segment can pass (the kernel duplicates them per message).
    pool: Vec<OwnedFd>,
    /// Inputs served, for the periodic fresh-client check.
    inputs: AtomicU64,
}

fn memfd(size: u64) -> OwnedFd {
    let fd = nix::sys::memfd::memfd_create(c"fuzz", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .expect("memfd");
    nix::unistd::ftruncate(&fd, size as i64).expect("ftruncate");
    fd
}

/// One VF with a tenant's share (2 engines, 16 granules, 4 queue pairs, 8 vectors), made
/// through the PF's own registers and config space as a driver would. An equal share of the
/// whole device made every FLR clear 8,192 translation entries and 256 queues: a quarter of
/// the run's time, in the firmware thread the FLR waits for.
fn create_vf(d: &sim::inprocess::InProcess) {
    let t = host_driver::vfio_user::VfioUser::connect(&d.sock, true).unwrap();
    let acc = host_driver::Accel::with_transport(Arc::new(t), Duration::from_secs(5)).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(acc.create_vfs(
            1,
            host_driver::CreateSpec::Uniform(VfSpec::new(2, 16, 4, 8, 0)),
        ))
        .unwrap();
}

fn rig() -> &'static Rig {
    static R: OnceLock<Rig> = OnceLock::new();
    R.get_or_init(|| {
        // Both start with one VF (the PF's inputs can then resize, reset or destroy it).
        let pf_dev = sim::inprocess::InProcess::start(4).unwrap();
        create_vf(&pf_dev);
        let vf_dev = sim::inprocess::InProcess::start(4).unwrap();
        create_vf(&vf_dev);
        let (p_read, p_write) = nix::unistd::pipe().unwrap();
        let (s_a, _s_b) = UnixStream::pair().unwrap();
        let pool = vec![
            memfd(0),
            memfd(4096),
            memfd(1 << 20),
            memfd(4096 + 1),
            nix::sys::eventfd::EventFd::new().unwrap().into(),
            p_read,
            p_write,
            s_a.into(),
            std::fs::File::open("/dev/null").unwrap().into(),
        ];
        use nix::sys::socket::{
            setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType,
        };
        let (client, server) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        for (s, size) in [(&client, 8usize << 20), (&server, 256 << 20)] {
            if setsockopt(s, sockopt::SndBufForce, &size).is_err() {
                let _ = setsockopt(s, sockopt::SndBuf, &size);
            }
        }
        Rig {
            pf_dev,
            vf_dev,
            client: client.into(),
            server: server.into(),
            pool,
            inputs: AtomicU64::new(0),
        }
    })
}

fn version() -> Vec<u8> {
    let json = br#"{"capabilities":{"max_msg_fds":8}}"#;
    let mut m = Vec::new();
    m.extend_from_slice(&1u16.to_ne_bytes()); // id
    m.extend_from_slice(&1u16.to_ne_bytes()); // VERSION
    m.extend_from_slice(&((16 + 4 + json.len() + 1) as u32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&1u16.to_ne_bytes());
    m.extend_from_slice(json);
    m.push(0);
    m
}

/// One `sendmsg` of `bytes` with `fds`; false when the socket is full (the rest is not sent).
fn send(s: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> bool {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let iov = [IoSlice::new(bytes)];
    sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).is_ok()
}

/// Sends `prefix`, then `input`'s segments, each with its descriptors. Bytes without
/// descriptors go out together (a stream has no boundaries to keep; a message each cost a
/// system call); a segment with descriptors is sent on its own, so they arrive with its
/// first byte.
fn send_segments(r: &Rig, s: &UnixStream, prefix: &[u8], mut input: &[u8]) {
    let mut plain = prefix.to_vec();
    while let Some((&ctl, rest)) = input.split_first() {
        let nfds = (ctl & 3) as usize;
        if rest.len() < nfds + 2 {
            plain.extend_from_slice(input);
            break;
        }
        let len = u16::from_le_bytes([rest[nfds], rest[nfds + 1]]) as usize;
        let body = &rest[nfds + 2..];
        let (seg, next) = body.split_at(len.min(body.len()));
        input = next;
        if nfds == 0 {
            plain.extend_from_slice(seg);
            continue;
        }
        let mut fds: Vec<RawFd> = rest[..nfds]
            .iter()
            .map(|&b| r.pool[b as usize % r.pool.len()].as_raw_fd())
            .collect();
        if ctl & FLOOD != 0 {
            let n =
                (vfio_user_wire::proto::MAX_MSG_FDS + 1 + (ctl >> 3) as usize * 8).min(SCM_MAX_FD);
            fds = fds.iter().copied().cycle().take(n).collect();
        }
        if !plain.is_empty() && !send(s, &plain, &[]) {
            return;
        }
        plain.clear();
        // A segment of no bytes still carries its descriptors, with one byte.
        if !send(s, if seg.is_empty() { &[0] } else { seg }, &fds) {
            return;
        }
    }
    if !plain.is_empty() {
        send(s, &plain, &[]);
    }
}

/// Serves one connection of `func` whose client sends `prefix` then `input`'s segments, on
/// this thread, over the run's one socket pair: the client's bytes are queued first and the
/// connection ends, as if the client hung up, when the device has read them all
/// (`serve_queued`); what it left unread (after a framing error) and its replies are then
/// drained, descriptors included, so the next input starts on empty sockets. A socket pair
/// per input, ended by a shutdown, cost twice the system calls (creating and closing the
/// sockets, setting their buffers and modes), about half of each input's time.
fn connection(r: &Rig, func: Func, prefix: &[u8], input: &[u8]) {
    send_segments(r, &r.client, prefix, input);
    sim::vfio_user::serve_queued(r.dev(func).clone(), func, &r.server).expect("serve");
    drain(&r.server);
    drain(&r.client);
}

/// Reads `s` until it is empty; descriptors that came with the bytes are closed by the
/// kernel (no room was given for them).
fn drain(s: &UnixStream) {
    thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 << 10]));
    BUF.with_borrow_mut(|buf| while matches!((&*s).read(buf), Ok(n) if n > 0) {});
}

/// A fresh client's VERSION is answered and accepted.
fn still_serving(r: &Rig, func: Func) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    (&ours).write_all(&version()).unwrap();
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    // The reply is small enough to wait in the socket while the device serves here.
    sim::vfio_user::serve_connection(r.dev(func).clone(), func, theirs);
    let mut reply = Vec::new();
    (&ours).read_to_end(&mut reply).unwrap();
    assert!(reply.len() >= 16, "the device answers VERSION");
    assert_eq!(
        u32::from_ne_bytes(reply[12..16].try_into().unwrap()),
        0,
        "VERSION accepted"
    );
}

impl Rig {
    /// The device `func`'s inputs go to.
    fn dev(&self, func: Func) -> &Arc<Device> {
        match func {
            Func::Pf => &self.pf_dev.dev,
            Func::Vf(_) => &self.vf_dev.dev,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, bytes)) = data.split_first() else {
        return;
    };
    if bytes.len() > MAX_INPUT {
        return;
    }
    let r = rig();
    let func = if how & 1 == 0 { Func::Pf } else { Func::Vf(0) };
    let prefix = if how & 2 == 0 { version() } else { Vec::new() };
    let dev = r.dev(func);
    // An owner that is not this input's connection: everything the input asks of the
    // function's DMA, interrupts or reset is refused, and it keeps the function.
    const OWNER: u64 = u64::MAX - 1;
    let owned = how & 4 != 0 && dev.claim(func, OWNER);
    connection(r, func, &prefix, bytes);
    if owned {
        assert!(dev.claim(func, OWNER), "the owner kept the function");
        assert!(
            dev.dma_space(func, OWNER).is_some(),
            "a client that does not own the function took its DMA space"
        );
        dev.release_dma(func, OWNER);
        dev.disown(func, OWNER);
    }
    // What a client holds is released when it goes: the mailbox lock and the function's DMA
    // space (a new owner can take it).
    let lock = dev.bar0().read32(shared_abi::regs::pf::MBOX_LOCK.offset());
    assert_eq!(lock, 0, "a departed client left the mailbox locked");
    assert!(
        dev.dma_space(func, u64::MAX).is_some(),
        "a departed client kept its DMA space"
    );
    dev.release_dma(func, u64::MAX);
    assert!(dev.claim(func, u64::MAX), "a departed client still owns the function");
    dev.disown(func, u64::MAX);
    // And a fresh client is served (a wedged lock would hang here: libFuzzer's timeout).
    // Every 64th input: a connection of its own costs as much as the input's.
    if r.inputs.fetch_add(1, Ordering::Relaxed) % 64 == 0 {
        still_serving(r, func);
    }
});
