//! Hardware fault injection into an in-process device model: a failing memory scrubber makes
//! the firmware fault; management then says so clearly, and the tenants' data path, which is
//! hardware and not firmware, keeps running.
use host_driver::vf::{Job, VfDev};
use host_driver::{Accel, CreateSpec, Error};
use shared_abi::jobs::{self, JobOp, JobStatus};
use shared_abi::regs::{pf, DevStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An in-process device model with two VFs, a runtime, and a management handle.
fn device_with_two_vfs() -> (sim::inprocess::InProcess, tokio::runtime::Runtime, Accel) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    accelvirt_tests::device_in_process(cores, 2, CreateSpec::Equal)
}

#[test]
fn a_failing_scrubber_faults_the_firmware_but_not_the_other_tenants_jobs() {
    let (r, rt, acc) = device_with_two_vfs();
    // VF 1's tenant runs checked jobs throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let tenant = {
        let (sock, stop) = (r.vf_socket(1), stop.clone());
        std::thread::spawn(move || {
            let mut dev = VfDev::open(&sock, 1 << 20).unwrap();
            let mut q = dev.queue(0, 4).unwrap();
            let buf = dev.alloc(64 << 10, 4096).unwrap();
            dev.write(buf, 0, &[0x5A; 64 << 10]).unwrap();
            let want = jobs::crc32c(0, &[0x5A; 64 << 10]) as u64;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tag = dev
                    .submit(
                        &mut q,
                        &Job {
                            op: JobOp::Crc32c,
                            src: Some(buf.into()),
                            dst: None,
                            len: buf.len as u32,
                            value: 0,
                        },
                    )
                    .unwrap();
                let c = dev.wait(&mut q, Duration::from_secs(5)).unwrap();
                assert_eq!((c.tag, c.status, c.result), (tag, JobStatus::Ok, want));
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    // The scrubber breaks; destroying VF 0 needs it to clear VF 0's memory.
    r.dev.inject_scrub_failure(true);
    let e = rt.block_on(acc.destroy_vf(0)).unwrap_err();
    let st = DevStatus::from_bits_retain(r.dev.bar0().read32(pf::DEV_STATUS.offset()));
    assert!(
        st.contains(DevStatus::FAULT),
        "the firmware recorded the fault: {st:?}"
    );
    assert!(
        matches!(e, Error::Firmware { .. } | Error::FirmwareFaulted { .. }),
        "{e}"
    );
    // The operator sees it: the device's health names the fault (accelctl info shows it).
    let (st, code) = acc.health().unwrap();
    assert!(st.contains(DevStatus::FAULT));
    assert_eq!(code, shared_abi::mailbox::FaultCode::ScrubTimeout.wire());
    assert!(host_driver::error::fault_name(code).contains("scrub"));
    // VF 1's jobs went on the whole time, and still do.
    let before = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let n = tenant
        .join()
        .expect("VF 1's tenant saw only correct completions");
    assert!(n > 0 && before.elapsed() >= Duration::from_millis(300));
}

#[test]
fn a_hung_firmware_times_management_out_and_tenants_jobs_run_on() {
    let (r, rt, acc) = device_with_two_vfs();
    let mut dev = VfDev::open(&r.vf_socket(0), 1 << 20).unwrap();
    let mut q = dev.queue(0, 4).unwrap();
    let buf = dev.alloc(4096, 4096).unwrap();
    dev.write(buf, 0, &[3; 4096]).unwrap();
    // The firmware hangs.
    r.dev.inject_firmware_stall(true);
    let short = Accel::open_with_timeout(
        &host_driver::DeviceAddr::Socket(r.sock.clone()),
        Duration::from_millis(300),
    );
    let t = Instant::now();
    let e = match short {
        Ok(a) => rt.block_on(a.heartbeat(1)).unwrap_err(),
        Err(e) => e,
    };
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(e.exit_code(), 4, "a silent firmware is busy: {e}");
    // The tenant's jobs do not need the firmware.
    for _ in 0..50 {
        dev.submit(
            &mut q,
            &Job {
                op: JobOp::Crc32c,
                src: Some(buf.into()),
                dst: None,
                len: 4096,
                value: 0,
            },
        )
        .unwrap();
        let c = dev.wait(&mut q, Duration::from_secs(5)).unwrap();
        assert_eq!(c.result, jobs::crc32c(0, &[3; 4096]) as u64);
    }
    // It comes back: management works again, and the timed-out command left no lock behind.
    r.dev.inject_firmware_stall(false);
    rt.block_on(acc.heartbeat(2)).unwrap();
    assert_eq!(r.dev.bar0().read32(pf::MBOX_LOCK.offset()), 0);
}
