//! MSI-X: eventfds per vector, masking, and delivery (held pending unless the function may
//! send it).

use super::*;
use crate::msix::Signals;

impl Device {
    /// Installs eventfds for MSI-X vectors of a function.
    pub fn set_msix_eventfds(
        &self,
        f: Func,
        start: u32,
        count: u32,
        fds: Vec<OwnedFd>,
    ) -> Result<(), AccessError> {
        let mut g = lock(&self.inner);
        let m = self.msix_of(&mut g, f)?;
        m.set_eventfds(start as usize, count as usize, fds)
            .map_err(|_| AccessError::OutOfRange)
    }

    /// Drops all eventfds of a function.
    pub fn clear_msix(&self, f: Func) {
        let mut g = lock(&self.inner);
        if let Ok(m) = self.msix_of(&mut g, f) {
            m.clear_eventfds();
        }
    }

    /// SET_IRQS MASK/UNMASK.
    pub fn mask_msix(
        &self,
        f: Func,
        start: u32,
        count: u32,
        masked: bool,
    ) -> Result<(), AccessError> {
        let mut out = Signals::default();
        let mut g = lock(&self.inner);
        let (en, fm) = self.msix_ctl_of(&mut g, f)?;
        let m = self.msix_of(&mut g, f)?;
        let r = m
            .set_client_mask(start as usize, count as usize, masked, en, fm, &mut out)
            .map_err(|_| AccessError::OutOfRange);
        drop(g);
        out.send();
        r
    }

    /// SET_IRQS TRIGGER from the client: signals the vectors' eventfds directly, as kernel
    /// vfio-pci does ([`Msix::signal`]); no mask, pending bit or bus master state is involved.
    pub fn signal_msix(&self, f: Func, start: u32, count: u32) -> Result<(), AccessError> {
        self.each_vector(f, start, count, |m, i, _, out| {
            m.signal(i, out);
        })
    }

    /// Raises vectors the device itself sends (completions, mailbox, events): held pending
    /// while the function may not send them.
    pub fn fire_msix(&self, f: Func, start: u32, count: u32) -> Result<(), AccessError> {
        self.each_vector(f, start, count, |m, i, (en, fm), out| {
            m.fire(i, en, fm, out);
        })
    }

    /// Runs `each` on vectors `[start, start + count)` of `f` (all in range, or none) under
    /// the device's lock, with the function's (may send, function mask); the eventfds it
    /// chose are written after the lock is dropped.
    fn each_vector(
        &self,
        f: Func,
        start: u32,
        count: u32,
        mut each: impl FnMut(&mut Msix, usize, (bool, bool), &mut Signals),
    ) -> Result<(), AccessError> {
        let mut out = Signals::default();
        let mut g = lock(&self.inner);
        let ctl = self.msix_ctl_of(&mut g, f)?;
        let m = self.msix_of(&mut g, f)?;
        let end = (start as usize)
            .checked_add(count as usize)
            .filter(|e| *e <= m.len())
            .ok_or(AccessError::OutOfRange)?;
        for i in start as usize..end {
            each(m, i, ctl, &mut out);
        }
        drop(g);
        out.send();
        Ok(())
    }

    /// Interrupts delivered to eventfds of a function so far.
    pub fn irqs_delivered(&self, f: Func) -> u64 {
        let mut g = lock(&self.inner);
        self.msix_of(&mut g, f).map_or(0, |m| m.delivered)
    }

    fn msix_ctl_of(&self, g: &mut Inner, f: Func) -> Result<(bool, bool), AccessError> {
        match f {
            Func::Pf => Ok(msix_ctl(&g.pf_cfg)),
            Func::Vf(v) => {
                self.sync_vf(g, v)?;
                Ok(msix_ctl(&g.vfs[v as usize].presented))
            }
        }
    }

    fn msix_of<'a>(&self, g: &'a mut Inner, f: Func) -> Result<&'a mut Msix, AccessError> {
        match f {
            Func::Pf => Ok(&mut g.pf_msix),
            Func::Vf(v) => {
                self.sync_vf(g, v)?;
                Ok(&mut g.vfs[v as usize].msix)
            }
        }
    }
}

pub(super) use crate::pci::msix_ctl;
