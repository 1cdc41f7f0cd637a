//! Every management command, including every error status, through mailbox bytes.
mod common;

use common::{Dev, TOKEN};
use firmware::Regs;
use shared_abi::mailbox::{self, HeaderFlags, Opcode, Status, MAX_MESSAGE};
use shared_abi::messages::*;
use shared_abi::regs::{pf, queue, vf_bank, DevStatus, SriovCtrl, TtEntry};
use shared_abi::resources::{
    DeviceInfo, DeviceStats, FreeResources, VfInfo, VfSpec, VfState, VfStats,
};

fn create_equal(d: &mut Dev, count: u16) -> Vec<VfInfo> {
    let p = d.ok(&Request::CreateVfs(CreateVfs {
        count,
        sizing: Sizing::Equal,
    }));
    let (c, list) = split_list::<CountResp, VfInfo>(&p).unwrap();
    assert_eq!(c.count.get(), count);
    list.to_vec()
}

fn bank(d: &Dev, vf: usize, r: shared_abi::regs::Reg) -> u32 {
    d.regs.read32(r.at(pf::vf_bank(vf)))
}

#[test]
fn boot_publishes_identity_and_ready() {
    let d = Dev::new();
    assert_eq!(
        d.regs.read32(pf::MAGIC.offset()),
        shared_abi::regs::PF_MAGIC
    );
    assert_eq!(
        d.regs.read32(pf::ABI_VERSION.offset()),
        shared_abi::abi_version_word()
    );
    assert_eq!(
        d.regs.read32(pf::MBOX_LEASE_MS.offset()),
        firmware::LEASE_MS
    );
    assert_eq!(d.regs.read32(pf::BOARD_ENGINES.offset()), 16);
    assert_eq!(d.regs.read32(pf::BOARD_TOTAL_VFS.offset()), 64);
    assert_eq!(
        d.regs.read32(pf::DEV_STATUS.offset()),
        DevStatus::READY.bits()
    );
    assert_eq!(
        d.regs.read32(pf::EVQ_PROD.offset()),
        1,
        "FW_READY event posted"
    );
}

#[test]
fn device_info_resources_heartbeat() {
    let mut d = Dev::new();
    let p = d.ok(&Request::GetDeviceInfo(()));
    let info = view::<DeviceInfo>(&p).unwrap();
    assert_eq!(info.engines, 16);
    assert_eq!(info.mem_granules.get(), 8192);
    assert_eq!(info.total_vfs.get(), 64);
    assert_eq!(info.build_id.get(), 0xB1D);
    let p = d.ok(&Request::GetResources(()));
    let f = view::<FreeResources>(&p).unwrap();
    assert_eq!(f.engine_mask.get(), 0xFFFF);
    assert_eq!(f.mem_granules.get(), 8192);
    assert_eq!(f.largest_mem_run.get(), 8192);
    assert_eq!(f.queues.get(), 256);
    assert_eq!(f.vectors.get(), 2048);
    assert_eq!(f.free_vf_slots.get(), 64);
    let p = d.ok(&Request::Heartbeat(Heartbeat { nonce: 0xDEAD }));
    assert_eq!(view::<HeartbeatResp>(&p).unwrap().nonce.get(), 0xDEAD);
}

