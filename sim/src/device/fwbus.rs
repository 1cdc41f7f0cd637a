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
        let enforced = [pf::VF_BANKS, pf::TT_POOL, pf::QUEUES]
            .iter()
            .any(|w| w.contains(off as u64, 4));
        let _vu = enforced.then(|| lock(&self.vu));
        self.bar0.write32(off, val);
        if pf::QUEUES.contains(off as u64, 4)
            && (off - pf::QUEUES.start()) % regs::QUEUE_REGS_SIZE == queue::CONTROL.offset()
        {
            self.queue_control_written((off - pf::QUEUES.start()) / regs::QUEUE_REGS_SIZE);
        }
    }
}
