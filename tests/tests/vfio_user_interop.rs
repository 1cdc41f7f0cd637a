//! What stock vfio-user clients (QEMU 10.1+'s `vfio-user-pci`, libvfio-user's peers, the
//! rust-vmm crate) expect of a server, each found when one of them attached accel-sim. Every
//! test here failed before its fix.
use accelvirt_tests::Sim;
use host_driver::vfio_user::VfioUser;
use host_driver::Error;
use nix::errno::Errno;
use shared_abi::regs::vf;
use std::os::fd::{AsFd, AsRawFd};

const DMA_MAP: u16 = 2;
const DMA_UNMAP: u16 = 3;
const REGION_INFO: u16 = 5;
const IRQ_INFO: u16 = 7;
const SET_IRQS: u16 = 8;
const REGION_READ: u16 = 9;
const REGION_WRITE: u16 = 10;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn errno<T>(r: host_driver::Result<T>) -> Errno {
    match r {
        Err(Error::Remote { errno, .. }) => errno,
        Err(e) => panic!("expected an errno, got {e}"),
        Ok(_) => panic!("expected an errno, got success"),
    }
}

fn memfd(len: i64) -> std::os::fd::OwnedFd {
    let m = nix::sys::memfd::memfd_create(c"dma", nix::sys::memfd::MFdFlags::empty()).unwrap();
    nix::unistd::ftruncate(&m, len).unwrap();
    m
}

fn map(
    t: &VfioUser,
    offset: u64,
    addr: u64,
    size: u64,
    fd: Option<i32>,
) -> host_driver::Result<()> {
    let mut p = Vec::new();
    p.extend_from_slice(&32u32.to_ne_bytes());
    p.extend_from_slice(&3u32.to_ne_bytes());
    p.extend_from_slice(&offset.to_ne_bytes());
    p.extend_from_slice(&addr.to_ne_bytes());
    p.extend_from_slice(&size.to_ne_bytes());
    let fds: Vec<i32> = fd.into_iter().collect();
    t.call(DMA_MAP, &p, &fds, "dma map").map(|_| ())
}

fn unmap(t: &VfioUser, flags: u32, addr: u64, size: u64) -> host_driver::Result<()> {
    let mut p = Vec::new();
    p.extend_from_slice(&24u32.to_ne_bytes());
    p.extend_from_slice(&flags.to_ne_bytes());
    p.extend_from_slice(&addr.to_ne_bytes());
    p.extend_from_slice(&size.to_ne_bytes());
    t.call(DMA_UNMAP, &p, &[], "dma unmap").map(|_| ())
}

#[test]
fn negotiated_capabilities_are_within_what_qemu_accepts() {
    let sim = Sim::start();
    let mut s = std::os::unix::net::UnixStream::connect(&sim.sock).unwrap();
    // What QEMU 11.1 proposes, with a larger fd count than it would take back.
    let mut p = vec![0, 0, 1, 0];
    p.extend_from_slice(
        br#"{"capabilities":{"max_msg_fds":253,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true}}"#,
    );
    p.push(0);
    let mut m = Vec::new();
    m.extend_from_slice(&1u16.to_ne_bytes());
    m.extend_from_slice(&1u16.to_ne_bytes());
    m.extend_from_slice(&(16 + p.len() as u32).to_ne_bytes());
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&p);
    std::io::Write::write_all(&mut s, &m).unwrap();
    let mut h = [0u8; 16];
    std::io::Read::read_exact(&mut s, &mut h).unwrap();
    let mut body = vec![0u8; u32_at(&h, 4) as usize - 16];
    std::io::Read::read_exact(&mut s, &mut body).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body[4..body.len() - 1]).unwrap();
    let caps = &json["capabilities"];
    // The limits in QEMU's hw/vfio-user/proxy.c (check_max_fds, check_max_xfer, check_pgsizes,
    // check_max_dma).
    assert!(caps["max_msg_fds"].as_u64().unwrap() <= 16, "{json}");
    assert!(
        caps["max_data_xfer_size"].as_u64().unwrap() <= 64 << 20,
        "{json}"
    );
    assert_eq!(caps["pgsizes"].as_u64().unwrap() & 4095, 0, "{json}");
    assert!(caps["max_dma_maps"].as_u64().unwrap() <= 65535, "{json}");
    assert_eq!(caps["write_multiple"], true);
}

