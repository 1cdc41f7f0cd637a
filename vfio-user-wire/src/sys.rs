//! The crate's raw system calls: receiving bytes with the descriptors that came with them
//! (SCM_RIGHTS), every one of them owned. The only module allowed `unsafe`.
#![allow(unsafe_code)]

use nix::errno::Errno;
use nix::libc;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use zerocopy::IntoBytes;

/// Descriptors one sendmsg can pass (the kernel's SCM_MAX_FD); one read brings at most one
/// sendmsg's descriptors.
pub const SCM_MAX_FD: usize = 253;

/// Header bytes of a control message, and its alignment (`CMSG_ALIGN`).
const CMSG_HDR: usize = std::mem::size_of::<libc::cmsghdr>();
const CMSG_ALIGN: usize = std::mem::size_of::<usize>();
/// Control bytes for [`SCM_MAX_FD`] descriptors, with room to spare for one more message
/// (credentials), in u64s for alignment.
const CONTROL_WORDS: usize =
    (2 * CMSG_HDR + SCM_MAX_FD * std::mem::size_of::<RawFd>() + 64).div_ceil(8);

/// One `recvmsg` into `buf` (close-on-exec descriptors). Every descriptor the kernel installed
/// is pushed to `fds`, also when the control data was cut short (MSG_CTRUNC: the kernel still
/// installs those that fit, and nothing else would close them). Returns the bytes read.
pub fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, Errno> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at one iovec covering `buf` and at `control`, both live and writable
    // for the whole call and of the lengths given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(Errno::last());
    }
    // The kernel wrote msg_controllen bytes of control data (at most what we gave).
    let len = (msg.msg_controllen as usize).min(std::mem::size_of_val(&control));
    for raw in scm_rights(&control.as_bytes()[..len]) {
        // SAFETY: the kernel just installed this descriptor in our table for this read
        // alone (SCM_RIGHTS); nothing else owns it.
        fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    Ok(n as usize)
}

/// The descriptors of every SCM_RIGHTS message in `control`, as many as each message's
/// length covers (a truncated one says how many were installed), never past the end.
fn scm_rights(control: &[u8]) -> Vec<RawFd> {
    const LEN: usize = std::mem::size_of::<libc::size_t>();
    const INT: usize = std::mem::size_of::<libc::c_int>();
    let mut out = Vec::new();
    let mut at: usize = 0;
    while let Some(h) = at.checked_add(CMSG_HDR).and_then(|e| control.get(at..e)) {
        // The header (cmsg_len, cmsg_level, cmsg_type), as the kernel wrote it.
        let (l, rest) = h.split_at(LEN);
        let int = |b: &[u8]| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let cmsg_len = l.try_into().map_or(0, libc::size_t::from_ne_bytes);
        let (level, kind) = (int(&rest[..INT]), int(&rest[INT..2 * INT]));
        if cmsg_len < CMSG_HDR {
            break;
        }
        let end = at.saturating_add(cmsg_len).min(control.len());
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            out.extend(control[at + CMSG_HDR..end].chunks_exact(INT).map(int));
        }
        match cmsg_len
            .checked_next_multiple_of(CMSG_ALIGN)
            .and_then(|step| at.checked_add(step))
        {
            Some(next) => at = next,
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, fds: &[i32], cut: usize) -> Vec<u8> {
        let len = CMSG_HDR + 4 * fds.len() - cut;
        let mut b = len.to_ne_bytes().to_vec();
        b.extend(level.to_ne_bytes());
        b.extend(kind.to_ne_bytes());
        b.resize(CMSG_HDR, 0);
        fds.iter().for_each(|f| b.extend(f.to_ne_bytes()));
        b.truncate(len);
        b.resize(len.next_multiple_of(CMSG_ALIGN), 0);
        b
    }

    #[test]
    fn every_rights_message_is_read_and_nothing_past_the_end() {
        let mut c = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[3, 4, 5], 0);
        c.extend(cmsg(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &[9, 9, 9], 0));
        c.extend(cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[6], 0));
        assert_eq!(scm_rights(&c), [3, 4, 5, 6]);
        // A length past the end is cut at the end; a bad length ends the walk.
        let mut c = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[7, 8], 0);
        c.truncate(CMSG_HDR + 4);
        assert_eq!(scm_rights(&c), [7]);
        let c = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[], 8);
        assert!(scm_rights(&c).is_empty());
    }
}
