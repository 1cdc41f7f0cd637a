//! The firmware keeps `shared_abi::ordering`: it observes the doorbell before it reads the
//! request, and publishes DONE_DOORBELL, then STATE, after the response bytes and length.
use firmware::hal::NoClock;
use firmware::ram::RamRegs;
use firmware::{Board, Firmware, Regs};
use shared_abi::mailbox::{self, Opcode, MAX_MESSAGE};
use shared_abi::ordering::DEVICE_PUBLISHES;
use shared_abi::regs::pf;
use std::cell::RefCell;

const TOKEN: u32 = 0x7E57_0002;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read(usize),
    Write(usize),
    Publish(usize),
    Observe(usize),
}

/// A RAM register file that logs every access the firmware makes, barriers included.
#[derive(Debug)]
struct Logged(RamRegs, RefCell<Vec<Op>>);

impl Regs for Logged {
    fn read32(&self, off: usize) -> u32 {
        self.1.borrow_mut().push(Op::Read(off));
        self.0.read32(off)
    }
    fn write32(&self, off: usize, val: u32) {
        self.1.borrow_mut().push(Op::Write(off));
        self.0.write32(off, val)
    }
    fn publish32(&self, off: usize, val: u32) {
        self.1.borrow_mut().push(Op::Publish(off));
        self.0.write32(off, val)
    }
    fn observe32(&self, off: usize) -> u32 {
        self.1.borrow_mut().push(Op::Observe(off));
        self.0.read32(off)
    }
}

#[test]
fn the_mailbox_handoffs_are_published_and_observed() {
    let regs: &'static Logged = Box::leak(Box::new(Logged(RamRegs::new(), RefCell::new(vec![]))));
    let mut fw = Firmware::new(regs, NoClock, Board::DEFAULT, 1).unwrap();
    fw.boot();
    let mut msg = [0u8; MAX_MESSAGE];
    let len = mailbox::encode_request(&mut msg, Opcode::Heartbeat, 7, TOKEN, &7u32.to_le_bytes())
        .unwrap();
    regs.0.write_bytes(pf::MBOX_REQ.start(), &msg[..len]);
    regs.0.write32(pf::MBOX_REQ_LEN.offset(), len as u32);
    regs.0.write32(pf::MBOX_LOCK.offset(), TOKEN);
    regs.0.write32(pf::MBOX_DOORBELL.offset(), 1);
    regs.1.borrow_mut().clear();
    assert!(fw.poll());
    let log = regs.1.borrow();
    let at = |op: Op| log.iter().position(|&o| o == op);
    let in_req = |o: &Op| matches!(o, Op::Read(x) if pf::MBOX_REQ.contains(*x as u64, 4) || *x == pf::MBOX_REQ_LEN.offset());
    let observed = at(Op::Observe(pf::MBOX_DOORBELL.offset())).expect("doorbell observed");
    let first_req_read = log.iter().position(in_req).expect("request read");
    assert!(observed < first_req_read, "{log:x?}");
    // The response: bytes and RESP_LEN written, then the handoff words published in order.
    let len_written = at(Op::Write(pf::MBOX_RESP_LEN.offset())).expect("RESP_LEN written");
    let mut last = len_written;
    for r in DEVICE_PUBLISHES {
        let p =
            at(Op::Publish(r.offset())).unwrap_or_else(|| panic!("{r:?} not published: {log:x?}"));
        assert!(p > last, "{r:?} published out of order: {log:x?}");
        last = p;
    }
    let last_byte = log
        .iter()
        .rposition(|o| matches!(o, Op::Write(x) if pf::MBOX_RESP.contains(*x as u64, 4)))
        .expect("response bytes");
    assert!(last_byte < len_written, "{log:x?}");
    // Once the response is being written, neither handoff word is written without its
    // barrier (STATE's plain BUSY comes before the response).
    for r in DEVICE_PUBLISHES {
        let plain = log.iter().rposition(|&o| o == Op::Write(r.offset()));
        assert!(
            plain.is_none_or(|p| p < first_req_read),
            "{r:?} written plainly: {log:x?}"
        );
    }
}
