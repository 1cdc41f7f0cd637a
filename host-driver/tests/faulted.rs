//! A device whose firmware has faulted: every command fails at once with its own error and
//! exit code (6), naming the fault, instead of "no such device".
use host_driver::transport::{Transport, VfEndpoint};
use host_driver::{Accel, Error, Result};
use shared_abi::mailbox::FaultCode;
use shared_abi::regs::{pf, DevStatus, PF_MAGIC};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A PF register file in memory, frozen in the state a halted firmware leaves.
#[derive(Debug)]
struct Halted(Mutex<Vec<u32>>);

impl Transport for Halted {
    fn read32(&self, off: usize) -> Result<u32> {
        Ok(self.0.lock().unwrap()[off / 4])
    }
    fn write32(&self, off: usize, v: u32) -> Result<()> {
        self.0.lock().unwrap()[off / 4] = v;
        Ok(())
    }
    fn read_bytes(&self, _: usize, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write_bytes(&self, _: usize, _: &[u8]) -> Result<()> {
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
        "halted test device".into()
    }
    fn lock_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join("accelvirt-halted-test.lock")
    }
}

#[test]
fn a_faulted_firmware_has_its_own_error_and_exit_code() {
    let mut regs = vec![0u32; (shared_abi::pci::PF_BAR0_SIZE / 4) as usize];
    regs[pf::MAGIC.offset() / 4] = PF_MAGIC;
    regs[pf::ABI_VERSION.offset() / 4] = shared_abi::abi_version_word();
    // The firmware was up, then its watchdog expired: READY stays, FAULT and HALTED are set.
    regs[pf::DEV_STATUS.offset() / 4] =
        (DevStatus::READY | DevStatus::FAULT | DevStatus::HALTED).bits();
    regs[pf::FAULT_CODE.offset() / 4] = FaultCode::Watchdog.wire();
    let t = Arc::new(Halted(Mutex::new(regs)));
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