#[test]
fn create_four_equal_splits_the_default_board() {
    let mut d = Dev::new();
    let vfs = create_equal(&mut d, 4);
    for (i, v) in vfs.iter().enumerate() {
        assert_eq!(v.vf.get() as usize, i);
        assert_eq!(v.engine_mask.get().count_ones(), 4);
        assert_eq!(v.mem_granules.get(), 2048, "4 GiB of 2 MiB granules");
        assert_eq!(v.queue_count.get(), 64);
        assert_eq!(v.vector_count.get(), 512);
        assert_eq!(v.state, VfState::Configured as u8);
        assert_eq!(bank(&d, i, vf_bank::ENGINE_MASK), v.engine_mask.get());
        assert_eq!(bank(&d, i, vf_bank::MEM_GRANULES), 2048);
        assert_eq!(bank(&d, i, vf_bank::TT_BASE), v.mem_base.get());
        let g = v.mem_base.get() as usize + 7;
        assert_eq!(d.regs.read32(pf::tt_entry(g)), TtEntry::map(g as u32).0);
        let q = v.queue_base.get() as usize;
        assert_eq!(d.regs.read32(queue::OWNER.at(pf::queue(q))), i as u32 + 1);
    }
    let masks: u32 = vfs.iter().map(|v| v.engine_mask.get()).fold(0, |a, m| {
        assert_eq!(a & m, 0, "engines are exclusive");
        a | m
    });
    assert_eq!(masks, 0xFFFF);
    d.consistent();
    // Everything is used: a fifth VF cannot be made, and nothing changes.
    let before = d.snapshot();
    let r = d.call(&Request::CreateVfs(CreateVfs {
        count: 1,
        sizing: Sizing::Equal,
    }));
    assert_eq!(r.status, Status::OutOfResources);
    assert_eq!(d.snapshot(), before);
}

#[test]
fn create_uniform_and_explicit() {
    let mut d = Dev::new();
    let spec = VfSpec::new(2, 100, 8, 16, 300);
    let p = d.ok(&Request::CreateVfs(CreateVfs {
        count: 3,
        sizing: Sizing::Uniform(&spec),
    }));
    let (_, list) = split_list::<CountResp, VfInfo>(&p).unwrap();
    assert_eq!(list.len(), 3);
    assert!(list
        .iter()
        .all(|v| v.weight.get() == 300 && v.mem_granules.get() == 100));
    let specs = [VfSpec::new(1, 1, 1, 1, 0), VfSpec::new(5, 50, 2, 3, 1000)];
    let p = d.ok(&Request::CreateVfs(CreateVfs {
        count: 2,
        sizing: Sizing::Explicit(&specs),
    }));
    let (_, list) = split_list::<CountResp, VfInfo>(&p).unwrap();
    assert_eq!(list[0].vf.get(), 3, "lowest free slots");
    assert_eq!(list[0].weight.get(), shared_abi::resources::DEFAULT_WEIGHT);
    assert_eq!(list[1].engine_mask.get().count_ones(), 5);
    d.consistent();
}

#[test]
fn create_errors_change_nothing() {
    let mut d = Dev::new();
    create_equal(&mut d, 1);
    let d_before = d.snapshot();
    let too_big = VfSpec::new(1, 9000, 1, 1, 0);
    let zero = VfSpec::new(0, 1, 1, 1, 0);
    let heavy = VfSpec::new(1, 1, 1, 1, 1001);
    let cases: Vec<(Request<'_>, Status)> = vec![
        (
            Request::CreateVfs(CreateVfs {
                count: 0,
                sizing: Sizing::Equal,
            }),
            Status::InvalidArgument,
        ),
        (
            Request::CreateVfs(CreateVfs {
                count: 65,
                sizing: Sizing::Equal,
            }),
            Status::TooManyVfs,
        ),
        (
            Request::CreateVfs(CreateVfs {
                count: 1,
                sizing: Sizing::Uniform(&too_big),
            }),
            Status::OutOfResources,
        ),
        (
            Request::CreateVfs(CreateVfs {
                count: 1,
                sizing: Sizing::Uniform(&zero),
            }),
            Status::InvalidArgument,
        ),
        (
            Request::CreateVfs(CreateVfs {
                count: 1,
                sizing: Sizing::Uniform(&heavy),
            }),
            Status::InvalidArgument,
        ),
    ];
    let mut fresh = Dev::new();
    for (req, want) in cases {
        assert_eq!(fresh.call(&req).status, want, "{req:?}");
        assert_eq!(d.call(&req).status, want, "{req:?} with one VF present");
        assert_eq!(d.snapshot(), d_before, "{req:?} changed registers");
    }
    // All-or-nothing: the third of three VFs does not fit, so none is made.
    let mut e = Dev::new();
    let before = e.snapshot();
    let specs = [
        VfSpec::new(8, 4096, 1, 1, 0),
        VfSpec::new(8, 4096, 1, 1, 0),
        VfSpec::new(1, 1, 1, 1, 0),
    ];
    let r = e.call(&Request::CreateVfs(CreateVfs {
        count: 3,
        sizing: Sizing::Explicit(&specs),
    }));
    assert_eq!(r.status, Status::OutOfResources);
    assert_eq!(e.snapshot(), before);
    e.consistent();
}

