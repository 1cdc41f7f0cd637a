//! Board support for the simulated board: raw Linux system calls are its bus. The only
//! `unsafe` of the image lives here.
#![allow(unsafe_code)]

use core::arch::asm;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use firmware::mmio::Mmio;
use firmware::{Clock, Regs};
use shared_abi::mailbox::FaultCode;
use shared_abi::regs::{pf, DevStatus};

const SYS_READ: usize = 0;
const SYS_WRITE: usize = 1;
const SYS_MMAP: usize = 9;
const SYS_NANOSLEEP: usize = 35;
const SYS_FCNTL: usize = 72;
const SYS_GETPPID: usize = 110;
const SYS_PRCTL: usize = 157;
const SYS_EXIT_GROUP: usize = 231;
const SYS_CLOCK_GETTIME: usize = 228;
const REGS_FD: usize = 3;
const WINDOW_FD: usize = 4;
const BUS_FD: usize = 5;
const LOG_FD: usize = 2;

static REGS: AtomicPtr<u32> = AtomicPtr::new(core::ptr::null_mut());

/// # Safety
/// `nr` and the arguments must form a valid Linux x86_64 system call whose memory arguments
/// point to memory valid for it.
unsafe fn syscall6(nr: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller upholds the system call's contract; rcx and r11 are clobbered by
    // `syscall` and declared so.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a[0], in("rsi") a[1],
            in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

fn fd_open(fd: usize) -> bool {
    const F_GETFD: usize = 1;
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { syscall6(SYS_FCNTL, [fd, F_GETFD, 0, 0, 0, 0]) >= 0 }
}

/// The image dies with the device model that started it: the kernel kills it when its parent
/// goes, and a parent already gone (reparented to init) ends it now.
pub fn die_with_parent() {
    const PR_SET_PDEATHSIG: usize = 1;
    const PR_SET_NAME: usize = 15;
    const SIGKILL: usize = 9;
    static NAME: [u8; 9] = *b"accel-fw\0";
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid take no pointers; PR_SET_NAME reads a
    // NUL-terminated string that lives for the program.
    let ppid = unsafe {
        syscall6(SYS_PRCTL, [PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0, 0]);
        syscall6(SYS_PRCTL, [PR_SET_NAME, NAME.as_ptr() as usize, 0, 0, 0, 0]);
        syscall6(SYS_GETPPID, [0; 6])
    };
    if ppid == 1 {
        exit(0);
    }
}

/// Maps the register file from fd 3, and the host-mappable window (fd 4, file offsets equal
/// register offsets) over its part of it when the board provides one.
pub fn map_registers(len: usize) -> Option<Mmio> {
    const PROT_RW: usize = 0x3;
    const MAP_SHARED: usize = 0x1;
    const MAP_FIXED: usize = 0x10;
    // SAFETY: mmap with a null hint only creates a new mapping; it touches no existing memory.
    let p = unsafe { syscall6(SYS_MMAP, [0, len, PROT_RW, MAP_SHARED, REGS_FD, 0]) };
    if p < 0 {
        return None;
    }
    if fd_open(WINDOW_FD) {
        let off = pf::MBOX_CTRL_PAGE.offset as usize;
        let wlen = pf::MBOX_RESP.end() as usize - off;
        // SAFETY: MAP_FIXED replaces pages inside the mapping just made (`off + wlen` is
        // within `len`), which nothing references yet.
        let w = unsafe {
            syscall6(
                SYS_MMAP,
                [
                    p as usize + off,
                    wlen,
                    PROT_RW,
                    MAP_SHARED | MAP_FIXED,
                    WINDOW_FD,
                    off,
                ],
            )
        };
        if w < 0 {
            return None;
        }
    }
    REGS.store(p as *mut u32, Ordering::Release);
    // SAFETY: the kernel just mapped `len` bytes, page-aligned, for reading and writing, and
    // nothing else in the image references them.
    Some(unsafe { Mmio::new(p as *mut u32, len) })
}

/// The register file as this board's core reaches it: loads and stores on the mapping, and
/// the writes the hardware acts on (`pf::hardware_acts_on`) as records on the bus socket
/// (fd 5), posted in order and sent in batches (one message per batch: a message per write
/// cost a wake-up of the hardware's side each). A read of a register the hardware answers
/// in, and any handoff write, first sends what is batched and waits until the hardware has
/// taken it (a sync record and its answer), as a PCIe read flushes posted writes; the main
/// loop sends what is left after every poll. Without a bus (fd 5 closed) every access is a
/// plain load or store.
#[derive(Debug)]
pub struct BoardRegs {
    mmio: Mmio,
    bus: bool,
    /// Writes batched or sent that a handoff must wait for (all but interrupt triggers: an
    /// interrupt follows the handoff it announces, and nothing waits for it).
    posted: core::cell::Cell<bool>,
    batch: core::cell::RefCell<heapless::Vec<u8, BATCH>>,
}

/// Bytes of posted writes sent as one bus message (64 records).
const BATCH: usize = 512;

/// The sync message's offset.
const SYNC: u32 = u32::MAX;

impl BoardRegs {
    pub fn new(mmio: Mmio) -> Self {
        BoardRegs {
            mmio,
            bus: fd_open(BUS_FD),
            posted: core::cell::Cell::new(false),
            batch: core::cell::RefCell::new(heapless::Vec::new()),
        }
    }

    fn post(&self, off: u32, val: u32) {
        let o = off as usize;
        if o != pf::IRQ_RAISE.offset() && o != pf::VF_IRQ_RAISE.offset() && off != SYNC {
            self.posted.set(true);
        }
        let full = {
            let mut b = self.batch.borrow_mut();
            let _ = b.extend_from_slice(&off.to_le_bytes());
            let _ = b.extend_from_slice(&val.to_le_bytes());
            b.len() + 8 > BATCH
        };
        if full {
            self.flush();
        }
    }

    /// Sends the batched writes (without waiting for them).
    pub fn flush(&self) {
        let mut b = self.batch.borrow_mut();
        if b.is_empty() {
            return;
        }
        // SAFETY: the buffer is valid for reads of its length.
        let n = unsafe { syscall6(SYS_WRITE, [BUS_FD, b.as_ptr() as usize, b.len(), 0, 0, 0]) };
        if n != b.len() as isize {
            exit(4); // the hardware is gone
        }
        b.clear();
    }

    fn sync(&self) {
        if !self.posted.replace(false) {
            self.flush();
            return;
        }
        self.post(SYNC, 0);
        self.flush();
        let mut b = [0u8; 8];
        // SAFETY: the buffer is valid for writes of its length.
        let n = unsafe { syscall6(SYS_READ, [BUS_FD, b.as_mut_ptr() as usize, 8, 0, 0, 0]) };
        if n <= 0 {
            exit(4);
        }
    }

    /// Whether the hardware writes an answer into the register at `off`.
    fn answered(off: usize) -> bool {
        pf::hardware_acts_on(off)
            || off == pf::FLASH_STATUS.offset()
            || off == pf::FLASH_RUNNING.offset()
            || pf::FLASH_SLOTS.contains(off as u64, 4)
    }
}

impl Regs for BoardRegs {
    fn read32(&self, off: usize) -> u32 {
        // The flag first: the main loop's polls read with nothing posted.
        if self.posted.get() && Self::answered(off) {
            self.sync();
        }
        self.mmio.read32(off)
    }
    fn write32(&self, off: usize, val: u32) {
        if self.bus && pf::hardware_acts_on(off) {
            self.post(off as u32, val);
        } else {
            self.mmio.write32(off, val);
        }
    }
    fn publish32(&self, off: usize, val: u32) {
        self.sync();
        shared_abi::ordering::publish();
        self.mmio.write32(off, val);
    }
    fn cas32(&self, off: usize, old: u32, new: u32) -> bool {
        self.mmio.cas32(off, old, new)
    }
}

/// Appends to the log ring in the register file (`pf::LOG_RING`, `pf::LOG_PROD`: the host
/// reads it, as probe-rs reads an RTT buffer) and writes to the log sink; errors are ignored
/// (logging must never stop the firmware).
pub fn log_write(bytes: &[u8]) {
    let p = REGS.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: `p` was mapped by `map_registers` for the whole register file, which covers
        // the log ring and its producer index; only this single-threaded image writes them.
        let regs = unsafe { Mmio::new(p, shared_abi::pci::PF_BAR0_SIZE as usize) };
        let ring = pf::LOG_RING;
        let prod = regs.read32(pf::LOG_PROD.offset());
        for (i, &b) in bytes.iter().enumerate() {
            let at = ring.start() + (prod.wrapping_add(i as u32) % ring.len) as usize;
            let word = at & !3;
            let shift = (at & 3) * 8;
            let w = regs.read32(word) & !(0xFF << shift) | (b as u32) << shift;
            regs.write32(word, w);
        }
        // The bytes first, then the index that hands them over (shared_abi::ordering).
        regs.publish32(pf::LOG_PROD.offset(), prod.wrapping_add(bytes.len() as u32));
    }
    sink_write(bytes);
}

