//! Configuration spaces, SR-IOV enable and disable, function level reset and PF reset.

use super::*;
use crate::msix::Signals;

use crate::pci::msix_may_send as may_send;

impl Device {
    /// Reads configuration space.
    pub fn config_read(&self, f: Func, offset: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        check_range(offset, buf.len(), CONFIG_SIZE as u64)?;
        let mut g = lock(&self.inner);
        match f {
            Func::Pf => g.pf_cfg.read(offset as usize, buf),
            Func::Vf(v) => {
                self.sync_vf(&mut g, v)?;
                g.vfs[v as usize].presented.read(offset as usize, buf)
            }
        }
        Ok(())
    }

    /// The VF's configuration space as the SR-IOV specification defines it (no vfio view).
    pub fn vf_raw_config(&self, v: u16) -> Option<Box<[u8; CONFIG_SIZE]>> {
        let mut g = lock(&self.inner);
        self.sync_vf(&mut g, v).ok()?;
        Some(Box::new(*g.vfs[v as usize].raw.bytes()))
    }

    /// Writes configuration space and carries out its side effects (SR-IOV enable, FLR).
    pub fn config_write(&self, f: Func, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        check_range(offset, data.len(), CONFIG_SIZE as u64)?;
        let o = offset as usize;
        match f {
            Func::Pf => {
                let mut g = lock(&self.inner);
                let s = layout::SRIOV;
                let ctrl_before = g.pf_cfg.r16(s + sriov::CTRL);
                let num_before = g.pf_cfg.r16(s + sriov::NUM_VFS);
                let page_before = g.pf_cfg.r32(s + sriov::SYSTEM_PAGE_SIZE);
                let msix_before = interrupts::msix_ctl(&g.pf_cfg);
                g.pf_cfg.write(o, data);
                // NumVFs and System Page Size may only change while VF Enable is clear.
                if ctrl_before & sriov::CTRL_VF_ENABLE != 0 {
                    g.pf_cfg.set16(s + sriov::NUM_VFS, num_before);
                    g.pf_cfg.init32(s + sriov::SYSTEM_PAGE_SIZE, page_before);
                }
                // System Page Size must be exactly one supported size.
                if g.pf_cfg.r32(s + sriov::SYSTEM_PAGE_SIZE).count_ones() != 1 {
                    g.pf_cfg.init32(s + sriov::SYSTEM_PAGE_SIZE, page_before);
                }
                if wrote_bits(o, data, layout::PCIE + pcie::DEVCTL, pcie::DEVCTL_FLR) {
                    drop(g);
                    self.reset_pf();
                    return Ok(());
                }
                let ctrl = g.pf_cfg.r16(s + sriov::CTRL);
                let changed = self.apply_sriov(&mut g, ctrl_before, ctrl);
                let mut out = Signals::default();
                let now = interrupts::msix_ctl(&g.pf_cfg);
                if may_send(now) && !may_send(msix_before) {
                    g.pf_msix.flush_pending(now.0, now.1, &mut out);
                }
                drop(g);
                out.send();
                if let Some(n) = changed {
                    self.notify(n);
                }
            }
            Func::Vf(v) => {
                let mut g = lock(&self.inner);
                self.sync_vf(&mut g, v)?;
                let vf_fn = &mut g.vfs[v as usize];
                let msix_before = interrupts::msix_ctl(&vf_fn.presented);
                vf_fn.presented.write(o, data);
                vf_fn.raw.write(o, data);
                let bm = vf_fn.presented.r16(off::COMMAND) & cmd::BUS_MASTER != 0;
                let flr = wrote_bits(o, data, layout::PCIE + pcie::DEVCTL, pcie::DEVCTL_FLR);
                let hw = pf::vf_hw_status(v as usize);
                let cur = VfHwStatus::from_bits_retain(self.bar0.read32(hw));
                self.bar0.write32(
                    hw,
                    cur.difference(VfHwStatus::BUS_MASTER)
                        .union(if bm {
                            VfHwStatus::BUS_MASTER
                        } else {
                            VfHwStatus::empty()
                        })
                        .bits(),
                );
                let mut out = Signals::default();
                let now = interrupts::msix_ctl(&vf_fn.presented);
                if may_send(now) && !may_send(msix_before) {
                    vf_fn.msix.flush_pending(now.0, now.1, &mut out);
                }
                drop(g);
                out.send();
                if flr {
                    self.flr_vf(v);
                }
            }
        }
        Ok(())
    }

