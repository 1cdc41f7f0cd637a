//! BAR accesses: the PF register file as the host may touch it, and the virtualization
//! unit that checks each VF access against its bank and the queue owners before it lands.

use super::interrupts::msix_ctl;
use super::*;
use crate::msix::Signals;

/// Connections whose lock token the device remembers at once; more fall back to the lease.
const MAX_REGISTERED_OWNERS: usize = 1024;

impl Device {
    /// Reads a BAR region.
    pub fn bar_read(
        &self,
        f: Func,
        idx: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), AccessError> {
        let size = self.region_size(f, idx).ok_or(AccessError::NoRegion)?;
        check_range(offset, buf.len(), size)?;
        if idx == region::BAR0 && !(offset.is_multiple_of(4) && buf.len().is_multiple_of(4)) {
            // Registers are dwords. A narrower or unaligned read returns the addressed byte
            // lanes of the dwords it touches, as on silicon: never an error, which some VMMs
            // cannot pass back to a vCPU. BAR0 sizes are dword multiples, so this stays inside.
            let start = offset & !3;
            let end = (offset + buf.len() as u64 + 3) & !3;
            let mut words = vec![0u8; (end - start) as usize];
            self.bar_read(f, idx, start, &mut words)?;
            let at = (offset - start) as usize;
            buf.copy_from_slice(&words[at..at + buf.len()]);
            return Ok(());
        }
        match (f, idx) {
            (Func::Pf, region::BAR0) => self.pf_bar0_read(offset as usize, buf),
            (Func::Vf(v), region::BAR0) => {
                self.vf_bar0_access(v, offset as usize, Access::Read(buf))
            }
            (Func::Vf(v), region::BAR2) => self.vf_mem_access(v, offset, Access::Read(buf)),
            _ => Err(AccessError::NoRegion),
        }
    }

    /// Writes a BAR region. `conn` identifies the requester (for the mailbox semaphore).
    pub fn bar_write(
        &self,
        f: Func,
        idx: u32,
        offset: u64,
        data: &[u8],
        conn: u64,
    ) -> Result<(), AccessError> {
        let size = self.region_size(f, idx).ok_or(AccessError::NoRegion)?;
        check_range(offset, data.len(), size)?;
        match (f, idx) {
            (Func::Pf, region::BAR0) => self.pf_bar0_write(offset as usize, data, conn),
            (Func::Vf(v), region::BAR0) => {
                let mut copy = data.to_vec();
                self.vf_bar0_access(v, offset as usize, Access::Write(&mut copy))
            }
            (Func::Vf(v), region::BAR2) => {
                let mut copy = data.to_vec();
                self.vf_mem_access(v, offset, Access::Write(&mut copy))
            }
            _ => Err(AccessError::NoRegion),
        }
    }

    fn pf_bar0_read(&self, o: usize, buf: &mut [u8]) -> Result<(), AccessError> {
        if pf::MSIX_TABLE.contains(o as u64, buf.len() as u64)
            || pf::MSIX_PBA.contains(o as u64, buf.len() as u64)
        {
            let g = lock(&self.inner);
            for_words(o, buf.len(), |w, i| {
                let v = if pf::MSIX_TABLE.contains(w as u64, 4) {
                    g.pf_msix
                        .table_read(w - pf::MSIX_TABLE.start())
                        .unwrap_or(0)
                } else {
                    g.pf_msix.pba_read(w - pf::MSIX_PBA.start())
                };
                put(buf, i, v);
            })?;
            return Ok(());
        }
        self.bar0.read(o, buf);
        // A trapped read completes like a PCIe read: later accesses come after it.
        shared_abi::ordering::observe();
        Ok(())
    }

