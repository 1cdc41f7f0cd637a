//! # accelvirt firmware
//!
//! The device end of the management plane. It polls the PF mailbox (no interrupt needed),
//! validates each command, allocates the accelerator's engines, device memory, queues and MSI-X
//! vectors, and programs the per-VF register banks of the virtualization unit that carve the
//! device into VFs. It also follows SR-IOV enable and VF function level resets.
//!
//! `no_std`, no heap, bounded loops, no panics on any input. Register access goes through
//! [`hal::Regs`]: [`mmio::Mmio`] on hardware, the device model's register file in `sim`,
//! [`ram::RamRegs`] in host tests. The path of a command reads top to bottom:
//! [`mailbox`] → [`commands`] → [`alloc`] → [`banks`].
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod fmt;

pub mod alloc;
pub mod banks;
pub mod commands;
pub mod events;
pub mod hal;
pub mod logger;
pub mod mailbox;
pub mod mmio;
pub mod ram;
pub mod update;
pub mod vf;

pub use hal::{Clock, Regs};
pub use shared_abi::board::Board;

use shared_abi::mailbox::FaultCode;
use shared_abi::regs::{pf, DevCaps, DevStatus, SriovCtrl, VfHwStatus};

/// Firmware version: major.minor.patch packed as in `pf::FW_VERSION`. An image build may set
/// it with `ACCEL_FW_VERSION=X.Y.Z` (`cargo xtask image --version`), so that its header and
/// the running firmware's register agree; a malformed one fails the build.
pub const FW_VERSION: u32 = match option_env!("ACCEL_FW_VERSION") {
    Some(v) => match shared_abi::image::parse_version(v.as_bytes()) {
        Some(w) => w,
        None => panic!("ACCEL_FW_VERSION: X.Y.Z"),
    },
    None => shared_abi::image::version_word(0, 1, 0),
};

/// What this board supports. EVENTS: acceld consumes the event ring.
pub const CAPS: DevCaps = DevCaps::SRIOV
    .union(DevCaps::EVENTS)
    .union(DevCaps::LIVE_RESIZE)
    .union(DevCaps::QOS)
    .union(DevCaps::DATA_PATH)
    .union(DevCaps::TRANSLATION);

/// Records a fault: `FAULT_CODE`, `DEV_STATUS.FAULT`, and a firmware-fault event.
pub(crate) fn record_fault(r: &impl Regs, events: &mut events::EventRing, code: FaultCode) {
    error!("fault {=u32}", code.wire());
    r.write32(pf::FAULT_CODE.offset(), code.wire());
    let st = r.read32(pf::DEV_STATUS.offset()) | DevStatus::FAULT.bits();
    r.write32(pf::DEV_STATUS.offset(), st);
    events.post(
        r,
        shared_abi::events::EventKind::FwFault,
        shared_abi::events::DEVICE,
        code.wire(),
        0,
    );
}

/// Counters kept by the firmware.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Commands executed.
    pub commands: u64,
    /// Commands answered with an error.
    pub errors: u64,
    /// Retries answered from the replay cache.
    pub replays: u64,
    /// VFs created.
    pub vfs_created: u32,
    /// VFs destroyed.
    pub vfs_destroyed: u32,
    /// FLRs handled.
    pub flrs: u32,
}

/// The firmware: state plus the hardware it drives.
#[derive(Debug, Clone)]
pub struct Firmware<R: Regs, C: Clock> {
    regs: R,
    clock: C,
    board: Board,
    books: vf::Books,
    mbox: mailbox::Mailbox,
    events: events::EventRing,
    sriov: SriovCtrl,
    counters: Counters,
    heartbeat: u32,
    build_id: u32,
    /// The holder of the mailbox lock as last seen, and since when (its lease).
    lease: Option<(u32, u64)>,
    leases_expired: u32,
    /// The `FLR_SEQ` value whose FLRs have been handled.
    flr_seen: u32,
    /// VF faults as last reported in events.
    faults: FaultReports,
    /// The firmware download in progress (lost with a reset, as RAM is).
    download: Option<update::Download>,
}

/// The least time between two VF_FAULT events of one VF.
pub const FAULT_EVENT_MS: u64 = 100;