fn sink_write(bytes: &[u8]) {
    let mut rest = bytes;
    for _ in 0..16 {
        if rest.is_empty() {
            break;
        }
        // SAFETY: the buffer is valid for reads of its length.
        let n = unsafe {
            syscall6(
                SYS_WRITE,
                [LOG_FD, rest.as_ptr() as usize, rest.len(), 0, 0, 0],
            )
        };
        if n <= 0 {
            break;
        }
        rest = &rest[(n as usize).min(rest.len())..];
    }
}

/// The board's delay provider: the idle loop naps through `embedded_hal::delay::DelayNs`.
#[derive(Debug)]
pub struct Nap;

impl embedded_hal::delay::DelayNs for Nap {
    fn delay_ns(&mut self, ns: u32) {
        nap_ns(ns as u64);
    }
}

fn nap_ns(ns: u64) {
    let ts = [ns / 1_000_000_000, ns % 1_000_000_000];
    // SAFETY: `ts` is a valid timespec for the duration of the call; no remainder pointer.
    unsafe { syscall6(SYS_NANOSLEEP, [ts.as_ptr() as usize, 0, 0, 0, 0, 0]) };
}

/// Ends the image.
pub fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes no pointers and does not return.
        unsafe { syscall6(SYS_EXIT_GROUP, [code as usize, 0, 0, 0, 0, 0]) };
    }
}

