//! Property tests: encode→decode round trips, arbitrary bytes never panic, corrupted messages
//! never decode.
use proptest::prelude::*;
use shared_abi::mailbox::{self, DecodeError, HeaderFlags, Opcode, Status, MAX_MESSAGE};
use shared_abi::messages::{
    ConfigureVf, CreateVfs, FwActivate, FwChunk, Heartbeat, Request, RingIndex, SetQos, Sizing,
    Target, VfIndex,
};
use shared_abi::resources::VfSpec;
use zerocopy::FromBytes;

fn spec() -> impl Strategy<Value = VfSpec> {
    (
        any::<u16>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(e, m, q, v, w)| VfSpec::new(e, m, q, v, w))
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![any::<u16>().prop_map(Target::One), Just(Target::All)]
}

/// Every request shape; specs live in the returned Vec so the Request can borrow them.
fn request_parts() -> impl Strategy<Value = (u8, u16, u32, Vec<VfSpec>, Target, Vec<u8>)> {
    (
        0u8..17,
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec(spec(), 0..64),
        target(),
        prop::collection::vec(any::<u8>(), 0..2048),
    )
}

fn build<'a>(k: u8, a: u16, b: u32, specs: &'a [VfSpec], t: Target, data: &'a [u8]) -> Request<'a> {
    match k {
        0 => Request::GetDeviceInfo(()),
        1 => Request::GetResources(()),
        2 => Request::Heartbeat(Heartbeat { nonce: b }),
        3 => Request::CreateVfs(CreateVfs {
            count: specs.len() as u16,
            sizing: Sizing::Explicit(specs),
        }),
        4 => match specs.first() {
            Some(s) => Request::CreateVfs(CreateVfs {
                count: a,
                sizing: Sizing::Uniform(s),
            }),
            None => Request::CreateVfs(CreateVfs {
                count: a,
                sizing: Sizing::Equal,
            }),
        },
        5 => Request::DestroyVf(t),
        6 => Request::QueryVf(Target::One(a)),
        7 => match specs.first() {
            Some(s) => Request::ConfigureVf(ConfigureVf { vf: a, spec: s }),
            None => Request::ResetVf(VfIndex(a)),
        },
        8 => Request::ResetVf(VfIndex(a)),
        9 => Request::SetQos(SetQos {
            vf: a,
            weight: b as u16,
        }),
        10 => Request::GetStats(t),
        11 => Request::FwDownloadChunk(FwChunk { offset: b, data }),
        12 => Request::FwDownloadCommit(()),
        13 => Request::FwActivate(FwActivate { slot: a as u8 }),
        14 => Request::FwQuerySlots(()),
        15 => Request::GetLog(RingIndex(b)),
        _ => Request::AckEvents(RingIndex(b)),
    }
}

proptest! {
    #[test]
    fn request_round_trips((k, a, b, specs, t, data) in request_parts(), seq in any::<u32>()) {
        let req = build(k, a, b, &specs, t, &data);
        let mut payload = [0u8; MAX_MESSAGE];
        let n = req.write_payload(&mut payload).unwrap();
        let mut msg = [0u8; MAX_MESSAGE];
        let len = mailbox::encode_request(&mut msg, req.opcode(), seq, 0, &payload[..n]).unwrap();
        let m = mailbox::decode(&msg[..len]).unwrap();
        prop_assert_eq!(m.seq, seq);
        prop_assert_eq!(m.op(), Some(req.opcode()));
        let back = Request::parse(req.opcode(), m.payload).unwrap();
        prop_assert_eq!(back, req);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
        if let Ok(m) = mailbox::decode(&bytes) {
            if let Some(op) = m.op() {
                let _ = Request::parse(op, m.payload);
            }
        }
        for op in Opcode::ALL {
            let _ = Request::parse(*op, &bytes);
        }
        let _ = mailbox::peek_header(&bytes);
    }

    #[test]
    fn any_single_bit_flip_is_rejected(
        payload in prop::collection::vec(any::<u8>(), 0..256),
        seq in any::<u32>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut msg = [0u8; MAX_MESSAGE];
        let len = mailbox::encode(&mut msg, Opcode::Heartbeat.wire(), HeaderFlags::RESPONSE,
            Status::Ok, seq, 0, &payload).unwrap();
        let i = bit.index(len * 8);
        msg[i / 8] ^= 1 << (i % 8);
        prop_assert!(mailbox::decode(&msg[..len]).is_err());
    }

    #[test]
    fn wrong_length_never_decodes(
        payload in prop::collection::vec(any::<u8>(), 1..256),
        cut in 1usize..256,
        extra in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let mut msg = [0u8; MAX_MESSAGE];
        let len = mailbox::encode_request(&mut msg, Opcode::Heartbeat, 1, 0, &payload).unwrap();
        let short = len - cut.min(payload.len());
        prop_assert!(mailbox::decode(&msg[..short]).is_err());
        let mut long = msg[..len].to_vec();
        long.extend_from_slice(&extra);
        prop_assert_eq!(mailbox::decode(&long), Err(DecodeError::BadLength));
    }

    #[test]
    fn struct_views_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = shared_abi::resources::VfInfo::ref_from_prefix(&bytes);
        let _ = shared_abi::messages::split_list::<shared_abi::messages::CountResp,
            shared_abi::resources::VfInfo>(&bytes);
    }
}
