//! The mailbox service: polls the doorbell, validates the message, dispatches it to
//! [`crate::commands`], and writes the response. Retries (same sequence number, same request
//! CRC) are answered from the cached response and never executed twice.
//!
//! It must never panic or change state on a bad message: every malformed request is answered
//! with a specific status and nothing else happens.

use crate::commands::{self, Ctx};
use crate::hal::{Clock, Regs};
use crate::Firmware;
use shared_abi::mailbox::{self, HeaderFlags, Status, HEADER_LEN, MAX_MESSAGE};
use shared_abi::messages::Request;
use shared_abi::pci::PF_VECTOR_MAILBOX;
use shared_abi::regs::{pf, DevStatus, MboxState};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Replay {
    seq: u32,
    req_crc: u32,
}

/// Mailbox state: the last doorbell seen and the replay cache.
#[derive(Debug, Clone)]
pub struct Mailbox {
    last_doorbell: u32,
    replay: Option<Replay>,
    req: [u8; MAX_MESSAGE],
    resp: [u8; MAX_MESSAGE],
    resp_len: usize,
    // Answers to malformed requests live apart so they never clobber the replay cache.
    err: [u8; HEADER_LEN],
    /// Whether the last command changed the books (the caller then self-checks).
    books_changed: bool,
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Mailbox {
    /// Fresh state.
    pub const fn new() -> Self {
        Mailbox {
            last_doorbell: 0,
            replay: None,
            req: [0; MAX_MESSAGE],
            resp: [0; MAX_MESSAGE],
            resp_len: 0,
            err: [0; HEADER_LEN],
            books_changed: false,
        }
    }

    /// Whether the command just handled changed the books; clears the flag.
    pub fn take_books_changed(&mut self) -> bool {
        core::mem::take(&mut self.books_changed)
    }

    /// Takes the current doorbell as already seen and goes idle.
    pub fn boot(&mut self, r: &impl Regs) {
        self.last_doorbell = r.observe32(pf::MBOX_DOORBELL.offset());
        self.replay = None;
        r.write32(pf::MBOX_RESP_LEN.offset(), 0);
        r.publish32(pf::MBOX_DONE_DOORBELL.offset(), self.last_doorbell);
        r.publish32(pf::MBOX_STATE.offset(), MboxState::Idle as u32);
    }
}

/// Whether the doorbell moved since the last command (a cheap idle check).
pub fn pending<R: Regs, C: Clock>(fw: &Firmware<R, C>) -> bool {
    fw.regs.read32(pf::MBOX_DOORBELL.offset()) != fw.mbox.last_doorbell
}

/// Handles one pending command, if the doorbell moved. Returns whether it did.
pub fn poll<R: Regs, C: Clock>(fw: &mut Firmware<R, C>) -> bool {
    // The doorbell hands the request over: observed before REQ_LEN and the bytes are read.
    let doorbell = fw.regs.observe32(pf::MBOX_DOORBELL.offset());
    if doorbell == fw.mbox.last_doorbell {
        return false;
    }
    fw.mbox.last_doorbell = doorbell;
    let r = &fw.regs;
    r.write32(pf::MBOX_STATE.offset(), MboxState::Busy as u32);
    let st = r.read32(pf::DEV_STATUS.offset());
    r.write32(pf::DEV_STATUS.offset(), st | DevStatus::BUSY.bits());

    let (mbox, mut ctx) = fw.split();
    let out = handle(mbox, &mut ctx);
    let bytes = match out {
        Out::Main(n) => &fw.mbox.resp[..n],
        Out::Error(n) => &fw.mbox.err[..n],
    };
    let len = bytes.len();
    let r = &fw.regs;
    r.write_bytes(pf::MBOX_RESP.start(), bytes);
    r.write32(pf::MBOX_RESP_LEN.offset(), len as u32);
    // The response is handed over by DONE_DOORBELL, then STATE (shared_abi::ordering).
    r.publish32(pf::MBOX_DONE_DOORBELL.offset(), doorbell);
    r.publish32(pf::MBOX_STATE.offset(), MboxState::Done as u32);
    let st = r.read32(pf::DEV_STATUS.offset());
    r.write32(pf::DEV_STATUS.offset(), st & !DevStatus::BUSY.bits());
    r.write32(pf::IRQ_RAISE.offset(), PF_VECTOR_MAILBOX as u32);
    true
}

/// Where the response was built.
enum Out {
    Main(usize),
    Error(usize),
}

/// Builds the response; says where.
fn handle<R: Regs, C: Clock>(mbox: &mut Mailbox, ctx: &mut Ctx<'_, R, C>) -> Out {
    let len = ctx.regs.read32(pf::MBOX_REQ_LEN.offset()) as usize;
    if len > MAX_MESSAGE {
        ctx.counters.errors += 1;
        return error(mbox, 0, 0, Status::BadLength);
    }
    ctx.regs
        .read_bytes(pf::MBOX_REQ.start(), &mut mbox.req[..len]);
    let req = &mbox.req[..len];
    let (opcode_raw, seq, crc) = match mailbox::peek_header(req) {
        Some(h) => (h.opcode.get(), h.seq.get(), h.crc.get()),
        None => (0, 0, 0),
    };
    let msg = match mailbox::decode(req) {
        Ok(m) if !m.flags.is_empty() => {
            ctx.counters.errors += 1;
            return error(mbox, opcode_raw, seq, Status::InvalidArgument);
        }
        // Only the lock's holder may command: a request whose token does not hold the lock
        // (a lease that expired) is answered and not executed, nor cached.
        Ok(m) if m.lock == 0 || m.lock != ctx.regs.read32(pf::MBOX_LOCK.offset()) => {
            ctx.counters.errors += 1;
            return error(mbox, opcode_raw, seq, Status::LockNotHeld);
        }
        Ok(m) => m,
        Err(e) => {
            ctx.counters.errors += 1;
            warn!("mailbox: rejected request ({=u16})", e.status().wire());
            return error(mbox, opcode_raw, seq, e.status());
        }
    };
    let this = Replay { seq, req_crc: crc };
    if mbox.replay == Some(this) && mbox.resp_len >= HEADER_LEN {
        ctx.counters.replays += 1;
        return Out::Main(replay(mbox));
    }
    let parsed = match msg.op() {
        Some(op) => Request::parse(op, msg.payload),
        None => Err(shared_abi::DecodeError::UnknownOpcode(msg.opcode)),
    };
    let (status, payload_len) = match parsed {
        Err(e) => (e.status(), 0),
        Ok(request) => {
            ctx.counters.commands += 1;
            // Only a command that may change the books pays for copying them.
            let before = (!request.opcode().is_query()).then_some(*ctx.books);
            let r = match commands::execute(ctx, &request, &mut mbox.resp[HEADER_LEN..]) {
                Ok(n) => (Status::Ok, n),
                // An image refusal says why: `reason u32`.
                Err(s) => match ctx.reason.take() {
                    Some(why) => {
                        mbox.resp[HEADER_LEN..HEADER_LEN + 4]
                            .copy_from_slice(&(why as u32).to_le_bytes());
                        (s, 4)
                    }
                    None => (s, 0),
                },
            };
            mbox.books_changed = before.is_some_and(|b| b != *ctx.books);
            r
        }
    };
    if status != Status::Ok {
        ctx.counters.errors += 1;
    }
    mbox.replay = Some(this);
    mbox.resp_len = mailbox::seal(
        &mut mbox.resp,
        opcode_raw,
        HeaderFlags::RESPONSE,
        status,
        seq,
        0,
        payload_len,
    )
    .unwrap_or(0);
    Out::Main(mbox.resp_len)
}

fn error(mbox: &mut Mailbox, opcode: u16, seq: u32, status: Status) -> Out {
    // Not cached: a malformed request is not a command, so a retry is judged afresh.
    Out::Error(
        mailbox::seal(
            &mut mbox.err,
            opcode,
            HeaderFlags::RESPONSE,
            status,
            seq,
            0,
            0,
        )
        .unwrap_or(0),
    )
}

fn replay(mbox: &mut Mailbox) -> usize {
    let len = mbox.resp_len;
    let Some(h) = mailbox::peek_header(&mbox.resp[..len]) else {
        return 0;
    };
    let status = Status::from_wire(h.status.get()).unwrap_or(Status::Internal);
    let flags = HeaderFlags::from_bits_retain(h.flags.get()) | HeaderFlags::REPLAYED;
    let payload_len = len - HEADER_LEN;
    mailbox::seal(
        &mut mbox.resp,
        h.opcode.get(),
        flags,
        status,
        h.seq.get(),
        0,
        payload_len,
    )
    .unwrap_or(0)
}
