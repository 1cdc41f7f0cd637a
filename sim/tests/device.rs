//! The device model in-process: config space rules, SR-IOV, the firmware thread, and the
//! virtualization unit's isolation between VFs.
use shared_abi::board::Board;
use shared_abi::mailbox::{self, Status, MAX_MESSAGE};
use shared_abi::messages::{CreateVfs, Heartbeat, Request, Sizing, Target};
use shared_abi::regs::{pf, queue, vf, vf_bank, MboxState, TtEntry};
use shared_abi::resources::{VfFault, VfSpec, VfState};
use sim::device::{region, AccessError, Device, Func};
use sim::pci::{layout, pcie, sriov};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The token the test host holds the mailbox lock with.
const TOKEN: u32 = 0x7E57_0004;

struct Rig {
    dev: Arc<Device>,
    stop: Arc<AtomicBool>,
    fw: Option<std::thread::JoinHandle<()>>,
    seq: u32,
    doorbell: u32,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.fw.take() {
            let _ = t.join();
        }
    }
}

impl Rig {
    fn new() -> Self {
        let dev = Device::new(Board::DEFAULT, 64).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let fw = sim::fwhost::spawn(dev.clone(), stop.clone(), 7).unwrap();
        let r = Rig {
            dev,
            stop,
            fw: Some(fw),
            seq: 0,
            doorbell: 0,
        };
        r.wait(|| r.r32(pf::DEV_STATUS.offset()) & 1 == 1);
        // The test host holds the mailbox lock (a trapped write, applied as the swap).
        r.w32(pf::MBOX_LOCK.offset(), TOKEN);
        r
    }
    fn wait(&self, f: impl Fn() -> bool) {
        self.wait_for(Duration::from_secs(5), f)
    }
    fn wait_for(&self, limit: Duration, f: impl Fn() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < limit, "timed out");
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    fn r32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        self.dev
            .bar_read(Func::Pf, region::BAR0, off as u64, &mut b)
            .unwrap();
        u32::from_le_bytes(b)
    }
    /// A PF register write as connection `conn` makes it.
    fn w32_as(&self, conn: u64, off: usize, v: u32) {
        self.dev
            .bar_write(Func::Pf, region::BAR0, off as u64, &v.to_le_bytes(), conn)
            .unwrap();
    }
    fn w32(&self, off: usize, v: u32) {
        self.dev
            .bar_write(Func::Pf, region::BAR0, off as u64, &v.to_le_bytes(), 1)
            .unwrap();
    }
    fn mbox(&mut self, req: &Request<'_>) -> (Status, Vec<u8>) {
        let mut payload = [0u8; MAX_MESSAGE];
        let n = req.write_payload(&mut payload).unwrap();
        let mut msg = [0u8; MAX_MESSAGE];
        self.seq += 1;
        let len = mailbox::encode_request(&mut msg, req.opcode(), self.seq, TOKEN, &payload[..n])
            .unwrap();
        self.dev
            .bar_write(
                Func::Pf,
                region::BAR0,
                pf::MBOX_REQ.offset as u64,
                &msg[..len],
                1,
            )
            .unwrap();
        self.w32(pf::MBOX_REQ_LEN.offset(), len as u32);
        self.doorbell += 1;
        self.w32(pf::MBOX_DOORBELL.offset(), self.doorbell);
        let db = self.doorbell;
        self.wait(|| {
            self.r32(pf::MBOX_STATE.offset()) == MboxState::Done as u32
                && self.r32(pf::MBOX_DONE_DOORBELL.offset()) == db
        });
        let rl = self.r32(pf::MBOX_RESP_LEN.offset()) as usize;
        let mut buf = vec![0u8; rl];
        self.dev
            .bar_read(
                Func::Pf,
                region::BAR0,
                pf::MBOX_RESP.offset as u64,
                &mut buf,
            )
            .unwrap();
        let m = mailbox::decode(&buf).unwrap();
        (m.status, m.payload.to_vec())
    }
    fn cfg16(&self, f: Func, off: usize) -> u16 {
        let mut b = [0u8; 2];
        self.dev.config_read(f, off as u64, &mut b).unwrap();
        u16::from_le_bytes(b)
    }
    fn cfgw16(&self, f: Func, off: usize, v: u16) {
        self.dev
            .config_write(f, off as u64, &v.to_le_bytes())
            .unwrap();
    }
    fn enable(&self, n: u16) {
        let s = layout::SRIOV;
        self.cfgw16(Func::Pf, s + sriov::NUM_VFS, n);
        self.cfgw16(
            Func::Pf,
            s + sriov::CTRL,
            sriov::CTRL_VF_ENABLE | sriov::CTRL_VF_MSE,
        );
        self.wait(|| {
            (0..n).all(|v| {
                self.r32(vf_bank::STATE.at(pf::vf_bank(v as usize))) != VfState::Configured as u32
            })
        });
    }
    fn vf_r32(&self, v: u16, bar: u32, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.bar_read(Func::Vf(v), bar, off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    fn vf_w32(&self, v: u16, bar: u32, off: u64, val: u32) {
        self.dev
            .bar_write(Func::Vf(v), bar, off, &val.to_le_bytes(), 9)
            .unwrap();
    }
    fn faults(&self, v: u16) -> u32 {
        self.r32(vf_bank::FAULT_COUNT.at(pf::vf_bank(v as usize)))
    }
}

#[test]
fn firmware_boots_on_the_register_file() {
    let r = Rig::new();
    assert_eq!(r.r32(pf::MAGIC.offset()), shared_abi::regs::PF_MAGIC);
    assert_eq!(r.r32(pf::FW_BUILD_ID.offset()), 7);
    let hb = r.r32(pf::HEARTBEAT.offset());
    r.wait(|| r.r32(pf::HEARTBEAT.offset()) != hb);
}

#[test]
fn host_cannot_write_read_only_registers() {
    let r = Rig::new();
    r.w32(pf::MAGIC.offset(), 0);
    r.w32(pf::vf_bank(0), 2);
    r.w32(pf::tt_entry(0), TtEntry::map(0).0);
    assert_eq!(r.r32(pf::MAGIC.offset()), shared_abi::regs::PF_MAGIC);
    assert_eq!(r.r32(pf::vf_bank(0)), 0);
    assert_eq!(r.r32(pf::tt_entry(0)), 0);
    assert_eq!(r.dev.pf_refused_writes.load(Ordering::Relaxed), 3);
    r.w32(pf::SCRATCH.offset(), 0x1234);
    assert_eq!(r.r32(pf::SCRATCH.offset()), 0x1234);
}

#[test]
fn mailbox_semaphore() {
    let r = Rig::new();
    r.w32(pf::MBOX_LOCK.offset(), 0); // the rig's own hold
    r.w32_as(100, pf::MBOX_LOCK.offset(), 7);
    assert_eq!(r.r32(pf::MBOX_LOCK.offset()), 7);
    r.w32_as(200, pf::MBOX_LOCK.offset(), 9);
    assert_eq!(
        r.r32(pf::MBOX_LOCK.offset()),
        7,
        "held by another requester"
    );
    r.w32_as(200, pf::MBOX_LOCK.offset(), 0);
    assert_eq!(r.r32(pf::MBOX_LOCK.offset()), 7, "only the owner releases");
    r.dev.client_gone(100);
    assert_eq!(
        r.r32(pf::MBOX_LOCK.offset()),
        0,
        "released when the owner goes away"
    );
    // A mapped client swaps the word itself; the token it registered for its connection
    // lets the device release it all the same.
    r.w32_as(300, pf::MBOX_OWNER.offset(), 0x55);
    assert!(r.dev.bar0().cas32(pf::MBOX_LOCK.offset(), 0, 0x55));
    // Another connection that claims the same token (it can read the lock word) and goes
    // away does not release it.
    r.w32_as(400, pf::MBOX_OWNER.offset(), 0x55);
    r.dev.client_gone(400);
    r.dev.client_gone(200);
    assert_eq!(r.r32(pf::MBOX_LOCK.offset()), 0x55, "not another's");
    r.dev.client_gone(300);
    assert_eq!(
        r.r32(pf::MBOX_LOCK.offset()),
        0,
        "released with its connection"
    );
}

/// A holder with no connection the device can watch (kernel VFIO) dies holding the lock: the
/// firmware takes it back when its lease runs out, and the next client gets in.
#[test]
fn a_dead_holder_without_a_connection_loses_the_lock_after_its_lease() {
    let mut r = Rig::new();
    r.w32(pf::MBOX_LOCK.offset(), 0);
    let lease = Duration::from_millis(r.r32(pf::MBOX_LEASE_MS.offset()) as u64);
    assert!(lease >= Duration::from_millis(100), "{lease:?}");
    let t = Instant::now();
    assert!(r.dev.bar0().cas32(pf::MBOX_LOCK.offset(), 0, 0xDEAD));
    r.wait_for(lease * 3, || r.r32(pf::MBOX_LOCK.offset()) == 0);
    assert!(
        t.elapsed() >= lease,
        "not before the lease ran out: {:?}",
        t.elapsed()
    );
    assert_eq!(r.r32(pf::MBOX_LEASES_EXPIRED.offset()), 1);
    r.w32(pf::MBOX_LOCK.offset(), TOKEN);
    assert_eq!(
        r.mbox(&Request::Heartbeat(Heartbeat { nonce: 1 })).0,
        Status::Ok
    );
}

#[test]
fn sriov_enable_and_disable_create_and_remove_vfs() {
    let mut r = Rig::new();
    let (st, _) = r.mbox(&Request::CreateVfs(CreateVfs {
        count: 4,
        sizing: Sizing::Equal,
    }));
    assert_eq!(st, Status::Ok);
    assert_eq!(r.dev.num_vfs(), 0);
    let mut b = [0u8; 4];
    assert_eq!(
        r.dev.config_read(Func::Vf(0), 0, &mut b),
        Err(AccessError::NoFunction)
    );
    r.enable(4);
    assert_eq!(r.dev.num_vfs(), 4);
    assert_eq!(r.cfg16(Func::Vf(3), 0), shared_abi::pci::VENDOR_ID);
    assert_eq!(r.cfg16(Func::Vf(3), 2), shared_abi::pci::VF_DEVICE_ID);
    let raw = r.dev.vf_raw_config(3).unwrap();
    assert_eq!(&raw[0..4], &[0xFF; 4], "a VF's own IDs read 0xFFFF");
    // The VF's MSI-X table size is the vectors the firmware assigned it.
    assert_eq!(r.cfg16(Func::Vf(0), layout::MSIX + 2) & 0x7FF, 511);
    assert_eq!(
        r.vf_r32(0, region::BAR0, vf::MAGIC.0 as u64),
        shared_abi::regs::VF_MAGIC
    );
    assert_eq!(r.vf_r32(2, region::BAR0, vf::VF_INDEX.0 as u64), 2);
    assert_eq!(r.vf_r32(0, region::BAR0, vf::QUEUE_COUNT.0 as u64), 64);
    // NumVFs cannot change while enabled.
    r.cfgw16(Func::Pf, layout::SRIOV + sriov::NUM_VFS, 8);
    assert_eq!(r.cfg16(Func::Pf, layout::SRIOV + sriov::NUM_VFS), 4);
    // Disable: the VFs disappear and their banks go back to configured.
    r.cfgw16(Func::Pf, layout::SRIOV + sriov::CTRL, 0);
    assert_eq!(r.dev.num_vfs(), 0);
    r.wait(|| r.r32(vf_bank::STATE.at(pf::vf_bank(0))) == VfState::Configured as u32);
    // Enabling more than TotalVFs does nothing.
    r.cfgw16(Func::Pf, layout::SRIOV + sriov::NUM_VFS, 65);
    r.cfgw16(Func::Pf, layout::SRIOV + sriov::CTRL, sriov::CTRL_VF_ENABLE);
    assert_eq!(r.dev.num_vfs(), 0);
    assert_eq!(r.cfg16(Func::Pf, layout::SRIOV + sriov::CTRL) & 1, 0);
}

#[test]
fn a_vf_touching_another_vfs_queues_is_refused_and_only_it_faults() {
    let mut r = Rig::new();
    let spec = VfSpec::new(1, 4, 2, 4, 0);
    assert_eq!(
        r.mbox(&Request::CreateVfs(CreateVfs {
            count: 2,
            sizing: Sizing::Uniform(&spec)
        }))
        .0,
        Status::Ok
    );
    r.enable(2);
    // VF 0 programs its queue 1.
    let q1 = vf::queue(1) as u64;
    r.vf_w32(
        0,
        region::BAR0,
        q1 + queue::SQ_BASE_LO.0 as u64,
        0xAAAA_0000,
    );
    assert_eq!(
        r.vf_r32(0, region::BAR0, q1 + queue::SQ_BASE_LO.0 as u64),
        0xAAAA_0000
    );
    // It lands in physical queue 1 (VF 0 owns 0..2); VF 1 owns physical 2..4.
    assert_eq!(r.r32(queue::SQ_BASE_LO.at(pf::queue(1))), 0xAAAA_0000);
    // VF 1 tries queue 2 and 3 of its BAR (it owns 2 queues: local 0 and 1).
    r.vf_w32(1, region::BAR0, vf::queue(2) as u64, 0xBAD);
    assert_eq!(r.vf_r32(1, region::BAR0, vf::queue(3) as u64), u32::MAX);
    assert_eq!(r.faults(1), 2);
    assert_eq!(
        r.r32(vf_bank::FAULT_CODE.at(pf::vf_bank(1))),
        VfFault::QueueNotOwned as u32
    );
    assert_eq!(r.faults(0), 0, "the victim records nothing");
    assert_eq!(
        r.r32(queue::SQ_BASE_LO.at(pf::queue(1))),
        0xAAAA_0000,
        "the victim's queue is intact"
    );
    assert_eq!(r.r32(queue::SQ_BASE_LO.at(pf::queue(2))), 0);
    assert_eq!(r.r32(queue::SQ_BASE_LO.at(pf::queue(3))), 0);
    // Queue registers a VF may not write, and ID registers, are refused too.
    r.vf_w32(
        1,
        region::BAR0,
        vf::queue(0) as u64 + queue::OWNER.0 as u64,
        1,
    );
    r.vf_w32(1, region::BAR0, vf::ENGINE_MASK.0 as u64, 0xFFFF);
    assert_eq!(r.faults(1), 4);
    assert_eq!(
        r.r32(queue::OWNER.at(pf::queue(2))),
        2,
        "ownership unchanged"
    );
    assert_eq!(
        r.vf_r32(1, region::BAR0, vf::STATUS.0 as u64) & 0b100,
        0b100,
        "VF sees it faulted"
    );
}

#[test]
fn memory_windows_are_translated_and_bounded() {
    let mut r = Rig::new();
    let spec = VfSpec::new(1, 2, 1, 1, 0);
    assert_eq!(
        r.mbox(&Request::CreateVfs(CreateVfs {
            count: 2,
            sizing: Sizing::Uniform(&spec)
        }))
        .0,
        Status::Ok
    );
    r.enable(2);
    let g = 2u64 << 20;
    // VF 0 writes across its two granules.
    let data: Vec<u8> = (0..64u32).map(|i| i as u8).collect();
    r.dev
        .bar_write(Func::Vf(0), region::BAR2, g - 32, &data, 9)
        .unwrap();
    let mut back = vec![0u8; 64];
    r.dev
        .bar_read(Func::Vf(0), region::BAR2, g - 32, &mut back)
        .unwrap();
    assert_eq!(back, data);
    // VF 1's local address 0 is its own memory (device granule 2), not VF 0's.
    r.dev
        .bar_read(Func::Vf(1), region::BAR2, g - 32, &mut back)
        .unwrap();
    assert_eq!(back, vec![0; 64]);
    // VF 1 reaching past its window (where VF 0's memory would be, untranslated) is refused.
    let mut probe = [0u8; 8];
    r.dev
        .bar_read(Func::Vf(1), region::BAR2, 2 * g, &mut probe)
        .unwrap();
    assert_eq!(probe, [0xFF; 8]);
    r.dev
        .bar_write(Func::Vf(1), region::BAR2, 2 * g + 8, &[1; 8], 9)
        .unwrap();
    assert_eq!(r.faults(1), 2);
    assert_eq!(
        r.r32(vf_bank::FAULT_CODE.at(pf::vf_bank(1))),
        VfFault::MemOutOfWindow as u32
    );
    assert_eq!(r.faults(0), 0);
    r.dev
        .bar_read(Func::Vf(0), region::BAR2, g - 32, &mut back)
        .unwrap();
    assert_eq!(back, data, "the victim's data is intact");
    // FLR of VF 0 scrubs its memory and does not touch VF 1's.
    r.dev
        .bar_write(Func::Vf(1), region::BAR2, 0, &[7; 16], 9)
        .unwrap();
    let devctl = r.cfg16(Func::Vf(0), layout::PCIE + pcie::DEVCTL);
    r.cfgw16(
        Func::Vf(0),
        layout::PCIE + pcie::DEVCTL,
        devctl | pcie::DEVCTL_FLR,
    );
    r.dev
        .bar_read(Func::Vf(0), region::BAR2, g - 32, &mut back)
        .unwrap();
    assert_eq!(back, vec![0; 64], "FLR scrubbed VF 0");
    let mut v1 = [0u8; 16];
    r.dev
        .bar_read(Func::Vf(1), region::BAR2, 0, &mut v1)
        .unwrap();
    assert_eq!(v1, [7; 16], "VF 1 untouched by VF 0's FLR");
    assert_eq!(r.r32(vf_bank::FLR_COUNT.at(pf::vf_bank(0))), 1);
    // Destroying VF 1 revokes its window at once.
    assert_eq!(r.mbox(&Request::DestroyVf(Target::One(1))).0, Status::Ok);
    r.dev
        .bar_read(Func::Vf(1), region::BAR2, 0, &mut v1)
        .unwrap();
    assert_eq!(v1, [0xFF; 16]);
}

#[test]
fn interrupts_come_only_from_own_vectors() {
    let mut r = Rig::new();
    let spec = VfSpec::new(1, 1, 1, 4, 0);
    assert_eq!(
        r.mbox(&Request::CreateVfs(CreateVfs {
            count: 2,
            sizing: Sizing::Uniform(&spec)
        }))
        .0,
        Status::Ok
    );
    r.enable(2);
    let efds: Vec<std::os::fd::OwnedFd> = (0..4)
        .map(|_| {
            nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_NONBLOCK)
                .unwrap()
                .into()
        })
        .collect();
    let peek: Vec<std::os::fd::OwnedFd> = efds.iter().map(|f| f.try_clone().unwrap()).collect();
    r.dev.set_msix_eventfds(Func::Vf(0), 0, 4, efds).unwrap();
    // MSI-X enable in the VF's capability; a function that is not a bus master holds its
    // vectors pending.
    r.cfgw16(Func::Vf(0), layout::MSIX + 2, 0x8000);
    r.vf_w32(0, region::BAR0, vf::IRQ_TRIGGER.0 as u64, 3);
    assert_eq!(
        r.dev.irqs_delivered(Func::Vf(0)),
        0,
        "no MSI-X without Bus Master Enable"
    );
    // Bus Master Enable sends what was held: the vector goes out now.
    r.cfgw16(Func::Vf(0), 0x04, 0x4);
    assert_eq!(
        r.dev.irqs_delivered(Func::Vf(0)),
        1,
        "the pending vector is sent when Bus Master comes on"
    );
    r.vf_w32(0, region::BAR0, vf::IRQ_TRIGGER.0 as u64, 3);
    // The function's courier writes the eventfd a moment later, as an MSI arrives after the
    // write that raised it.
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&peek[3]),
        nix::poll::PollFlags::POLLIN,
    )];
    assert_eq!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(2000u16)).unwrap(),
        1,
        "vector 3 was delivered"
    );
    let mut b = [0u8; 8];
    assert_eq!(nix::unistd::read(&peek[3], &mut b).unwrap(), 8);
    r.vf_w32(0, region::BAR0, vf::IRQ_TRIGGER.0 as u64, 4);
    assert_eq!(r.faults(0), 1);
    assert_eq!(
        r.r32(vf_bank::FAULT_CODE.at(pf::vf_bank(0))),
        VfFault::VectorNotOwned as u32
    );
    assert_eq!(r.dev.irqs_delivered(Func::Vf(0)), 2);
    // Its MSI-X table has exactly 4 entries; entry 4 is not its own.
    assert_eq!(
        r.vf_r32(0, region::BAR0, vf::MSIX_TABLE.offset as u64 + 4 * 16),
        u32::MAX
    );
    assert_eq!(r.faults(0), 2);
    assert!(r.dev.set_msix_eventfds(Func::Vf(0), 2, 4, vec![]).is_err());
}

