//! The boot stage and the firmware's core. On power-up and on every reset the boot stage
//! picks a slot from flash (`flash::Flash::choose_boot`: verified with the device's key), and
//! runs that slot's image (its ELF payload) as a process of its own: the firmware's core. It
//! gets the register file, the mailbox window and the bus on descriptors 3, 4 and 5 (the
//! image's board contract), dies with the device model, and must report READY within
//! [`WATCHDOG`]; an image that does not, or dies first, is marked bad and the other slot
//! boots. A core the host cannot start (out of descriptors, memory, processes) says nothing
//! about its image: the slot stays as it was and the device waits for a reset. The bus thread
//! applies the core's posted writes to the hardware in order.

use crate::device::Device;
use command_fds::{CommandFdExt, FdMapping};
use shared_abi::image::slot_name;
use shared_abi::mailbox::FaultCode;
use shared_abi::regs::{pf, DevStatus};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a booted image has to report READY before the boot stage gives up on it.
pub const WATCHDOG: Duration = Duration::from_secs(3);
/// How often the boot stage looks at its core (exit, reset requests, stall injection).
const TICK: Duration = Duration::from_millis(1);
/// The bus's sync record.
const SYNC: u32 = u32::MAX;
/// How long the bus keeps looking for the core's next message before it sleeps.
const BUS_SPIN: Duration = Duration::from_micros(100);
/// The largest bus message the core sends (64 records).
const BUS_MESSAGE: usize = 512;

/// What the boot stage reports as it goes (for accel-sim's log).
pub type Report = Box<dyn Fn(&str) + Send>;

/// A running core: its process and its bus thread.
struct Core {
    child: Child,
    bus: Option<JoinHandle<()>>,
    stopped: bool,
    /// The process ended while the device ran it.
    dead: bool,
}

impl Core {
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(b) = self.bus.take() {
            let _ = b.join();
        }
    }
}

/// Why a core did not start.
#[derive(Debug)]
enum StartError {
    /// The kernel refused to run the image (not an executable it can load).
    Image(std::io::Error),
    /// The host failed to set the process up: descriptors, memory, processes, I/O.
    Host(std::io::Error),
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Host(e)
    }
}

impl From<nix::errno::Errno> for StartError {
    fn from(e: nix::errno::Errno) -> Self {
        StartError::Host(e.into())
    }
}

/// A failed spawn: exec's verdict on the file is the image's; anything else (fork, the pipe
/// and descriptors set up around it, EMFILE, ENOMEM, EAGAIN) is the host's.
fn spawn_error(e: std::io::Error) -> StartError {
    use nix::errno::Errno;
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOEXEC | Errno::ELIBBAD | Errno::EINVAL) => StartError::Image(e),
        _ => StartError::Host(e),
    }
}

/// Starts `elf` as the firmware's core on `dev`'s register file.
fn start(dev: &Arc<Device>, elf: &[u8]) -> Result<Core, StartError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let image = nix::sys::memfd::memfd_create(c"accel-fw", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    std::fs::File::from(image.try_clone()?).write_all(elf)?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let (whole, window) = dev.bar0().core_fds();
    let mut maps = vec![
        FdMapping {
            parent_fd: whole.try_clone_to_owned()?,
            child_fd: 3,
        },
        FdMapping {
            parent_fd: theirs,
            child_fd: 5,
        },
    ];
    if let Some(w) = window {
        maps.push(FdMapping {
            parent_fd: w.try_clone_to_owned()?,
            child_fd: 4,
        });
    }
    // The memfd is executed by its /proc path: it is still open (close-on-exec) when the
    // kernel opens it.
    let mut cmd = Command::new(format!("/proc/self/fd/{}", image.as_raw_fd()));
    std::os::unix::process::CommandExt::arg0(&mut cmd, "accel-fw");
    cmd.fd_mappings(maps)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(spawn_error)?;
    drop(image);
    let d = dev.clone();
    let bus = match std::thread::Builder::new()
        .name("firmware-bus".into())
        .spawn(move || serve_bus(&d, ours))
    {
        Ok(b) => b,
        Err(e) => {
            // No bus, no core: it must not run on unserved.
            let _ = child.kill();
            let _ = child.wait();
            return Err(StartError::Host(e));
        }
    };
    Ok(Core {
        child,
        bus: Some(bus),
        stopped: false,
        dead: false,
    })
}

/// Applies the core's writes in order (a message carries a batch of 8-byte records);
/// answers a sync record once the earlier ones are done. Ends when the core's end closes (it
/// exited or was killed).
fn serve_bus(dev: &Device, bus: OwnedFd) {
    use nix::sys::socket::{recv, MsgFlags};
    let mut buf = [0u8; BUS_MESSAGE];
    let mut last = Instant::now();
    loop {
        // Right after traffic the next message (a sync, most often) is looked for without
        // sleeping: a wake-up costs more than the wait; after BUS_SPIN of quiet, block.
        let r = if last.elapsed() < BUS_SPIN {
            match recv(bus.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Err(nix::errno::Errno::EAGAIN) => {
                    std::hint::spin_loop();
                    continue;
                }
                r => r,
            }
        } else {
            nix::unistd::read(&bus, &mut buf)
        };
        let n = match r {
            Ok(n) if n > 0 => n,
            Ok(_) | Err(_) => return,
        };
        last = Instant::now();
        for r in buf[..n].chunks_exact(8) {
            let off = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            let val = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
            if off == SYNC {
                if nix::unistd::write(bus.as_fd(), r).is_err() {
                    return;
                }
            } else if pf::hardware_acts_on(off as usize) {
                dev.firmware_write32(off as usize, val);
            }
            // Anything else is not a bus transaction: dropped, as a bus drops a bad address.
        }
    }
}

