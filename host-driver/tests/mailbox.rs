//! The mailbox client against a device in memory: it keeps `shared_abi::ordering` (the
//! request and its length before the doorbell is published; DONE_DOORBELL observed before anything
//! of the response is read), and a faulted firmware fails at once with its own error and exit
//! code (6), naming the fault.
use host_driver::mailbox::Mailbox;
use host_driver::transport::{Transport, VfEndpoint};
use host_driver::{Accel, Error, Result};
use shared_abi::mailbox::{self, FaultCode, HeaderFlags, Status, HEADER_LEN};
use shared_abi::messages::{Heartbeat, Request};
use shared_abi::ordering::HOST_PUBLISHES;
use shared_abi::regs::{pf, DevStatus, MboxState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read(usize),
    Write(usize),
    ReadBytes(usize),
    WriteBytes(usize),
    Publish(usize),
    Observe(usize),
}

/// A PF register file in memory that logs each access. A live one answers a published
/// doorbell at once, as firmware would (response bytes, length, DONE_DOORBELL, STATE); a
/// halted one answers nothing.
#[derive(Debug, Default)]
struct Device {
    regs: Mutex<Vec<u32>>,
    resp: Mutex<Vec<u8>>,
    log: Mutex<Vec<Op>>,
    halted: bool,
}

impl Device {
    fn new(halted: bool, set: &[(usize, u32)]) -> Arc<Device> {
        let mut regs = vec![0u32; (shared_abi::pci::PF_BAR0_SIZE / 4) as usize];
        regs[pf::MAGIC.offset() / 4] = shared_abi::regs::PF_MAGIC;
        regs[pf::ABI_VERSION.offset() / 4] = shared_abi::abi_version_word();
        for &(off, v) in set {
            regs[off / 4] = v;
        }
        Arc::new(Device {
            regs: Mutex::new(regs),
            halted,
            ..Default::default()
        })
    }
}

impl Device {
    fn note(&self, op: Op) {
        self.log.lock().unwrap().push(op);
    }
    fn answer(&self, doorbell: u32) {
        let mut req = vec![0u8; HEADER_LEN];
        req.copy_from_slice(&self.resp.lock().unwrap()[..HEADER_LEN]);
        let h = mailbox::peek_header(&req).unwrap();
        let mut out = vec![0u8; HEADER_LEN + 4];
        out[HEADER_LEN..].copy_from_slice(&7u32.to_le_bytes());
        let n = mailbox::seal(
            &mut out,
            h.opcode.get(),
            HeaderFlags::RESPONSE,
            Status::Ok,
            h.seq.get(),
            0,
            4,
        )
        .unwrap();
        out.truncate(n);
        *self.resp.lock().unwrap() = out.clone();
        let mut r = self.regs.lock().unwrap();
        r[pf::MBOX_RESP_LEN.offset() / 4] = n as u32;
        r[pf::MBOX_DONE_DOORBELL.offset() / 4] = doorbell;
        r[pf::MBOX_STATE.offset() / 4] = MboxState::Done as u32;
    }
}