#[test]
fn config_space_read_only_bits_and_bar_sizing_through_the_device() {
    let r = Rig::new();
    r.cfgw16(Func::Pf, 0, 0x1234);
    assert_eq!(r.cfg16(Func::Pf, 0), shared_abi::pci::VENDOR_ID);
    r.dev.config_write(Func::Pf, 0x10, &[0xFF; 8]).unwrap();
    let mut b = [0u8; 8];
    r.dev.config_read(Func::Pf, 0x10, &mut b).unwrap();
    assert_eq!(
        u64::from_le_bytes(b),
        !(shared_abi::pci::PF_BAR0_SIZE - 1) | 0x4
    );
    assert_eq!(
        r.dev.config_read(Func::Pf, 4095, &mut [0u8; 2]),
        Err(AccessError::OutOfRange)
    );
    // PF FLR resets the whole device: SR-IOV off and the firmware rebooted.
    r.cfgw16(Func::Pf, layout::SRIOV + sriov::NUM_VFS, 2);
    r.cfgw16(Func::Pf, layout::SRIOV + sriov::CTRL, 1);
    assert_eq!(r.dev.num_vfs(), 2);
    r.cfgw16(Func::Pf, layout::PCIE + pcie::DEVCTL, pcie::DEVCTL_FLR);
    assert_eq!(r.dev.num_vfs(), 0);
    assert_eq!(r.r32(pf::DEV_STATUS.offset()) & 1, 1);
}

