//! Programming the virtualization unit: per-VF banks, the translation pool, queue ownership,
//! and the memory scrubber. This module is the only writer of those registers; the hardware
//! enforces whatever it finds there.

use crate::alloc::Run;
use crate::hal::Regs;
use crate::vf::Slot;
use shared_abi::board::Board;
use shared_abi::mailbox::FaultCode;
use shared_abi::regs::{pf, queue, vf_bank, QueueAccess, ScrubCtrl, TtEntry};
use shared_abi::resources::VfState;

/// Polls of `SCRUB_CTRL` before the scrubber is declared hung.
const SCRUB_POLLS: u32 = 1 << 20;

fn bank(vf: usize, r: shared_abi::regs::Reg) -> usize {
    r.at(pf::vf_bank(vf))
}

/// The register values a slot programs, in [`vf_bank::PROGRAMMED`] order.
pub fn expected(slot: &Slot) -> [u32; 12] {
    let a = &slot.alloc;
    [
        slot.state as u32,
        a.engines,
        a.mem.base,
        a.mem.len,
        a.mem.base,
        a.mem.len,
        a.queues.base,
        a.queues.len,
        a.vectors.base,
        a.vectors.len,
        slot.weight as u32,
        slot.generation,
    ]
}

/// Writes a slot into VF `vf`'s bank, its translation entries and queue ownership. Resources
/// are published before the state, so hardware never enables a half-programmed VF.
pub fn program(r: &impl Regs, _board: &Board, vf: usize, slot: &Slot) {
    let vals = expected(slot);
    for (reg, val) in vf_bank::PROGRAMMED.iter().zip(vals).skip(1) {
        r.write32(bank(vf, *reg), val);
    }
    let a = &slot.alloc;
    // VF-local granule i is translated through entry TT_BASE + i.
    for i in 0..a.mem.len {
        r.write32(
            pf::tt_entry((a.mem.base + i) as usize),
            TtEntry::map(a.mem.base + i).0,
        );
    }
    for q in a.queues.base..a.queues.end() {
        r.write32(queue::OWNER.at(pf::queue(q as usize)), vf as u32 + 1);
    }
    r.write32(bank(vf, vf_bank::STATE), slot.state as u32);
}

/// Publishes only a new state (and generation) for a VF.
pub fn set_state(r: &impl Regs, vf: usize, slot: &Slot) {
    r.write32(bank(vf, vf_bank::GENERATION), slot.generation);
    r.write32(bank(vf, vf_bank::STATE), slot.state as u32);
}

/// Withdraws the units of `old` that `new` no longer holds: the state goes first when
/// everything is withdrawn, translation entries and queue ownership are revoked, released
/// queues are cleared and released memory is scrubbed.
pub fn withdraw(r: &impl Regs, vf: usize, old: &Run3, new: &Run3) -> Result<(), FaultCode> {
    if new.mem.len == 0 {
        r.write32(bank(vf, vf_bank::STATE), VfState::Free as u32);
    }
    for g in old.mem.base..old.mem.end() {
        if !contains(&new.mem, g) {
            r.write32(pf::tt_entry(g as usize), TtEntry::INVALID.0);
        }
    }
    // Ownership goes before the registers are cleared: once OWNER is 0 the hardware refuses
    // the VF's accesses, so nothing it writes can land after the clear.
    for q in old.queues.base..old.queues.end() {
        if !contains(&new.queues, q) {
            r.write32(queue::OWNER.at(pf::queue(q as usize)), 0);
            clear_queue(r, q as usize);
        }
    }
    // Scrub the released tail (or all of it): the next owner must never see old data.
    let keep_end = if new.mem.len == 0 {
        old.mem.base
    } else {
        new.mem.end()
    };
    if old.mem.end() > keep_end {
        scrub(
            r,
            Run {
                base: keep_end,
                len: old.mem.end() - keep_end,
            },
        )?;
    }
    Ok(())
}

/// The runs an allocation holds, for [`withdraw`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Run3 {
    /// Memory.
    pub mem: Run,
    /// Queues.
    pub queues: Run,
}

impl From<&crate::alloc::Allocation> for Run3 {
    fn from(a: &crate::alloc::Allocation) -> Self {
        Run3 {
            mem: a.mem,
            queues: a.queues,
        }
    }
}

