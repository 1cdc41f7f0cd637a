//! The boot stage (`sim::boot`) when the host, not the image, fails: a core that cannot be
//! started for want of descriptors leaves its verified slot valid, and the next reset boots it.
//! Alone in its test binary: it lowers this process's descriptor limit.
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use shared_abi::board::Board;
use shared_abi::regs::{pf, slot_flags, DevStatus};
use sim::device::Device;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SEED: [u8; 32] = [7; 32];

/// A minimal static x86-64 ELF standing in for the firmware's core: it maps the register file
/// (descriptor 3, the board contract), sets DEV_STATUS.READY and sleeps until killed.
fn fake_core() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: usize = 64 + 56;
    let status = pf::DEV_STATUS.offset() as u32;
    let len = (status / 4096 + 1) * 4096;
    let mut code = Vec::new();
    code.extend([0xb8, 9, 0, 0, 0]); // mov eax, SYS_mmap
    code.extend([0x31, 0xff]); // xor edi, edi
    code.push(0xbe); // mov esi, len
    code.extend(len.to_le_bytes());
    code.extend([0xba, 3, 0, 0, 0]); // mov edx, PROT_READ | PROT_WRITE
    code.extend([0x41, 0xba, 1, 0, 0, 0]); // mov r10d, MAP_SHARED
    code.extend([0x41, 0xb8, 3, 0, 0, 0]); // mov r8d, 3
    code.extend([0x45, 0x31, 0xc9]); // xor r9d, r9d
    code.extend([0x0f, 0x05]); // syscall
    code.extend([0xc7, 0x80]); // mov dword [rax + status], READY
    code.extend(status.to_le_bytes());
    code.extend(DevStatus::READY.bits().to_le_bytes());
    code.extend([0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7]); // 1: pause; jmp 1b
    let size = (HEADERS + code.len()) as u64;
    let mut e = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    e.extend(2u16.to_le_bytes()); // ET_EXEC
    e.extend(0x3eu16.to_le_bytes()); // x86-64
    e.extend(1u32.to_le_bytes());
    e.extend((BASE + HEADERS as u64).to_le_bytes()); // entry
    e.extend(64u64.to_le_bytes()); // program headers
    e.extend(0u64.to_le_bytes()); // no section headers
    e.extend(0u32.to_le_bytes());
    for h in [64u16, 56, 1, 64, 0, 0] {
        e.extend(h.to_le_bytes());
    }
    e.extend(1u32.to_le_bytes()); // PT_LOAD
    e.extend(5u32.to_le_bytes()); // R+X
    for v in [0, BASE, BASE, size, size, 0x1000] {
        e.extend(v.to_le_bytes());
    }
    e.extend(code);
    e
}

fn image(payload: &[u8]) -> Vec<u8> {
    use zerocopy::IntoBytes;
    let h = fw_image::header_for(payload, 0x0100_0000, 0x600d, fw_image::BOARD_SIM, 0);
    let sig = fw_image::sign(&h, payload, &SEED);
    [h.as_bytes(), &sig[..], payload].concat()
}

fn wait(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_host_error_starting_the_core_leaves_the_slot_valid_and_a_reset_boots_it() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&fake_core());
    let flash = sim::flash::Flash::open(&dir.path().join("flash"), fw_image::BOARD_SIM, || {
        Ok((fw_image::public_key(&SEED), img.clone()))
    })
    .unwrap();
    let dev = Device::new(Board::DEFAULT, 0).unwrap();
    dev.attach_flash(flash);
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = log.clone();
    let report: sim::boot::Report = Box::new(move |s: &str| l.lock().unwrap().push(s.into()));
    let boot = sim::boot::spawn(dev.clone(), stop.clone(), report).unwrap();
    let ready = || dev.bar0().read32(pf::DEV_STATUS.offset()) & DevStatus::READY.bits() != 0;
    let running = |from: usize| {
        log.lock().unwrap()[from..]
            .iter()
            .any(|l| l.contains("running from slot A"))
    };
    // The boot stage's word, not READY alone: it confirms the slot after it sees READY.
    wait("the first boot", || running(0));
    let slot_a = || dev.flash().unwrap().slots()[0].flags;
    assert_ne!(slot_a() & slot_flags::VALID, 0);

    // No descriptor can be opened: the reset's core cannot be started.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 0, hard).unwrap();
    let seen = log.lock().unwrap().len();
    dev.reset_pf();
    let started = || {
        log.lock().unwrap()[seen..]
            .iter()
            .any(|l| l.contains("cannot start"))
    };
    let t = Instant::now();
    while !started() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let lines = log.lock().unwrap().clone();
    assert!(started(), "{lines:?}");
    assert!(!ready(), "no core runs");
    let flags = slot_a();
    assert_eq!(
        flags & (slot_flags::VALID | slot_flags::BAD),
        slot_flags::VALID,
        "a host error is not the image's: {lines:?}"
    );

    // With descriptors back, a reset boots the same slot.
    let seen = log.lock().unwrap().len();
    dev.reset_pf();
    wait("the boot after the host error", || running(seen));
    assert!(ready());
    assert_ne!(slot_a() & slot_flags::RUNNING, 0);
    stop.store(true, Ordering::Release);
    boot.join().unwrap();
}