#[test]
fn fragmentation_is_a_clear_error() {
    let mut d = Dev::new();
    create_equal(&mut d, 4);
    d.ok(&Request::DestroyVf(Target::One(0)));
    d.ok(&Request::DestroyVf(Target::One(2)));
    let before = d.snapshot();
    let spec = VfSpec::new(1, 4096, 1, 1, 0);
    let r = d.call(&Request::CreateVfs(CreateVfs {
        count: 1,
        sizing: Sizing::Uniform(&spec),
    }));
    assert_eq!(r.status, Status::Fragmented);
    assert_eq!(d.snapshot(), before);
}

#[test]
fn destroy_one_and_all() {
    let mut d = Dev::new();
    create_equal(&mut d, 4);
    let p = d.ok(&Request::DestroyVf(Target::One(1)));
    assert_eq!(view::<CountResp>(&p).unwrap().count.get(), 1);
    assert_eq!(bank(&d, 1, vf_bank::STATE), 0);
    assert_eq!(bank(&d, 1, vf_bank::MEM_GRANULES), 0);
    assert_eq!(d.regs.scrubbed(), 2048, "destroyed memory is scrubbed");
    assert_eq!(
        d.call(&Request::DestroyVf(Target::One(1))).status,
        Status::InvalidVf
    );
    assert_eq!(
        d.call(&Request::DestroyVf(Target::One(64))).status,
        Status::InvalidVf
    );
    d.consistent();
    let p = d.ok(&Request::DestroyVf(Target::All));
    assert_eq!(view::<CountResp>(&p).unwrap().count.get(), 3);
    let f = d.ok(&Request::GetResources(()));
    assert_eq!(view::<FreeResources>(&f).unwrap().mem_granules.get(), 8192);
    d.consistent();
    // Destroy-all on an empty device is fine and does nothing.
    let p = d.ok(&Request::DestroyVf(Target::All));
    assert_eq!(view::<CountResp>(&p).unwrap().count.get(), 0);
}

