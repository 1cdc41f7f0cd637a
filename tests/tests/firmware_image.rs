//! The freestanding firmware image runs on the simulated board's contract (register file on
//! fd 3, log sink on fd 2): it boots, serves the mailbox, and its log frames decode on the host
//! with defmt's decoder and the image's ELF.
use accelvirt_tests::root;
use shared_abi::mailbox::{self, Status};
use shared_abi::messages::{split_list, CountResp, CreateVfs, Heartbeat, Request, Sizing, Target};
use shared_abi::regs::{pf, vf_bank, DevStatus, MboxState};
use shared_abi::resources::VfInfo;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn build_image() -> std::path::PathBuf {
    let target = root().join("target").join("fw-image-test");
    let o = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["xtask", "firmware"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cargo xtask firmware: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains(".text") && s.contains(".bss"),
        "size figures printed: {s}"
    );
    target.join("x86_64-unknown-none/fw/accel-fw")
}

struct Regs(std::fs::File);
impl Regs {
    fn r32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        self.0.read_exact_at(&mut b, off as u64).unwrap();
        u32::from_le_bytes(b)
    }
    fn w32(&self, off: usize, v: u32) {
        self.0.write_all_at(&v.to_le_bytes(), off as u64).unwrap();
    }
    fn wait(&self, what: &str, f: impl Fn(&Self) -> bool) {
        let t = Instant::now();
        while !f(self) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn image_boots_serves_the_mailbox_and_logs_decodable_defmt() {
    let elf = build_image();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bar0");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    f.set_len(shared_abi::pci::PF_BAR0_SIZE).unwrap();
    let regs = Regs(f);
    // fd 3 = the register file (shared, so the image's stores reach the page cache we read).
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("exec 3<>\"$1\"; exec \"$2\"")
        .arg("sh")
        .arg(&file)
        .arg(&elf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    regs.wait("READY", |r| {
        r.r32(pf::DEV_STATUS.offset()) & DevStatus::READY.bits() != 0
    });
    assert_eq!(regs.r32(pf::MAGIC.offset()), shared_abi::regs::PF_MAGIC);
    assert_ne!(
        regs.r32(pf::FW_BUILD_ID.offset()),
        0,
        "xtask stamps a build id"
    );

    // The test holds the mailbox lock for all its commands (a plain write: nothing else
    // contends for it here).
    const TOKEN: u32 = 0x7E57_0003;
    regs.w32(pf::MBOX_LOCK.offset(), TOKEN);
    let mut doorbell = regs.r32(pf::MBOX_DOORBELL.offset());
    let mut call = |req: &Request<'_>, seq: u32| {
        let mut p = [0u8; 4096];
        let n = req.write_payload(&mut p).unwrap();
        let mut m = [0u8; 4096];
        let len = mailbox::encode_request(&mut m, req.opcode(), seq, TOKEN, &p[..n]).unwrap();
        regs.0
            .write_all_at(&m[..len], pf::MBOX_REQ.offset as u64)
            .unwrap();
        regs.w32(pf::MBOX_REQ_LEN.offset(), len as u32);
        doorbell += 1;
        regs.w32(pf::MBOX_DOORBELL.offset(), doorbell);
        let db = doorbell;
        regs.wait("a mailbox answer", |r| {
            r.r32(pf::MBOX_STATE.offset()) == MboxState::Done as u32
                && r.r32(pf::MBOX_DONE_DOORBELL.offset()) == db
        });
        let rl = regs.r32(pf::MBOX_RESP_LEN.offset()) as usize;
        let mut buf = vec![0u8; rl];
        regs.0
            .read_exact_at(&mut buf, pf::MBOX_RESP.offset as u64)
            .unwrap();
        let msg = mailbox::decode(&buf).unwrap();
        assert_eq!(msg.seq, seq);
        (msg.status, msg.payload.to_vec())
    };
    assert_eq!(
        call(&Request::Heartbeat(Heartbeat { nonce: 5 }), 1).0,
        Status::Ok
    );
    let (st, p) = call(
        &Request::CreateVfs(CreateVfs {
            count: 4,
            sizing: Sizing::Equal,
        }),
        2,
    );
    assert_eq!(st, Status::Ok);
    let (_, list) = split_list::<CountResp, VfInfo>(&p).unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(
        regs.r32(vf_bank::MEM_GRANULES.at(pf::vf_bank(3))),
        2048,
        "the image programmed VF 3's bank"
    );
    assert_eq!(
        call(&Request::QueryVf(Target::One(9)), 3).0,
        Status::InvalidVf
    );

    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let elf_bytes = std::fs::read(&elf).unwrap();
    let table = defmt_decoder::Table::parse(&elf_bytes)
        .unwrap()
        .expect("the image carries a defmt table");
    let mut dec = table.new_stream_decoder();
    dec.received(&out.stderr);
    let mut lines = Vec::new();
    while let Ok(frame) = dec.decode() {
        lines.push(frame.display_message().to_string());
    }
    assert!(
        lines
            .iter()
            .any(|l| l == "accelvirt firmware image starting"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("firmware 0.1.0 ready: 16 engines, 8192 granules")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "created 4 VFs"), "{lines:?}");
}