    /// Applies an SR-IOV control change; returns the new NumVFs if VF Enable toggled.
    fn apply_sriov(&self, g: &mut Inner, before: u16, now: u16) -> Option<u16> {
        let s = layout::SRIOV;
        let was = before & sriov::CTRL_VF_ENABLE != 0;
        let mut is = now & sriov::CTRL_VF_ENABLE != 0;
        let num = g.pf_cfg.r16(s + sriov::NUM_VFS);
        if is && !was && (num == 0 || num > self.board.total_vfs) {
            // Enabling with an invalid NumVFs enables nothing.
            g.pf_cfg
                .set16(s + sriov::CTRL, now & !sriov::CTRL_VF_ENABLE);
            is = false;
        }
        let mse = now & sriov::CTRL_VF_MSE != 0;
        let visible = if is { num } else { 0 };
        self.bar0.write32(
            pf::SRIOV_CTRL.offset(),
            SriovCtrl::new(is, mse, visible).bits(),
        );
        if is == was {
            return None;
        }
        g.vfs.clear();
        if is {
            for v in 0..num {
                let vectors = (self.bank(v, vf_bank::VECTOR_COUNT) as u16).max(1);
                let raw = pci::vf_config(vectors);
                let presented = pci::vf_presented(&raw);
                g.vfs.push(VfFn {
                    raw,
                    presented,
                    msix: Msix::new(vectors),
                });
            }
        }
        Some(visible)
    }

    /// Tells the server the VFs changed and waits (bounded) until it has made their endpoints
    /// match, so the host sees the VF sockets when its write completes; no polling for them.
    fn notify(&self, n: u16) {
        let (ack, done) = std::sync::mpsc::channel();
        let sent = lock(&self.sriov_notify)
            .as_ref()
            .is_some_and(|notify| notify((n, ack)));
        if sent {
            let _ = done.recv_timeout(Duration::from_secs(2));
        }
    }

    /// Function level reset of a VF: interrupts and config state reset here, then the firmware
    /// clears the VF's queues and memory. Waits (bounded) for the firmware to finish.
    pub fn flr_vf(&self, v: u16) -> bool {
        {
            let mut g = lock(&self.inner);
            let Some(f) = g.vfs.get_mut(v as usize) else {
                return false;
            };
            f.msix.reset();
            f.presented.set16(off::COMMAND, 0);
            f.raw.set16(off::COMMAND, 0);
            let devctl = f.presented.r16(layout::PCIE + pcie::DEVCTL) & !pcie::DEVCTL_FLR;
            f.presented.set16(layout::PCIE + pcie::DEVCTL, devctl);
            f.raw.set16(layout::PCIE + pcie::DEVCTL, devctl);
        }
        let hw = pf::vf_hw_status(v as usize);
        self.bar0.write32(hw, VfHwStatus::FLR_PENDING.bits());
        // FLR_SEQ tells the firmware to look (published after the pending bit).
        let seq = pf::FLR_SEQ.offset();
        loop {
            let old = self.bar0.read32(seq);
            shared_abi::ordering::publish();
            if self.bar0.cas32(seq, old, old.wrapping_add(1)) {
                break;
            }
        }
        self.wake_core();
        wait_for(Duration::from_secs(2), || {
            self.bar0.read32(hw) & VfHwStatus::FLR_PENDING.bits() == 0
        })
    }

    /// Resets the whole device: SR-IOV off, config space and MSI-X to power-on state, device
    /// memory cleared, and the firmware restarted. Waits (bounded) until it is ready again.
    pub fn reset_pf(&self) {
        let had_vfs = {
            let mut g = lock(&self.inner);
            let had = !g.vfs.is_empty();
            g.vfs.clear();
            g.pf_cfg = pci::pf_config(self.board.total_vfs);
            g.pf_msix.reset();
            g.lock_owner = 0;
            g.lock_tokens.clear();
            had
        };
        self.bar0.write32(pf::SRIOV_CTRL.offset(), 0);
        self.bar0.write32(pf::MBOX_LOCK.offset(), 0);
        {
            let mut m = lock(&self.devmem);
            let n = self.board.mem_granules;
            m.scrub(0, n);
        }
        self.bar0.write32(pf::DEV_STATUS.offset(), 0);
        self.fw_reset.store(true, Ordering::Release);
        self.wake_core();
        if had_vfs {
            self.notify(0);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let restarted = wait_for(Duration::from_secs(2), || {
            !self.fw_reset.load(Ordering::Acquire)
        });
        if restarted {
            let left = deadline.saturating_duration_since(Instant::now());
            wait_for(left, || {
                self.bar0.read32(pf::DEV_STATUS.offset()) & regs::DevStatus::READY.bits() != 0
            });
        }
    }
}

/// Waits up to `limit` for the firmware to make `done` true. A core that was woken answers
/// within microseconds, so the first checks only yield the CPU; after that, short naps (a
/// first nap of 200 µs was most of an FLR's time).
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    for _ in 0..64 {
        if done() {
            return true;
        }
        std::thread::yield_now();
    }
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    done()
}

/// Whether a config write of `data` at `o` sets any of `mask` in the 16-bit register at `reg`.
/// Used for write-only bits (Initiate FLR) that never read back.
fn wrote_bits(o: usize, data: &[u8], reg: usize, mask: u16) -> bool {
    mask.to_le_bytes().iter().enumerate().any(|(i, &m)| {
        let at = reg + i;
        at >= o && at < o + data.len() && data[at - o] & m != 0
    })
}