#[test]
fn query_configure_qos_stats() {
    let mut d = Dev::new();
    let spec = VfSpec::new(2, 10, 4, 4, 0);
    d.ok(&Request::CreateVfs(CreateVfs {
        count: 2,
        sizing: Sizing::Uniform(&spec),
    }));
    let p = d.ok(&Request::QueryVf(Target::One(1)));
    let v = *view::<VfInfo>(&p).unwrap();
    assert_eq!(v.mem_base.get(), 10);
    assert_eq!(
        d.call(&Request::QueryVf(Target::One(5))).status,
        Status::InvalidVf
    );
    // Every live VF in one answer, each as QUERY_VF of it alone says.
    let all = d.ok(&Request::QueryVf(Target::All));
    let (n, list) = split_list::<CountResp, VfInfo>(&all).unwrap();
    assert_eq!(n.count.get(), 2);
    assert_eq!(list[1], v);
    assert_eq!(list[0].vf.get(), 0);
    // VF 0 cannot grow in place (VF 1 follows it) but VF 1 can.
    let bigger = VfSpec::new(3, 20, 8, 8, 0);
    let before = d.snapshot();
    assert_eq!(
        d.call(&Request::ConfigureVf(ConfigureVf {
            vf: 0,
            spec: &bigger
        }))
        .status,
        Status::Fragmented
    );
    assert_eq!(d.snapshot(), before);
    let p = d.ok(&Request::ConfigureVf(ConfigureVf {
        vf: 1,
        spec: &bigger,
    }));
    let v = view::<VfInfo>(&p).unwrap();
    assert_eq!((v.mem_base.get(), v.mem_granules.get()), (10, 20));
    assert_eq!(v.engine_mask.get().count_ones(), 3);
    assert_eq!(bank(&d, 1, vf_bank::MEM_GRANULES), 20);
    d.consistent();
    // Shrinking releases (and scrubs) the tail.
    let scrubbed = d.regs.scrubbed();
    let smaller = VfSpec::new(1, 5, 2, 2, 0);
    d.ok(&Request::ConfigureVf(ConfigureVf {
        vf: 1,
        spec: &smaller,
    }));
    assert_eq!(d.regs.scrubbed() - scrubbed, 15);
    assert_eq!(d.regs.read32(pf::tt_entry(16)), TtEntry::INVALID.0);
    d.consistent();
    // QoS.
    let p = d.ok(&Request::SetQos(SetQos { vf: 0, weight: 800 }));
    assert_eq!(view::<VfInfo>(&p).unwrap().weight.get(), 800);
    assert_eq!(bank(&d, 0, vf_bank::QOS_WEIGHT), 800);
    assert_eq!(
        d.call(&Request::SetQos(SetQos { vf: 0, weight: 0 })).status,
        Status::InvalidArgument
    );
    assert_eq!(
        d.call(&Request::SetQos(SetQos { vf: 9, weight: 5 })).status,
        Status::InvalidVf
    );
    d.consistent();
    // Stats.
    let p = d.ok(&Request::GetStats(Target::One(0)));
    assert_eq!(view::<VfStats>(&p).unwrap().vf.get(), 0);
    let p = d.ok(&Request::GetStats(Target::All));
    let (dev, vfs) = split_list::<DeviceStats, VfStats>(&p).unwrap();
    assert_eq!(dev.vf_count.get(), 2);
    assert_eq!(vfs.len(), 2);
    assert!(dev.mbox_errors.get() >= 3);
    assert_eq!(
        d.call(&Request::GetStats(Target::One(7))).status,
        Status::InvalidVf
    );
}

#[test]
fn reset_clears_only_that_vf() {
    let mut d = Dev::new();
    let vfs = create_equal(&mut d, 2);
    let q0 = pf::queue(vfs[0].queue_base.get() as usize);
    let q1 = pf::queue(vfs[1].queue_base.get() as usize);
    d.regs.write32(queue::SQ_BASE_LO.at(q0), 0x1000);
    d.regs.write32(queue::SQ_BASE_LO.at(q1), 0x2000);
    let scrubbed = d.regs.scrubbed();
    let p = d.ok(&Request::ResetVf(VfIndex(0)));
    let v = view::<VfInfo>(&p).unwrap();
    assert_eq!(v.flr_count.get(), 1);
    assert_eq!(v.state, VfState::Configured as u8);
    assert_eq!(
        d.regs.read32(queue::SQ_BASE_LO.at(q0)),
        0,
        "its queues are cleared"
    );
    assert_eq!(
        d.regs.read32(queue::SQ_BASE_LO.at(q1)),
        0x2000,
        "the other VF is untouched"
    );
    assert_eq!(
        d.regs.scrubbed() - scrubbed,
        vfs[0].mem_granules.get() as u64
    );
    assert_eq!(
        d.call(&Request::ResetVf(VfIndex(3))).status,
        Status::InvalidVf
    );
    d.consistent();
}