fn contains(run: &Run, unit: u32) -> bool {
    unit >= run.base && unit < run.end()
}

/// Clears a whole bank (state first), including the hardware-maintained counters.
pub fn clear(r: &impl Regs, vf: usize) {
    r.write32(bank(vf, vf_bank::STATE), VfState::Free as u32);
    for off in (4..shared_abi::regs::VF_BANK_SIZE).step_by(4) {
        r.write32(pf::vf_bank(vf) + off, 0);
    }
}

/// Zeroes a queue's driver-visible registers (used by FLR and on release).
pub fn clear_queue(r: &impl Regs, q: usize) {
    for spec in queue::MAP {
        if spec.access != QueueAccess::DeviceOnly {
            r.write32(spec.reg.at(pf::queue(q)), 0);
        }
    }
}

/// Resets every bank, translation entry and queue: the state after boot.
pub fn clear_all(r: &impl Regs, board: &Board) {
    for vf in 0..shared_abi::pci::MAX_VFS {
        clear(r, vf);
        r.write32(pf::vf_hw_status(vf), 0);
    }
    for i in 0..board.mem_granules as usize {
        r.write32(pf::tt_entry(i), TtEntry::INVALID.0);
    }
    for q in 0..board.queues as usize {
        clear_queue(r, q);
        r.write32(queue::OWNER.at(pf::queue(q)), 0);
    }
}

/// Zeroes device memory granules through the scrubber and waits (bounded) for it.
pub fn scrub(r: &impl Regs, run: Run) -> Result<(), FaultCode> {
    if run.len == 0 {
        return Ok(());
    }
    r.write32(pf::SCRUB_BASE.offset(), run.base);
    r.write32(pf::SCRUB_COUNT.offset(), run.len);
    r.write32(pf::SCRUB_CTRL.offset(), ScrubCtrl::GO.bits());
    for _ in 0..SCRUB_POLLS {
        let c = ScrubCtrl::from_bits_retain(r.read32(pf::SCRUB_CTRL.offset()));
        if c.contains(ScrubCtrl::DONE) {
            return if c.contains(ScrubCtrl::ERROR) {
                Err(FaultCode::ScrubTimeout)
            } else {
                Ok(())
            };
        }
    }
    Err(FaultCode::ScrubTimeout)
}

/// Whether VF `vf`'s bank, translation entries and queue ownership show exactly `slot`.
pub fn matches(r: &impl Regs, vf: usize, slot: &Slot) -> bool {
    // Read back by register name, field by field, independently of `expected()`: a wrong
    // mapping there would otherwise be written and then confirmed by the same mistake.
    let reg = |x: shared_abi::regs::Reg| r.read32(bank(vf, x));
    let a = &slot.alloc;
    let free = slot.state == VfState::Free;
    let z = |v: u32| if free { 0 } else { v };
    let bank_ok = reg(vf_bank::STATE) == slot.state as u32
        && reg(vf_bank::ENGINE_MASK) == z(a.engines)
        && reg(vf_bank::MEM_BASE) == z(a.mem.base)
        && reg(vf_bank::MEM_GRANULES) == z(a.mem.len)
        && reg(vf_bank::TT_BASE) == z(a.mem.base)
        && reg(vf_bank::TT_LEN) == z(a.mem.len)
        && reg(vf_bank::QUEUE_BASE) == z(a.queues.base)
        && reg(vf_bank::QUEUE_COUNT) == z(a.queues.len)
        && reg(vf_bank::VECTOR_BASE) == z(a.vectors.base)
        && reg(vf_bank::VECTOR_COUNT) == z(a.vectors.len)
        && reg(vf_bank::QOS_WEIGHT) == z(slot.weight as u32)
        && (free || reg(vf_bank::GENERATION) == slot.generation);
    bank_ok
        && (a.mem.base..a.mem.end())
            .all(|g| r.read32(pf::tt_entry(g as usize)) == TtEntry::map(g).0)
        && (a.queues.base..a.queues.end())
            .all(|q| r.read32(queue::OWNER.at(pf::queue(q as usize))) == vf as u32 + 1)
}

