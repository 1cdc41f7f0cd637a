//! Firmware updates from the host: stream a signed image into the device's inactive flash
//! slot over the mailbox (resuming a download cut off with its connection), have the device
//! verify and arm it, and reset into it. What the device checks, this end checks first where
//! it can (structure, CRC), so the common mistakes are named before a byte is sent.

use crate::accel::Accel;
use crate::error::{Error, Result};
use shared_abi::mailbox::Status;
use shared_abi::messages::{
    view, FwActivate, FwBeginReq, FwBeginResp, FwChunk, FwSlotInfo, Request,
};
use shared_abi::regs::{pf, slot_flags, DevStatus};
use std::time::{Duration, Instant};
use zerocopy::little_endian::{U16, U32};

/// Image bytes per FW_DOWNLOAD_CHUNK: what fits a mailbox message after the chunk's head.
pub const CHUNK: usize = 4032;

/// How a download went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flashed {
    /// The slot written (0 A, 1 B).
    pub slot: u8,
    /// Where it resumed (0: a new download).
    pub resumed_from: u32,
}

/// One flash slot as the device reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Slot {
    /// "A" or "B".
    pub name: &'static str,
    /// `active` (running), `pending` (boots at the next reset), `valid`, `bad` or `empty`.
    pub state: &'static str,
    /// Firmware version word.
    pub version: u32,
    /// Build id.
    pub build_id: u32,
    /// Image bytes.
    pub size: u32,
}

impl Slot {
    fn from(s: &FwSlotInfo) -> Self {
        let f = s.flags;
        let state = if f & slot_flags::RUNNING != 0 {
            "active"
        } else if f & slot_flags::PENDING != 0 {
            "pending"
        } else if f & slot_flags::BAD != 0 {
            "bad"
        } else if f & slot_flags::VALID != 0 {
            "valid"
        } else {
            "empty"
        };
        Slot {
            name: shared_abi::image::slot_name(s.slot),
            state,
            version: s.version.get(),
            build_id: s.build_id.get(),
            size: s.size.get(),
        }
    }
}

/// The device's refusal of an image, in words (its `reason u32`).
fn rejected(op: &'static str, status: Status, payload: &[u8]) -> Error {
    match (status, payload.get(..4)) {
        (Status::ImageRejected, Some(r)) => Error::ImageRejected(fw_image::ImageError::describe(
            u32::from_le_bytes(r.try_into().unwrap_or_default()) as u8,
        )),
        (Status::Busy, _) if op == "FW_DOWNLOAD_BEGIN" => Error::Conflict(
            "another image's download is in progress on the device; finish it (flash that \
             image again, it resumes) or reset the firmware (`accelctl fw-reset`)"
                .into(),
        ),
        _ => Error::Firmware { op, status },
    }
}

impl Accel {
    async fn fw_call(&self, req: &Request<'_>) -> Result<Vec<u8>> {
        let (status, payload) = self.mailbox().call_status(req).await?;
        if status != Status::Ok {
            return Err(rejected(req.opcode().name(), status, &payload));
        }
        Ok(payload)
    }

    /// Both flash slots.
    pub async fn slots(&self) -> Result<[Slot; 2]> {
        let p = self.fw_call(&Request::FwQuerySlots(())).await?;
        let s = |i: usize| -> Result<Slot> {
            let b = p
                .get(i * 16..i * 16 + 16)
                .ok_or(Error::BadResponse("slots size"))?;
            Ok(Slot::from(
                view::<FwSlotInfo>(b).map_err(|_| Error::BadResponse("slots size"))?,
            ))
        };
        Ok([s(0)?, s(1)?])
    }

