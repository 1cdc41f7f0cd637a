//! VF slots and their lifecycle: the firmware's books of who holds what.
//!
//! ```text
//!   free ──create──▶ configured ◀──SR-IOV disable── enabled
//!    ▲                   │ └───────SR-IOV enable────────▲ │
//!    └────destroy────────┴───────────────────────────────┘ │
//!                     enabled/configured ──reset──▶ resetting ──done──▶ (previous)
//! ```
//! All mutations are all-or-nothing: they work on a copy and commit only on success.

use crate::alloc::{Allocation, Pool, Want};
use heapless::Vec;
use shared_abi::board::Board;
use shared_abi::mailbox::Status;
use shared_abi::pci::MAX_VFS;
use shared_abi::resources::{VfState, DEFAULT_WEIGHT, MAX_WEIGHT};

/// One VF slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Lifecycle state.
    pub state: VfState,
    /// Resources held.
    pub alloc: Allocation,
    /// Scheduler weight.
    pub weight: u16,
    /// Bumped on every change of the slot.
    pub generation: u32,
}

impl Slot {
    /// An unused slot.
    pub const FREE: Slot = Slot {
        state: VfState::Free,
        alloc: Allocation::ZERO,
        weight: 0,
        generation: 0,
    };
}

impl Allocation {
    /// Nothing.
    pub const ZERO: Allocation = Allocation {
        engines: 0,
        mem: crate::alloc::Run { base: 0, len: 0 },
        queues: crate::alloc::Run { base: 0, len: 0 },
        vectors: crate::alloc::Run { base: 0, len: 0 },
    };
}

/// A VF's request in the firmware's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Resources.
    pub want: Want,
    /// Weight, 0 = default (create) or unchanged (resize).
    pub weight: u16,
}

/// The allocator plus every VF slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Books {
    pool: Pool,
    slots: [Slot; MAX_VFS],
    total_vfs: u16,
    visible: u16,
}

/// Indices of the VFs a command touched.
pub type VfList = Vec<u16, MAX_VFS>;

fn weight_ok(w: u16) -> bool {
    (1..=MAX_WEIGHT).contains(&w)
}

impl Books {
    /// Empty books for `board`.
    pub fn new(board: &Board) -> Self {
        Books {
            pool: Pool::new(board),
            slots: [Slot::FREE; MAX_VFS],
            total_vfs: board.total_vfs,
            visible: 0,
        }
    }

    /// The free pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Slot `i`; out of range reads as free.
    pub fn slot(&self, i: usize) -> &Slot {
        self.slots.get(i).unwrap_or(&Slot::FREE)
    }

    /// TotalVFs.
    pub fn total_vfs(&self) -> u16 {
        self.total_vfs
    }

