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
}