#[test]
fn flr_from_config_space_and_sriov_enable() {
    let mut d = Dev::new();
    create_equal(&mut d, 4);
    d.regs.write32(
        pf::SRIOV_CTRL.offset(),
        SriovCtrl::new(true, true, 2).bits(),
    );
    d.fw.poll();
    assert_eq!(bank(&d, 0, vf_bank::STATE), VfState::Enabled as u32);
    assert_eq!(bank(&d, 1, vf_bank::STATE), VfState::Enabled as u32);
    assert_eq!(bank(&d, 2, vf_bank::STATE), VfState::Configured as u32);
    d.flr(1);
    d.fw.poll();
    assert_eq!(d.regs.read32(pf::vf_hw_status(1)), 0, "FLR acknowledged");
    assert_eq!(bank(&d, 1, vf_bank::FLR_COUNT), 1);
    assert_eq!(bank(&d, 1, vf_bank::STATE), VfState::Enabled as u32);
    assert_eq!(bank(&d, 0, vf_bank::FLR_COUNT), 0);
    d.regs.write32(pf::SRIOV_CTRL.offset(), 0);
    d.fw.poll();
    assert_eq!(bank(&d, 0, vf_bank::STATE), VfState::Configured as u32);
    d.consistent();
}

#[test]
fn retry_is_answered_not_executed_twice() {
    let mut d = Dev::new();
    let msg = d.encode(&Request::CreateVfs(CreateVfs {
        count: 1,
        sizing: Sizing::Uniform(&VfSpec::new(1, 1, 1, 1, 0)),
    }));
    let first = d.raw(&msg, msg.len() as u32);
    assert_eq!(first.status, Status::Ok);
    assert!(!first.flags.contains(HeaderFlags::REPLAYED));
    let again = d.raw(&msg, msg.len() as u32);
    assert_eq!(again.status, Status::Ok);
    assert!(again.flags.contains(HeaderFlags::REPLAYED));
    assert_eq!(again.payload, first.payload);
    let f = d.ok(&Request::GetResources(()));
    assert_eq!(
        view::<FreeResources>(&f).unwrap().free_vf_slots.get(),
        63,
        "one VF, not two"
    );
    assert_eq!(d.fw.counters().replays, 1);
    // A malformed message in between does not spoil the cache.
    let msg2 = d.encode(&Request::DestroyVf(Target::One(0)));
    assert_eq!(d.raw(&msg2, msg2.len() as u32).status, Status::Ok);
    assert_eq!(d.raw(&[0xFF; 40], 40).status, Status::BadMagic);
    let r = d.raw(&msg2, msg2.len() as u32);
    assert_eq!(r.status, Status::Ok);
    assert!(r.flags.contains(HeaderFlags::REPLAYED));
}

#[test]
fn malformed_messages_get_specific_statuses_and_change_nothing() {
    let mut d = Dev::new();
    create_equal(&mut d, 2);
    let good = d.encode(&Request::DestroyVf(Target::All));
    let before = d.snapshot();
    let mut bad_crc = good.clone();
    bad_crc[28] ^= 1;
    let mut bad_magic = good.clone();
    bad_magic[0] = 0;
    let mut bad_version = good.clone();
    bad_version[4] = 9;
    let mut flags = good.clone();
    flags[8] = 1; // a "response" sent as a request
    let n = good.len() as u32;
    let unknown = {
        let mut m = vec![0u8; 64];
        let len = mailbox::encode(
            &mut m,
            0x0999,
            HeaderFlags::empty(),
            Status::Ok,
            1,
            TOKEN,
            &[],
        )
        .unwrap();
        m.truncate(len);
        m
    };
    let short_payload = {
        let mut m = vec![0u8; 64];
        let len = mailbox::encode_request(&mut m, Opcode::DestroyVf, 1, TOKEN, &[1, 0]).unwrap();
        m.truncate(len);
        m
    };
    let cases: Vec<(&[u8], u32, Status)> = vec![
        (&bad_crc, n, Status::BadCrc),
        (&bad_magic, n, Status::BadMagic),
        (&bad_version, n, Status::UnsupportedVersion),
        (&flags, n, Status::BadCrc),
        (&unknown, unknown.len() as u32, Status::UnknownOpcode),
        (
            &short_payload,
            short_payload.len() as u32,
            Status::BadLength,
        ),
        (&good, n - 1, Status::BadLength),
        (&good, 10, Status::BadLength),
        (&good, MAX_MESSAGE as u32 + 1, Status::BadLength),
        (&good, u32::MAX, Status::BadLength),
    ];
    for (msg, len, want) in cases {
        let r = d.raw(msg, len);
        assert_eq!(r.status, want, "len {len}");
        assert_eq!(d.snapshot(), before);
    }
    d.consistent();
}

