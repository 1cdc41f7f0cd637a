//! What a PF client of the device model can reach through the descriptor it is given for
//! mapping: the mailbox pages and nothing else, in a file it cannot resize.
use accelvirt_tests::Sim;
use host_driver::transport::Transport;
use host_driver::vfio_user::VfioUser;
use shared_abi::regs::{pf, PF_MAGIC};

#[test]
fn a_pf_client_gets_only_the_mailbox_pages_in_a_sealed_file() {
    let sim = Sim::start();
    let t = VfioUser::connect(&sim.sock, false).unwrap();
    let mut q = vec![0u8; 64];
    q[0..4].copy_from_slice(&64u32.to_ne_bytes());
    let (_, mut fds) = t.call(5, &q, &[], "region info").unwrap();
    let fd = fds.pop().expect("BAR0 comes with a descriptor to map");
    let end = pf::MBOX_RESP.end() as i64;
    let st = nix::sys::stat::fstat(&fd).unwrap();
    assert_eq!(st.st_size, end, "the file ends with the mailbox pages");
    // Sealed: it can neither shrink (which would fault the device) nor grow.
    for len in [0, 4096, 1 << 20] {
        assert_eq!(
            nix::unistd::ftruncate(&fd, len),
            Err(nix::errno::Errno::EPERM),
            "ftruncate to {len}"
        );
    }
    // The VF banks and the translation table are not in it: the attack that pointed VF 1 at
    // VF 0's memory through this file has nothing to write to.
    let bank = pf::vf_bank(1) as i64;
    assert!(nix::sys::uio::pwrite(&fd, &[0xFF; 4], bank).is_err());
    assert!(nix::sys::uio::pwrite(&fd, &[0xFF; 4], pf::TT_POOL.offset as i64).is_err());
    // Its first page is not the device's ID page: writing it changes nothing the device shows.
    nix::sys::uio::pwrite(&fd, &[0xFF; 16], 0).unwrap();
    assert_eq!(t.read32(pf::MAGIC.offset()).unwrap(), PF_MAGIC);
    // The mailbox pages are the device's own: a SCRATCH-like round trip through the file.
    let req = pf::MBOX_REQ.start() as i64;
    nix::sys::uio::pwrite(&fd, b"accelvirt", req).unwrap();
    let mut back = [0u8; 9];
    t.read_bytes(pf::MBOX_REQ.start(), &mut back).unwrap();
    assert_eq!(&back, b"accelvirt");
    // And the device still serves commands.
    let o = sim.ctl(&["info"]);
    assert!(o.status.success(), "{o:?}");
}