/// What the firmware last told the host about each VF's faults.
#[derive(Clone, Copy, Debug)]
struct FaultReports {
    /// The `FAULT_SEQ` value looked at last.
    seen: u32,
    /// A count moved that the rate limit held back.
    held: bool,
    /// Each VF's fault count as last reported.
    reported: [u32; shared_abi::pci::MAX_VFS],
    /// When each VF may be reported again (firmware ms).
    next_ms: [u64; shared_abi::pci::MAX_VFS],
}

impl FaultReports {
    const fn new() -> Self {
        FaultReports {
            seen: 0,
            held: false,
            reported: [0; shared_abi::pci::MAX_VFS],
            next_ms: [0; shared_abi::pci::MAX_VFS],
        }
    }
}

/// How long a holder may keep the mailbox lock without sending a command.
pub const LEASE_MS: u32 = 1000;

impl<R: Regs, C: Clock> Firmware<R, C> {
    /// Builds the firmware for `board`. An invalid board is reported as a fault in the status
    /// registers and returned as an error.
    pub fn new(regs: R, clock: C, board: Board, build_id: u32) -> Result<Self, FaultCode> {
        if board.validate().is_err() {
            regs.write32(pf::FAULT_CODE.offset(), FaultCode::BadBoard.wire());
            regs.write32(pf::DEV_STATUS.offset(), DevStatus::FAULT.bits());
            return Err(FaultCode::BadBoard);
        }
        Ok(Firmware {
            regs,
            clock,
            board,
            books: vf::Books::new(&board),
            mbox: mailbox::Mailbox::new(),
            events: events::EventRing::new(),
            sriov: SriovCtrl::empty(),
            counters: Counters::default(),
            heartbeat: 0,
            build_id,
            lease: None,
            leases_expired: 0,
            flr_seen: 0,
            faults: FaultReports::new(),
            download: None,
        })
    }

    /// Brings the device to a known state and announces readiness: identity registers,
    /// all banks, translation entries and queues cleared, mailbox idle, `READY` set.
    pub fn boot(&mut self) {
        let r = &self.regs;
        r.write32(pf::DEV_STATUS.offset(), 0);
        r.write32(pf::MAGIC.offset(), shared_abi::regs::PF_MAGIC);
        r.write32(pf::ABI_VERSION.offset(), shared_abi::abi_version_word());
        r.write32(pf::FW_VERSION.offset(), FW_VERSION);
        // Updates only where there is a flash controller and the image came from its flash.
        let caps = match update::running_slot(r) {
            Some(_) => CAPS | DevCaps::FW_UPDATE,
            None => CAPS,
        };
        r.write32(pf::CAPS.offset(), caps.bits());
        self.download = None;
        r.write32(pf::FW_BUILD_ID.offset(), self.build_id);
        r.write32(pf::FAULT_CODE.offset(), FaultCode::None.wire());
        r.write32(pf::BOARD_ENGINES.offset(), self.board.engines as u32);
        r.write32(pf::BOARD_MEM_GRANULES.offset(), self.board.mem_granules);
        r.write32(
            pf::BOARD_GRANULE_SHIFT.offset(),
            self.board.granule_shift as u32,
        );
        r.write32(pf::BOARD_QUEUES.offset(), self.board.queues as u32);
        r.write32(pf::BOARD_VECTORS.offset(), self.board.vectors as u32);
        r.write32(pf::BOARD_TOTAL_VFS.offset(), self.board.total_vfs as u32);
        r.write32(pf::MBOX_LEASE_MS.offset(), LEASE_MS);
        r.write32(pf::MBOX_LEASES_EXPIRED.offset(), self.leases_expired);
        banks::clear_all(r, &self.board);
        self.mbox.boot(r);
        self.events.boot(r);
        self.sriov = SriovCtrl::from_bits_retain(r.read32(pf::SRIOV_CTRL.offset()));
        // Look at every VF word on the first poll, whatever happened before this boot.
        self.flr_seen = !r.read32(pf::FLR_SEQ.offset());
        self.faults = FaultReports::new();
        self.faults.seen = r.read32(pf::FAULT_SEQ.offset());
        // READY hands the whole register file over to the host (shared_abi::ordering).
        r.publish32(pf::DEV_STATUS.offset(), DevStatus::READY.bits());
        self.events.post(
            r,
            shared_abi::events::EventKind::FwReady,
            shared_abi::events::DEVICE,
            FW_VERSION,
            0,
        );
        info!(
            "firmware {=u8}.{=u8}.{=u16} ready: {=u8} engines, {=u32} granules",
            (FW_VERSION >> 24) as u8,
            (FW_VERSION >> 16) as u8,
            FW_VERSION as u16,
            self.board.engines,
            self.board.mem_granules
        );
    }