#[test]
fn firmware_update_opcodes_are_refused_without_a_flash_controller() {
    let mut d = Dev::new();
    for req in [
        Request::FwDownloadCommit(()),
        Request::FwQuerySlots(()),
        Request::FwActivate(FwActivate { slot: 0 }),
        Request::GetLog(RingIndex(0)),
    ] {
        assert_eq!(d.call(&req).status, Status::NotSupported);
    }
}

#[test]
fn invalid_board_is_a_fault() {
    let regs: &'static firmware::ram::RamRegs = Box::leak(Box::new(firmware::ram::RamRegs::new()));
    let mut b = firmware::Board::DEFAULT;
    b.engines = 0;
    assert!(firmware::Firmware::new(regs, firmware::hal::NoClock, b, 0).is_err());
    assert_eq!(
        regs.read32(pf::DEV_STATUS.offset()),
        DevStatus::FAULT.bits()
    );
    assert_eq!(
        regs.read32(pf::FAULT_CODE.offset()),
        shared_abi::mailbox::FaultCode::BadBoard.wire()
    );
}

/// A scrubber that never finishes: the command that needed it fails with INTERNAL, the
/// firmware records the fault, and the VF's resources are not handed out again unscrubbed.
#[test]
fn a_hung_scrubber_is_an_internal_error_and_a_fault() {
    #[derive(Debug)]
    struct HungScrubber(firmware::ram::RamRegs);
    impl Regs for HungScrubber {
        fn read32(&self, off: usize) -> u32 {
            self.0.read32(off)
        }
        fn write32(&self, off: usize, val: u32) {
            if off != pf::SCRUB_CTRL.offset() {
                self.0.write32(off, val)
            }
        }
    }
    let regs: &'static HungScrubber =
        Box::leak(Box::new(HungScrubber(firmware::ram::RamRegs::new())));
    let mut fw =
        firmware::Firmware::new(regs, firmware::hal::NoClock, firmware::Board::DEFAULT, 0).unwrap();
    fw.boot();
    regs.write32(pf::MBOX_LOCK.offset(), TOKEN);
    let mut send = |req: &Request<'_>, seq: u32| {
        let mut p = [0u8; MAX_MESSAGE];
        let n = req.write_payload(&mut p).unwrap();
        let mut m = [0u8; MAX_MESSAGE];
        let len = mailbox::encode_request(&mut m, req.opcode(), seq, TOKEN, &p[..n]).unwrap();
        regs.write_bytes(pf::MBOX_REQ.start(), &m[..len]);
        regs.write32(pf::MBOX_REQ_LEN.offset(), len as u32);
        regs.write32(pf::MBOX_DOORBELL.offset(), seq);
        fw.poll();
        let rl = regs.read32(pf::MBOX_RESP_LEN.offset()) as usize;
        let mut b = vec![0u8; rl];
        regs.read_bytes(pf::MBOX_RESP.start(), &mut b);
        mailbox::decode(&b).unwrap().status
    };
    assert_eq!(
        send(
            &Request::CreateVfs(CreateVfs {
                count: 1,
                sizing: Sizing::Equal
            }),
            1
        ),
        Status::Ok
    );
    assert_eq!(send(&Request::ResetVf(VfIndex(0)), 2), Status::Internal);
    assert_ne!(
        regs.read32(pf::DEV_STATUS.offset()) & DevStatus::FAULT.bits(),
        0
    );
    assert_eq!(
        regs.read32(pf::FAULT_CODE.offset()),
        shared_abi::mailbox::FaultCode::ScrubTimeout.wire()
    );
}