#[test]
fn dma_unmap_follows_kernel_type1_rules() {
    let sim = Sim::start();
    let t = VfioUser::connect(&sim.sock, false).unwrap();
    let mem = memfd(4 << 20);
    map(&t, 0, 0x10_0000, 1 << 20, Some(mem.as_raw_fd())).unwrap();
    map(&t, 1 << 20, 0x20_0000, 1 << 20, Some(mem.as_raw_fd())).unwrap();
    // A vIOMMU unmaps whole IOVA ranges that hold nothing: that is success.
    unmap(&t, 0, 0x1_0000_0000, 0x1_0000_0000).unwrap();
    // Up to the very top of the IOVA space, as QEMU sends when the vIOMMU comes up.
    unmap(&t, 0, 0xfef0_0000, 0u64.wrapping_sub(0xfef0_0000)).unwrap();
    assert_eq!(
        errno(unmap(
            &t,
            0,
            0xfef0_0000,
            0u64.wrapping_sub(0xfef0_0000) + 1
        )),
        Errno::EINVAL
    );
    // A range that would split a mapping is refused, and nothing changes.
    assert_eq!(errno(unmap(&t, 0, 0x18_0000, 1 << 20)), Errno::EINVAL);
    assert_eq!(
        errno(map(&t, 0, 0x10_0000, 0x1000, None)),
        Errno::EEXIST,
        "the first mapping is still there"
    );
    // One range covering both mappings removes both.
    unmap(&t, 0, 0, 0x8000_0000).unwrap();
    map(&t, 0, 0x10_0000, 2 << 20, None).unwrap();
    // Unmap-all: address and size must be 0.
    assert_eq!(errno(unmap(&t, 2, 0x10_0000, 0)), Errno::EINVAL);
    unmap(&t, 2, 0, 0).unwrap();
    map(&t, 0, 0x10_0000, 2 << 20, None).unwrap();
    // No dirty tracking (no migration).
    assert_eq!(errno(unmap(&t, 1, 0x10_0000, 2 << 20)), Errno::ENOTSUP);
}

#[test]
fn dma_map_past_the_end_of_its_file_is_refused() {
    let sim = Sim::start();
    let t = VfioUser::connect(&sim.sock, false).unwrap();
    let mem = memfd(4096);
    assert_eq!(
        errno(map(&t, 0, 0x10_0000, 1 << 40, Some(mem.as_raw_fd()))),
        Errno::EINVAL,
        "a 4 KiB file mapped as 1 TiB"
    );
    assert_eq!(
        errno(map(&t, 8192, 0x10_0000, 4096, Some(mem.as_raw_fd()))),
        Errno::EINVAL,
        "an offset past the end"
    );
    map(&t, 0, 0x10_0000, 4096, Some(mem.as_raw_fd())).unwrap();
}

#[test]
fn a_short_region_info_query_gets_the_size_needed_and_no_descriptor() {
    let sim = Sim::start();
    let t = VfioUser::connect(&sim.sock, false).unwrap();
    let query = |argsz: u32| {
        let mut q = [0u8; 32];
        q[0..4].copy_from_slice(&argsz.to_ne_bytes());
        q[8..12].copy_from_slice(&0u32.to_ne_bytes()); // BAR0
        let mut p = q.to_vec();
        p.resize(argsz.max(32) as usize, 0);
        t.call(REGION_INFO, &p, &[], "region info").unwrap()
    };
    let (short, fds) = query(32);
    let needed = u32_at(&short, 0);
    assert!(needed > 32, "argsz says how much the capabilities need");
    assert_eq!(
        u32_at(&short, 12),
        0,
        "no capability offset in a short reply"
    );
    assert_eq!(short.len(), 32, "only the struct that was asked for");
    assert!(fds.is_empty(), "no fd the client did not make room for");
    let (full, fds) = query(needed);
    assert_eq!(u32_at(&full, 12), 32, "capabilities follow the struct");
    assert_eq!(full.len(), needed as usize);
    assert_eq!(fds.len(), 1, "the mmap fd comes with the full reply");
}

