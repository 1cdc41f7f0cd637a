//! Bounded fuzzing of the mailbox in the ordinary test run: arbitrary bytes, arbitrary
//! lengths and mutations of valid requests. The firmware must answer every one without
//! panicking, and a refused message must change no register. (`fuzz/` holds the libFuzzer
//! target for long runs.)
mod common;

use common::Dev;
use proptest::prelude::*;
use shared_abi::mailbox::Status;
use shared_abi::messages::*;
use shared_abi::resources::VfSpec;

fn seed_messages(d: &mut Dev) -> Vec<Vec<u8>> {
    let spec = VfSpec::new(1, 4, 2, 2, 10);
    let specs = [spec; 3];
    vec![
        d.encode(&Request::CreateVfs(CreateVfs {
            count: 2,
            sizing: Sizing::Equal,
        })),
        d.encode(&Request::CreateVfs(CreateVfs {
            count: 3,
            sizing: Sizing::Explicit(&specs),
        })),
        d.encode(&Request::ConfigureVf(ConfigureVf { vf: 0, spec: &spec })),
        d.encode(&Request::DestroyVf(Target::All)),
        d.encode(&Request::GetStats(Target::All)),
        d.encode(&Request::FwDownloadChunk(FwChunk {
            offset: 0,
            data: &[1, 2, 3],
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4200), len in any::<u32>(), use_len in any::<bool>()) {
        let mut d = Dev::new();
        d.ok(&Request::CreateVfs(CreateVfs { count: 2, sizing: Sizing::Equal }));
        let before = d.snapshot();
        let n = bytes.len().min(4096);
        let r = d.raw(&bytes[..n], if use_len { len } else { n as u32 });
        if r.status != Status::Ok {
            prop_assert_eq!(d.snapshot(), before);
        }
        d.consistent();
    }

    #[test]
    fn mutated_requests(which in 0usize..6, flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut d = Dev::new();
        d.ok(&Request::CreateVfs(CreateVfs { count: 1, sizing: Sizing::Equal }));
        let mut msg = seed_messages(&mut d)[which].clone();
        for (i, b) in flips {
            let at = i.index(msg.len());
            msg[at] = b;
        }
        let before = d.snapshot();
        let r = d.raw(&msg, msg.len() as u32);
        if r.status != Status::Ok {
            prop_assert_eq!(d.snapshot(), before);
        }
        d.consistent();
    }
}