#[test]
fn nothing_a_vf_writes_reaches_the_pf_mailbox() {
    let mut r = Rig::new();
    assert_eq!(
        r.mbox(&Request::CreateVfs(CreateVfs {
            count: 1,
            sizing: Sizing::Equal
        }))
        .0,
        Status::Ok
    );
    r.enable(1);
    // A well-formed DESTROY_VF(all) written by the VF at the PF's mailbox offsets in its own
    // BAR0, with the doorbell rung at the PF's doorbell offset.
    let mut payload = [0u8; MAX_MESSAGE];
    let n = Request::DestroyVf(Target::All)
        .write_payload(&mut payload)
        .unwrap();
    let mut msg = [0u8; MAX_MESSAGE];
    let len = mailbox::encode_request(
        &mut msg,
        Request::DestroyVf(Target::All).opcode(),
        9,
        TOKEN,
        &payload[..n],
    )
    .unwrap();
    let padded = len.div_ceil(4) * 4;
    let db_before = r.r32(pf::MBOX_DOORBELL.offset());
    r.dev
        .bar_write(
            Func::Vf(0),
            region::BAR0,
            pf::MBOX_REQ.offset as u64,
            &msg[..padded],
            9,
        )
        .unwrap();
    r.vf_w32(0, region::BAR0, pf::MBOX_REQ_LEN.0 as u64, len as u32);
    r.vf_w32(0, region::BAR0, pf::MBOX_DOORBELL.0 as u64, db_before + 1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        r.r32(pf::MBOX_DOORBELL.offset()),
        db_before,
        "the PF doorbell never moved"
    );
    assert_eq!(
        r.r32(vf_bank::STATE.at(pf::vf_bank(0))),
        VfState::Enabled as u32,
        "the VF still exists"
    );
    assert!(r.faults(0) > 0, "the attempt is recorded on the VF");
}

