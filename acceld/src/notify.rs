//! systemd's readiness protocol (sd_notify): a datagram to `$NOTIFY_SOCKET` saying READY,
//! RELOADING or STOPPING. Without the variable (not started by systemd) nothing is sent.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (such as `READY=1`) to systemd, if it is listening.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = notify_to(&path, state) {
            eprintln!("acceld: cannot notify systemd ({state}): {e}");
        }
    }
}

/// Sends `state` to the notification socket at `path` (`@name`: an abstract socket).
pub fn notify_to(path: &OsStr, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path);
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &a)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// Hands `fd` to systemd's descriptor store under `name` (`FDSTORE=1`): systemd keeps it
/// open while acceld restarts, and passes it to the next acceld (`LISTEN_FDS`). Without
/// `$NOTIFY_SOCKET`, `Ok(false)`.
pub fn store_fd(name: &str, fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    store_fd_to(&path, name, fd).map(|()| true)
}

/// The same to the notification socket at `path`.
pub fn store_fd_to(
    path: &OsStr,
    name: &str,
    fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    use nix::sys::socket::{
        sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
    };
    use std::os::fd::AsRawFd;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path);
    let addr = match bytes.strip_prefix(b"@") {
        Some(abs) => UnixAddr::new_abstract(abs),
        None => UnixAddr::new(bytes),
    }
    .map_err(std::io::Error::from)?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    let msg = format!("FDSTORE=1\nFDNAME={name}");
    let fds = [fd.as_raw_fd()];
    sendmsg(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(msg.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        Some(&addr),
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_datagram_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        super::notify_to(p.as_os_str(), "READY=1").unwrap();
        let mut b = [0u8; 64];
        let n = rx.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"READY=1");
    }

    #[test]
    fn a_descriptor_reaches_the_store_with_its_name() {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        super::store_fd_to(p.as_os_str(), "acceld-1234abcd-device", f.as_fd()).unwrap();
        let mut buf = [0u8; 256];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
        let msg = recvmsg::<UnixAddr>(
            rx.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(r) = c {
                fds.extend(r);
            }
        }
        let n = msg.bytes;
        assert_eq!(&buf[..n], b"FDSTORE=1\nFDNAME=acceld-1234abcd-device");
        assert_eq!(fds.len(), 1);
        let _ = nix::unistd::close(fds[0]);
    }
}
