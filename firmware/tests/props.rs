//! Property tests of the allocator and the VF books, driven through the mailbox: random
//! create/destroy/resize/reset/QoS/SR-IOV/FLR sequences never double-allocate, never leak,
//! always leave the banks equal to the books, and a refused command changes nothing.
mod common;

use common::Dev;
use firmware::{Board, Regs};
use proptest::prelude::*;
use shared_abi::mailbox::Status;
use shared_abi::messages::*;
use shared_abi::regs::{pf, SriovCtrl};
use shared_abi::resources::VfSpec;

#[derive(Clone, Debug)]
enum Op {
    CreateEqual(u16),
    CreateUniform(u16, (u16, u32, u16, u16)),
    Destroy(u16),
    DestroyAll,
    Resize(u16, (u16, u32, u16, u16)),
    Reset(u16),
    Qos(u16, u16),
    Sriov(u16),
    Flr(u16),
}

fn small_spec() -> impl Strategy<Value = (u16, u32, u16, u16)> {
    (0u16..6, 0u32..300, 0u16..20, 0u16..40)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u16..6).prop_map(Op::CreateEqual),
        ((0u16..5), small_spec()).prop_map(|(c, s)| Op::CreateUniform(c, s)),
        (0u16..10).prop_map(Op::Destroy),
        Just(Op::DestroyAll),
        ((0u16..10), small_spec()).prop_map(|(v, s)| Op::Resize(v, s)),
        (0u16..10).prop_map(Op::Reset),
        ((0u16..10), (0u16..1100)).prop_map(|(v, w)| Op::Qos(v, w)),
        (0u16..10).prop_map(Op::Sriov),
        (0u16..8).prop_map(Op::Flr), // hardware only flags VFs below TotalVFs
    ]
}

/// A smaller board so that random sequences hit exhaustion and fragmentation often.
const BOARD: Board = Board {
    engines: 8,
    mem_granules: 512,
    granule_shift: 21,
    queues: 32,
    vectors: 64,
    total_vfs: 8,
};

fn spec((e, m, q, v): (u16, u32, u16, u16)) -> VfSpec {
    VfSpec::new(e, m, q, v, 0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn books_and_banks_stay_consistent(ops in prop::collection::vec(op(), 1..40)) {
        let mut d = Dev::with_board(BOARD);
        for op in ops {
            let before = d.snapshot();
            let status = match op {
                Op::CreateEqual(n) => d.call(&Request::CreateVfs(CreateVfs { count: n, sizing: Sizing::Equal })).status,
                Op::CreateUniform(n, s) => {
                    let s = spec(s);
                    d.call(&Request::CreateVfs(CreateVfs { count: n, sizing: Sizing::Uniform(&s) })).status
                }
                Op::Destroy(v) => d.call(&Request::DestroyVf(Target::One(v))).status,
                Op::DestroyAll => d.call(&Request::DestroyVf(Target::All)).status,
                Op::Resize(v, s) => {
                    let s = spec(s);
                    d.call(&Request::ConfigureVf(ConfigureVf { vf: v, spec: &s })).status
                }
                Op::Reset(v) => d.call(&Request::ResetVf(VfIndex(v))).status,
                Op::Qos(v, w) => d.call(&Request::SetQos(SetQos { vf: v, weight: w })).status,
                Op::Sriov(n) => {
                    d.regs.write32(pf::SRIOV_CTRL.offset(), SriovCtrl::new(n > 0, true, n).bits());
                    d.fw.poll();
                    Status::Ok
                }
                Op::Flr(v) => {
                    d.flr(v as usize);
                    d.fw.poll();
                    prop_assert_eq!(d.regs.read32(pf::vf_hw_status(v as usize)), 0);
                    Status::Ok
                }
            };
            if status != Status::Ok {
                prop_assert_eq!(d.snapshot(), before, "{:?} failed with {:?} but changed registers", op, status);
            }
            prop_assert_eq!(d.fw.check_consistency(), Ok(()));
            prop_assert_eq!(d.fw.books().audit(&BOARD), Ok(()));
        }
        // Destroying everything returns every unit.
        d.ok(&Request::DestroyVf(Target::All));
        let p = d.fw.books().pool();
        prop_assert_eq!(p.mem().free(), 512);
        prop_assert_eq!(p.free_engines(), 0xFF);
        prop_assert_eq!(p.queues().free(), 32);
        prop_assert_eq!(p.vectors().free(), 64);
    }
}
