//! Management commands: each takes a parsed [`Request`], checks it against the board and the
//! books, changes the books all-or-nothing, then programs the banks. A command that fails
//! leaves every register as it was.

use crate::alloc::Want;
use crate::banks::{self, Run3};
use crate::events::EventRing;
use crate::hal::{Clock, Regs};
use crate::vf::{self, Books, Slot};
use crate::Counters;
use shared_abi::board::Board;
use shared_abi::events::EventKind;
use shared_abi::mailbox::Status;
use shared_abi::messages::{
    ConfigureVf, CountResp, CreateVfs, Heartbeat, HeartbeatResp, Request, SetQos, Sizing, Target,
    VfIndex, Writer,
};
use shared_abi::regs::{pf, vf_bank};
use shared_abi::resources::{
    DeviceInfo, DeviceStats, FreeResources, VfInfo, VfSpec, VfState, VfStats,
};
use zerocopy::little_endian::{U16, U32, U64};

/// What a command may touch.
#[derive(Debug)]
pub struct Ctx<'a, R: Regs, C: Clock> {
    /// Register file.
    pub regs: &'a R,
    /// Clock.
    pub clock: &'a C,
    /// Board.
    pub board: &'a Board,
    /// Books.
    pub books: &'a mut Books,
    /// Event ring.
    pub events: &'a mut EventRing,
    /// Counters.
    pub counters: &'a mut Counters,
    /// Build id.
    pub build_id: u32,
    /// The firmware download in progress.
    pub download: &'a mut Option<crate::update::Download>,
    /// Why an image was refused, for an IMAGE_REJECTED response's payload.
    pub reason: Option<u8>,
}

/// A refusal from the update path: its status, with the reason noted for the response.
fn refused<R: Regs, C: Clock>(ctx: &mut Ctx<'_, R, C>, r: crate::update::Refusal) -> Status {
    ctx.reason = r.1;
    r.0
}

/// A hardware step failed: record the fault so the host can tell, answer INTERNAL.
fn hw_failed<R: Regs, C: Clock>(
    ctx: &mut Ctx<'_, R, C>,
    code: shared_abi::mailbox::FaultCode,
) -> Status {
    crate::record_fault(ctx.regs, ctx.events, code);
    Status::Internal
}

fn enc(e: shared_abi::EncodeError) -> Status {
    let _ = e;
    Status::Internal
}