/// The firmware takes a queue back by clearing its OWNER first, before the bank changes and
/// before the registers are cleared. From that first write on, the VF's accesses to the queue
/// are refused: its write cannot land in a queue the next owner gets.
#[test]
fn a_queue_is_refused_from_the_moment_its_ownership_is_revoked() {
    let mut r = Rig::new();
    let spec = VfSpec::new(1, 4, 2, 4, 0);
    let made = r.mbox(&Request::CreateVfs(CreateVfs {
        count: 1,
        sizing: Sizing::Uniform(&spec),
    }));
    assert_eq!(made.0, Status::Ok);
    r.enable(1);
    let q1 = vf::queue(1) as u64 + queue::SQ_SIZE.0 as u64;
    r.vf_w32(0, region::BAR0, q1, 64);
    assert_eq!(r.r32(queue::SQ_SIZE.at(pf::queue(1))), 64);
    // The first step of a withdrawal, as the firmware's bus writes it; the bank still lists
    // the queue.
    let fw = sim::fwhost::FwPort(r.dev.clone());
    firmware::Regs::write32(&fw, queue::OWNER.at(pf::queue(1)), 0);
    assert_eq!(r.r32(vf_bank::QUEUE_COUNT.at(pf::vf_bank(0))), 2);
    r.vf_w32(0, region::BAR0, q1, 128);
    assert_eq!(r.r32(queue::SQ_SIZE.at(pf::queue(1))), 64, "not written");
    assert_eq!(r.vf_r32(0, region::BAR0, q1), u32::MAX, "nor readable");
    assert_eq!(r.faults(0), 2);
    assert_eq!(
        r.r32(vf_bank::FAULT_CODE.at(pf::vf_bank(0))),
        VfFault::QueueNotOwned as u32
    );
    // Its other queue is untouched.
    let q0 = vf::queue(0) as u64 + queue::SQ_SIZE.0 as u64;
    r.vf_w32(0, region::BAR0, q0, 32);
    assert_eq!(r.r32(queue::SQ_SIZE.at(pf::queue(0))), 32);
}

/// A guest that makes refused accesses forever cannot wrap its fault count back to zero (and
/// so clear FAULTED): the count saturates.
#[test]
fn a_vfs_fault_count_saturates_and_faulted_stays_set() {
    let mut r = Rig::new();
    let spec = VfSpec::new(1, 4, 2, 4, 0);
    assert_eq!(
        r.mbox(&Request::CreateVfs(CreateVfs {
            count: 1,
            sizing: Sizing::Uniform(&spec)
        }))
        .0,
        Status::Ok
    );
    r.enable(1);
    // Four billion refused accesses take too long for a test: start near the top, as the
    // hardware counter would be after them.
    r.dev
        .bar0()
        .write32(vf_bank::FAULT_COUNT.at(pf::vf_bank(0)), u32::MAX - 2);
    for _ in 0..5 {
        r.vf_w32(0, region::BAR0, vf::ENGINE_MASK.0 as u64, 1);
    }
    assert_eq!(r.faults(0), u32::MAX);
    assert_eq!(
        r.vf_r32(0, region::BAR0, vf::STATUS.0 as u64) & 0b100,
        0b100,
        "still FAULTED"
    );
}
