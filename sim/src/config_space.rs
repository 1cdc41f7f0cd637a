//! A PCI Express configuration space (4 KiB) that behaves like silicon: every byte has a
//! value, a writable mask and a write-1-to-clear mask, so read-only bits stay read-only and
//! BAR sizing falls out of the masks (write all ones, read back the size mask).

pub use shared_abi::config_space::{cap_id, command as cmd, header as off, CONFIG_SIZE};

/// Config space with write masks.
#[derive(Clone)]
pub struct ConfigSpace {
    data: [u8; CONFIG_SIZE],
    rw: [u8; CONFIG_SIZE],
    w1c: [u8; CONFIG_SIZE],
}

impl std::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field("vendor", &self.r16(0))
            .finish()
    }
}

impl Default for ConfigSpace {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigSpace {
    /// All zero, all read-only.
    pub fn new() -> Self {
        ConfigSpace {
            data: [0; CONFIG_SIZE],
            rw: [0; CONFIG_SIZE],
            w1c: [0; CONFIG_SIZE],
        }
    }

    /// Sets initial bytes (construction only; ignores masks).
    pub fn init(&mut self, off: usize, bytes: &[u8]) {
        self.data[off..off + bytes.len()].copy_from_slice(bytes);
    }
    /// Sets a 16-bit value (construction).
    pub fn init16(&mut self, off: usize, v: u16) {
        self.init(off, &v.to_le_bytes());
    }
    /// Sets a 32-bit value (construction).
    pub fn init32(&mut self, off: usize, v: u32) {
        self.init(off, &v.to_le_bytes());
    }
    /// Marks bits writable.
    pub fn writable(&mut self, off: usize, mask: &[u8]) {
        self.rw[off..off + mask.len()].copy_from_slice(mask);
    }
    /// Marks 16 bits writable.
    pub fn writable16(&mut self, off: usize, mask: u16) {
        self.writable(off, &mask.to_le_bytes());
    }
    /// Marks 32 bits writable.
    pub fn writable32(&mut self, off: usize, mask: u32) {
        self.writable(off, &mask.to_le_bytes());
    }
    /// Marks 16 bits write-1-to-clear.
    pub fn w1c16(&mut self, off: usize, mask: u16) {
        self.w1c[off..off + 2].copy_from_slice(&mask.to_le_bytes());
    }

    /// A 64-bit memory BAR of `size` bytes at `off` (two dwords); `prefetch` sets bit 3.
    pub fn bar64(&mut self, off: usize, size: u64, prefetch: bool) {
        let flags = 0b100 | if prefetch { 0b1000 } else { 0 };
        let mask = !(size - 1);
        self.init32(off, flags);
        self.init32(off + 4, 0);
        self.writable32(off, (mask as u32) & !0xF);
        self.writable32(off + 4, (mask >> 32) as u32);
    }

    /// Reads `buf.len()` bytes; bytes past the end read as 0xFF.
    pub fn read(&self, off: usize, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.data.get(off + i).copied().unwrap_or(0xFF);
        }
    }
    /// Applies a write through the masks. Returns the old bytes for callers that react to
    /// changes.
    pub fn write(&mut self, off: usize, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let o = off + i;
            if o >= CONFIG_SIZE {
                break;
            }
            let (rw, w1c) = (self.rw[o], self.w1c[o]);
            let cur = self.data[o];
            self.data[o] = (cur & !rw) | (v & rw);
            self.data[o] &= !(v & w1c);
        }
    }
    /// Reads 16 bits.
    pub fn r16(&self, off: usize) -> u16 {
        let mut b = [0; 2];
        self.read(off, &mut b);
        u16::from_le_bytes(b)
    }
    /// Reads 32 bits.
    pub fn r32(&self, off: usize) -> u32 {
        let mut b = [0; 4];
        self.read(off, &mut b);
        u32::from_le_bytes(b)
    }
    /// Forces 16 bits regardless of masks (device-side update).
    pub fn set16(&mut self, off: usize, v: u16) {
        self.init16(off, v);
    }
    /// All 4096 bytes.
    pub fn bytes(&self) -> &[u8; CONFIG_SIZE] {
        &self.data
    }

    /// Appends a capability to the standard list: returns nothing, links `prev_next` to `at`.
    pub fn link_cap(&mut self, prev_next: usize, at: usize, id: u8) {
        self.data[prev_next] = at as u8;
        self.data[at] = id;
        self.data[at + 1] = 0;
    }

    /// Writes an extended capability header.
    pub fn ext_cap(&mut self, at: usize, id: u16, version: u8, next: usize) {
        let h = id as u32 | (version as u32) << 16 | (next as u32) << 20;
        self.init32(at, h);
    }
}

/// Renders config space as `lspci -xxxx` prints it, for `lspci -F`.
pub fn lspci_dump(slot: &str, title: &str, bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = format!("{slot} {title}\n");
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(s, "{:02x}:", i * 16);
        for b in line {
            let _ = write!(s, " {b:02x}");
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_rule_writes() {
        let mut c = ConfigSpace::new();
        c.init16(off::VENDOR_ID, 0x1234);
        c.writable16(off::COMMAND, cmd::MEMORY | cmd::BUS_MASTER);
        c.init16(off::STATUS, 0x8010);
        c.w1c16(off::STATUS, 0x8000);
        c.write(off::VENDOR_ID, &[0xFF, 0xFF]);
        assert_eq!(c.r16(off::VENDOR_ID), 0x1234, "read-only stays");
        c.write(off::COMMAND, &0xFFFFu16.to_le_bytes());
        assert_eq!(c.r16(off::COMMAND), cmd::MEMORY | cmd::BUS_MASTER);
        c.write(off::STATUS, &0x0010u16.to_le_bytes());
        assert_eq!(
            c.r16(off::STATUS),
            0x8010,
            "writing 0 to a W1C bit keeps it; RO bit stays"
        );
        c.write(off::STATUS, &0x8000u16.to_le_bytes());
        assert_eq!(c.r16(off::STATUS), 0x0010, "writing 1 clears");
    }

    #[test]
    fn bar_sizing() {
        let mut c = ConfigSpace::new();
        c.bar64(off::BAR0, 0x4_0000, false);
        c.write(off::BAR0, &[0xFF; 8]);
        assert_eq!(
            c.r32(off::BAR0),
            0xFFFC_0004,
            "256 KiB, 64-bit, non-prefetchable"
        );
        assert_eq!(c.r32(off::BAR0 + 4), 0xFFFF_FFFF);
        c.write(off::BAR0, &0xFEB0_0000u32.to_le_bytes());
        assert_eq!(c.r32(off::BAR0), 0xFEB0_0004);
        let mut d = ConfigSpace::new();
        d.bar64(off::BAR0, 1 << 32, true);
        d.write(off::BAR0, &[0xFF; 8]);
        assert_eq!(d.r32(off::BAR0), 0x0000_000C);
        assert_eq!(d.r32(off::BAR0 + 4), 0xFFFF_FFFF);
    }
}
