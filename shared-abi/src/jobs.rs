//! The VF data path's job formats, version 1: the submission entry a VF driver writes into a
//! submission ring in its own memory, and the completion entry the device writes into the
//! completion ring. Both rings are in host (or guest) memory, named by IOVA in the queue block
//! (`regs::queue`) and reached by DMA through the VF's map table.
//!
//! **Polled, not rung.** The device polls every enabled queue's submission ring: an entry is
//! new when its phase bit equals the lap the device is on (1 on the first pass over the ring,
//! then 0, then 1, ...). `SQ_TAIL` is a hint only. Completions carry a phase bit the same way,
//! so a driver polls its completion ring without reading a register.
//!
//! **Ordering** (`ordering`): the driver writes dwords 1..16 of an entry, then publishes dword
//! 0 (phase, version, opcode, flags); the device observes dword 0 before it reads the rest.
//! The device writes a completion's result and tag, then publishes its last dword (status and
//! phase); the driver observes that dword before it reads the rest.
//!
//! **Flow control.** A driver reuses a submission slot only after it has seen that entry's
//! completion; with `CQ_SIZE >= SQ_SIZE` (checked when the queue is enabled) the completion
//! ring can never overflow, so `CQ_HEAD` need not be written.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Format version in every submission entry.
pub const VERSION: u8 = 1;
/// Bytes of a submission entry.
pub const SQE_SIZE: usize = 64;
/// Bytes of a completion entry.
pub const CQE_SIZE: usize = 16;
/// Smallest ring (entries).
pub const MIN_RING: u32 = 2;
/// Largest ring (entries).
pub const MAX_RING: u32 = 4096;
/// Largest `len` of one job (16 MiB).
pub const MAX_JOB_LEN: u32 = 16 << 20;

wire_enum! {
    /// What a job does.
    JobOp: u8 {
        /// Copy `len` bytes from `src` to `dst`.
        Copy = 1,
        /// Fill `len` bytes at `dst` with the low byte of `value`.
        Fill = 2,
        /// CRC-32C (Castagnoli) of `len` bytes at `src`, seeded with `value` (0 for a plain
        /// CRC); the result is the completion's `result`.
        Crc32c = 3,
        /// SHA-256 of `len` bytes at `src`; the 32-byte digest is written at `dst`.
        Sha256 = 4,
    }
}

wire_enum! {
    /// A completion's status.
    JobStatus: u16 {
        /// Done.
        Ok = 0,
        /// The opcode is not one of [`JobOp`].
        BadOpcode = 1,
        /// Wrong version, nonzero reserved fields or flags, or a length past [`MAX_JOB_LEN`].
        BadDescriptor = 2,
        /// A host address is not mapped for DMA, is read-only where the job writes, or its
        /// memory is gone (the client shrank the file behind it).
        HostDma = 3,
        /// The queue was disabled, reset or taken away while the job waited; it did nothing.
        Aborted = 4,
        /// A device address missed in stage 1: its VF virtual page is past `XLAT_PAGES`, its
        /// entry is not valid, or not writable where the job writes. Only this job fails.
        Stage1Fault = 5,
        /// Stage 2 refused a VF-physical address (outside the VF's memory window, or an
        /// invalid translation entry); a fault is also counted on the VF.
        Stage2Fault = 6,
        /// The VF is remote (its engine is in another host) and the link to that host stayed
        /// down past its limit: the job's outcome is unknown and nothing it wrote arrived.
        LinkDown = 7,
    }
}

/// `SqeHead::flags` bits.
pub mod flags {
    /// `src` is a VF virtual address in device memory (two-stage translated), not an IOVA.
    pub const SRC_DEVICE: u8 = 1 << 0;
    /// `dst` is a VF virtual address in device memory.
    pub const DST_DEVICE: u8 = 1 << 1;
    /// Every defined bit.
    pub const ALL: u8 = SRC_DEVICE | DST_DEVICE;
}

/// Stage-1 translation: the table a VF's driver keeps in the VF's own device memory. A job's
/// device address is a VF virtual address `va`; entry `va >> PAGE_SHIFT` of the table at
/// `XLAT_ROOT` (a VF-local, that is VF-physical, address) gives the VF-physical page; stage 2
/// (the VF bank's TT_BASE/TT_LEN, programmed by the firmware) then gives the device page.
pub mod xlat {
    /// Log2 of the stage-1 page size (4 KiB).
    pub const PAGE_SHIFT: u32 = 12;
    /// Bytes per stage-1 entry.
    pub const ENTRY_SIZE: usize = 8;
    /// Entry bit: the entry maps a page.
    pub const VALID: u64 = 1 << 0;
    /// Entry bit: jobs may write the page.
    pub const WRITABLE: u64 = 1 << 1;
    /// Entry bits holding the VF-physical page address (page aligned).
    pub const ADDR_MASK: u64 = !((1 << PAGE_SHIFT) - 1);