fn ready(dev: &Device) -> bool {
    dev.bar0().observe32(pf::DEV_STATUS.offset()) & DevStatus::READY.bits() != 0
}

/// Boots the device from its flash and keeps its core running until `stop`: a reset
/// (`Device::take_fw_reset`) kills the core and boots again; stall injection stops and
/// continues the core's process.
pub fn spawn(
    dev: Arc<Device>,
    stop: Arc<AtomicBool>,
    report: Report,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("boot-stage".into())
        .spawn(move || run(&dev, &stop, &report))
}

fn run(dev: &Arc<Device>, stop: &AtomicBool, report: &Report) {
    let mut core: Option<(u8, Core)> = None;
    'boot: while !stop.load(Ordering::Acquire) {
        dev.take_fw_reset();
        if let Some((_, c)) = core.take() {
            c.kill();
        }
        dev.bar0().write32(pf::DEV_STATUS.offset(), 0);
        let chosen = dev.flash().map(|mut f| f.choose_boot());
        dev.publish_flash_slots();
        let (slot, img) = match chosen {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                report(&format!("cannot boot: {e}"));
                // Nothing to run: wait for a reset (a new image cannot arrive without one).
                wait_for_reset(dev, stop);
                continue;
            }
            None => {
                report("cannot boot: the device has no flash");
                return;
            }
        };
        let elf = &img[fw_image::PAYLOAD_OFFSET..];
        let c = match start(dev, elf) {
            Ok(c) => c,
            Err(StartError::Image(e)) => {
                report(&format!(
                    "cannot start the firmware from slot {}: {e}: slot marked bad",
                    slot_name(slot)
                ));
                fail(dev, slot);
                continue;
            }
            Err(StartError::Host(e)) => {
                report(&format!(
                    "cannot start the firmware from slot {}: {e} (a host error: the slot \
                     stays valid; a reset tries again)",
                    slot_name(slot)
                ));
                if let Some(mut f) = dev.flash() {
                    if let Err(e) = f.not_started(slot) {
                        report(&format!("flash: {e}"));
                    }
                }
                dev.publish_flash_slots();
                wait_for_reset(dev, stop);
                continue;
            }
        };
        let t = Instant::now();
        let mut c = c;
        loop {
            if stop.load(Ordering::Acquire) {
                c.kill();
                return;
            }
            if ready(dev) {
                break;
            }
            let exited = matches!(c.child.try_wait(), Ok(Some(_)));
            if exited || t.elapsed() > WATCHDOG {
                c.kill();
                report(&format!(
                    "firmware in slot {} {} before READY: slot marked bad",
                    slot_name(slot),
                    if exited { "exited" } else { "hung" }
                ));
                fail(dev, slot);
                continue 'boot;
            }
            std::thread::sleep(TICK);
        }
        if let Some(mut f) = dev.flash() {
            if let Err(e) = f.confirm(slot) {
                report(&format!("flash: {e}"));
            }
        }
        dev.publish_flash_slots();
        report(&format!(
            "firmware {} (build {:08x}) running from slot {}",
            fw_image::Version(dev.bar0().read32(pf::FW_VERSION.offset())),
            dev.bar0().read32(pf::FW_BUILD_ID.offset()),
            slot_name(slot)
        ));
        core = Some((slot, c));
        // Running: until a reset, or the end.
        while let Some((_, c)) = core.as_mut() {
            if stop.load(Ordering::Acquire) {
                if let Some((_, c)) = core.take() {
                    c.kill();
                }
                return;
            }
            if dev.take_fw_reset() {
                continue 'boot;
            }
            if !c.dead && matches!(c.child.try_wait(), Ok(Some(_))) {
                // The core is gone (killed, or it crashed without its panic handler): the
                // device says so, as a hardware watchdog would, until a reset boots it again.
                c.dead = true;
                let r = dev.bar0();
                if r.read32(pf::FAULT_CODE.offset()) == 0 {
                    r.write32(pf::FAULT_CODE.offset(), FaultCode::Watchdog.wire());
                }
                r.write32(
                    pf::DEV_STATUS.offset(),
                    (DevStatus::FAULT | DevStatus::HALTED).bits(),
                );
                report(&format!(
                    "firmware core from slot {} stopped: the device is halted until a reset",
                    slot_name(slot)
                ));
            }
            let stall = dev.firmware_stalled();
            if stall != c.stopped {
                let sig = if stall {
                    nix::sys::signal::Signal::SIGSTOP
                } else {
                    nix::sys::signal::Signal::SIGCONT
                };
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.child.id() as i32), sig);
                c.stopped = stall;
            }
            std::thread::sleep(TICK);
        }
    }
    if let Some((_, c)) = core.take() {
        c.kill();
    }
}

/// Until a reset is asked for (or the end).
fn wait_for_reset(dev: &Device, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) && !dev.take_fw_reset() {
        std::thread::sleep(TICK * 10);
    }
}

fn fail(dev: &Device, slot: u8) {
    if let Some(mut f) = dev.flash() {
        let _ = f.fail(slot);
    }
    dev.publish_flash_slots();
}
