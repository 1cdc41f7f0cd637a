//! The freestanding firmware image for the simulated board (x86_64, no OS, no libc).
//!
//! Board contract: the boot stage starts the image with the device's PF BAR0 register file
//! open on file descriptor 3 (a shared-memory file), the host-mappable mailbox window on 4
//! (mapped over the same offsets), the hardware bus on 5 (a SOCK_SEQPACKET socket taking
//! 8-byte `offset, value` writes the hardware acts on, and a sync message answered once those
//! are done; see `board::BoardRegs`) and a log sink on descriptor 2. Descriptors 4 and 5 are
//! optional (a bare register file works alone). The image maps the register file, boots the
//! firmware and polls until its parent, the device model, goes. defmt frames (rzCOBS) go to
//! the log sink; the host decodes them with this ELF. A panic records `FaultCode::Panic` with
//! `HALTED` in the status register and stops the image.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

mod board;

use embedded_hal::delay::DelayNs;
use firmware::{Board, Firmware};
use shared_abi::pci::PF_BAR0_SIZE;

/// The idle policy (as the device model's linked-in core): spin this long after the last
/// command (the gaps inside one client's sequence of commands), then nap, then nap longer.
const SPIN_BEFORE_NAP_NS: u64 = 200_000;
const NAP_US: u32 = 100;
const QUIET_BEFORE_DEEP_NS: u64 = 50_000_000;
const DEEP_NAP_US: u32 = 1000;

extern "C" fn accel_main() -> ! {
    board::die_with_parent();
    // Mapped first, so that the log ring in it has every line.
    let Some(regs) = board::map_registers(PF_BAR0_SIZE as usize).map(board::BoardRegs::new) else {
        defmt::error!("no register file on fd 3");
        board::exit(2);
    };
    defmt::info!("accelvirt firmware image starting");
    let mut fw = match Firmware::new(regs, board::Uptime, Board::DEFAULT, board::build_id()) {
        Ok(fw) => fw,
        Err(code) => {
            defmt::error!("board rejected: fault {=u32}", code.wire());
            board::exit(3);
        }
    };
    fw.boot();
    let mut nap = board::Nap;
    let mut quiet_since: Option<u64> = None;
    let (mut polls, mut napping) = (0u32, false);
    loop {
        let busy = fw.poll();
        // What the poll posted (an interrupt, bank writes) reaches the hardware now.
        fw.regs().flush();
        if busy {
            quiet_since = None;
            continue;
        }
        // The clock is read every 64th idle poll while spinning, before every nap after.
        polls = polls.wrapping_add(1);
        let Some(since) = quiet_since else {
            quiet_since = Some(board::monotonic_ns());
            napping = false;
            continue;
        };
        if !napping && !polls.is_multiple_of(64) {
            continue;
        }
        let quiet = board::monotonic_ns().saturating_sub(since);
        if quiet >= QUIET_BEFORE_DEEP_NS {
            nap.delay_us(DEEP_NAP_US);
        } else if quiet >= SPIN_BEFORE_NAP_NS {
            napping = true;
            nap.delay_us(NAP_US);
        }
    }
}