    /// Streams `image` into the inactive slot and has the device verify it and arm it for the
    /// next reset. `progress` is told the bytes written so far. A download of the same image
    /// cut off earlier resumes where it stopped.
    pub async fn flash(
        &self,
        image: &[u8],
        allow_downgrade: bool,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<Flashed> {
        let p = fw_image::parse(image)
            .map_err(|e| Error::Invalid(format!("not a usable image: {e}")))?;
        let crc = fw_image::crc32(p.payload);
        if crc != p.header.payload_crc.get() {
            return Err(Error::Invalid(format!(
                "not a usable image: {}",
                fw_image::ImageError::BadCrc {
                    want: p.header.payload_crc.get(),
                    got: crc
                }
            )));
        }
        let req = FwBeginReq {
            total_len: U32::new(image.len() as u32),
            image_crc: U32::new(fw_image::crc32(image)),
            slot: 0xFF,
            flags: allow_downgrade as u8,
            reserved: U16::new(0),
        };
        let r = self.fw_call(&Request::FwDownloadBegin(&req)).await?;
        let r = *view::<FwBeginResp>(&r).map_err(|_| Error::BadResponse("download begin size"))?;
        let mut off = r.resume_from.get() as usize;
        let resumed_from = off as u32;
        progress(off, image.len());
        while off < image.len() {
            let end = (off + CHUNK).min(image.len());
            self.fw_call(&Request::FwDownloadChunk(FwChunk {
                offset: off as u32,
                data: &image[off..end],
            }))
            .await?;
            off = end;
            progress(off, image.len());
        }
        self.fw_call(&Request::FwDownloadCommit(())).await?;
        Ok(Flashed {
            slot: r.slot,
            resumed_from,
        })
    }

    /// Arms a valid slot for the next reset.
    pub async fn activate_slot(&self, slot: u8) -> Result<()> {
        self.fw_call(&Request::FwActivate(FwActivate { slot }))
            .await?;
        Ok(())
    }

    /// Resets the device (a PF function level reset: the firmware reboots from flash, and
    /// SR-IOV and every VF go, as on silicon) and waits until the firmware is READY again.
    /// Returns the running version and build id.
    pub fn fw_reset(&self, timeout: Duration) -> Result<(u32, u32)> {
        let t = self.transport();
        use crate::transport::{cap_id, header, msix, pcie};
        let cap = crate::transport::find_cap(&**t, cap_id::PCIE)?
            .ok_or(Error::BadResponse("no PCI Express capability"))?;
        let devctl = cap + pcie::DEVCTL as u64;
        // An FLR clears the command register (Bus Master) and MSI-X control, as on silicon:
        // kept here and put back once the device is up (the kernel's pci_save_state and
        // pci_restore_state around a reset), so a long-lived owner's interrupts keep coming.
        let word = |off: u64| -> Result<u16> {
            let mut b = [0u8; 2];
            t.config_read(off, &mut b)?;
            Ok(u16::from_le_bytes(b))
        };
        let command = word(header::COMMAND as u64)?;
        let msix_cap = crate::transport::find_cap(&**t, cap_id::MSIX)?;
        let msix_ctl = msix_cap.map(|c| word(c + msix::CTRL as u64)).transpose()?;
        // The mailbox's and the events' vector controls (their mask bits) as well.
        let vector_ctl = |v: usize| pf::MSIX_TABLE.start() + v * msix::ENTRY_SIZE + 12;
        let masks = [t.read32(vector_ctl(0))?, t.read32(vector_ctl(1))?];
        let v = word(devctl)? | pcie::DEVCTL_FLR;
        t.config_write(devctl, &v.to_le_bytes())?;
        let start = Instant::now();
        loop {
            let st = DevStatus::from_bits_retain(t.read32(pf::DEV_STATUS.offset())?);
            if st.contains(DevStatus::READY) {
                t.config_write(header::COMMAND as u64, &command.to_le_bytes())?;
                if let (Some(c), Some(ctl)) = (msix_cap, msix_ctl) {
                    t.config_write(c + msix::CTRL as u64, &ctl.to_le_bytes())?;
                }
                for (v, m) in masks.iter().enumerate() {
                    t.write32(vector_ctl(v), *m)?;
                }
                return Ok((
                    t.read32(pf::FW_VERSION.offset())?,
                    t.read32(pf::FW_BUILD_ID.offset())?,
                ));
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: "the firmware to become ready after the reset",
                    ms: timeout.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