    /// Slots in use.
    pub fn in_use(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state != VfState::Free)
            .count()
    }

    /// Slot `vf` if it exists and holds resources.
    pub fn live(&self, vf: u16) -> Result<&Slot, Status> {
        if vf >= self.total_vfs {
            return Err(Status::InvalidVf);
        }
        let s = self.slot(vf as usize);
        if s.state == VfState::Free {
            Err(Status::InvalidVf)
        } else {
            Ok(s)
        }
    }

    fn resting_state(&self, vf: usize) -> VfState {
        if vf < self.visible as usize {
            VfState::Enabled
        } else {
            VfState::Configured
        }
    }

    /// Creates VFs in the lowest free slots, `reqs(i)` sizing the i-th. All or nothing.
    pub fn create(
        &mut self,
        count: u16,
        reqs: impl Fn(usize) -> Request,
    ) -> Result<VfList, Status> {
        if count == 0 {
            return Err(Status::InvalidArgument);
        }
        if count > self.total_vfs {
            return Err(Status::TooManyVfs);
        }
        let mut trial = *self;
        let mut made = VfList::new();
        let mut slot = 0usize;
        for i in 0..count as usize {
            while slot < self.total_vfs as usize && trial.slots[slot].state != VfState::Free {
                slot += 1;
            }
            if slot >= self.total_vfs as usize {
                return Err(Status::TooManyVfs);
            }
            let r = reqs(i);
            let weight = if r.weight == 0 {
                DEFAULT_WEIGHT
            } else {
                r.weight
            };
            if !weight_ok(weight) {
                return Err(Status::InvalidArgument);
            }
            let alloc = trial.pool.allocate(r.want)?;
            trial.slots[slot] = Slot {
                state: trial.resting_state(slot),
                alloc,
                weight,
                generation: self.slots[slot].generation.wrapping_add(1),
            };
            made.push(slot as u16).map_err(|_| Status::Internal)?;
            slot += 1;
        }
        *self = trial;
        Ok(made)
    }

    /// Frees a VF's resources; returns what it held (to be scrubbed).
    pub fn destroy(&mut self, vf: u16) -> Result<Allocation, Status> {
        let s = *self.live(vf)?;
        if s.state == VfState::Resetting {
            return Err(Status::InvalidState);
        }
        self.pool.release(&s.alloc);
        self.slots[vf as usize] = Slot {
            generation: s.generation.wrapping_add(1),
            ..Slot::FREE
        };
        Ok(s.alloc)
    }

    /// Resizes a live VF in place. Returns (old, new) allocations.
    pub fn resize(&mut self, vf: u16, r: Request) -> Result<(Allocation, Allocation), Status> {
        let s = *self.live(vf)?;
        if s.state == VfState::Resetting {
            return Err(Status::InvalidState);
        }
        let weight = if r.weight == 0 { s.weight } else { r.weight };
        if !weight_ok(weight) {
            return Err(Status::InvalidArgument);
        }
        let new = self.pool.resize(&s.alloc, r.want)?;
        let slot = &mut self.slots[vf as usize];
        slot.alloc = new;
        slot.weight = weight;
        slot.generation = slot.generation.wrapping_add(1);
        Ok((s.alloc, new))
    }

    /// Sets a live VF's weight.
    pub fn set_weight(&mut self, vf: u16, weight: u16) -> Result<(), Status> {
        self.live(vf)?;
        if !weight_ok(weight) {
            return Err(Status::InvalidArgument);
        }
        // The generation stays: a weight grants nothing and takes nothing away, and the
        // device stops a VF's running jobs when its generation moves.
        self.slots[vf as usize].weight = weight;
        Ok(())
    }

    /// Moves a live VF into `Resetting`.
    pub fn begin_reset(&mut self, vf: u16) -> Result<Allocation, Status> {
        let s = *self.live(vf)?;
        if s.state == VfState::Resetting {
            return Err(Status::InvalidState);
        }
        let slot = &mut self.slots[vf as usize];
        slot.state = VfState::Resetting;
        slot.generation = slot.generation.wrapping_add(1);
        Ok(s.alloc)
    }

    /// Ends a reset: the VF returns to configured or enabled.
    pub fn end_reset(&mut self, vf: u16) {
        let state = self.resting_state(vf as usize);
        if let Some(slot) = self.slots.get_mut(vf as usize) {
            if slot.state == VfState::Resetting {
                slot.state = state;
                slot.generation = slot.generation.wrapping_add(1);
            }
        }
    }

    /// Records that SR-IOV now shows `n` VFs; returns which slots changed state.
    pub fn set_visible(&mut self, n: u16) -> [bool; MAX_VFS] {
        self.visible = n.min(self.total_vfs);
        let mut changed = [false; MAX_VFS];
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let want = if i < self.visible as usize {
                VfState::Enabled
            } else {
                VfState::Configured
            };
            if matches!(slot.state, VfState::Configured | VfState::Enabled) && slot.state != want {
                slot.state = want;
                slot.generation = slot.generation.wrapping_add(1);
                changed[i] = true;
            }
        }
        changed
    }

    /// VFs SR-IOV currently shows.
    pub fn visible(&self) -> u16 {
        self.visible
    }

    /// Checks the books against themselves: every used unit is held by exactly one VF and
    /// every free unit by none. Used by tests and the firmware self-check.
    pub fn audit(&self, board: &Board) -> Result<(), &'static str> {
        let mut fresh = Pool::new(board);
        for s in self.slots.iter().filter(|s| s.state != VfState::Free) {
            fresh
                .take(&s.alloc)
                .map_err(|_| "a unit is held twice or lies outside the board")?;
        }
        if fresh != self.pool {
            return Err("pool disagrees with slots (leak or double free)");
        }
        Ok(())
    }
}
