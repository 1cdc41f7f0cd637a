//! libFuzzer target: arbitrary mailbox bytes (and length register) into a booted firmware
//! with live VFs. The firmware must answer every input with a valid response and must not
//! change any register when it refuses the input.
#![no_main]

use firmware::hal::NoClock;
use firmware::ram::RamRegs;
use firmware::{Board, Firmware, Regs};
use libfuzzer_sys::fuzz_target;
use shared_abi::mailbox::{self, Status};
use shared_abi::messages::{CreateVfs, Request, Sizing};
use shared_abi::regs::pf;

fn snapshot(r: &RamRegs) -> Vec<u32> {
    let mut v = vec![0u32; RamRegs::WORDS];
    r.snapshot(&mut v);
    for off in [pf::HEARTBEAT, pf::MBOX_DOORBELL, pf::MBOX_REQ_LEN, pf::MBOX_STATE, pf::MBOX_RESP_LEN, pf::MBOX_DONE_DOORBELL, pf::DEV_STATUS] {
        v[off.offset() / 4] = 0;
    }
    v[pf::MBOX_REQ.start() / 4..pf::MBOX_RESP.end() as usize / 4].fill(0);
    v
}

fn ring(fw: &mut Firmware<&'static RamRegs, NoClock>, regs: &RamRegs, msg: &[u8], len: u32) -> Status {
    regs.write_bytes(pf::MBOX_REQ.start(), msg);
    regs.write32(pf::MBOX_REQ_LEN.offset(), len);
    let db = regs.read32(pf::MBOX_DOORBELL.offset()).wrapping_add(1);
    regs.write32(pf::MBOX_DOORBELL.offset(), db);
    assert!(fw.poll());
    let n = regs.read32(pf::MBOX_RESP_LEN.offset()) as usize;
    let mut buf = vec![0u8; n];
    regs.read_bytes(pf::MBOX_RESP.start(), &mut buf);
    mailbox::decode(&buf).expect("every response decodes").status
}

fuzz_target!(|data: &[u8]| {
    // One register file for the whole run (RamRegs is not Sync, so one per fuzzing thread).
    thread_local! {
        static REGS: &'static RamRegs = Box::leak(Box::new(RamRegs::new()));
    }
    let regs: &'static RamRegs = REGS.with(|r| *r);
    regs.clear();
    let mut fw = Firmware::new(regs, NoClock, Board::DEFAULT, 1).unwrap();
    fw.boot();
    let mut p = [0u8; 64];
    let n = Request::CreateVfs(CreateVfs { count: 2, sizing: Sizing::Equal }).write_payload(&mut p).unwrap();
    let mut m = [0u8; 128];
    regs.write32(pf::MBOX_LOCK.offset(), 1);
    let len = mailbox::encode_request(&mut m, shared_abi::Opcode::CreateVfs, 1, 1, &p[..n]).unwrap();
    assert_eq!(ring(&mut fw, regs, &m[..len], len as u32), Status::Ok);

    let (len_reg, body) = match data.split_first_chunk::<4>() {
        Some((l, rest)) if l[0] & 1 == 1 => (u32::from_le_bytes(*l), rest),
        _ => (data.len().min(4096) as u32, data),
    };
    let body = &body[..body.len().min(4096)];
    // The input holds the lock with whatever token its header names (so inputs reach past the
    // lock check), except for one length in seven, which tests a holder mismatch.
    let token = body.get(20..24).map_or(0, |t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]));
    let holder = if data.len() % 7 == 0 { token ^ 1 } else { token };
    regs.write32(pf::MBOX_LOCK.offset(), holder);
    let before = snapshot(regs);
    let st = ring(&mut fw, regs, body, len_reg);
    if st != Status::Ok {
        assert_eq!(snapshot(regs), before, "a refused message changed registers");
    }
    assert_eq!(fw.check_consistency(), Ok(()));
    assert_eq!(fw.books().audit(fw.board()), Ok(()));
});
