//! Test harness: a firmware on a RAM register file, driven through mailbox bytes exactly as a
//! host would.
#![allow(dead_code, clippy::new_without_default)]

use firmware::hal::NoClock;
use firmware::ram::RamRegs;
use firmware::{Board, Firmware, Regs};
use shared_abi::mailbox::{self, HeaderFlags, Opcode, Status, MAX_MESSAGE};
use shared_abi::messages::Request;
use shared_abi::regs::{pf, MboxState};

/// The token the test host holds the mailbox lock with.
pub const TOKEN: u32 = 0x7E57_0001;

#[derive(Debug)]
pub struct Dev {
    pub regs: &'static RamRegs,
    pub fw: Firmware<&'static RamRegs, NoClock>,
    pub seq: u32,
    doorbell: u32,
}

#[derive(Debug)]
pub struct Resp {
    pub status: Status,
    pub flags: HeaderFlags,
    pub seq: u32,
    pub payload: Vec<u8>,
}

impl Dev {
    pub fn new() -> Self {
        Self::with_board(Board::DEFAULT)
    }

    pub fn with_board(board: Board) -> Self {
        let regs: &'static RamRegs = Box::leak(Box::new(RamRegs::new()));
        let mut fw = Firmware::new(regs, NoClock, board, 0xB1D).unwrap();
        fw.boot();
        // The host holds the mailbox lock for every command it sends.
        regs.write32(pf::MBOX_LOCK.offset(), TOKEN);
        Dev {
            regs,
            fw,
            seq: 100,
            doorbell: 0,
        }
    }

    /// Rings the doorbell with raw message bytes and runs one firmware poll.
    pub fn raw(&mut self, msg: &[u8], len_reg: u32) -> Resp {
        self.regs.write_bytes(pf::MBOX_REQ.start(), msg);
        self.regs.write32(pf::MBOX_REQ_LEN.offset(), len_reg);
        self.doorbell = self.doorbell.wrapping_add(1);
        self.regs.write32(pf::MBOX_DOORBELL.offset(), self.doorbell);
        assert!(self.fw.poll(), "doorbell must be noticed");
        assert_eq!(
            self.regs.read32(pf::MBOX_STATE.offset()),
            MboxState::Done as u32
        );
        assert_eq!(
            self.regs.read32(pf::MBOX_DONE_DOORBELL.offset()),
            self.doorbell
        );
        let n = self.regs.read32(pf::MBOX_RESP_LEN.offset()) as usize;
        let mut buf = vec![0u8; n];
        self.regs.read_bytes(pf::MBOX_RESP.start(), &mut buf);
        let m = mailbox::decode(&buf).expect("firmware responses always decode");
        assert!(m.flags.contains(HeaderFlags::RESPONSE));
        Resp {
            status: m.status,
            flags: m.flags,
            seq: m.seq,
            payload: m.payload.to_vec(),
        }
    }

    pub fn encode(&mut self, req: &Request<'_>) -> Vec<u8> {
        let mut payload = [0u8; MAX_MESSAGE];
        let n = req.write_payload(&mut payload).unwrap();
        let mut msg = [0u8; MAX_MESSAGE];
        self.seq += 1;
        let len = mailbox::encode_request(&mut msg, req.opcode(), self.seq, TOKEN, &payload[..n])
            .unwrap();
        msg[..len].to_vec()
    }

    pub fn call(&mut self, req: &Request<'_>) -> Resp {
        let msg = self.encode(req);
        let r = self.raw(&msg, msg.len() as u32);
        assert_eq!(r.seq, self.seq);
        r
    }

    pub fn ok(&mut self, req: &Request<'_>) -> Vec<u8> {
        let r = self.call(req);
        assert_eq!(r.status, Status::Ok, "{:?}", req.opcode());
        r.payload
    }

    /// What hardware does on a VF's FLR: set FLR_PENDING in its word, then bump FLR_SEQ.
    pub fn flr(&self, vf: usize) {
        use shared_abi::regs::VfHwStatus;
        let w = pf::vf_hw_status(vf);
        self.regs
            .write32(w, self.regs.read32(w) | VfHwStatus::FLR_PENDING.bits());
        let seq = pf::FLR_SEQ.offset();
        self.regs
            .write32(seq, self.regs.read32(seq).wrapping_add(1));
    }

    pub fn snapshot(&self) -> Vec<u32> {
        let mut v = vec![0u32; RamRegs::WORDS];
        self.regs.snapshot(&mut v);
        // Mailbox bookkeeping and the heartbeat always move; everything else must not.
        for off in [
            pf::HEARTBEAT.offset(),
            pf::MBOX_DOORBELL.offset(),
            pf::MBOX_REQ_LEN.offset(),
            pf::MBOX_STATE.offset(),
            pf::MBOX_RESP_LEN.offset(),
            pf::MBOX_DONE_DOORBELL.offset(),
            pf::DEV_STATUS.offset(),
        ] {
            v[off / 4] = 0;
        }
        v[pf::MBOX_REQ.start() / 4..pf::MBOX_RESP.end() as usize / 4].fill(0);
        v
    }

    pub fn consistent(&self) {
        assert_eq!(self.fw.check_consistency(), Ok(()));
        assert_eq!(self.fw.books().audit(self.fw.board()), Ok(()));
    }
}

pub fn opcode_of(r: &Request<'_>) -> Opcode {
    r.opcode()
}
