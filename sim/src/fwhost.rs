//! Runs the firmware, linked in, on its own thread against the device's register file: the
//! in-process model's core (tests, fuzzing; `accel-sim` boots an image from flash instead,
//! see `boot`). The
//! firmware's view of the registers goes through [`FwPort`], where hardware side effects of
//! its writes (scrubber, interrupt raise) happen, exactly as a bus would deliver them.

use crate::device::Device;
use firmware::{Clock, Firmware, Regs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The firmware's port onto the register file.
#[derive(Debug, Clone)]
pub struct FwPort(pub Arc<Device>);

impl Regs for FwPort {
    fn read32(&self, off: usize) -> u32 {
        self.0.bar0().read32(off)
    }
    fn write32(&self, off: usize, val: u32) {
        self.0.firmware_write32(off, val);
    }
    fn cas32(&self, off: usize, old: u32, new: u32) -> bool {
        self.0.bar0().cas32(off, old, new)
    }
    fn read_bytes(&self, off: usize, buf: &mut [u8]) {
        self.0.bar0().read(off, buf);
    }
    fn write_bytes(&self, off: usize, data: &[u8]) {
        self.0.bar0().write(off, data);
    }
}

/// Milliseconds since the firmware (re)started.
#[derive(Debug, Clone, Copy)]
pub struct SimClock(Instant);

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// How long the firmware thread spins after its last command before it naps: longer than
/// the gaps inside one client's sequence of commands (a message-path command is four socket
/// round trips), so those never wait for a nap. Measured in time, not polls: a poll's cost
/// changes with the firmware.
pub const SPIN_BEFORE_NAP: Duration = Duration::from_micros(200);
/// The nap between polls once idle: what a command after a quiet spell waits at most, and
/// what keeps an idle device from burning a core.
pub const NAP: Duration = Duration::from_micros(100);
/// Quiet before the firmware thread naps longer.
pub const QUIET_BEFORE_DEEP: Duration = Duration::from_millis(50);
/// The nap once the device has been quiet for a while: a command after a long quiet spell
/// waits up to this, and the idle device costs about 1 % of a core instead of 10 %.
pub const DEEP_NAP: Duration = Duration::from_millis(1);

/// The firmware thread's idle policy: spin, then nap, then nap longer.
#[derive(Debug, Default)]
pub struct Idle {
    since: Option<Instant>,
    polls: u32,
    napping: bool,
}

impl Idle {
    /// A poll did work: spin again.
    pub fn busy(&mut self) {
        self.since = None;
    }

    /// A poll found nothing: sleep as long as the quiet so far says. While spinning, the
    /// clock is read every 64th poll; once napping, before every nap.
    pub fn idle(&mut self) {
        let Some(since) = self.since else {
            self.since = Some(Instant::now());
            self.polls = 0;
            self.napping = false;
            return;
        };
        self.polls = self.polls.wrapping_add(1);
        if !self.napping && !self.polls.is_multiple_of(64) {
            return;
        }
        // Naps are parks: an event for this thread (`Device::wake_core`) ends them early.
        let quiet = since.elapsed();
        if quiet >= QUIET_BEFORE_DEEP {
            std::thread::park_timeout(DEEP_NAP);
        } else if quiet >= SPIN_BEFORE_NAP {
            self.napping = true;
            std::thread::park_timeout(NAP);
        }
    }
}

/// Starts the firmware thread. It boots, polls until `stop`, and reboots on device reset.
pub fn spawn(
    dev: Arc<Device>,
    stop: Arc<AtomicBool>,
    build_id: u32,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("firmware".into())
        .spawn(move || {
            dev.set_core_thread(Some(std::thread::current()));
            while !stop.load(Ordering::Acquire) {
                dev.take_fw_reset();
                let port = FwPort(dev.clone());
                let Ok(mut fw) =
                    Firmware::new(port, SimClock(Instant::now()), dev.board(), build_id)
                else {
                    return;
                };
                fw.boot();
                let mut idle = Idle::default();
                loop {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    if dev.take_fw_reset() {
                        break;
                    }
                    if dev.firmware_stalled() {
                        dev.set_core_held(true);
                        std::thread::sleep(NAP);
                        continue;
                    }
                    dev.set_core_held(false);
                    if fw.poll() {
                        idle.busy();
                    } else {
                        idle.idle();
                    }
                }
            }
        })
}