fn monotonic_ms() -> u64 {
    monotonic_ns() / 1_000_000
}

/// Nanoseconds on the monotonic clock.
pub fn monotonic_ns() -> u64 {
    let mut ts = [0u64; 2];
    const CLOCK_MONOTONIC: usize = 1;
    // SAFETY: `ts` is a writable timespec.
    unsafe {
        syscall6(
            SYS_CLOCK_GETTIME,
            [CLOCK_MONOTONIC, ts.as_mut_ptr() as usize, 0, 0, 0, 0],
        )
    };
    ts[0] * 1_000_000_000 + ts[1]
}

static START_MS: AtomicU64 = AtomicU64::new(firmware::hal::UPTIME_UNSET);

/// Milliseconds since the image started.
#[derive(Debug)]
pub struct Uptime;

impl Clock for Uptime {
    fn now_ms(&self) -> u64 {
        firmware::hal::uptime_ms(&START_MS, monotonic_ms())
    }
}

/// Build id: set by `cargo xtask firmware` from the source hash.
pub fn build_id() -> u32 {
    match option_env!("ACCEL_FW_BUILD_ID") {
        Some(s) => parse_hex(s),
        None => 0,
    }
}

fn parse_hex(s: &str) -> u32 {
    s.bytes().take(8).fold(0u32, |acc, b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => 0,
        };
        acc << 4 | d as u32
    })
}

#[unsafe(no_mangle)]
#[unsafe(naked)]
extern "C" fn _start() -> ! {
    // The kernel enters with rsp 16-byte aligned; a call pushes 8 more, as the ABI expects.
    core::arch::naked_asm!("xor rbp, rbp", "call {main}", "ud2", main = sym super::accel_main);
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    let p = REGS.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: `p` was mapped by `map_registers` for the register file's length, which
        // covers these two registers.
        let regs = unsafe { Mmio::new(p, pf::ID_PAGE.len as usize) };
        regs.write32(pf::FAULT_CODE.offset(), FaultCode::Panic.wire());
        regs.write32(
            pf::DEV_STATUS.offset(),
            (DevStatus::FAULT | DevStatus::HALTED).bits(),
        );
    }
    // A panic inside a log frame (the logger's own re-entry check among them) must not log:
    // that would take the logger again and panic in the panic handler.
    if !FRAME.held() {
        defmt::error!("panic: firmware halted");
    }
    exit(101)
}

// defmt: frames go to the log sink, one encoder for the single-threaded image.
static FRAME: firmware::logger::FrameLock = firmware::logger::FrameLock::new();
static mut ENCODER: defmt::Encoder = defmt::Encoder::new();

#[defmt::global_logger]
struct Logger;

// SAFETY: `acquire` panics if a frame is open (defmt's contract), so at most one frame exists
// and defmt calls `write` and `release` only inside the frame `acquire` opened; the image is
// single-threaded, so the encoder has one user at a time.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        FRAME.take();
        // SAFETY: `FRAME` was free and is now held by this frame: no other reference to the
        // encoder exists until `release`.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).start_frame(log_write) }
    }
    unsafe fn flush() {}
    unsafe fn release() {
        // SAFETY: defmt calls this once, after `acquire`, inside the frame it opened.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).end_frame(log_write) };
        FRAME.give();
    }
    unsafe fn write(bytes: &[u8]) {
        // SAFETY: defmt calls this between `acquire` and `release`, inside the open frame.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).write(bytes, log_write) }
    }
}

defmt::timestamp!("{=u64:ms}", Uptime.now_ms());