    fn pf_bar0_write(&self, o: usize, data: &[u8], conn: u64) -> Result<(), AccessError> {
        // The request buffer takes any byte writes; registers take whole dwords.
        if pf::MBOX_REQ.contains(o as u64, data.len() as u64) {
            self.bar0.write(o, data);
            return Ok(());
        }
        if !(o.is_multiple_of(4) && data.len().is_multiple_of(4)) {
            // Registers take whole dwords; a narrower write is dropped and counted.
            self.pf_refused_writes.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // Vectors a table write unmasks are signalled after the words, outside the lock.
        let mut out = Signals::default();
        let r = for_words(o, data.len(), |w, i| {
            let v = get(data, i);
            if w == pf::MBOX_LOCK.offset() {
                self.mbox_lock_write(v, conn);
            } else if w == pf::MBOX_OWNER.offset() {
                self.bar0.write32(w, v);
                let mut g = lock(&self.inner);
                // A token is one connection's: another cannot claim it (and so release the
                // lock from under its holder by going away).
                let taken = g.lock_tokens.iter().any(|(&c, &t)| t == v && c != conn);
                let room = g.lock_tokens.len() < MAX_REGISTERED_OWNERS
                    || g.lock_tokens.contains_key(&conn);
                if v != 0 && !taken && room {
                    g.lock_tokens.insert(conn, v);
                }
            } else if pf::MSIX_TABLE.contains(w as u64, 4) {
                let mut g = lock(&self.inner);
                let (en, fm) = msix_ctl(&g.pf_cfg);
                g.pf_msix
                    .table_write(w - pf::MSIX_TABLE.start(), v, en, fm, &mut out);
            } else if pf::host_writable(w as u64) {
                // Trapped writes arrive in order, like posted PCIe writes: each one publishes
                // what came before it (the request bytes before the doorbell).
                self.bar0.publish32(w, v);
                if w == pf::MBOX_DOORBELL.offset() {
                    self.wake_core();
                }
            } else {
                self.pf_refused_writes.fetch_add(1, Ordering::Relaxed);
            }
        });
        out.send();
        r
    }

    /// A trapped write of the mailbox lock word, applied as the swap a mapped client does: a
    /// token acquires it if free; 0 releases it if this connection took it.
    fn mbox_lock_write(&self, token: u32, conn: u64) {
        let mut g = lock(&self.inner);
        let off = pf::MBOX_LOCK.offset();
        if token == 0 {
            if g.lock_owner == conn {
                let held = self.bar0.read32(off);
                self.bar0.cas32(off, held, 0);
                g.lock_owner = 0;
            }
        } else if self.bar0.cas32(off, 0, token) {
            g.lock_owner = conn;
        }
    }

    /// A client connection went away: release the mailbox lock if it held it, whether it
    /// took it through a trapped write or by swapping the mapped word with the token it
    /// registered in MBOX_OWNER.
    pub fn client_gone(&self, conn: u64) {
        let mut g = lock(&self.inner);
        let off = pf::MBOX_LOCK.offset();
        if g.lock_owner == conn {
            g.lock_owner = 0;
            let held = self.bar0.read32(off);
            self.bar0.cas32(off, held, 0);
        }
        if let Some(token) = g.lock_tokens.remove(&conn) {
            self.bar0.cas32(off, token, 0);
        }
    }

    fn vf_bar0_access(&self, v: u16, o: usize, acc: Access<'_>) -> Result<(), AccessError> {
        let vu = vu_shared(&self.vu);
        let mut g = lock(&self.inner);
        self.sync_vf(&mut g, v)?;
        let state = self.vf_state(v);
        let enabled = state == Some(VfState::Enabled);
        let qcount = self.bank(v, vf_bank::QUEUE_COUNT) as usize;
        let qbase = self.bank(v, vf_bank::QUEUE_BASE) as usize;
        let (en, fm) = msix_ctl(&g.vfs[v as usize].presented);
        let msix = &mut g.vfs[v as usize].msix;
        let mut faults: Vec<VfFault> = Vec::new();
        let mut irqs: Vec<usize> = Vec::new();
        let mut out = Signals::default();
        let len = acc.len();
        let result = match acc {
            Access::Read(buf) => for_words(o, len, |w, i| {
                let val = if vf::QUEUES.contains(w as u64, 4) {
                    let q = (w - vf::QUEUES.start()) / regs::QUEUE_REGS_SIZE;
                    let r = (w - vf::QUEUES.start()) % regs::QUEUE_REGS_SIZE;
                    if !enabled {
                        faults.push(VfFault::NotEnabled);
                        u32::MAX
                    } else if q >= qcount || !self.owns_queue(v, qbase + q) {
                        faults.push(VfFault::QueueNotOwned);
                        u32::MAX
                    } else if r == queue::OWNER.offset() {
                        0
                    } else {
                        self.bar0.read32(pf::queue(qbase + q) + r)
                    }
                } else if vf::MSIX_TABLE.contains(w as u64, 4) {
                    msix.table_read(w - vf::MSIX_TABLE.start())
                        .unwrap_or_else(|| {
                            faults.push(VfFault::VectorNotOwned);
                            u32::MAX
                        })
                } else if vf::MSIX_PBA.contains(w as u64, 4) {
                    msix.pba_read(w - vf::MSIX_PBA.start())
                } else {
                    self.vf_id_reg(v, w, state)
                };
                put(buf, i, val);
            }),
            // Registers take whole dwords: a narrower or unaligned write is dropped and
            // counted as a bad access on this VF.
            Access::Write(_) if !(o.is_multiple_of(4) && len.is_multiple_of(4)) => {
                faults.push(VfFault::BadAccess);
                Ok(())
            }
            Access::Write(data) => for_words(o, len, |w, i| {
                let val = get(data, i);
                if vf::QUEUES.contains(w as u64, 4) {
                    let q = (w - vf::QUEUES.start()) / regs::QUEUE_REGS_SIZE;
                    let r = (w - vf::QUEUES.start()) % regs::QUEUE_REGS_SIZE;
                    if !enabled {
                        faults.push(VfFault::NotEnabled);
                    } else if q >= qcount || !self.owns_queue(v, qbase + q) {
                        faults.push(VfFault::QueueNotOwned);
                    } else if !queue::vf_writable(r as u64) {
                        faults.push(VfFault::ReadOnly);
                    } else {
                        self.bar0.write32(pf::queue(qbase + q) + r, val);
                        if r == queue::CONTROL.offset() {
                            self.queue_control_written(qbase + q);
                        }
                    }
                } else if vf::MSIX_TABLE.contains(w as u64, 4) {
                    if !msix.table_write(w - vf::MSIX_TABLE.start(), val, en, fm, &mut out) {
                        faults.push(VfFault::VectorNotOwned);
                    }
                } else if let Some(reg) = xlat_bank_reg(w) {
                    if !enabled {
                        faults.push(VfFault::NotEnabled);
                    } else {
                        self.bar0.write32(reg.at(pf::vf_bank(v as usize)), val);
                        self.xlat_changed(v);
                    }
                } else if w == vf::XLAT_INVALIDATE.offset() {
                    if enabled {
                        self.xlat_changed(v);
                    } else {
                        faults.push(VfFault::NotEnabled);
                    }
                } else if w == vf::IRQ_TRIGGER.offset() {
                    if !enabled {
                        faults.push(VfFault::NotEnabled);
                    } else if val as usize >= msix.len()
                        || val >= self.bank(v, vf_bank::VECTOR_COUNT)
                    {
                        faults.push(VfFault::VectorNotOwned);
                    } else {
                        irqs.push(val as usize);
                    }
                } else {
                    faults.push(VfFault::ReadOnly);
                }
            }),
        };
        for i in irqs {
            msix.fire(i, en, fm, &mut out);
        }
        drop(g);
        drop(vu);
        out.send();
        for f in faults {
            self.access_fault(v, f);
        }
        result
    }

    fn vf_id_reg(&self, v: u16, w: usize, state: Option<VfState>) -> u32 {
        let r = regs::Reg(w as u32);
        let mem = (self.bank(v, vf_bank::MEM_GRANULES) as u64) << self.board.granule_shift;
        match r {
            vf::MAGIC => regs::VF_MAGIC,
            vf::ABI_VERSION => shared_abi::abi_version_word(),
            vf::VF_INDEX => v as u32,
            vf::STATUS => {
                let mut s = VfStatus::empty();
                if state == Some(VfState::Enabled) {
                    s |= VfStatus::ENABLED;
                }
                if state == Some(VfState::Resetting) {
                    s |= VfStatus::RESETTING;
                }
                if self.bank(v, vf_bank::FAULT_COUNT) != 0 {
                    s |= VfStatus::FAULTED;
                }
                s.bits()
            }
            vf::ENGINE_MASK => self.bank(v, vf_bank::ENGINE_MASK),
            vf::MEM_SIZE_LO => mem as u32,
            vf::MEM_SIZE_HI => (mem >> 32) as u32,
            vf::QUEUE_COUNT => self.bank(v, vf_bank::QUEUE_COUNT),
            vf::VECTOR_COUNT => self.bank(v, vf_bank::VECTOR_COUNT),
            vf::QOS_WEIGHT => self.bank(v, vf_bank::QOS_WEIGHT),
            vf::FAULT_CODE => self.bank(v, vf_bank::FAULT_CODE),
            vf::FAULT_COUNT => self.bank(v, vf_bank::FAULT_COUNT),
            vf::IOTLB_HITS => self.bank(v, vf_bank::IOTLB_HITS),
            vf::IOTLB_MISSES => self.bank(v, vf_bank::IOTLB_MISSES),
            _ => match xlat_bank_reg(w) {
                Some(reg) => self.bank(v, reg),
                None => 0,
            },
        }
    }

    /// VF BAR2: VF-local addresses are translated through the VF's table to device memory.
    fn vf_mem_access(&self, v: u16, offset: u64, mut acc: Access<'_>) -> Result<(), AccessError> {
        let _vu = vu_shared(&self.vu);
        {
            let g = lock(&self.inner);
            if g.vfs.get(v as usize).is_none() {
                return Err(AccessError::NoFunction);
            }
        }
        let shift = self.board.granule_shift;
        let gsize = 1u64 << shift;
        let enabled = self.vf_state(v) == Some(VfState::Enabled);
        let granules = self.bank(v, vf_bank::MEM_GRANULES) as u64;
        let tt_base = self.bank(v, vf_bank::TT_BASE) as usize;
        let tt_len = self.bank(v, vf_bank::TT_LEN) as u64;
        let mut done = 0usize;
        let total = acc.len();
        let mut fault = None;
        let mut mem = lock(&self.devmem);
        while done < total {
            let addr = offset + done as u64;
            let local = addr >> shift;
            let within = (addr & (gsize - 1)) as usize;
            let n = ((gsize as usize) - within).min(total - done);
            let dev_granule = if !enabled {
                fault = Some(VfFault::NotEnabled);
                None
            } else if local >= granules || local >= tt_len {
                fault = Some(VfFault::MemOutOfWindow);
                None
            } else {
                let e = TtEntry(self.bar0.read32(pf::tt_entry(tt_base + local as usize)));
                if e.granule().is_none() {
                    fault = Some(VfFault::TranslationMiss);
                }
                e.granule()
            };
            match (&mut acc, dev_granule) {
                (Access::Read(buf), Some(g)) => {
                    mem.read(g, within, &mut buf[done..done + n]);
                }
                (Access::Read(buf), None) => buf[done..done + n].fill(0xFF),
                (Access::Write(data), Some(g)) => {
                    mem.write(g, within, &data[done..done + n]);
                }
                (Access::Write(_), None) => {}
            }
            done += n;
        }
        drop(mem);
        if let Some(f) = fault {
            self.access_fault(v, f);
        }
        Ok(())
    }

    /// Whether physical queue `q` is VF `v`'s: its OWNER register, which the firmware sets
    /// last when it grants a queue and clears first when it takes one back, is the authority.
    pub(super) fn owns_queue(&self, v: u16, q: usize) -> bool {
        q < self.board.queues as usize
            && self.bar0.read32(queue::OWNER.at(pf::queue(q))) == v as u32 + 1
    }
}

/// The bank register behind a VF's XLAT register at `w`, if it is one.
fn xlat_bank_reg(w: usize) -> Option<regs::Reg> {
    match regs::Reg(w as u32) {
        vf::XLAT_ROOT_LO => Some(vf_bank::XLAT_ROOT_LO),
        vf::XLAT_ROOT_HI => Some(vf_bank::XLAT_ROOT_HI),
        vf::XLAT_PAGES => Some(vf_bank::XLAT_PAGES),
        _ => None,
    }
}

enum Access<'a> {
    Read(&'a mut [u8]),
    Write(&'a mut [u8]),
}

impl Access<'_> {
    fn len(&self) -> usize {
        match self {
            Access::Read(b) => b.len(),
            Access::Write(b) => b.len(),
        }
    }
}

/// Calls `f(word_offset, index)` for each dword of an aligned, dword-multiple access.
fn for_words(o: usize, len: usize, mut f: impl FnMut(usize, usize)) -> Result<(), AccessError> {
    if !o.is_multiple_of(4) || !len.is_multiple_of(4) {
        return Err(AccessError::BadSize);
    }
    for i in 0..len / 4 {
        f(o + i * 4, i);
    }
    Ok(())
}

fn put(buf: &mut [u8], i: usize, v: u32) {
    buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
}

fn get(buf: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&buf[i * 4..i * 4 + 4]);
    u32::from_le_bytes(w)
}
