//! The device's flash: a file that outlives the process, holding a one-time-programmed page
//! (the key images must be signed with, and the board), a boot record kept in two copies, and
//! two image slots, A and B. The flash controller's commands (`regs::FlashCmd`) and the boot
//! stage's choice of slot are here; nothing in this file trusts what a slot holds until
//! `fw_image::verify` has passed it.
//!
//! ```text
//! 0x0000  OTP page: "ACVTOTP1", public key (32), board (4), CRC-32 of the above
//! 0x0100  OTP rollback-floor fuses: 64 entries of (version u32, CRC-32 of it), written
//!         once each, in order; the floor is the highest written (it only rises)
//! 0x1000  boot record, copy 0 (64 bytes)       } the copy with a good CRC and the higher
//! 0x1200  boot record, copy 1                  } sequence number counts
//! 0x2000  slot A (fw_image::SLOT_SIZE bytes)
//! 0x2000 + SLOT_SIZE  slot B
//! ```
//!
//! Power loss: a record is written to the copy not holding the current one, so a torn write
//! leaves the previous record in force. A slot being written is marked empty first and valid
//! only after its image verified from flash; the boot stage verifies again before it runs
//! one. A trial boot of a new slot is recorded before it starts: if it is found still
//! recorded at the next boot (power lost, or the image hung before READY), the slot is bad
//! and the previous one boots.

use fw_image::{ImageError, PAYLOAD_OFFSET, SLOT_SIZE};
use nix::fcntl::{Flock, FlockArg};
use shared_abi::messages::FwSlotInfo;
use shared_abi::regs::{flash_result, slot_flags};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const OTP_MAGIC: [u8; 8] = *b"ACVTOTP1";
/// The rollback-floor fuses: one-time-programmable entries, each written once.
const FUSES_AT: u64 = 0x0100;
const FUSES: usize = 64;
const RECORD_MAGIC: [u8; 4] = *b"ACBR";
const RECORD_AT: [u64; 2] = [0x1000, 0x1200];
const SLOT_BASE: u64 = 0x2000;
const _: () = assert!(core::mem::size_of::<Record>() == 64);
/// No slot.
pub const NONE: u8 = 0xFF;

/// What the controller knows of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum SlotState {
    /// Nothing, or an image being written.
    Empty = 0,
    /// An image that verified.
    Valid = 1,
    /// Failed verification, or never became ready.
    Bad = 2,
}

impl SlotState {
    fn from(b: u8) -> Self {
        match b {
            1 => SlotState::Valid,
            2 => SlotState::Bad,
            _ => SlotState::Empty,
        }
    }
}

/// The boot record. 64 bytes.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Record {
    magic: [u8; 4],
    seq: u32,
    /// The slot that last became ready.
    active: u8,
    /// The slot the next boot tries.
    pending: u8,
    /// A slot whose trial boot has started and not yet been confirmed.
    trial: u8,
    state: [u8; 2],
    reserved: [u8; 3],
    /// Version, build id, size of each slot's image (as it verified).
    version: [u32; 2],
    build_id: [u32; 2],
    size: [u32; 2],
    floor: [u32; 2],
    reserved2: [u8; 12],
    crc: u32,
}

impl Record {
    fn empty() -> Self {
        Record {
            magic: RECORD_MAGIC,
            seq: 0,
            active: NONE,
            pending: NONE,
            trial: NONE,
            state: [0; 2],
            reserved: [0; 3],
            version: [0; 2],
            build_id: [0; 2],
            size: [0; 2],
            floor: [0; 2],
            reserved2: [0; 12],
            crc: 0,
        }
    }

    /// Whether every slot it names is a slot: the file is an input like any other, and a
    /// record this device did not write must not index past the slots.
    fn well_formed(&self) -> bool {
        [self.active, self.pending, self.trial]
            .iter()
            .all(|&s| s <= 1 || s == NONE)
    }

    fn crc_of(&self) -> u32 {
        let b = self.as_bytes();
        fw_image::crc32(&b[..b.len() - 4])
    }
}

