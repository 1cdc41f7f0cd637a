//! The firmware's log: defmt frames (rzCOBS, zero-delimited) the firmware appends to the log
//! ring in PF BAR0 (`pf::LOG_RING`, producer index `pf::LOG_PROD`, free-running). The host
//! reads what the ring still holds; decoding needs the running image's ELF (its defmt table).

use crate::accel::Accel;
use crate::error::Result;
use shared_abi::regs::pf;

/// Log bytes read from the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// Where the next read starts (the producer index read).
    pub next: u32,
    /// The bytes from the requested index (or the oldest the ring holds) to `next`.
    pub bytes: Vec<u8>,
    /// Bytes between the requested index and the oldest the ring holds: overwritten before
    /// they were read.
    pub lost: u32,
}

impl Accel {
    /// The log bytes from `from` (a producer index an earlier read returned; `None`: the
    /// oldest the ring holds) up to now.
    pub fn read_log(&self, from: Option<u32>) -> Result<LogRead> {
        let t = self.transport();
        let len = pf::LOG_RING.len;
        let prod = t.observe32(pf::LOG_PROD.offset())?;
        let oldest = prod.wrapping_sub(prod.min(len));
        let want = from.unwrap_or(oldest);
        let avail = prod.wrapping_sub(want);
        let (start, lost) = if avail > len {
            (prod.wrapping_sub(len), avail - len)
        } else {
            (want, 0)
        };
        let n = prod.wrapping_sub(start) as usize;
        let mut ring = vec![0u8; len as usize];
        if n > 0 {
            t.read_bytes(pf::LOG_RING.start(), &mut ring)?;
        }
        let bytes = (0..n)
            .map(|i| ring[(start.wrapping_add(i as u32) % len) as usize])
            .collect();
        Ok(LogRead {
            next: prod,
            bytes,
            lost,
        })
    }
}