impl Transport for Device {
    fn read32(&self, off: usize) -> Result<u32> {
        self.note(Op::Read(off));
        Ok(self.regs.lock().unwrap()[off / 4])
    }
    fn write32(&self, off: usize, v: u32) -> Result<()> {
        self.note(Op::Write(off));
        self.regs.lock().unwrap()[off / 4] = v;
        Ok(())
    }
    fn publish32(&self, off: usize, v: u32) -> Result<()> {
        self.note(Op::Publish(off));
        self.regs.lock().unwrap()[off / 4] = v;
        if off == pf::MBOX_DOORBELL.offset() && !self.halted {
            self.answer(v);
        }
        Ok(())
    }
    fn observe32(&self, off: usize) -> Result<u32> {
        self.note(Op::Observe(off));
        Ok(self.regs.lock().unwrap()[off / 4])
    }
    fn read_bytes(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        self.note(Op::ReadBytes(off));
        if off == pf::MBOX_RESP.start() {
            let r = self.resp.lock().unwrap();
            buf.copy_from_slice(&r[..buf.len()]);
        } else {
            let regs = self.regs.lock().unwrap();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = regs[(off + i) / 4].to_le_bytes()[(off + i) % 4];
            }
        }
        Ok(())
    }
    fn write_bytes(&self, off: usize, data: &[u8]) -> Result<()> {
        self.note(Op::WriteBytes(off));
        *self.resp.lock().unwrap() = data.to_vec();
        Ok(())
    }
    fn config_read(&self, _: u64, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn config_write(&self, _: u64, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn num_vfs(&self) -> Result<u16> {
        Ok(0)
    }
    fn set_num_vfs(&self, _: u16) -> Result<()> {
        Ok(())
    }
    fn vf_endpoint(&self, v: u16) -> Result<VfEndpoint> {
        Err(Error::Invalid(format!("no VF {v}")))
    }
    fn describe(&self) -> String {
        "test device".into()
    }
    fn lock_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join("accelvirt-host-driver-test.lock")
    }
}

#[test]
fn the_mailbox_handoffs_are_published_and_observed() {
    let dev = Device::new(false, &[(pf::DEV_STATUS.offset(), DevStatus::READY.bits())]);
    let m = Mailbox::new(dev.clone(), Duration::from_secs(2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (st, payload) = rt
        .block_on(m.call_status(&Request::Heartbeat(Heartbeat { nonce: 7 })))
        .unwrap();
    assert_eq!((st, payload), (Status::Ok, 7u32.to_le_bytes().to_vec()));
    let log = dev.log.lock().unwrap();
    let at = |op: Op| log.iter().position(|&o| o == op);
    for r in HOST_PUBLISHES {
        let p = at(Op::Publish(r.offset())).unwrap_or_else(|| panic!("{r:?}: {log:x?}"));
        let bytes = at(Op::WriteBytes(pf::MBOX_REQ.start())).unwrap();
        let len = at(Op::Write(pf::MBOX_REQ_LEN.offset())).unwrap();
        assert!(
            bytes < p && len < p,
            "request before the doorbell: {log:x?}"
        );
        assert!(
            at(Op::Write(r.offset())).is_none(),
            "{r:?} written plainly: {log:x?}"
        );
    }
    let observed =
        at(Op::Observe(pf::MBOX_DONE_DOORBELL.offset())).expect("DONE_DOORBELL observed");
    for later in [
        Op::Read(pf::MBOX_RESP_LEN.offset()),
        Op::ReadBytes(pf::MBOX_RESP.start()),
    ] {
        let i = at(later).unwrap_or_else(|| panic!("{later:?}: {log:x?}"));
        assert!(
            observed < i,
            "{later:?} read before DONE_DOORBELL was observed: {log:x?}"
        );
    }
}

#[test]
fn a_faulted_firmware_has_its_own_error_and_exit_code() {
    // The firmware was up, then its watchdog expired: READY stays, FAULT and HALTED are set.
    let t = Device::new(
        true,
        &[
            (
                pf::DEV_STATUS.offset(),
                (DevStatus::READY | DevStatus::FAULT | DevStatus::HALTED).bits(),
            ),
            (pf::FAULT_CODE.offset(), FaultCode::Watchdog.wire()),
        ],
    );
    let a = Accel::with_transport(t.clone(), Duration::from_secs(2)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let e = rt.block_on(a.heartbeat(1)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fails at once, not at the timeout"
    );
    assert!(matches!(e, Error::FirmwareFaulted { code: 4 }), "{e:?}");
    assert_eq!(e.exit_code(), 6);
    let m = e.to_string();
    assert!(
        m.contains("watchdog expired") && m.contains("reset the device"),
        "{m}"
    );
    // Nothing was left held: the mailbox semaphore is free again.
    assert_eq!(t.read32(pf::MBOX_LOCK.offset()).unwrap(), 0);
}