/// Why the device cannot boot.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The flash file.
    #[error("flash {0}")]
    Io(#[from] std::io::Error),
    /// Another device model holds it.
    #[error("flash is in use by another device model")]
    InUse,
    /// Not provisioned, and nothing to provision it with.
    #[error("flash is empty: {0}")]
    Unprovisioned(String),
    /// The OTP page is damaged.
    #[error("flash OTP page is damaged (not a flash this device wrote)")]
    BadOtp,
    /// The image offered for provisioning does not verify.
    #[error("the image to install does not verify: {0}")]
    Install(ImageError),
    /// Neither slot holds an image that verifies and has not failed.
    #[error("no bootable firmware in flash (slot A: {0}, slot B: {1})")]
    NothingToBoot(&'static str, &'static str),
}

/// The flash and its controller.
#[derive(Debug)]
pub struct Flash {
    file: Flock<File>,
    key: [u8; 32],
    board: u32,
    rec: Record,
    /// The slot the running image came from, and that image's version.
    running: Option<(u8, u32)>,
    /// The rollback floor: the highest version written to the fuses (0: none).
    security: u32,
    /// Fuse entries written.
    fuses_used: usize,
}

fn slot_at(slot: u8) -> u64 {
    SLOT_BASE + slot as u64 * SLOT_SIZE as u64
}