    /// An entry mapping a virtual page to VF-physical address `pa`.
    pub const fn entry(pa: u64, writable: bool) -> u64 {
        (pa & ADDR_MASK) | VALID | if writable { WRITABLE } else { 0 }
    }
}

/// Dword 0 of a submission entry, the one the driver publishes last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqeHead {
    /// Lap parity the entry was written in (bit 0 only).
    pub phase: u8,
    /// [`VERSION`].
    pub version: u8,
    /// [`JobOp`] as u8.
    pub op: u8,
    /// [`flags`] bits; the others are zero.
    pub flags: u8,
}

impl SqeHead {
    /// As the dword the driver publishes.
    pub const fn to_word(self) -> u32 {
        u32::from_le_bytes([self.phase, self.version, self.op, self.flags])
    }
    /// From the dword the device observes.
    pub const fn from_word(w: u32) -> Self {
        let b = w.to_le_bytes();
        SqeHead {
            phase: b[0],
            version: b[1],
            op: b[2],
            flags: b[3],
        }
    }
}

/// A submission entry. 64 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Sqe {
    /// [`SqeHead`] as a dword: published last.
    pub head: U32,
    /// Chosen by the driver, echoed in the completion.
    pub tag: U32,
    /// Source (COPY, CRC32C, SHA256): an IOVA, or a VF virtual address with
    /// [`flags::SRC_DEVICE`].
    pub src: U64,
    /// Destination (COPY, FILL, SHA256): an IOVA, or a VF virtual address with
    /// [`flags::DST_DEVICE`].
    pub dst: U64,
    /// Bytes (1..=[`MAX_JOB_LEN`]).
    pub len: U32,
    /// FILL: the byte (bits 7..0, the rest zero); CRC32C: the seed; otherwise zero.
    pub value: U32,
    /// Reserved, zero.
    pub reserved: [U32; 8],
}

/// A completion entry. 16 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Cqe {
    /// CRC32C: the CRC; COPY and FILL: bytes written; SHA256: 0.
    pub result: U64,
    /// The submission's tag.
    pub tag: U32,
    /// [`JobStatus`] in bits 15..0, the phase in bit 16: published last.
    pub status: U32,
}

impl Cqe {
    /// Offset of the dword published last.
    pub const STATUS_OFFSET: usize = 12;
    /// The status dword: status and phase.
    pub const fn status_word(status: JobStatus, phase: u8) -> u32 {
        status.wire() as u32 | ((phase as u32 & 1) << 16)
    }
    /// Phase bit of a status dword.
    pub const fn phase_of(word: u32) -> u8 {
        ((word >> 16) & 1) as u8
    }
    /// Status of a status dword (`None`: a value this ABI does not define).
    pub fn status_of(word: u32) -> Option<JobStatus> {
        JobStatus::from_wire((word & 0xFFFF) as u16)
    }
}

/// What a queue's `STATUS` register says after the driver set ENABLE.
pub mod queue_status {
    /// Running.
    pub const OK: u32 = 0;
    /// A ring size is not a power of two in [`super::MIN_RING`]..=[`super::MAX_RING`], or the
    /// completion ring is smaller than the submission ring.
    pub const BAD_SIZE: u32 = 1;
    /// A ring base is not aligned to its entry size.
    pub const BAD_ALIGNMENT: u32 = 2;
    /// `MSIX_VECTOR` is not one of the VF's vectors while IRQ_ENABLE is set.
    pub const BAD_VECTOR: u32 = 3;
    /// A ring could not be read or written by DMA; the queue stopped.
    pub const DMA_ERROR: u32 = 4;
}

/// CRC-32C (Castagnoli, reflected, as iSCSI and ext4 use it), continuing from `seed` (0 to
/// start). The device and drivers compute it the same way.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    const CRC: crc::Crc<u32, crc::Table<16>> =
        crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
    // The running state is the complement of the CRC so far, kept bit-reflected by the crate
    // (which reflects the initial value it is given).
    let mut d = CRC.digest_with_initial((!seed).reverse_bits());
    d.update(data);
    d.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn sizes_match_docs() {
        assert_eq!(size_of::<Sqe>(), SQE_SIZE);
        assert_eq!(size_of::<Cqe>(), CQE_SIZE);
    }

    #[test]
    fn head_word_round_trips() {
        let h = SqeHead {
            phase: 1,
            version: VERSION,
            op: JobOp::Crc32c.wire(),
            flags: 0,
        };
        assert_eq!(SqeHead::from_word(h.to_word()), h);
        assert_eq!(h.to_word() & 0xFF, 1, "phase is the lowest byte");
    }

    #[test]
    fn crc32c_known_answers() {
        // RFC 3720 B.4 test vectors and the standard check value.
        assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(0, &[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(0, &[0xFFu8; 32]), 0x62A8_AB43);
        // Continuing from a seed equals one pass.
        let (a, b) = b"123456789".split_at(4);
        assert_eq!(crc32c(crc32c(0, a), b), crc32c(0, b"123456789"));
    }
}