#[test]
fn only_the_lock_holder_commands_and_nothing_changes_otherwise() {
    let mut d = Dev::new();
    for holder in [0, TOKEN ^ 1] {
        d.regs.write32(pf::MBOX_LOCK.offset(), holder);
        let before = d.snapshot();
        let r = d.call(&Request::CreateVfs(CreateVfs {
            count: 1,
            sizing: Sizing::Equal,
        }));
        assert_eq!(r.status, Status::LockNotHeld, "lock held by {holder:#x}");
        assert!(d.snapshot() == before, "nothing executed");
    }
    d.regs.write32(pf::MBOX_LOCK.offset(), TOKEN);
    d.ok(&Request::CreateVfs(CreateVfs {
        count: 1,
        sizing: Sizing::Equal,
    }));
}

/// A clock the test moves by hand.
#[derive(Debug, Clone, Copy)]
struct Manual(&'static std::cell::Cell<u64>);

impl firmware::Clock for Manual {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

#[test]
fn a_silent_holder_loses_the_lock_after_its_lease() {
    let now: &'static std::cell::Cell<u64> = Box::leak(Box::new(std::cell::Cell::new(0)));
    let regs: &'static firmware::ram::RamRegs = Box::leak(Box::new(firmware::ram::RamRegs::new()));
    let mut fw = firmware::Firmware::new(regs, Manual(now), firmware::Board::DEFAULT, 0).unwrap();
    fw.boot();
    let lease = regs.read32(pf::MBOX_LEASE_MS.offset()) as u64;
    assert_eq!(lease, firmware::LEASE_MS as u64);
    // A process takes the lock and dies.
    regs.write32(pf::MBOX_LOCK.offset(), 0xDEAD);
    // The firmware looks at the clock for a known holder every 256th poll.
    let settle = |fw: &mut firmware::Firmware<_, _>| {
        for _ in 0..256 {
            fw.poll();
        }
    };
    settle(&mut fw);
    now.set(lease);
    settle(&mut fw);
    assert_eq!(
        regs.read32(pf::MBOX_LOCK.offset()),
        0xDEAD,
        "still within its lease"
    );
    now.set(lease + 1);
    settle(&mut fw);
    assert_eq!(regs.read32(pf::MBOX_LOCK.offset()), 0, "taken back");
    assert_eq!(regs.read32(pf::MBOX_LEASES_EXPIRED.offset()), 1);
    // A live holder's commands renew its lease.
    regs.write32(pf::MBOX_LOCK.offset(), TOKEN);
    fw.poll();
    let mut seq = 0;
    for step in 1..=3u64 {
        now.set(lease + step * (lease - 1));
        seq += 1;
        let mut m = [0u8; MAX_MESSAGE];
        let len = mailbox::encode_request(&mut m, Opcode::Heartbeat, seq, TOKEN, &[0; 4]).unwrap();
        regs.write_bytes(pf::MBOX_REQ.start(), &m[..len]);
        regs.write32(pf::MBOX_REQ_LEN.offset(), len as u32);
        regs.write32(pf::MBOX_DOORBELL.offset(), seq);
        assert!(fw.poll());
        assert_eq!(
            regs.read32(pf::MBOX_LOCK.offset()),
            TOKEN,
            "renewed at step {step}"
        );
    }
    assert_eq!(regs.read32(pf::MBOX_LEASES_EXPIRED.offset()), 1);
}

/// The firmware skips its consistency check after a query (`Opcode::is_query`), so a query
/// that changed anything would go unchecked: every opcode declared a query must leave the
/// registers and the books exactly as they were, whatever it is asked.
#[test]
fn declared_queries_change_nothing() {
    let mut d = Dev::new();
    create_equal(&mut d, 4);
    let requests = [
        Request::GetDeviceInfo(()),
        Request::GetResources(()),
        Request::Heartbeat(Heartbeat { nonce: 1 }),
        Request::QueryVf(Target::One(2)),
        Request::QueryVf(Target::All),
        Request::QueryVf(Target::One(60)),
        Request::GetStats(Target::One(1)),
        Request::GetStats(Target::All),
        Request::FwQuerySlots(()),
        Request::GetLog(RingIndex(0)),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for req in requests {
        assert!(req.opcode().is_query(), "{:?}", req.opcode());
        covered.insert(req.opcode().wire());
        let (regs, books) = (d.snapshot(), *d.fw.books());
        d.call(&req);
        assert_eq!(
            d.snapshot(),
            regs,
            "{} changed registers",
            req.opcode().name()
        );
        assert!(
            *d.fw.books() == books,
            "{} changed the books",
            req.opcode().name()
        );
    }
    let declared: std::collections::BTreeSet<u16> = Opcode::ALL
        .iter()
        .filter(|o| o.is_query())
        .map(|o| o.wire())
        .collect();
    assert_eq!(covered, declared, "every declared query is exercised");
}

/// Events in the ring from index `from` to its producer index.
fn ring(regs: &firmware::ram::RamRegs, from: u32) -> Vec<shared_abi::events::Event> {
    use zerocopy::FromBytes;
    let prod = regs.read32(pf::EVQ_PROD.offset());
    (from..prod)
        .map(|i| {
            let mut b = [0u8; 16];
            let slot = i as usize % shared_abi::regs::EVENT_RING_ENTRIES;
            regs.read_bytes(pf::EVENT_RING.start() + slot * 16, &mut b);
            shared_abi::events::Event::read_from_bytes(&b).unwrap()
        })
        .collect()
}

#[test]
fn vf_faults_are_reported_as_events_at_most_once_per_vf_per_interval() {
    use shared_abi::events::EventKind;
    use shared_abi::regs::vf_bank;
    let now: &'static std::cell::Cell<u64> = Box::leak(Box::new(std::cell::Cell::new(0)));
    let regs: &'static firmware::ram::RamRegs = Box::leak(Box::new(firmware::ram::RamRegs::new()));
    let mut fw = firmware::Firmware::new(regs, Manual(now), firmware::Board::DEFAULT, 0).unwrap();
    fw.boot();
    let start = regs.read32(pf::EVQ_PROD.offset());
    // What hardware does on a refused access of VF 3: count it, code it, move FAULT_SEQ.
    let fault = |n: u32| {
        let bank = pf::vf_bank(3);
        regs.write32(vf_bank::FAULT_COUNT.at(bank), n);
        regs.write32(vf_bank::FAULT_CODE.at(bank), 2);
        let s = regs.read32(pf::FAULT_SEQ.offset());
        regs.write32(pf::FAULT_SEQ.offset(), s.wrapping_add(1));
    };
    let faults = |from| -> Vec<(u16, u32, u64)> {
        ring(regs, from)
            .iter()
            .filter(|e| e.kind.get() == EventKind::VfFault as u16)
            .map(|e| (e.vf.get(), e.code.get(), e.data.get()))
            .collect()
    };
    fault(1);
    fw.poll();
    assert_eq!(faults(start), [(3, 2, 1)]);
    // A storm within the interval: nothing more in the ring...
    for n in 2..500 {
        fault(n);
        fw.poll();
    }
    assert_eq!(faults(start).len(), 1, "one event per interval");
    // ...and the count held back is reported once the interval has passed, even with no
    // new fault to move FAULT_SEQ.
    now.set(firmware::FAULT_EVENT_MS);
    for _ in 0..512 {
        fw.poll();
    }
    assert_eq!(faults(start), [(3, 2, 1), (3, 2, 499)]);
    // A cleared bank (a reset) starts counting again.
    fault(0);
    fw.poll();
    now.set(2 * firmware::FAULT_EVENT_MS);
    fault(1);
    fw.poll();
    assert_eq!(faults(start).last(), Some(&(3, 2, 1)));
}