impl Flash {
    /// Opens the flash at `path`. A missing or empty file is provisioned: the OTP page gets
    /// `key` and `board`, and `image` (which must verify with them) goes into slot A.
    pub fn open(
        path: &Path,
        board: u32,
        provision: impl FnOnce() -> Result<([u8; 32], Vec<u8>), String>,
    ) -> Result<Self, FlashError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // Taken before anything is read or written (provisioning writes): one device model
        // per flash. Held as long as this value lives (a process that dies lets it go).
        let file =
            Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| FlashError::InUse)?;
        let mut otp = [0u8; 48];
        let n = file.read_at(&mut otp, 0)?;
        if n == 0 || otp[..8] == [0; 8] {
            let (key, image) = provision().map_err(FlashError::Unprovisioned)?;
            return Self::provision(file, key, board, &image);
        }
        if n < 48
            || otp[..8] != OTP_MAGIC
            || fw_image::crc32(&otp[..44])
                != u32::from_le_bytes(otp[44..48].try_into().unwrap_or_default())
        {
            return Err(FlashError::BadOtp);
        }
        let key: [u8; 32] = otp[8..40].try_into().unwrap_or_default();
        let board = u32::from_le_bytes(otp[40..44].try_into().unwrap_or_default());
        let rec = Self::read_record(&file)?.unwrap_or_else(Record::empty);
        let (security, fuses_used) = Self::read_fuses(&file)?;
        Ok(Flash {
            file,
            key,
            board,
            rec,
            running: None,
            security,
            fuses_used,
        })
    }

    fn provision(
        file: Flock<File>,
        key: [u8; 32],
        board: u32,
        image: &[u8],
    ) -> Result<Self, FlashError> {
        let p = fw_image::verify(image, &key, board).map_err(FlashError::Install)?;
        file.set_len(slot_at(2))?;
        // The slot and its record first, the OTP page last: a provisioning cut short leaves
        // a flash that reads as empty and is provisioned again.
        file.write_all_at(image, slot_at(0))?;
        let mut f = Flash {
            file,
            key,
            board,
            rec: Record::empty(),
            running: None,
            security: 0,
            fuses_used: 0,
        };
        f.rec.state[0] = SlotState::Valid as u8;
        f.rec.active = 0;
        f.note_image(0, &p.header);
        f.write_record()?;
        let mut otp = Vec::with_capacity(48);
        otp.extend_from_slice(&OTP_MAGIC);
        otp.extend_from_slice(&key);
        otp.extend_from_slice(&board.to_le_bytes());
        let crc = fw_image::crc32(&otp);
        otp.extend_from_slice(&crc.to_le_bytes());
        f.file.write_all_at(&otp, 0)?;
        f.file.sync_all()?;
        Ok(f)
    }

    /// The rollback floor the fuses hold, and how many entries are written. An entry is
    /// written once; one whose CRC does not match (a write cut short) counts as used but
    /// raises nothing.
    fn read_fuses(file: &File) -> std::io::Result<(u32, usize)> {
        let mut b = [0u8; FUSES * 8];
        let n = file.read_at(&mut b, FUSES_AT)?;
        let (mut floor, mut used) = (0u32, 0usize);
        for e in b[..n - n % 8].chunks_exact(8) {
            if e == [0u8; 8] {
                break;
            }
            used += 1;
            let v = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let crc = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            if crc == fw_image::crc32(&e[..4]) {
                floor = floor.max(v);
            }
        }
        Ok((floor, used))
    }

    /// Raises the rollback floor to `version` (never lowers it): the next fuse entry is
    /// written. With every entry used the floor stays where it is.
    fn raise_floor(&mut self, version: u32) -> std::io::Result<()> {
        if version <= self.security || self.fuses_used >= FUSES {
            return Ok(());
        }
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&version.to_le_bytes());
        let crc = fw_image::crc32(&e[..4]);
        e[4..].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(&e, FUSES_AT + 8 * self.fuses_used as u64)?;
        self.file.sync_data()?;
        self.fuses_used += 1;
        self.security = version;
        Ok(())
    }

    /// The device's rollback floor (0 when none was ever raised).
    pub fn rollback_floor(&self) -> u32 {
        self.security
    }

    fn read_record(file: &File) -> std::io::Result<Option<Record>> {
        let mut best: Option<Record> = None;
        for at in RECORD_AT {
            let mut b = [0u8; 64];
            if file.read_at(&mut b, at)? < 64 {
                continue;
            }
            let Ok(r) = Record::read_from_bytes(&b) else {
                continue;
            };
            if r.magic == RECORD_MAGIC
                && r.crc == r.crc_of()
                && r.well_formed()
                && best.is_none_or(|b| r.seq > b.seq)
            {
                best = Some(r);
            }
        }
        Ok(best)
    }

    /// Writes the record (next sequence number) into the copy not holding the current one.
    fn write_record(&mut self) -> std::io::Result<()> {
        self.rec.seq = self.rec.seq.wrapping_add(1);
        self.rec.crc = self.rec.crc_of();
        let at = RECORD_AT[(self.rec.seq % 2) as usize];
        self.file.write_all_at(self.rec.as_bytes(), at)?;
        self.file.sync_data()
    }

    fn note_image(&mut self, slot: u8, h: &fw_image::Header) {
        let i = slot as usize;
        self.rec.version[i] = h.fw_version.get();
        self.rec.build_id[i] = h.build_id.get();
        self.rec.size[i] = (PAYLOAD_OFFSET as u32).saturating_add(h.payload_size.get());
        self.rec.floor[i] = h.min_rollback.get();
    }

    /// Reads slot `slot`'s image (as long as its header says, bounded by the slot) and
    /// verifies it with the device's key and board.
    fn read_verified(&self, slot: u8) -> Result<Vec<u8>, ImageError> {
        let mut head = [0u8; fw_image::HEADER_SIZE];
        self.file
            .read_exact_at(&mut head, slot_at(slot))
            .map_err(|_| ImageError::Truncated {
                have: 0,
                need: fw_image::HEADER_SIZE,
            })?;
        let h = fw_image::header(&head)?;
        let len = PAYLOAD_OFFSET + h.payload_size.get() as usize;
        let mut img = vec![0u8; len];
        self.file
            .read_exact_at(&mut img, slot_at(slot))
            .map_err(|_| ImageError::Truncated { have: 0, need: len })?;
        fw_image::verify(&img, &self.key, self.board)?;
        Ok(img)
    }

    /// The boot stage: which slot to boot, and its verified image. A slot whose trial boot
    /// was never confirmed is bad; a pending slot is tried (recorded as a trial first); a
    /// slot that fails verification is marked bad and the other one is tried.
    pub fn choose_boot(&mut self) -> Result<(u8, Vec<u8>), FlashError> {
        self.running = None;
        if self.rec.trial != NONE {
            let t = self.rec.trial;
            self.rec.state[t as usize] = SlotState::Bad as u8;
            self.rec.trial = NONE;
            if self.rec.pending == t {
                self.rec.pending = NONE;
            }
            self.write_record()?;
        }
        let other = |s: u8| if s == 0 { 1 } else { 0 };
        let first = if self.rec.pending != NONE {
            self.rec.pending
        } else if self.rec.active != NONE {
            self.rec.active
        } else {
            0
        };
        let mut why = ["empty", "empty"];
        for slot in [first, other(first)] {
            match SlotState::from(self.rec.state[slot as usize]) {
                SlotState::Empty => continue,
                SlotState::Bad => {
                    why[slot as usize] = "bad";
                    continue;
                }
                SlotState::Valid => {}
            }
            // Below the rollback floor an image does not boot, verified or not: that is what
            // the floor is for (an old image with a known hole).
            if self.rec.version[slot as usize] < self.security {
                why[slot as usize] = "below the rollback floor";
                self.rec.state[slot as usize] = SlotState::Bad as u8;
                if self.rec.pending == slot {
                    self.rec.pending = NONE;
                }
                self.write_record()?;
                continue;
            }
            match self.read_verified(slot) {
                Ok(img) => {
                    if slot != self.rec.active {
                        // Not yet proven on this device: a trial, until it reports READY.
                        self.rec.trial = slot;
                        self.write_record()?;
                    }
                    self.running = Some((slot, self.rec.version[slot as usize]));
                    return Ok((slot, img));
                }
                Err(e) => {
                    why[slot as usize] = "fails verification";
                    let _ = e;
                    self.rec.state[slot as usize] = SlotState::Bad as u8;
                    if self.rec.pending == slot {
                        self.rec.pending = NONE;
                    }
                    self.write_record()?;
                }
            }
        }
        Err(FlashError::NothingToBoot(why[0], why[1]))
    }

    /// The image booted from `slot` reported READY: it is the active slot now, and the
    /// rollback floor rises to the floor it demands (only once it has proven itself, so a new
    /// image that never comes up leaves the old one bootable, as a verified boot's rollback
    /// index is raised after a successful boot).
    pub fn confirm(&mut self, slot: u8) -> std::io::Result<()> {
        if !(self.rec.active == slot && self.rec.trial == NONE && self.rec.pending == NONE) {
            self.rec.active = slot;
            self.rec.trial = NONE;
            if self.rec.pending == slot {
                self.rec.pending = NONE;
            }
            self.write_record()?;
        }
        // After the record: power lost between the two leaves the new image active and the
        // floor where it was (raised at its next boot), never a floor raised over the only
        // image the record would boot.
        self.raise_floor(self.rec.floor[slot as usize])
    }

    /// The image chosen from `slot` was never started, for a reason of the host's: it was not
    /// tried, so nothing is marked; a trial is withdrawn (a pending slot stays pending, and
    /// the next boot tries it again instead of counting it as failed).
    pub fn not_started(&mut self, slot: u8) -> std::io::Result<()> {
        self.running = None;
        if self.rec.trial != slot {
            return Ok(());
        }
        self.rec.trial = NONE;
        self.write_record()
    }

    /// The image booted from `slot` did not become ready (or died first): it is bad.
    pub fn fail(&mut self, slot: u8) -> std::io::Result<()> {
        self.rec.state[slot as usize] = SlotState::Bad as u8;
        if self.rec.trial == slot {
            self.rec.trial = NONE;
        }
        if self.rec.pending == slot {
            self.rec.pending = NONE;
        }
        self.running = None;
        self.write_record()
    }

    /// The slot the running image came from.
    pub fn running(&self) -> Option<u8> {
        self.running.map(|r| r.0)
    }

    fn writable(&self, slot: u32) -> Result<u8, u32> {
        if slot > 1 || self.running() == Some(slot as u8) {
            return Err(flash_result::BAD_SLOT);
        }
        Ok(slot as u8)
    }

    /// ERASE: slot `slot` stops counting (it reads as empty until a commit).
    pub fn erase(&mut self, slot: u32) -> Result<(), u32> {
        let s = self.writable(slot)?;
        self.rec.state[s as usize] = SlotState::Empty as u8;
        if self.rec.pending == s {
            self.rec.pending = NONE;
        }
        self.write_record().map_err(|_| flash_result::IO)
    }

    /// WRITE: `data` into slot `slot` at `off`.
    pub fn write(&mut self, slot: u32, off: u32, data: &[u8]) -> Result<(), u32> {
        let s = self.writable(slot)?;
        if SlotState::from(self.rec.state[s as usize]) != SlotState::Empty {
            return Err(flash_result::BAD_SLOT); // erase first
        }
        if (off as usize).saturating_add(data.len()) > SLOT_SIZE {
            return Err(flash_result::BAD_RANGE);
        }
        self.file
            .write_all_at(data, slot_at(s) + off as u64)
            .map_err(|_| flash_result::IO)
    }

    /// COMMIT: verify the `len` bytes slot `slot` holds, never below the rollback floor and
    /// not older than the running image unless a downgrade is allowed, and make it the slot
    /// the next reset boots.
    pub fn commit(&mut self, slot: u32, allow_downgrade: bool, len: u32) -> Result<(), u32> {
        let s = self.writable(slot)?;
        if SlotState::from(self.rec.state[s as usize]) != SlotState::Empty {
            return Err(flash_result::BAD_SLOT);
        }
        if len as usize > SLOT_SIZE {
            return Err(flash_result::BAD_RANGE);
        }
        self.file.sync_data().map_err(|_| flash_result::IO)?;
        let mut img = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut img, slot_at(s))
            .map_err(|_| flash_result::IO)?;
        let refused = |e: ImageError| flash_result::IMAGE | e.code() as u32;
        let h = fw_image::verify(&img, &self.key, self.board)
            .map_err(refused)?
            .header;
        let running = self.running.map_or(0, |r| r.1);
        fw_image::check_rollback(h.fw_version.get(), running, self.security, allow_downgrade)
            .map_err(refused)?;
        self.note_image(s, &h);
        self.rec.state[s as usize] = SlotState::Valid as u8;
        self.rec.pending = s;
        self.write_record().map_err(|_| flash_result::IO)
    }

    /// ACTIVATE: valid slot `slot` boots next (the running one: nothing pending).
    pub fn activate(&mut self, slot: u32) -> Result<(), u32> {
        if slot > 1 {
            return Err(flash_result::BAD_SLOT);
        }
        let s = slot as u8;
        if SlotState::from(self.rec.state[s as usize]) != SlotState::Valid {
            return Err(flash_result::NOT_VALID);
        }
        self.rec.pending = if self.running() == Some(s) { NONE } else { s };
        self.write_record().map_err(|_| flash_result::IO)
    }

    /// Both slots as FW_QUERY_SLOTS reports them.
    pub fn slots(&self) -> [FwSlotInfo; 2] {
        [0u8, 1].map(|s| {
            let i = s as usize;
            let st = SlotState::from(self.rec.state[i]);
            let mut flags = 0;
            if st == SlotState::Valid {
                flags |= slot_flags::VALID;
            }
            if st == SlotState::Bad {
                flags |= slot_flags::BAD;
            }
            if self.running() == Some(s) {
                flags |= slot_flags::RUNNING;
            }
            if self.rec.pending == s {
                flags |= slot_flags::PENDING;
            }
            let known = st != SlotState::Empty;
            FwSlotInfo {
                slot: s,
                flags,
                reserved: 0.into(),
                version: if known { self.rec.version[i] } else { 0 }.into(),
                build_id: if known { self.rec.build_id[i] } else { 0 }.into(),
                size: if known { self.rec.size[i] } else { 0 }.into(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 32] = [3; 32];
    const BOARD: u32 = fw_image::BOARD_SIM;

    fn image(version: u32, floor: u32, payload: &[u8]) -> Vec<u8> {
        let h = fw_image::header_for(payload, version, version ^ 0x5a5a, BOARD, floor);
        let sig = fw_image::sign(&h, payload, &SEED);
        [h.as_bytes(), &sig[..], payload].concat()
    }

    fn fresh(dir: &tempfile::TempDir) -> Flash {
        Flash::open(&dir.path().join("flash"), BOARD, || {
            Ok((
                fw_image::public_key(&SEED),
                image(0x0100_0000, 0x0100_0000, b"one"),
            ))
        })
        .unwrap()
    }

    fn reopen(dir: &tempfile::TempDir) -> Flash {
        Flash::open(&dir.path().join("flash"), BOARD, || Err("no".into())).unwrap()
    }

    fn download(f: &mut Flash, slot: u32, img: &[u8], allow: bool) -> Result<(), u32> {
        f.erase(slot)?;
        for (i, c) in img.chunks(7).enumerate() {
            f.write(slot, (i * 7) as u32, c)?;
        }
        f.commit(slot, allow, img.len() as u32)
    }

    #[test]
    fn provisions_boots_updates_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = fresh(&dir);
        let (slot, img) = f.choose_boot().unwrap();
        assert_eq!((slot, &img[PAYLOAD_OFFSET..]), (0, &b"one"[..]));
        f.confirm(0).unwrap();
        assert_eq!(
            f.erase(0),
            Err(flash_result::BAD_SLOT),
            "the running slot is not written"
        );
        download(&mut f, 1, &image(0x0200_0000, 0x0100_0000, b"two"), false).unwrap();
        let s = f.slots();
        assert_eq!(s[1].flags, slot_flags::VALID | slot_flags::PENDING);
        assert_eq!(s[0].flags, slot_flags::VALID | slot_flags::RUNNING);
        // The record survives the process.
        drop(f);
        let mut f = reopen(&dir);
        let (slot, img) = f.choose_boot().unwrap();
        assert_eq!((slot, &img[PAYLOAD_OFFSET..]), (1, &b"two"[..]));
        f.confirm(1).unwrap();
        drop(f);
        let mut f = reopen(&dir);
        assert_eq!(
            f.choose_boot().unwrap().0,
            1,
            "confirmed: the new active slot"
        );
    }

    #[test]
    fn the_rollback_floor_rises_with_a_proven_image_and_nothing_goes_below_it() {
        use shared_abi::image::reason;
        let dir = tempfile::tempdir().unwrap();
        let mut f = fresh(&dir);
        f.choose_boot().unwrap();
        f.confirm(0).unwrap();
        assert_eq!(
            f.rollback_floor(),
            0x0100_0000,
            "the installed image's floor"
        );
        // 2.0.0, demanding 2.0.0: committed, booted, proven.
        download(&mut f, 1, &image(0x0200_0000, 0x0200_0000, b"two"), false).unwrap();
        assert_eq!(f.choose_boot().unwrap().0, 1);
        assert_eq!(f.rollback_floor(), 0x0100_0000, "not before it runs");
        f.confirm(1).unwrap();
        assert_eq!(f.rollback_floor(), 0x0200_0000);
        // 1.5.0 is below it: refused, a downgrade asked for or not.
        let below = flash_result::IMAGE | reason::BELOW_FLOOR as u32;
        let old = image(0x0105_0000, 0x0100_0000, b"old");
        assert_eq!(download(&mut f, 0, &old, true), Err(below));
        assert_eq!(download(&mut f, 0, &old, false), Err(below));
        // The device restarted (the flash reopened): still there; nothing lowers it.
        drop(f);
        let mut f = reopen(&dir);
        assert_eq!(f.rollback_floor(), 0x0200_0000);
        assert_eq!(f.choose_boot().unwrap().0, 1);
        f.confirm(1).unwrap();
        assert_eq!(download(&mut f, 0, &old, true), Err(below));
        // 3.0.0 demanding only 2.0.0 runs; then 2.5.0 is a downgrade, the host's to ask for.
        download(&mut f, 0, &image(0x0300_0000, 0x0200_0000, b"three"), false).unwrap();
        f.choose_boot().unwrap();
        f.confirm(0).unwrap();
        assert_eq!(f.rollback_floor(), 0x0200_0000);
        let back = image(0x0205_0000, 0x0200_0000, b"back");
        assert_eq!(
            download(&mut f, 1, &back, false),
            Err(flash_result::IMAGE | reason::DOWNGRADE as u32)
        );
        download(&mut f, 1, &back, true).unwrap();
    }

    #[test]
    fn an_image_left_below_the_rollback_floor_does_not_boot() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = fresh(&dir);
        f.choose_boot().unwrap();
        f.confirm(0).unwrap();
        download(&mut f, 1, &image(0x0200_0000, 0x0200_0000, b"two"), false).unwrap();
        f.choose_boot().unwrap();
        f.confirm(1).unwrap();
        // Slot A still holds 1.0.0, verified and valid; slot B is then damaged.
        drop(f);
        {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.path().join("flash"))
                .unwrap();
            file.write_all_at(&[0xFF; 16], slot_at(1) + PAYLOAD_OFFSET as u64)
                .unwrap();
        }
        let mut f = reopen(&dir);
        match f.choose_boot() {
            Err(FlashError::NothingToBoot(a, _)) => assert_eq!(a, "below the rollback floor"),
            other => panic!("booted {:?}", other.map(|(s, _)| s)),
        }
    }

    #[test]
    fn refusals_leave_the_running_image_and_nothing_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = fresh(&dir);
        f.choose_boot().unwrap();
        f.confirm(0).unwrap();
        let good = image(0x0200_0000, 0x0200_0000, b"two");
        let mut bad_sig = good.clone();
        bad_sig[70] ^= 1;
        let code = |e: ImageError| flash_result::IMAGE | e.code() as u32;
        assert_eq!(
            download(&mut f, 1, &bad_sig, false),
            Err(code(ImageError::BadSignature))
        );
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        assert!(download(&mut f, 1, &bad_crc, false).unwrap_err() & flash_result::IMAGE != 0);
        assert!(
            download(&mut f, 1, &good[..good.len() - 1], false).is_err(),
            "truncated"
        );
        let old = image(0x0009_0000, 0, b"old");
        assert_eq!(
            download(&mut f, 1, &old, false),
            Err(code(ImageError::BelowRollbackFloor {
                version: 0,
                floor: 0
            }))
        );
        assert!(f.slots()[1].flags & slot_flags::PENDING == 0);
        assert_eq!(f.choose_boot().unwrap().0, 0, "still the running image");
        f.confirm(0).unwrap();
        // Below the floor even when the host asks for a downgrade.
        assert_eq!(
            download(&mut f, 1, &old, true),
            Err(code(ImageError::BelowRollbackFloor {
                version: 0,
                floor: 0
            }))
        );
    }

    #[test]
    fn a_trial_that_never_confirms_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = fresh(&dir);
        f.choose_boot().unwrap();
        f.confirm(0).unwrap();
        download(&mut f, 1, &image(0x0200_0000, 0, b"two"), false).unwrap();
        assert_eq!(f.choose_boot().unwrap().0, 1);
        // Power lost during the trial (no confirm, no fail): the next boot is the old one.
        drop(f);
        let mut f = reopen(&dir);
        assert_eq!(f.choose_boot().unwrap().0, 0);
        assert_eq!(f.slots()[1].flags, slot_flags::BAD);
        // And a watchdog failure does the same.
        f.confirm(0).unwrap();
        download(&mut f, 1, &image(0x0200_0001, 0, b"three"), false).unwrap();
        assert_eq!(f.choose_boot().unwrap().0, 1);
        f.fail(1).unwrap();
        assert_eq!(f.choose_boot().unwrap().0, 0);
    }

    #[test]
    fn a_cut_at_any_write_leaves_a_bootable_valid_image() {
        // Every prefix of a download's writes, as power loss would leave it: the device
        // boots a verified image, never a half-written slot.
        let new = image(0x0200_0000, 0, &[0xAB; 100]);
        for cut in 0..=new.len().div_ceil(7) + 2 {
            let dir = tempfile::tempdir().unwrap();
            let mut f = fresh(&dir);
            f.choose_boot().unwrap();
            f.confirm(0).unwrap();
            f.erase(1).unwrap();
            for (i, c) in new.chunks(7).enumerate().take(cut) {
                f.write(1, (i * 7) as u32, c).unwrap();
            }
            if cut > new.len().div_ceil(7) {
                f.commit(1, false, new.len() as u32).unwrap();
            }
            drop(f);
            let mut f = reopen(&dir);
            let (slot, img) = f.choose_boot().unwrap();
            assert!(fw_image::verify(&img, &fw_image::public_key(&SEED), BOARD).is_ok());
            let committed = cut > new.len().div_ceil(7);
            assert_eq!(
                slot,
                if committed { 1 } else { 0 },
                "cut after {cut} writes"
            );
        }
    }

    #[test]
    fn a_torn_record_keeps_the_previous_one_and_a_damaged_slot_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = fresh(&dir);
        f.choose_boot().unwrap();
        f.confirm(0).unwrap();
        download(&mut f, 1, &image(0x0200_0000, 0, b"two"), false).unwrap();
        // Tear the newest record copy: the one before (slot 1 not yet pending) counts.
        let at = RECORD_AT[(f.rec.seq % 2) as usize];
        f.file.write_all_at(&[0xEE; 8], at + 10).unwrap();
        drop(f);
        let mut f = reopen(&dir);
        let (slot, _) = f.choose_boot().unwrap();
        assert_eq!(slot, 0);
        // Slot A damaged in place: B (valid) boots instead, and A is marked bad.
        let dir = tempfile::tempdir().unwrap();
        let mut f = fresh(&dir);
        f.choose_boot().unwrap();
        f.confirm(0).unwrap();
        download(&mut f, 1, &image(0x0200_0000, 0, b"two"), false).unwrap();
        f.activate(0).unwrap();
        f.file
            .write_all_at(&[0], slot_at(0) + PAYLOAD_OFFSET as u64)
            .unwrap();
        drop(f);
        let mut f = reopen(&dir);
        assert_eq!(f.choose_boot().unwrap().0, 1);
        assert_eq!(f.slots()[0].flags, slot_flags::BAD);
    }

    #[test]
    fn a_record_naming_no_slot_is_not_trusted() {
        // A record with a good CRC that names slot 7 (a file this device did not write): the
        // other copy counts, and nothing indexes past the two slots.
        let dir = tempfile::tempdir().unwrap();
        let mut f = fresh(&dir);
        f.choose_boot().unwrap();
        f.confirm(0).unwrap();
        let mut r = f.rec;
        r.seq += 1;
        r.pending = 7;
        r.trial = 7;
        r.crc = r.crc_of();
        f.file
            .write_all_at(r.as_bytes(), RECORD_AT[(r.seq % 2) as usize])
            .unwrap();
        drop(f);
        let mut f = reopen(&dir);
        assert_eq!(f.choose_boot().unwrap().0, 0);
        assert_eq!(f.slots()[0].flags, slot_flags::VALID | slot_flags::RUNNING);
    }

    #[test]
    fn one_device_model_per_flash() {
        let dir = tempfile::tempdir().unwrap();
        let f = fresh(&dir);
        let e = Flash::open(&dir.path().join("flash"), BOARD, || Err("".into())).unwrap_err();
        assert!(matches!(e, FlashError::InUse), "{e}");
        drop(f);
        reopen(&dir);
        // An empty flash is not provisioned by a second model either (the lock comes first).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("flash");
        let held = Flock::lock(
            std::fs::File::create(&p).unwrap(),
            FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        let e = Flash::open(&p, BOARD, || panic!("provisioned under another's lock")).unwrap_err();
        assert!(matches!(e, FlashError::InUse), "{e}");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        drop(held);
    }

    #[test]
    fn unprovisioned_and_damaged_otp_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("flash");
        let e = Flash::open(&p, BOARD, || Err("run `cargo xtask image`".into())).unwrap_err();
        assert!(e.to_string().contains("cargo xtask image"), "{e}");
        let e = Flash::open(&p, BOARD, || Ok(([1; 32], image(1, 0, b"x")))).unwrap_err();
        assert!(
            matches!(e, FlashError::Install(ImageError::BadSignature)),
            "{e}"
        );
        drop(fresh(&dir));
        let file = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        file.write_all_at(&[9], 20).unwrap();
        assert!(matches!(
            Flash::open(&p, BOARD, || Err("".into())),
            Err(FlashError::BadOtp)
        ));
    }
}