#[test]
fn irq_indexes_agree_and_err_req_notifiers_are_offered() {
    let sim = Sim::start();
    sim.ctl_json(&["create-vf", "--count", "1"]);
    let t = VfioUser::connect(&sim.dir.path().join("accel0-vf0.sock"), false).unwrap();
    let info = |index: u32| {
        let mut q = [0u8; 16];
        q[0..4].copy_from_slice(&16u32.to_ne_bytes());
        q[8..12].copy_from_slice(&index.to_ne_bytes());
        t.call(IRQ_INFO, &q, &[], "irq info")
            .map(|(r, _)| u32_at(&r, 12))
    };
    let set = |index: u32, flags: u32, count: u32, fds: &[i32]| {
        let mut q = Vec::new();
        for w in [20, flags, index, 0, count] {
            q.extend_from_slice(&w.to_ne_bytes());
        }
        t.call(SET_IRQS, &q, fds, "set irqs").map(|_| ())
    };
    // QEMU enables error recovery only when ERR has exactly one vector; REQ likewise.
    assert_eq!(info(3).unwrap(), 1, "ERR");
    assert_eq!(info(4).unwrap(), 1, "REQ");
    // Past the last index both commands refuse, even a "disable all".
    assert_eq!(errno(info(5)), Errno::EINVAL);
    assert_eq!(errno(set(5, 0x21, 0, &[])), Errno::EINVAL);
    // ERR and REQ take an eventfd; a trigger with no data fires it.
    let err =
        nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_NONBLOCK).unwrap();
    let req =
        nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_NONBLOCK).unwrap();
    set(3, 0x24, 1, &[err.as_fd().as_raw_fd()]).unwrap();
    set(3, 0x21, 1, &[]).unwrap();
    assert_eq!(err.read().unwrap(), 1);
    assert_eq!(
        errno(set(3, 0x24, 2, &[])),
        Errno::EINVAL,
        "one vector only"
    );
    set(4, 0x24, 1, &[req.as_fd().as_raw_fd()]).unwrap();
    // Destroying the VF asks its VMM to release it.
    sim.ctl_json(&["destroy-vf", "--all"]);
    let t0 = std::time::Instant::now();
    loop {
        match req.read() {
            Ok(n) => {
                assert_eq!(n, 1);
                break;
            }
            Err(_) if t0.elapsed() < std::time::Duration::from_secs(5) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(e) => panic!("no device request when the VF went away: {e}"),
        }
    }
}

#[test]
fn narrow_register_reads_answer_like_hardware_and_narrow_writes_are_dropped() {
    let sim = Sim::start();
    sim.ctl_json(&["create-vf", "--count", "1"]);
    let t = VfioUser::connect(&sim.dir.path().join("accel0-vf0.sock"), false).unwrap();
    let read = |off: u64, n: u32| {
        let mut q = Vec::new();
        q.extend_from_slice(&off.to_ne_bytes());
        q.extend_from_slice(&0u32.to_ne_bytes());
        q.extend_from_slice(&n.to_ne_bytes());
        t.call(REGION_READ, &q, &[], "read")
            .map(|(r, _)| r[16..].to_vec())
    };
    let magic = shared_abi::regs::VF_MAGIC.to_le_bytes();
    let m = vf::MAGIC.0 as u64;
    assert_eq!(read(m, 1).unwrap(), magic[..1]);
    assert_eq!(read(m + 3, 1).unwrap(), magic[3..]);
    assert_eq!(read(m + 2, 2).unwrap(), magic[2..]);
    // Across a dword boundary: the high half of MAGIC, the low half of ABI_VERSION.
    let abi = shared_abi::abi_version_word().to_le_bytes();
    assert_eq!(
        read(m + 2, 4).unwrap(),
        [magic[2], magic[3], abi[0], abi[1]]
    );
    let faults = || {
        let r = read(vf::FAULT_COUNT.0 as u64, 4).unwrap();
        u32::from_le_bytes(r.try_into().unwrap())
    };
    let before = faults();
    // A byte write to a queue register: success on the wire, nothing written, one fault.
    let q0 = vf::queue(0) as u64 + shared_abi::regs::queue::SQ_SIZE.0 as u64;
    let mut w = Vec::new();
    w.extend_from_slice(&q0.to_ne_bytes());
    w.extend_from_slice(&0u32.to_ne_bytes());
    w.extend_from_slice(&1u32.to_ne_bytes());
    w.push(0x7F);
    t.call(REGION_WRITE, &w, &[], "write").unwrap();
    assert_eq!(read(q0, 4).unwrap(), [0, 0, 0, 0], "nothing written");
    assert_eq!(faults(), before + 1, "counted as a bad access");
    let code = read(vf::FAULT_CODE.0 as u64, 4).unwrap();
    assert_eq!(
        u32::from_le_bytes(code.try_into().unwrap()),
        shared_abi::resources::VfFault::BadAccess as u32
    );
}