    /// One iteration of the main loop: heartbeat, SR-IOV state, pending FLRs, the mailbox.
    /// Returns whether a mailbox command was handled.
    pub fn poll(&mut self) -> bool {
        self.heartbeat = self.heartbeat.wrapping_add(1);
        self.regs.write32(pf::HEARTBEAT.offset(), self.heartbeat);
        self.sync_sriov();
        self.handle_flrs();
        self.report_faults();
        self.check_lease();
        if !mailbox::pending(self) {
            return false;
        }
        let handled = mailbox::poll(self);
        // Answer first, check later (and only when the books moved): a self-check failure
        // becomes a fault, not a hang.
        if self.mbox.take_books_changed() && self.check_consistency().is_err() {
            self.fault(FaultCode::Inconsistent);
        }
        if handled {
            // A command renews whoever holds the lock.
            let token = self.regs.read32(pf::MBOX_LOCK.offset());
            self.lease = (token != 0).then(|| (token, self.clock.now_ms()));
        }
        handled
    }

    /// Takes the mailbox lock back from a holder that has sent nothing for [`LEASE_MS`]: a
    /// process that died holding it, on a transport that cannot tell (kernel VFIO).
    fn check_lease(&mut self) {
        let token = self.regs.read32(pf::MBOX_LOCK.offset());
        if token == 0 {
            self.lease = None;
            return;
        }
        // The clock is read when a holder appears and then every 256th poll: a lease lasts
        // about a second, and reading the time on every poll costs mailbox latency.
        let known = matches!(self.lease, Some((held, _)) if held == token);
        if known && !self.heartbeat.is_multiple_of(256) {
            return;
        }
        let now = self.clock.now_ms();
        match self.lease {
            Some((held, since)) if held == token => {
                // Strictly past: whole-millisecond clocks may have started up to 1 ms late.
                if now.saturating_sub(since) > LEASE_MS as u64 {
                    if self.regs.cas32(pf::MBOX_LOCK.offset(), token, 0) {
                        self.leases_expired = self.leases_expired.saturating_add(1);
                        self.regs
                            .write32(pf::MBOX_LEASES_EXPIRED.offset(), self.leases_expired);
                        warn!("mailbox lease of {=u32:x} expired", token);
                    }
                    self.lease = None;
                }
            }
            _ => self.lease = Some((token, now)),
        }
    }

    /// Records a fault in the status registers and posts an event.
    pub fn fault(&mut self, code: FaultCode) {
        error!("fault {=u32}", code.wire());
        self.regs.write32(pf::FAULT_CODE.offset(), code.wire());
        let st = self.regs.read32(pf::DEV_STATUS.offset()) | DevStatus::FAULT.bits();
        self.regs.write32(pf::DEV_STATUS.offset(), st);
        self.events.post(
            &self.regs,
            shared_abi::events::EventKind::FwFault,
            shared_abi::events::DEVICE,
            code.wire(),
            0,
        );
    }

    fn sync_sriov(&mut self) {
        let now = SriovCtrl::from_bits_retain(self.regs.read32(pf::SRIOV_CTRL.offset()));
        if now == self.sriov {
            return;
        }
        self.sriov = now;
        let visible = if now.contains(SriovCtrl::VF_ENABLE) {
            now.num_vfs()
        } else {
            0
        };
        info!("sr-iov: {=u16} VFs visible", visible);
        for (i, changed) in self.books.set_visible(visible).into_iter().enumerate() {
            if changed {
                banks::set_state(&self.regs, i, self.books.slot(i));
                let state = self.books.slot(i).state;
                self.events.post(
                    &self.regs,
                    shared_abi::events::EventKind::VfStateChanged,
                    i as u16,
                    state as u32,
                    0,
                );
            }
        }
    }