/// Whether every translation entry and queue owner not held by a live VF is clear.
pub fn unowned_clear(r: &impl Regs, board: &Board, books: &crate::vf::Books) -> bool {
    let pool = books.pool();
    (0..board.mem_granules as usize)
        .filter(|&g| !pool.mem().is_used(g))
        .all(|g| r.read32(pf::tt_entry(g)) == TtEntry::INVALID.0)
        && (0..board.queues as usize)
            .filter(|&q| !pool.queues().is_used(q))
            .all(|q| r.read32(queue::OWNER.at(pf::queue(q))) == 0)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::ram::RamRegs;
    use core::cell::RefCell;
    use std::vec::Vec;

    /// Records the offsets written, in order.
    struct Recorder(RamRegs, RefCell<Vec<usize>>);
    impl Regs for Recorder {
        fn read32(&self, off: usize) -> u32 {
            self.0.read32(off)
        }
        fn write32(&self, off: usize, val: u32) {
            self.1.borrow_mut().push(off);
            self.0.write32(off, val);
        }
    }

    #[test]
    fn program_writes_each_resource_to_the_register_the_abi_names() {
        use crate::alloc::Allocation;
        let r = RamRegs::new();
        let slot = Slot {
            state: VfState::Configured,
            alloc: Allocation {
                engines: 0xA,
                mem: Run { base: 3, len: 5 },
                queues: Run { base: 7, len: 2 },
                vectors: Run { base: 11, len: 4 },
            },
            weight: 300,
            generation: 9,
        };
        program(&r, &Board::DEFAULT, 2, &slot);
        let reg = |x: shared_abi::regs::Reg| r.read32(bank(2, x));
        assert_eq!(reg(vf_bank::STATE), VfState::Configured as u32);
        assert_eq!(reg(vf_bank::ENGINE_MASK), 0xA);
        assert_eq!((reg(vf_bank::MEM_BASE), reg(vf_bank::MEM_GRANULES)), (3, 5));
        assert_eq!((reg(vf_bank::TT_BASE), reg(vf_bank::TT_LEN)), (3, 5));
        assert_eq!(
            (reg(vf_bank::QUEUE_BASE), reg(vf_bank::QUEUE_COUNT)),
            (7, 2)
        );
        assert_eq!(
            (reg(vf_bank::VECTOR_BASE), reg(vf_bank::VECTOR_COUNT)),
            (11, 4)
        );
        assert_eq!(
            (reg(vf_bank::QOS_WEIGHT), reg(vf_bank::GENERATION)),
            (300, 9)
        );
        assert_eq!(r.read32(pf::tt_entry(7)), TtEntry::map(7).0);
        assert_eq!(r.read32(queue::OWNER.at(pf::queue(8))), 3);
        assert!(matches(&r, 2, &slot));
        // The self-check sees a bank that disagrees, whichever register it is.
        for x in [vf_bank::TT_BASE, vf_bank::VECTOR_COUNT, vf_bank::QOS_WEIGHT] {
            let keep = reg(x);
            r.write32(bank(2, x), keep + 1);
            assert!(!matches(&r, 2, &slot), "{x:?}");
            r.write32(bank(2, x), keep);
        }
    }

    #[test]
    fn a_released_queue_loses_its_owner_before_its_registers_are_cleared() {
        let r = Recorder(RamRegs::new(), RefCell::new(Vec::new()));
        let old = Run3 {
            mem: Run::default(),
            queues: Run { base: 4, len: 2 },
        };
        let new = Run3 {
            mem: Run::default(),
            queues: Run { base: 4, len: 1 },
        };
        withdraw(&r, 0, &old, &new).unwrap();
        let w = r.1.borrow();
        let owner = w.iter().position(|&o| o == queue::OWNER.at(pf::queue(5)));
        let first_clear = w.iter().position(|&o| {
            o >= pf::queue(5) && o < pf::queue(6) && o != queue::OWNER.at(pf::queue(5))
        });
        assert!(owner.is_some() && first_clear.is_some(), "{w:x?}");
        assert!(owner < first_clear, "OWNER first: {w:x?}");
        assert!(
            !w.iter().any(|&o| o >= pf::queue(4) && o < pf::queue(5)),
            "the kept queue is not touched"
        );
    }
}
