//! Firmware updates: FW_DOWNLOAD_BEGIN/CHUNK/COMMIT, FW_ACTIVATE and FW_QUERY_SLOTS, carried
//! out through the flash controller (`pf::FLASH_CMD`). The controller verifies an image
//! (CRC, board, signature, rollback floor) before it lets a slot boot; the firmware checks
//! that the bytes arrived as announced (length, and the CRC of the whole image).

use crate::hal::Regs;
use shared_abi::image::{reason, CRC32, PAYLOAD_OFFSET, SLOT_SIZE};
use shared_abi::mailbox::Status;
use shared_abi::messages::{FwBeginReq, FwBeginResp, FwChunk};
use shared_abi::regs::{flash_result, pf, FlashCmd};
use zerocopy::little_endian::U32;

/// The download in progress.
#[derive(Clone)]
pub struct Download {
    slot: u8,
    total: u32,
    crc_want: u32,
    written: u32,
    allow_downgrade: bool,
    crc: crc::Digest<'static, u32>,
}

impl core::fmt::Debug for Download {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Download")
            .field("slot", &self.slot)
            .field("total", &self.total)
            .field("written", &self.written)
            .finish()
    }
}

/// A refusal: the status, and for IMAGE_REJECTED the reason the response carries.
pub type Refusal = (Status, Option<u8>);

fn status(r: u32) -> Refusal {
    match r {
        flash_result::NO_FLASH => (Status::NotSupported, None),
        flash_result::BAD_SLOT => (Status::InvalidArgument, None),
        flash_result::BAD_RANGE => (Status::BadLength, None),
        flash_result::NOT_VALID => (Status::InvalidState, None),
        r if r & flash_result::IMAGE != 0 => (Status::ImageRejected, Some(r as u8)),
        _ => (Status::FlashError, None),
    }
}

/// Runs one flash controller command and waits for its result.
fn flash(regs: &impl Regs, cmd: FlashCmd, args: [u32; 3]) -> Result<(), Refusal> {
    regs.write32(pf::FLASH_ARG0.offset(), args[0]);
    regs.write32(pf::FLASH_ARG1.offset(), args[1]);
    regs.write32(pf::FLASH_ARG2.offset(), args[2]);
    regs.write32(pf::FLASH_CMD.offset(), cmd as u32);
    match regs.read32(pf::FLASH_STATUS.offset()) {
        flash_result::OK => Ok(()),
        r => Err(status(r)),
    }
}

/// The slot the running image came from, if the device booted from flash.
pub fn running_slot(regs: &impl Regs) -> Option<u8> {
    let v = regs.read32(pf::FLASH_RUNNING.offset());
    (v & shared_abi::regs::FLASH_BOOTED != 0 && v & 0xFF <= 1).then_some(v as u8)
}

/// FW_DOWNLOAD_BEGIN: a new download into the inactive slot (or the one named), or, for the
/// same image as the download in progress, where to resume it.
pub fn begin(
    regs: &impl Regs,
    dl: &mut Option<Download>,
    req: &FwBeginReq,
) -> Result<FwBeginResp, Refusal> {
    let running = running_slot(regs).ok_or((Status::NotSupported, None))?;
    let total = req.total_len.get();
    if let Some(d) = dl {
        if d.total == total && d.crc_want == req.image_crc.get() {
            return Ok(FwBeginResp {
                slot: d.slot,
                reserved: [0; 3],
                resume_from: U32::new(d.written),
            });
        }
        return Err((Status::Busy, None));
    }
    if (total as usize) < PAYLOAD_OFFSET {
        return Err((Status::ImageRejected, Some(reason::TRUNCATED)));
    }
    if total as usize > SLOT_SIZE {
        return Err((Status::ImageRejected, Some(reason::TOO_LARGE)));
    }
    let slot = match req.slot {
        0xFF => 1 - running,
        s if s <= 1 && s != running => s,
        _ => return Err((Status::InvalidArgument, None)),
    };
    flash(regs, FlashCmd::Erase, [slot as u32, 0, 0])?;
    *dl = Some(Download {
        slot,
        total,
        crc_want: req.image_crc.get(),
        written: 0,
        allow_downgrade: req.flags & 1 != 0,
        crc: CRC32.digest(),
    });
    Ok(FwBeginResp {
        slot,
        reserved: [0; 3],
        resume_from: U32::new(0),
    })
}

/// FW_DOWNLOAD_CHUNK: the next bytes, in order.
pub fn chunk(regs: &impl Regs, dl: &mut Option<Download>, c: &FwChunk<'_>) -> Result<(), Refusal> {
    running_slot(regs).ok_or((Status::NotSupported, None))?;
    let d = dl.as_mut().ok_or((Status::InvalidState, None))?;
    let len = c.data.len() as u32;
    if c.offset != d.written {
        return Err((Status::InvalidArgument, None));
    }
    if d.written.checked_add(len).is_none_or(|e| e > d.total)
        || c.data.len() > pf::FLASH_BUF.len as usize
    {
        return Err((Status::BadLength, None));
    }
    regs.write_bytes(pf::FLASH_BUF.start(), c.data);
    flash(regs, FlashCmd::Write, [d.slot as u32, c.offset, len])?;
    d.crc.update(c.data);
    d.written += len;
    Ok(())
}

/// FW_DOWNLOAD_COMMIT: all bytes arrived as announced; the controller verifies the image and
/// makes its slot boot next. The download ends either way.
pub fn commit(regs: &impl Regs, dl: &mut Option<Download>) -> Result<(), Refusal> {
    running_slot(regs).ok_or((Status::NotSupported, None))?;
    let d = dl.as_ref().ok_or((Status::InvalidState, None))?;
    if d.written != d.total {
        return Err((Status::InvalidState, None));
    }
    let d = dl.take().ok_or((Status::InvalidState, None))?;
    if d.crc.finalize() != d.crc_want {
        return Err((Status::ImageRejected, Some(reason::BAD_CRC)));
    }
    flash(
        regs,
        FlashCmd::Commit,
        [d.slot as u32, d.allow_downgrade as u32, d.total],
    )
}

/// FW_ACTIVATE: a valid slot boots at the next reset.
pub fn activate(regs: &impl Regs, slot: u8) -> Result<(), Refusal> {
    running_slot(regs).ok_or((Status::NotSupported, None))?;
    flash(regs, FlashCmd::Activate, [slot as u32, 0, 0])
}

/// FW_QUERY_SLOTS: both slots as the controller reports them.
pub fn slots(regs: &impl Regs) -> Result<[u8; pf::FLASH_SLOTS.len as usize], Refusal> {
    running_slot(regs).ok_or((Status::NotSupported, None))?;
    let mut out = [0u8; pf::FLASH_SLOTS.len as usize];
    regs.read_bytes(pf::FLASH_SLOTS.start(), &mut out);
    Ok(out)
}
