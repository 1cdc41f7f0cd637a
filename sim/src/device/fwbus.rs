//! What the firmware's own register writes set off, as the bus delivers them.

use super::*;

impl Device {
    /// The memory scrubber: zero granules, then report done (or error, out of range).
    pub fn scrub(&self, base: u32, count: u32) -> bool {
        lock(&self.devmem).scrub(base, count)
    }

    /// Handles a firmware write with a hardware side effect. Returns true if consumed.
    pub fn firmware_side_effect(&self, off: usize, val: u32) -> bool {
        if off == pf::SCRUB_CTRL.offset() && val & ScrubCtrl::GO.bits() != 0 {
            let base = self.bar0.read32(pf::SCRUB_BASE.offset());
            let count = self.bar0.read32(pf::SCRUB_COUNT.offset());
            let ok = !self.scrub_fails.load(Ordering::Acquire) && self.scrub(base, count);
            let st = if ok {
                ScrubCtrl::DONE
            } else {
                ScrubCtrl::DONE | ScrubCtrl::ERROR
            };
            self.bar0.write32(off, st.bits());
            return true;
        }
        if off == pf::FLASH_CMD.offset() {
            let st = self.flash_command(val);
            self.bar0.write32(pf::FLASH_STATUS.offset(), st);
            return true;
        }
        if off == pf::IRQ_RAISE.offset() {
            let _ = self.fire_msix(Func::Pf, val, 1);
            return true;
        }
        if off == pf::VF_IRQ_RAISE.offset() {
            let (v, vec) = ((val >> 16) as u16, val & 0xFFFF);
            if vec < self.bank(v, vf_bank::VECTOR_COUNT) {
                let _ = self.fire_msix(Func::Vf(v), vec, 1);
            }
            return true;
        }
        false
    }

    /// A firmware write to the register file, as the bus delivers it: hardware side effects
    /// first; writes to what the virtualization unit enforces are ordered with VF accesses.
    pub fn firmware_write32(&self, off: usize, val: u32) {
        if self.firmware_side_effect(off, val) {
            return;
        }
        let _vu = pf::hardware_acts_on(off).then(|| vu_exclusive(&self.vu));
        self.bar0.write32(off, val);
        if pf::QUEUES.contains(off as u64, 4)
            && (off - pf::QUEUES.start()) % regs::QUEUE_REGS_SIZE == queue::CONTROL.offset()
        {
            self.queue_control_written((off - pf::QUEUES.start()) / regs::QUEUE_REGS_SIZE);
        }
    }
}

impl Device {
    /// Gives the device its flash (a device that boots from flash); the boot stage and the
    /// flash controller share it.
    pub fn attach_flash(&self, flash: crate::flash::Flash) -> bool {
        let ok = self.flash.set(Mutex::new(flash)).is_ok();
        self.publish_flash_slots();
        ok
    }

    /// The flash, if the device has one.
    pub fn flash(&self) -> Option<MutexGuard<'_, crate::flash::Flash>> {
        self.flash.get().map(lock)
    }

    /// Mirrors the slots and the running slot into the registers the firmware reads.
    pub fn publish_flash_slots(&self) {
        let Some(f) = self.flash() else {
            return;
        };
        let slots = f.slots();
        let running = f.running().map_or(0, |s| regs::FLASH_BOOTED | s as u32);
        drop(f);
        self.bar0.write(
            pf::FLASH_SLOTS.start(),
            zerocopy::IntoBytes::as_bytes(&slots),
        );
        self.bar0.write32(pf::FLASH_RUNNING.offset(), running);
    }

    /// The flash controller: runs `cmd` with the arguments in FLASH_ARG0..2.
    fn flash_command(&self, cmd: u32) -> u32 {
        use regs::{flash_result, FlashCmd};
        let Some(mut f) = self.flash() else {
            return flash_result::NO_FLASH;
        };
        let arg = |r: regs::Reg| self.bar0.read32(r.offset());
        let (a0, a1, a2) = (
            arg(pf::FLASH_ARG0),
            arg(pf::FLASH_ARG1),
            arg(pf::FLASH_ARG2),
        );
        let r = match FlashCmd::from_wire(cmd) {
            None => Err(flash_result::BAD_COMMAND),
            Some(FlashCmd::Erase) => f.erase(a0),
            Some(FlashCmd::Write) => {
                if a2 > pf::FLASH_BUF.len {
                    Err(flash_result::BAD_RANGE)
                } else {
                    let mut buf = vec![0u8; a2 as usize];
                    self.bar0.read(pf::FLASH_BUF.start(), &mut buf);
                    f.write(a0, a1, &buf)
                }
            }
            Some(FlashCmd::Commit) => f.commit(a0, a1 & 1 != 0, a2),
            Some(FlashCmd::Activate) => f.activate(a0),
        };
        drop(f);
        self.publish_flash_slots();
        r.err().unwrap_or(flash_result::OK)
    }
}
