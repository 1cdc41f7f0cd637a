//! Interrupt descriptors a client hands the device (SET_IRQS), against an in-process device
//! model: only eventfds are taken, and one the client made unwritable never stalls the device.
use host_driver::transport::Transport;
use host_driver::vfio_user::VfioUser;
use host_driver::{Accel, CreateSpec};
use std::os::fd::AsRawFd;
use std::time::Duration;
use zerocopy::IntoBytes;

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// SET_IRQS for `index` (`start`, `count`) with `flags` and `fds`, over `t`.
fn set_irqs(
    t: &VfioUser,
    index: u32,
    flags: u32,
    start: u32,
    count: u32,
    fds: &[std::os::fd::RawFd],
) -> host_driver::Result<()> {
    use vfio_user_wire::proto::IrqSet;
    use zerocopy::IntoBytes;
    let s = IrqSet {
        argsz: std::mem::size_of::<IrqSet>() as u32,
        flags,
        index,
        start,
        count,
    };
    t.call(
        vfio_user_wire::proto::cmd::DEVICE_SET_IRQS,
        s.as_bytes(),
        fds,
        "set irqs",
    )
    .map(|_| ())
}

/// MSI-X Enable and Bus Master Enable on the function behind `t`: its vectors may fire.
fn enable_msix(t: &VfioUser) {
    let mut ctl = [0u8; 2];
    t.config_read(0x52, &mut ctl).unwrap();
    t.config_write(0x52, &(le16(&ctl) | 0x8000).to_le_bytes())
        .unwrap();
    t.config_read(0x04, &mut ctl).unwrap();
    t.config_write(0x04, &(le16(&ctl) | 0x4).to_le_bytes())
        .unwrap();
}

/// Only an eventfd is taken as an interrupt's descriptor: a pipe (which a write can block on
/// for good once it is full) is refused for MSI-X and for the error and request notifiers,
/// and nothing is installed: the pipe stays empty.
#[test]
fn set_irqs_refuses_what_is_not_an_eventfd() {
    use vfio_user_wire::proto::{IRQ_ACTION_TRIGGER, IRQ_DATA_EVENTFD, IRQ_ERR, IRQ_MSIX, IRQ_REQ};
    let d = sim::inprocess::InProcess::start(1).unwrap();
    let t = VfioUser::connect(&d.sock, true).unwrap();
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
    let install = IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER;
    for (index, fd) in [
        (IRQ_MSIX, wr.as_raw_fd()),
        (IRQ_MSIX, rd.as_raw_fd()),
        (IRQ_ERR, wr.as_raw_fd()),
        (IRQ_REQ, wr.as_raw_fd()),
    ] {
        let r = set_irqs(&t, index, install, 0, 1, &[fd]);
        assert!(
            matches!(
                r,
                Err(host_driver::Error::Remote {
                    errno: nix::errno::Errno::EINVAL,
                    ..
                })
            ),
            "index {index}: {r:?}"
        );
    }
    // Nothing was installed: the client's own trigger writes nothing to the pipe (and, with
    // no eventfd to signal, does nothing at all: it never makes a vector pending).
    enable_msix(&t);
    set_irqs(
        &t,
        IRQ_MSIX,
        vfio_user_wire::proto::IRQ_DATA_NONE | IRQ_ACTION_TRIGGER,
        0,
        1,
        &[],
    )
    .unwrap();
    let mut b = [0u8; 8];
    assert!(nix::unistd::read(&rd, &mut b).is_err(), "the pipe is empty");
    let mut pba = [0u8; 4];
    t.region_read(0, shared_abi::regs::pf::MSIX_PBA.start() as u64, &mut pba)
        .unwrap();
    assert_eq!(
        u32::from_le_bytes(pba) & 1,
        0,
        "a client trigger is not a device message"
    );
    // An eventfd is still taken.
    let efd = nix::sys::eventfd::EventFd::new().unwrap();
    set_irqs(&t, IRQ_MSIX, install, 0, 1, &[efd.as_raw_fd()]).unwrap();
}

