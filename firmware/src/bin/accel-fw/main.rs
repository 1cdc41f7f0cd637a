//! The freestanding firmware image for the simulated board (x86_64, no OS, no libc).
//!
//! Board contract: the loader starts the image with the device's PF BAR0 register file open
//! on file descriptor 3 (a shared-memory file) and a log sink on descriptor 2. The image maps
//! the register file, boots the firmware and polls forever. defmt frames (rzCOBS) go to the
//! log sink; the host decodes them with this ELF. A panic records `FaultCode::Panic` with
//! `HALTED` in the status register and stops the image.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

mod board;

use embedded_hal::delay::DelayNs;
use firmware::{Board, Firmware};
use shared_abi::pci::PF_BAR0_SIZE;

/// Polls without a command before the image naps (keeps an idle device off the CPU).
const IDLE_POLLS: u32 = 256;

extern "C" fn accel_main() -> ! {
    defmt::info!("accelvirt firmware image starting");
    let Some(regs) = board::map_registers(PF_BAR0_SIZE as usize) else {
        defmt::error!("no register file on fd 3");
        board::exit(2);
    };
    let mut fw = match Firmware::new(regs, board::Uptime, Board::DEFAULT, board::build_id()) {
        Ok(fw) => fw,
        Err(code) => {
            defmt::error!("board rejected: fault {=u32}", code.wire());
            board::exit(3);
        }
    };
    fw.boot();
    let mut nap = board::Nap;
    let mut idle = 0u32;
    loop {
        if fw.poll() {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
            if idle > IDLE_POLLS {
                nap.delay_us(50);
            }
        }
    }
}