/// Executes `req`, writing the response payload into `out`; returns its length.
pub fn execute<R: Regs, C: Clock>(
    ctx: &mut Ctx<'_, R, C>,
    req: &Request<'_>,
    out: &mut [u8],
) -> Result<usize, Status> {
    let mut w = Writer::new(out);
    match *req {
        Request::GetDeviceInfo(()) => w.put(&device_info(ctx)).map_err(enc)?,
        Request::GetResources(()) => w.put(&free_resources(ctx.books)).map_err(enc)?,
        Request::Heartbeat(Heartbeat { nonce }) => w
            .put(&HeartbeatResp {
                nonce: U32::new(nonce),
                heartbeat: U32::new(ctx.regs.read32(pf::HEARTBEAT.offset())),
                uptime_ms: U64::new(ctx.clock.now_ms()),
            })
            .map_err(enc)?,
        Request::CreateVfs(CreateVfs { count, sizing }) => {
            let made = create_vfs(ctx, count, sizing)?;
            w.put(&CountResp {
                count: U16::new(made.len() as u16),
                reserved: U16::new(0),
            })
            .map_err(enc)?;
            for vf in made {
                w.put(&vf_info(ctx, vf)).map_err(enc)?;
            }
        }
        Request::DestroyVf(target) => {
            let n = destroy(ctx, target)?;
            w.put(&CountResp {
                count: U16::new(n),
                reserved: U16::new(0),
            })
            .map_err(enc)?;
        }
        Request::QueryVf(Target::One(vf)) => {
            ctx.books.live(vf)?;
            w.put(&vf_info(ctx, vf)).map_err(enc)?;
        }
        Request::QueryVf(Target::All) => {
            let live = live_vfs(ctx.books);
            w.put(&CountResp {
                count: U16::new(live.len() as u16),
                reserved: U16::new(0),
            })
            .map_err(enc)?;
            for vf in live {
                w.put(&vf_info(ctx, vf)).map_err(enc)?;
            }
        }
        Request::ConfigureVf(ConfigureVf { vf, spec }) => {
            configure(ctx, vf, spec)?;
            w.put(&vf_info(ctx, vf)).map_err(enc)?;
        }
        Request::ResetVf(VfIndex(vf)) => {
            reset_vf(ctx, vf)?;
            w.put(&vf_info(ctx, vf)).map_err(enc)?;
        }
        Request::SetQos(SetQos { vf, weight }) => {
            ctx.books.set_weight(vf, weight)?;
            let slot = *ctx.books.slot(vf as usize);
            ctx.regs.write32(
                vf_bank::QOS_WEIGHT.at(pf::vf_bank(vf as usize)),
                slot.weight as u32,
            );
            banks::set_state(ctx.regs, vf as usize, &slot);
            w.put(&vf_info(ctx, vf)).map_err(enc)?;
        }
        Request::GetStats(Target::One(vf)) => {
            ctx.books.live(vf)?;
            w.put(&vf_stats(ctx, vf)).map_err(enc)?;
        }
        Request::GetStats(Target::All) => {
            let live = live_vfs(ctx.books);
            let c = &ctx.counters;
            w.put(&DeviceStats {
                mbox_commands: U64::new(c.commands),
                mbox_errors: U64::new(c.errors),
                mbox_replays: U64::new(c.replays),
                vfs_created: U32::new(c.vfs_created),
                vfs_destroyed: U32::new(c.vfs_destroyed),
                flrs: U32::new(c.flrs),
                vf_count: U16::new(live.len() as u16),
                reserved: U16::new(0),
                uptime_ms: U64::new(ctx.clock.now_ms()),
            })
            .map_err(enc)?;
            for vf in live {
                w.put(&vf_stats(ctx, vf)).map_err(enc)?;
            }
        }
        Request::FwDownloadBegin(req) => {
            let r =
                crate::update::begin(ctx.regs, ctx.download, req).map_err(|e| refused(ctx, e))?;
            w.put(&r).map_err(enc)?
        }
        Request::FwDownloadChunk(ref c) => {
            crate::update::chunk(ctx.regs, ctx.download, c).map_err(|e| refused(ctx, e))?
        }
        Request::FwDownloadCommit(()) => {
            crate::update::commit(ctx.regs, ctx.download).map_err(|e| refused(ctx, e))?
        }
        Request::FwActivate(a) => {
            crate::update::activate(ctx.regs, a.slot).map_err(|e| refused(ctx, e))?
        }
        Request::FwQuerySlots(()) => {
            let slots = crate::update::slots(ctx.regs).map_err(|e| refused(ctx, e))?;
            w.put(&slots[..]).map_err(enc)?
        }
        // Not in this firmware: the opcodes are reserved and refused.
        Request::GetLog(_) | Request::AckEvents(_) => return Err(Status::NotSupported),
    }
    Ok(w.len())
}

fn live_vfs(books: &Books) -> vf::VfList {
    (0..books.total_vfs())
        .filter(|&v| books.live(v).is_ok())
        .collect()
}

fn want(board: &Board, s: &VfSpec) -> Result<vf::Request, Status> {
    let w = Want {
        engines: s.engines.get() as u32,
        granules: s.mem_granules.get(),
        queues: s.queues.get() as u32,
        vectors: s.vectors.get() as u32,
    };
    if w.engines == 0 || w.granules == 0 || w.queues == 0 || w.vectors == 0 {
        return Err(Status::InvalidArgument);
    }
    if w.engines > board.engines as u32
        || w.granules > board.mem_granules
        || w.queues > board.queues as u32
        || w.vectors > board.vectors as u32
    {
        return Err(Status::OutOfResources);
    }
    Ok(vf::Request {
        want: w,
        weight: s.weight.get(),
    })
}