/// A client whose eventfd cannot take another signal (its counter set to the largest value
/// a write leaves, where a blocking write waits for a read that never comes) and which then
/// raises its vector does not stall the device: the PF's firmware and another function's
/// registers answer at once.
#[test]
fn a_saturated_eventfd_does_not_stall_the_device() {
    use vfio_user_wire::proto::{IRQ_ACTION_TRIGGER, IRQ_DATA_EVENTFD, IRQ_DATA_NONE, IRQ_MSIX};
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (d, _rt, _acc) = accelvirt_tests::device_in_process(cores, 1, CreateSpec::Equal);
    let t = VfioUser::connect_with(&d.sock, true, Duration::from_secs(2)).unwrap();
    let efd = nix::sys::eventfd::EventFd::new().unwrap();
    efd.write(0xffff_ffff_ffff_fffe).unwrap();
    set_irqs(
        &t,
        IRQ_MSIX,
        IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER,
        0,
        1,
        &[efd.as_raw_fd()],
    )
    .unwrap();
    enable_msix(&t);
    // The client shares the open file: it can make writes to it block again.
    {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let fl = OFlag::from_bits_retain(fcntl(&efd, FcntlArg::F_GETFL).unwrap());
        fcntl(&efd, FcntlArg::F_SETFL(fl - OFlag::O_NONBLOCK)).unwrap();
    }
    // Raised from its own connection (the reply may or may not come: the test does not wait
    // on it).
    let raiser = std::thread::spawn(move || {
        let _ = set_irqs(&t, IRQ_MSIX, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 1, &[]);
        t
    });
    std::thread::sleep(Duration::from_millis(200));
    let within = |what: &str, f: Box<dyn FnOnce() + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "{what} did not complete: the device is stalled"
        );
    };
    let sock = d.sock.clone();
    within(
        "PF info",
        Box::new(move || {
            let acc = Accel::open(&host_driver::DeviceAddr::Socket(sock)).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(acc.device_info()).unwrap();
        }),
    );
    let vf0 = d.vf_socket(0);
    within(
        "a VF register read",
        Box::new(move || {
            let c = VfioUser::connect_with(&vf0, false, Duration::from_secs(10)).unwrap();
            let mut w = [0u8; 4];
            c.region_read(0, shared_abi::regs::vf::VF_INDEX.0 as u64, &mut w)
                .unwrap();
            assert_eq!(u32::from_le_bytes(w), 0);
        }),
    );
    let _t = raiser.join().unwrap();
}