    /// Posts a VF_FAULT event for each VF whose fault count moved since its last report, at
    /// most one per VF per [`FAULT_EVENT_MS`]: a tenant that keeps faulting cannot fill the
    /// ring its neighbours' events go through (the count in the event says how many).
    fn report_faults(&mut self) {
        let seq = self.regs.observe32(pf::FAULT_SEQ.offset());
        let moved = seq != self.faults.seen;
        // Counts held back by the rate limit are looked at again every 256th poll.
        let recheck = self.faults.held && self.heartbeat.is_multiple_of(256);
        if !(moved || recheck) {
            return;
        }
        self.faults.seen = seq;
        self.faults.held = false;
        let now = self.clock.now_ms();
        for vf in 0..self.board.total_vfs as usize {
            let bank = pf::vf_bank(vf);
            let count = self
                .regs
                .read32(shared_abi::regs::vf_bank::FAULT_COUNT.at(bank));
            let last = self.faults.reported[vf];
            if count == last {
                continue;
            }
            if count < last {
                // The bank was cleared (a reset, a destroy): counting starts again.
                self.faults.reported[vf] = 0;
                if count == 0 {
                    continue;
                }
            }
            if now < self.faults.next_ms[vf] {
                self.faults.held = true;
                continue;
            }
            let code = self
                .regs
                .read32(shared_abi::regs::vf_bank::FAULT_CODE.at(bank));
            self.events.post(
                &self.regs,
                shared_abi::events::EventKind::VfFault,
                vf as u16,
                code,
                count as u64,
            );
            self.faults.reported[vf] = count;
            self.faults.next_ms[vf] = now + FAULT_EVENT_MS;
        }
    }

    fn handle_flrs(&mut self) {
        // One read per poll: the VF words are scanned only when hardware says it set one.
        let seq = self.regs.observe32(pf::FLR_SEQ.offset());
        if seq == self.flr_seen {
            return;
        }
        self.flr_seen = seq;
        for vf in 0..self.board.total_vfs as usize {
            let off = pf::vf_hw_status(vf);
            let hw = VfHwStatus::from_bits_retain(self.regs.read32(off));
            if hw.contains(VfHwStatus::FLR_PENDING) {
                // A reset of a free slot has nothing to clear; acknowledge it all the same.
                if self.books.slot(vf).state != shared_abi::resources::VfState::Free {
                    let (_, mut ctx) = self.split();
                    let _ = commands::reset_vf(&mut ctx, vf as u16);
                }
                self.regs
                    .write32(off, (hw - VfHwStatus::FLR_PENDING).bits());
            }
        }
    }

    /// Compares the books with the register banks and the translation pool; the first
    /// disagreeing VF is the error (`usize::MAX`: a unit nobody holds is still mapped).
    pub fn check_consistency(&self) -> Result<(), usize> {
        for vf in 0..self.board.total_vfs as usize {
            if !banks::matches(&self.regs, vf, self.books.slot(vf)) {
                return Err(vf);
            }
        }
        if !banks::unowned_clear(&self.regs, &self.board, &self.books) {
            return Err(usize::MAX);
        }
        Ok(())
    }

    fn split(&mut self) -> (&mut mailbox::Mailbox, commands::Ctx<'_, R, C>) {
        (
            &mut self.mbox,
            commands::Ctx {
                regs: &self.regs,
                clock: &self.clock,
                board: &self.board,
                books: &mut self.books,
                events: &mut self.events,
                counters: &mut self.counters,
                build_id: self.build_id,
                download: &mut self.download,
                reason: None,
            },
        )
    }

    /// The register file.
    pub fn regs(&self) -> &R {
        &self.regs
    }
    /// The allocator and VF slots.
    pub fn books(&self) -> &vf::Books {
        &self.books
    }
    /// The board.
    pub fn board(&self) -> &Board {
        &self.board
    }
    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}