fn create_vfs<R: Regs, C: Clock>(
    ctx: &mut Ctx<'_, R, C>,
    count: u16,
    sizing: Sizing<'_>,
) -> Result<vf::VfList, Status> {
    if count == 0 {
        return Err(Status::InvalidArgument);
    }
    if count > ctx.board.total_vfs {
        return Err(Status::TooManyVfs);
    }
    let board = *ctx.board;
    let made = match sizing {
        Sizing::Equal => {
            let p = ctx.books.pool();
            let n = count as u32;
            // Idle engines are split; when there are fewer than VFs, each VF gets one and
            // they share (the scheduler weighs their time).
            let w = Want {
                engines: (p.free_engines().count_ones() / n).max(1),
                granules: p.mem().free() as u32 / n,
                queues: p.queues().free() as u32 / n,
                vectors: p.vectors().free() as u32 / n,
            };
            if w.engines == 0 || w.granules == 0 || w.queues == 0 || w.vectors == 0 {
                return Err(Status::OutOfResources);
            }
            ctx.books
                .create(count, |_| vf::Request { want: w, weight: 0 })?
        }
        Sizing::Uniform(spec) => {
            let r = want(&board, spec)?;
            ctx.books.create(count, |_| r)?
        }
        Sizing::Explicit(specs) => {
            let mut reqs: heapless::Vec<vf::Request, { shared_abi::pci::MAX_VFS }> =
                heapless::Vec::new();
            for s in specs {
                reqs.push(want(&board, s)?)
                    .map_err(|_| Status::TooManyVfs)?;
            }
            ctx.books.create(count, |i| reqs[i])?
        }
    };
    for &vf in &made {
        let slot = *ctx.books.slot(vf as usize);
        banks::clear(ctx.regs, vf as usize);
        banks::program(ctx.regs, ctx.board, vf as usize, &slot);
        ctx.events.post(
            ctx.regs,
            EventKind::VfStateChanged,
            vf,
            slot.state as u32,
            0,
        );
    }
    ctx.counters.vfs_created += made.len() as u32;
    info!("created {=usize} VFs", made.len());
    Ok(made)
}

fn destroy<R: Regs, C: Clock>(ctx: &mut Ctx<'_, R, C>, target: Target) -> Result<u16, Status> {
    let list = match target {
        Target::One(vf) => {
            let s = ctx.books.live(vf)?;
            if s.state == VfState::Resetting {
                return Err(Status::InvalidState);
            }
            let mut l = vf::VfList::new();
            let _ = l.push(vf);
            l
        }
        Target::All => live_vfs(ctx.books),
    };
    let mut n = 0;
    for vf in list {
        let old = ctx.books.destroy(vf)?;
        let r = banks::withdraw(ctx.regs, vf as usize, &Run3::from(&old), &Run3::default());
        banks::clear(ctx.regs, vf as usize);
        ctx.events.post(
            ctx.regs,
            EventKind::VfStateChanged,
            vf,
            VfState::Free as u32,
            0,
        );
        ctx.counters.vfs_destroyed += 1;
        n += 1;
        if let Err(code) = r {
            return Err(hw_failed(ctx, code));
        }
    }
    Ok(n)
}

fn configure<R: Regs, C: Clock>(
    ctx: &mut Ctx<'_, R, C>,
    vf: u16,
    spec: &VfSpec,
) -> Result<(), Status> {
    ctx.books.live(vf)?;
    let r = want(ctx.board, spec)?;
    let (old, new) = ctx.books.resize(vf, r)?;
    let slot = *ctx.books.slot(vf as usize);
    // Publish the new bank, then withdraw what it no longer holds.
    banks::program(ctx.regs, ctx.board, vf as usize, &slot);
    banks::withdraw(ctx.regs, vf as usize, &Run3::from(&old), &Run3::from(&new))
        .map_err(|code| hw_failed(ctx, code))
}

/// Function level reset: the VF's queues are cleared and its memory scrubbed; no other VF is
/// touched. Used by RESET_VF and by FLRs requested through the VF's config space.
pub fn reset_vf<R: Regs, C: Clock>(ctx: &mut Ctx<'_, R, C>, vf: u16) -> Result<(), Status> {
    let alloc = ctx.books.begin_reset(vf)?;
    let base = pf::vf_bank(vf as usize);
    banks::set_state(ctx.regs, vf as usize, ctx.books.slot(vf as usize));
    for q in alloc.queues.base..alloc.queues.end() {
        banks::clear_queue(ctx.regs, q as usize);
    }
    let scrubbed = banks::scrub(ctx.regs, alloc.mem);
    // A reset VF starts without a stage-1 table (its memory, the table included, is gone);
    // the changed registers also flush its IOTLB.
    for r in [
        vf_bank::XLAT_ROOT_LO,
        vf_bank::XLAT_ROOT_HI,
        vf_bank::XLAT_PAGES,
    ] {
        ctx.regs.write32(r.at(base), 0);
    }
    let flrs = ctx
        .regs
        .read32(vf_bank::FLR_COUNT.at(base))
        .saturating_add(1);
    ctx.regs.write32(vf_bank::FLR_COUNT.at(base), flrs);
    ctx.books.end_reset(vf);
    banks::set_state(ctx.regs, vf as usize, ctx.books.slot(vf as usize));
    ctx.counters.flrs += 1;
    ctx.events
        .post(ctx.regs, EventKind::VfFlrDone, vf, 0, flrs as u64);
    scrubbed.map_err(|code| hw_failed(ctx, code))
}