/// The same stuck eventfd on the data path: a client of VF 1 takes over VF 1's completion
/// vector with an eventfd it made blocking and full, and VF 1's jobs complete (each raising
/// that vector). The engine hands the write to VF 1's courier and goes on: with one engine
/// worker, VF 0's jobs still complete (before the couriers, that worker blocked for good).
#[test]
fn a_stuck_completion_vector_does_not_stall_the_engine() {
    use host_driver::vf::{Job, VfDev};
    use shared_abi::jobs::{JobOp, JobStatus};

    let (d, _rt, _acc) = accelvirt_tests::device_in_process(1, 2, CreateSpec::Equal);
    let job = |b: host_driver::vf::Buf| Job {
        op: JobOp::Crc32c,
        src: Some(b.into()),
        dst: None,
        len: b.len as u32,
        value: 0,
    };
    // VF 1's client hands the device, for vector 0, an eventfd it made blocking, its counter
    // one short of full (its port installs that one whatever eventfd the library asks for).
    let efd = nix::sys::eventfd::EventFd::new().unwrap();
    efd.write(0xffff_ffff_ffff_fffe).unwrap();
    {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let fl = OFlag::from_bits_retain(fcntl(&efd, FcntlArg::F_GETFL).unwrap());
        fcntl(&efd, FcntlArg::F_SETFL(fl - OFlag::O_NONBLOCK)).unwrap();
    }
    let port = StuckVector {
        t: VfioUser::connect(&d.vf_socket(1), false).unwrap(),
        efd,
    };
    let mut hostile = VfDev::with_port(Box::new(port), 1 << 20).unwrap();
    let mut hq = hostile.queue_with_irq(0, 8, 0).unwrap();
    let hb = hostile.alloc(4096, 4096).unwrap();
    for _ in 0..4 {
        hostile.submit(&mut hq, &job(hb)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    // VF 0's tenant: its jobs complete.
    let mut dev = VfDev::open(&d.vf_socket(0), 1 << 20).unwrap();
    let mut q = dev.queue(0, 4).unwrap();
    let b = dev.alloc(4096, 4096).unwrap();
    for _ in 0..20 {
        dev.submit(&mut q, &job(b)).unwrap();
        let c = dev.wait(&mut q, Duration::from_secs(5)).unwrap();
        assert_eq!(c.status, JobStatus::Ok);
    }
}

/// A VF port that wires every MSI-X vector to its own (stuck) eventfd.
struct StuckVector {
    t: VfioUser,
    efd: nix::sys::eventfd::EventFd,
}

impl host_driver::vf::VfPort for StuckVector {
    fn bar_read(&self, bar: u32, off: u64, buf: &mut [u8]) -> host_driver::Result<()> {
        self.t.bar_read(bar, off, buf)
    }
    fn bar_write(&self, bar: u32, off: u64, data: &[u8]) -> host_driver::Result<()> {
        self.t.bar_write(bar, off, data)
    }
    fn cfg_read(&self, off: u64, buf: &mut [u8]) -> host_driver::Result<()> {
        self.t.cfg_read(off, buf)
    }
    fn cfg_write(&self, off: u64, data: &[u8]) -> host_driver::Result<()> {
        self.t.cfg_write(off, data)
    }
    fn dma_map(
        &self,
        iova: u64,
        mem: &vfio_user_wire::shared::Shared,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> host_driver::Result<()> {
        self.t.dma_map(iova, mem, fd)
    }
    fn msix_eventfd(&self, vector: u32, _: std::os::fd::BorrowedFd<'_>) -> host_driver::Result<()> {
        use std::os::fd::AsFd;
        self.t.msix_eventfd(vector, self.efd.as_fd())
    }
    fn describe(&self) -> String {
        host_driver::vf::VfPort::describe(&self.t)
    }
}

/// Whether `efd` is signalled within a second (and reads it): the device's courier thread
/// writes it.
fn signalled(efd: &nix::sys::eventfd::EventFd) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut b = [0u8; 8];
    while nix::unistd::read(efd, &mut b).is_err() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

fn pf_pending(t: &VfioUser) -> bool {
    let mut pba = [0u8; 4];
    t.region_read(0, shared_abi::regs::pf::MSIX_PBA.start() as u64, &mut pba)
        .unwrap();
    u32::from_le_bytes(pba) & 1 != 0
}

fn install(t: &VfioUser) -> nix::sys::eventfd::EventFd {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use vfio_user_wire::proto::{IRQ_ACTION_TRIGGER, IRQ_DATA_EVENTFD, IRQ_MSIX};
    let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
    set_irqs(
        t,
        IRQ_MSIX,
        IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER,
        0,
        1,
        &[efd.as_raw_fd()],
    )
    .unwrap();
    efd
}

/// SET_IRQS DATA_NONE|TRIGGER (and DATA_BOOL) from the client signals the vector's eventfd
/// whatever MSI-X enable, bus mastering and the masks say, as kernel vfio-pci and libvfio-user
/// do: it loops the client's own notifier, it is not a message the function sends.
#[test]
fn a_client_trigger_signals_its_eventfd_whatever_the_masks() {
    use vfio_user_wire::proto::{
        IRQ_ACTION_MASK, IRQ_ACTION_TRIGGER, IRQ_DATA_BOOL, IRQ_DATA_NONE, IRQ_MSIX,
    };
    let d = sim::inprocess::InProcess::start(1).unwrap();
    let t = VfioUser::connect(&d.sock, true).unwrap();
    let efd = install(&t);
    // MSI-X disabled, no bus master: still signalled.
    set_irqs(&t, IRQ_MSIX, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 1, &[]).unwrap();
    assert!(
        signalled(&efd),
        "a trigger with MSI-X off signals the eventfd"
    );
    // Masked by the client: still signalled, and nothing is left pending.
    set_irqs(&t, IRQ_MSIX, IRQ_DATA_NONE | IRQ_ACTION_MASK, 0, 1, &[]).unwrap();
    let mut s = vfio_user_wire::proto::IrqSet {
        argsz: 21,
        flags: IRQ_DATA_BOOL | IRQ_ACTION_TRIGGER,
        index: IRQ_MSIX,
        start: 0,
        count: 1,
    }
    .as_bytes()
    .to_vec();
    s.push(1);
    t.call(
        vfio_user_wire::proto::cmd::DEVICE_SET_IRQS,
        &s,
        &[],
        "set irqs",
    )
    .unwrap();
    assert!(
        signalled(&efd),
        "a BOOL trigger of a masked vector signals it"
    );
    assert!(!pf_pending(&t), "and leaves nothing pending");
}

/// A vector the function raises while it may not send MSI-X (bus mastering off) is held
/// pending, and goes out the moment bus mastering is turned on, as silicon sends what it
/// held once it may; the same for MSI-X enable.
#[test]
fn a_vector_held_while_bus_mastering_is_off_goes_when_it_is_turned_on() {
    let d = sim::inprocess::InProcess::start(1).unwrap();
    let t = VfioUser::connect(&d.sock, true).unwrap();
    let efd = install(&t);
    let mut ctl = [0u8; 2];
    t.config_read(0x52, &mut ctl).unwrap();
    t.config_write(0x52, &(le16(&ctl) | 0x8000).to_le_bytes())
        .unwrap();
    d.dev.fire_msix(sim::device::Func::Pf, 0, 1).unwrap();
    assert!(!signalled(&efd), "no message while bus mastering is off");
    assert!(pf_pending(&t), "the vector is pending");
    t.config_read(0x04, &mut ctl).unwrap();
    t.config_write(0x04, &(le16(&ctl) | 0x4).to_le_bytes())
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !signalled(&efd) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pending vector went out when bus mastering came on"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!pf_pending(&t), "and is no longer pending");
    // MSI-X enable off, a vector raised, enable on: the same.
    t.config_read(0x52, &mut ctl).unwrap();
    t.config_write(0x52, &(le16(&ctl) & !0x8000).to_le_bytes())
        .unwrap();
    d.dev.fire_msix(sim::device::Func::Pf, 0, 1).unwrap();
    assert!(pf_pending(&t));
    t.config_write(0x52, &(le16(&ctl) | 0x8000).to_le_bytes())
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !signalled(&efd) {
        assert!(std::time::Instant::now() < deadline, "sent on MSI-X enable");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One client owns a function's DMA, interrupts and reset: another connection to the same
/// socket is refused them (EBUSY) and may still read and write registers; when it leaves, the
/// owner's eventfds stay (before, any client's departure cleared every client's). Once the
/// owner leaves, the next client may take the function.
#[test]
fn one_client_owns_a_functions_dma_interrupts_and_reset() {
    use vfio_user_wire::proto::{IRQ_ACTION_TRIGGER, IRQ_DATA_EVENTFD, IRQ_DATA_NONE, IRQ_MSIX};
    let d = sim::inprocess::InProcess::start(1).unwrap();
    let owner = VfioUser::connect(&d.sock, true).unwrap();
    let efd = install(&owner);
    let other = VfioUser::connect(&d.sock, false).unwrap();
    let busy = |r: host_driver::Result<()>, what: &str| {
        assert!(
            matches!(
                r,
                Err(host_driver::Error::Remote {
                    errno: nix::errno::Errno::EBUSY,
                    ..
                })
            ),
            "{what}: {r:?}"
        )
    };
    let theirs = nix::sys::eventfd::EventFd::new().unwrap();
    busy(
        set_irqs(
            &other,
            IRQ_MSIX,
            IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER,
            0,
            1,
            &[theirs.as_raw_fd()],
        ),
        "another client's eventfd",
    );
    busy(
        set_irqs(
            &other,
            IRQ_MSIX,
            IRQ_DATA_NONE | IRQ_ACTION_TRIGGER,
            0,
            0,
            &[],
        ),
        "another client's disable-all",
    );
    busy(other.reset(), "another client's reset");
    let mut m = vfio_user_wire::proto::DmaMap {
        argsz: 32,
        flags: 3,
        offset: 0,
        addr: 0x10_0000,
        size: 0x1000,
    }
    .as_bytes()
    .to_vec();
    busy(
        other
            .call(vfio_user_wire::proto::cmd::DMA_MAP, &m, &[], "dma map")
            .map(|_| ()),
        "another client's DMA map",
    );
    // Registers stay open to it.
    assert_eq!(other.read32(0).unwrap(), shared_abi::regs::PF_MAGIC);
    drop(other);
    std::thread::sleep(Duration::from_millis(300));
    // The owner's eventfd is still installed.
    set_irqs(
        &owner,
        IRQ_MSIX,
        IRQ_DATA_NONE | IRQ_ACTION_TRIGGER,
        0,
        1,
        &[],
    )
    .unwrap();
    assert!(
        signalled(&efd),
        "the owner's eventfd outlived the other client"
    );
    owner.reset().unwrap();
    drop(owner);
    // The function is free again.
    let next = VfioUser::connect(&d.sock, false).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        m.truncate(32);
        match next.call(vfio_user_wire::proto::cmd::DMA_MAP, &m, &[], "dma map") {
            Ok(_) => break,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the next client takes the function: {e:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