fn device_info<R: Regs, C: Clock>(ctx: &Ctx<'_, R, C>) -> DeviceInfo {
    let b = ctx.board;
    DeviceInfo {
        abi_major: U16::new(shared_abi::ABI_MAJOR),
        abi_minor: U16::new(shared_abi::ABI_MINOR),
        fw_version: U32::new(crate::FW_VERSION),
        build_id: U32::new(ctx.build_id),
        caps: U32::new(ctx.regs.read32(pf::CAPS.offset())),
        engines: b.engines,
        granule_shift: b.granule_shift,
        total_vfs: U16::new(b.total_vfs),
        queues: U16::new(b.queues),
        vectors: U16::new(b.vectors),
        mem_granules: U32::new(b.mem_granules),
        vfs_in_use: U16::new(ctx.books.in_use() as u16),
        num_vfs_enabled: U16::new(ctx.books.visible()),
        uptime_ms: U64::new(ctx.clock.now_ms()),
    }
}

fn free_resources(books: &Books) -> FreeResources {
    let p = books.pool();
    FreeResources {
        engine_mask: U32::new(p.free_engines()),
        mem_granules: U32::new(p.mem().free() as u32),
        largest_mem_run: U32::new(p.mem().largest_run() as u32),
        queues: U16::new(p.queues().free() as u16),
        vectors: U16::new(p.vectors().free() as u16),
        largest_queue_run: U16::new(p.queues().largest_run() as u16),
        largest_vector_run: U16::new(p.vectors().largest_run() as u16),
        free_vf_slots: U16::new(books.total_vfs() - books.in_use() as u16),
        reserved: U16::new(0),
    }
}

fn vf_info<R: Regs, C: Clock>(ctx: &Ctx<'_, R, C>, vf: u16) -> VfInfo {
    let s: Slot = *ctx.books.slot(vf as usize);
    let base = pf::vf_bank(vf as usize);
    let rd = |r: shared_abi::regs::Reg| ctx.regs.read32(r.at(base));
    let a = &s.alloc;
    VfInfo {
        vf: U16::new(vf),
        state: s.state as u8,
        flags: 0,
        engine_mask: U32::new(a.engines),
        mem_base: U32::new(a.mem.base),
        mem_granules: U32::new(a.mem.len),
        queue_base: U16::new(a.queues.base as u16),
        queue_count: U16::new(a.queues.len as u16),
        vector_base: U16::new(a.vectors.base as u16),
        vector_count: U16::new(a.vectors.len as u16),
        weight: U16::new(s.weight),
        reserved: U16::new(0),
        fault_code: U32::new(rd(vf_bank::FAULT_CODE)),
        fault_count: U32::new(rd(vf_bank::FAULT_COUNT)),
        flr_count: U32::new(rd(vf_bank::FLR_COUNT)),
        generation: U32::new(s.generation),
        reserved2: U32::new(0),
    }
}

fn vf_stats<R: Regs, C: Clock>(ctx: &Ctx<'_, R, C>, vf: u16) -> VfStats {
    let base = pf::vf_bank(vf as usize);
    let rd = |r: shared_abi::regs::Reg| ctx.regs.read32(r.at(base));
    // Hardware sets bit 31 of the high word while it updates a pair: read high, low, high
    // until the high word is steady and not busy (bounded; a stuck counter reads as is).
    let wide = |lo, hi| {
        let mut v = 0;
        for _ in 0..64 {
            let h1 = rd(hi);
            let l = rd(lo);
            v = ((h1 & !(1 << 31)) as u64) << 32 | l as u64;
            if h1 & (1 << 31) == 0 && rd(hi) == h1 {
                break;
            }
        }
        v
    };
    VfStats {
        vf: U16::new(vf),
        state: ctx.books.slot(vf as usize).state as u8,
        reserved: 0,
        faults: U32::new(rd(vf_bank::FAULT_COUNT)),
        jobs: U64::new(wide(vf_bank::JOBS_LO, vf_bank::JOBS_HI)),
        bytes: U64::new(wide(vf_bank::BYTES_LO, vf_bank::BYTES_HI)),
        engine_us: U64::new(wide(vf_bank::ENGINE_US_LO, vf_bank::ENGINE_US_HI)),
        flr_count: U32::new(rd(vf_bank::FLR_COUNT)),
        reserved2: U32::new(0),
    }
}
