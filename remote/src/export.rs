//! The exporter's end of the data path: jobs that came over the link run on the real VF, their
//! host data staged in the exporter's own DMA memory ([`crate::convert`]), their completions
//! and output data collected for the COMPLETE frames.
//!
//! One queue of the real VF carries an importer's jobs; a staging slot per credit holds each
//! job's input and output up to one frame's worth ([`CHUNK`]), and one large slot holds the
//! session's one large job (up to the device's limit each way), so a job in flight never waits
//! for memory and the memory held is fixed when the session starts
//! (credits × 2 × [`CHUNK`] + 2 × [`MAX_JOB_DATA`], the large slot touched only when used).
use crate::convert::{self, Plan, CHUNK, MAX_JOB_DATA};
use crate::wire::{space, Complete, Data, Submit, WithData};
use host_driver::vf::{Addr, Buf, Job, Queue, Target, VfDev};
use shared_abi::jobs::{Cqe, JobStatus, Sqe};
use shared_abi::regs::vf;
use std::collections::HashMap;
use zerocopy::{FromBytes, IntoBytes};

/// A COMPLETE and the output data that goes with it.
pub type Finished = (Complete, Vec<u8>);

/// Where a job's host data is staged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Small(usize),
    Large,
}

/// A job taken from the link that is running on the real VF.
#[derive(Debug)]
struct Running {
    slot: Slot,
    seq: u64,
    queue: u32,
    sqe: Sqe,
    plan: Plan,
}

/// The large job whose input is still arriving in DATA frames.
#[derive(Debug)]
struct Assembly {
    seq: u64,
    queue: u32,
    sqe: Sqe,
    plan: Plan,
    got: usize,
    need: usize,
}

/// What became of a SUBMIT.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// It runs on the real VF.
    Running,
    /// Its input is still arriving (DATA frames follow).
    Gathering,
}

/// A DATA frame that does not continue the job it names: the importer broke the protocol.
#[derive(Debug, thiserror::Error)]
#[error("DATA for job {seq} at {offset} does not continue its input")]
pub struct Misplaced {
    seq: u64,
    offset: u32,
}

/// The real VF an importer's jobs run on.
#[derive(Debug)]
pub struct Exported {
    target: Target,
    credits: u32,
    dev: VfDev,
    q: Queue,
    slots: Vec<(Buf, Buf)>,
    free: Vec<usize>,
    large: (Buf, Buf),
    large_free: bool,
    gathering: Option<Assembly>,
    running: HashMap<u32, Running>,
}

/// The COMPLETE for job `seq` of `queue`: the guest's `tag`, the outcome, the host bytes it
/// wrote. The phase bit is the importer's to set, in the guest's ring.
fn complete(
    seq: u64,
    queue: u32,
    tag: u32,
    status: JobStatus,
    result: u64,
    data: Vec<u8>,
) -> Finished {
    let cqe = Cqe {
        result: result.into(),
        tag: tag.into(),
        status: Cqe::status_word(status, 0).into(),
    };
    let mut bytes = [0u8; shared_abi::jobs::CQE_SIZE];
    bytes.copy_from_slice(cqe.as_bytes());
    (
        Complete {
            seq: seq.into(),
            queue: queue.into(),
            out_len: (data.len() as u32).into(),
            cqe: bytes,
        },
        data,
    )
}

/// A completion made here, not by the device: the job never reached it.
fn refused(s: &Submit, status: JobStatus) -> Finished {
    let tag = Sqe::read_from_bytes(&s.sqe).map_or(0, |e| e.tag.get());
    complete(s.seq.get(), s.queue.get(), tag, status, 0, Vec::new())
}

/// The frames that carry a finished job back: its output past the last chunk in DATA frames,
/// then the COMPLETE with the last chunk (the importer publishes the completion only once
/// all of it is in the guest's memory).
pub fn frames<'a>(c: &Complete, data: &'a [u8]) -> Vec<WithData<'a>> {
    if data.len() <= CHUNK {
        return vec![WithData::Complete(*c, data)];
    }
    let tail = match data.len() % CHUNK {
        0 => CHUNK,
        n => n,
    };
    let split = data.len() - tail;
    let seq = c.seq;
    let mut out: Vec<WithData<'a>> = data[..split]
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, d)| {
            WithData::Data(
                Data {
                    seq,
                    offset: ((i * CHUNK) as u32).into(),
                    len: (d.len() as u32).into(),
                },
                d,
            )
        })
        .collect();
    out.push(WithData::Complete(
        Complete {
            out_len: (tail as u32).into(),
            ..*c
        },
        &data[split..],
    ));
    out
}

impl Exported {
    /// Opens the VF at `target` for `credits` jobs in flight (its queue 0).
    pub fn open(target: &Target, credits: u32) -> host_driver::Result<Self> {
        let credits = credits.clamp(1, shared_abi::jobs::MAX_RING / 2) as usize;
        let depth = (credits as u32)
            .next_power_of_two()
            .max(shared_abi::jobs::MIN_RING);
        let rings = depth as usize * (shared_abi::jobs::SQE_SIZE + shared_abi::jobs::CQE_SIZE);
        let staging = credits * 2 * CHUNK + 2 * MAX_JOB_DATA;
        let mut dev = target.open(staging + rings + (64 << 10))?;
        // Completions raise vector 0, so the exporter can sleep while jobs run; a VF whose
        // interrupts cannot be set up is polled instead.
        let q = match dev.queue_with_irq(0, depth, 0) {
            Ok(q) => q,
            Err(_) => dev.queue(0, depth)?,
        };
        let mut slots = Vec::with_capacity(credits);
        for _ in 0..credits {
            slots.push((dev.alloc(CHUNK, 4096)?, dev.alloc(CHUNK, 4096)?));
        }
        let large = (
            dev.alloc(MAX_JOB_DATA, 4096)?,
            dev.alloc(MAX_JOB_DATA, 4096)?,
        );
        Ok(Exported {
            target: target.clone(),
            credits: credits as u32,
            dev,
            q,
            free: (0..credits).rev().collect(),
            slots,
            large,
            large_free: true,
            gathering: None,
            running: HashMap::new(),
        })
    }

    /// The descriptor the VF's completion interrupt signals, if it has one: a serving loop
    /// sleeps on it while jobs run ([`Exported::take_interrupts`] clears it).
    pub fn irq_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.q.irq_fd()
    }

    /// Clears the completion interrupts signalled so far.
    pub fn take_interrupts(&mut self) {
        self.q.take_interrupts();
    }

    /// The VF (for what is not queue traffic: registers, device memory).
    pub fn dev(&self) -> &VfDev {
        &self.dev
    }

    fn buffers(&self, slot: Slot) -> (Buf, Buf) {
        match slot {
            Slot::Small(i) => self.slots[i],
            Slot::Large => self.large,
        }
    }

    fn release(&mut self, slot: Slot) {
        match slot {
            Slot::Small(i) => self.free.push(i),
            Slot::Large => self.large_free = true,
        }
    }

    /// Starts a job from the link with the input its SUBMIT carried (a large job's first
    /// chunk: the rest comes in DATA frames, [`Exported::more`]). A job that cannot start
    /// (not convertible, its data not what its entry says, no free slot: the importer overran
    /// its credits or sent a second large job) is answered at once, as the device answers a
    /// bad entry.
    pub fn start(&mut self, s: &Submit, data: &[u8]) -> Result<Started, Finished> {
        let bad = || refused(s, JobStatus::BadDescriptor);
        let sqe = Sqe::read_from_bytes(&s.sqe).map_err(|_| bad())?;
        let plan = convert::plan(&sqe).map_err(|_| bad())?;
        let need = plan.input.map_or(0, |(_, n)| n);
        if need.min(CHUNK) != data.len() {
            return Err(bad());
        }
        let slot = if plan.large() {
            if !self.large_free {
                return Err(bad());
            }
            self.large_free = false;
            Slot::Large
        } else {
            Slot::Small(self.free.pop().ok_or_else(bad)?)
        };
        if !data.is_empty() && self.dev.write(self.buffers(slot).0, 0, data).is_err() {
            self.release(slot);
            return Err(refused(s, JobStatus::HostDma));
        }
        if data.len() < need {
            self.gathering = Some(Assembly {
                seq: s.seq.get(),
                queue: s.queue.get(),
                sqe,
                plan,
                got: data.len(),
                need,
            });
            return Ok(Started::Gathering);
        }
        self.launch(slot, s.seq.get(), s.queue.get(), sqe, plan)
            .map(|()| Started::Running)
    }

    /// The SUBMIT of a large job seen again (after a reconnect) while its input was still
    /// arriving: it is gathered again from the start, as the importer sends all of it again.
    pub fn restart(&mut self, s: &Submit, data: &[u8]) -> bool {
        let Some(a) = self.gathering.as_mut().filter(|a| a.seq == s.seq.get()) else {
            return false;
        };
        if data.len() != a.need.min(CHUNK) || self.dev.write(self.large.0, 0, data).is_err() {
            return false;
        }
        a.got = data.len();
        true
    }

    /// More of the gathering job's input. Ok(Some) when the job could not start after all
    /// (its completion, to send); Err when the frame does not continue that job's input.
    pub fn more(&mut self, d: &Data, bytes: &[u8]) -> Result<Option<Finished>, Misplaced> {
        let misplaced = || Misplaced {
            seq: d.seq.get(),
            offset: d.offset.get(),
        };
        let a = self
            .gathering
            .as_mut()
            .filter(|a| a.seq == d.seq.get() && a.got == d.offset.get() as usize)
            .ok_or_else(misplaced)?;
        if bytes.len() > a.need - a.got {
            return Err(misplaced());
        }
        let at = a.got;
        a.got += bytes.len();
        let done = a.got == a.need;
        if self.dev.write(self.large.0, at, bytes).is_err() {
            let a = self.gathering.take().ok_or_else(misplaced)?;
            self.large_free = true;
            let tag = a.sqe.tag.get();
            return Ok(Some(complete(
                a.seq,
                a.queue,
                tag,
                JobStatus::HostDma,
                0,
                Vec::new(),
            )));
        }
        if !done {
            return Ok(None);
        }
        let a = self.gathering.take().ok_or_else(misplaced)?;
        Ok(self
            .launch(Slot::Large, a.seq, a.queue, a.sqe, a.plan)
            .err())
    }

    /// Submits a job whose input is staged in `slot`.
    fn launch(
        &mut self,
        slot: Slot,
        seq: u64,
        queue: u32,
        sqe: Sqe,
        plan: Plan,
    ) -> Result<(), Finished> {
        let (sbuf, dbuf) = self.buffers(slot);
        // Host memory is staging here; device memory is the VF's, as the guest named it.
        let at = |host: Option<(u64, usize)>, staging: Buf, device: u64| match host {
            Some((_, n)) => Addr::Host(Buf {
                off: staging.off,
                len: n,
            }),
            None => Addr::Device(device),
        };
        let job = Job {
            op: plan.op,
            src: plan.reads.map(|_| at(plan.input, sbuf, sqe.src.get())),
            dst: plan.writes.map(|_| at(plan.output, dbuf, sqe.dst.get())),
            len: sqe.len.get(),
            value: sqe.value.get(),
        };
        match self.dev.submit(&mut self.q, &job) {
            Ok(tag) => {
                self.running.insert(
                    tag,
                    Running {
                        slot,
                        seq,
                        queue,
                        sqe,
                        plan,
                    },
                );
                Ok(())
            }
            Err(_) => {
                self.release(slot);
                let tag = sqe.tag.get();
                Err(complete(
                    seq,
                    queue,
                    tag,
                    JobStatus::BadDescriptor,
                    0,
                    Vec::new(),
                ))
            }
        }
    }

    /// Completions the real VF has written since the last call, each with the host bytes
    /// the job wrote (for the importer to put in the guest's memory).
    pub fn poll(&mut self) -> Vec<Finished> {
        let mut out = Vec::new();
        while let Some(c) = self.dev.poll(&mut self.q) {
            let Some(r) = self.running.remove(&c.tag) else {
                continue;
            };
            let mut data = Vec::new();
            if let (Some((_, n)), JobStatus::Ok) = (r.plan.output, c.status) {
                data = vec![0; n];
                if self.dev.read(self.buffers(r.slot).1, 0, &mut data).is_err() {
                    data.clear();
                }
            }
            self.release(r.slot);
            out.push(complete(
                r.seq,
                r.queue,
                r.sqe.tag.get(),
                c.status,
                c.result,
                data,
            ));
        }
        out
    }

    /// Jobs running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// A register read the importer forwards ([`space`]); Err is an errno.
    pub fn read_reg(&self, sp: u32, offset: u64) -> Result<u32, u32> {
        let mut b = [0u8; 4];
        let port = self.dev.port();
        let r = match sp {
            space::BAR0 if offset < vf::QUEUES.offset as u64 && offset.is_multiple_of(4) => {
                port.bar_read(0, offset, &mut b)
            }
            space::BAR2 if offset < VF_BAR2_SIZE && offset.is_multiple_of(4) => {
                port.bar_read(2, offset, &mut b)
            }
            space::CONFIG if offset < 4096 && offset.is_multiple_of(4) => {
                port.cfg_read(offset, &mut b)
            }
            _ => return Err(EPERM),
        };
        r.map_err(|_| EIO)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A register write the importer forwards ([`space`]); Err is an errno. A reset is
    /// [`Exported::reset`], not this.
    pub fn write_reg(&self, sp: u32, offset: u64, value: u32) -> Result<(), u32> {
        let port = self.dev.port();
        let b = value.to_le_bytes();
        let r = match sp {
            space::BAR0
                if offset < vf::QUEUES.offset as u64
                    && offset.is_multiple_of(4)
                    && offset != vf::IRQ_TRIGGER.offset() as u64 =>
            {
                port.bar_write(0, offset, &b)
            }
            space::BAR2 if offset < VF_BAR2_SIZE && offset.is_multiple_of(4) => {
                port.bar_write(2, offset, &b)
            }
            _ => return Err(EPERM),
        };
        r.map_err(|_| EIO)
    }

    /// A function level reset of the real VF the importer asked for: the VF is reset and
    /// opened again (its queue re-armed, its staging memory mapped again); jobs that were
    /// running complete ABORTED, as they do on a VF reset under them.
    pub fn reset(mut self) -> Result<(Exported, Vec<Finished>), host_driver::Error> {
        let aborted: Vec<_> = self
            .running
            .drain()
            .map(|(_, r)| {
                complete(
                    r.seq,
                    r.queue,
                    r.sqe.tag.get(),
                    JobStatus::Aborted,
                    0,
                    Vec::new(),
                )
            })
            .chain(self.gathering.take().map(|a| {
                complete(
                    a.seq,
                    a.queue,
                    a.sqe.tag.get(),
                    JobStatus::Aborted,
                    0,
                    Vec::new(),
                )
            }))
            .collect();
        let (target, credits) = (self.target.clone(), self.credits);
        // Our connection goes first, so the reset finds no queue of ours running and the
        // reopened VF maps its staging memory into a clean DMA space.
        drop(self);
        target.open(4096)?.flr()?;
        Ok((Self::open(&target, credits)?, aborted))
    }
}

const EPERM: u32 = 1;
const EIO: u32 = 5;
const VF_BAR2_SIZE: u64 = shared_abi::pci::VF_BAR2_SIZE;

#[cfg(test)]
mod tests {
    use super::*;
    use shared_abi::jobs::{JobOp, SqeHead};
    use std::time::{Duration, Instant};
    use zerocopy::FromZeros;

    /// An in-process device with one VF; its socket.
    fn device() -> (sim::inprocess::InProcess, std::path::PathBuf) {
        let d = sim::inprocess::InProcess::start_with(8, 2).unwrap();
        let acc =
            host_driver::Accel::open(&host_driver::DeviceAddr::Socket(d.sock.clone())).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(acc.create_vfs(1, host_driver::CreateSpec::Equal))
            .unwrap();
        let vf = d.vf_socket(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vf.exists() {
            assert!(Instant::now() < deadline, "the VF socket appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        (d, vf)
    }

    fn submit(seq: u64, op: JobOp, fl: u8, src: u64, dst: u64, len: u32, value: u32) -> Submit {
        let mut e = Sqe::new_zeroed();
        e.head = SqeHead {
            phase: 1,
            version: shared_abi::jobs::VERSION,
            op: op.wire(),
            flags: fl,
        }
        .to_word()
        .into();
        e.tag = (1000 + seq as u32).into();
        e.src = src.into();
        e.dst = dst.into();
        e.len = len.into();
        e.value = value.into();
        let mut sqe = [0u8; shared_abi::jobs::SQE_SIZE];
        sqe.copy_from_slice(e.as_bytes());
        Submit {
            seq: seq.into(),
            queue: 0.into(),
            in_len: 0.into(),
            sqe,
        }
    }

    fn run(x: &mut Exported, s: Submit, data: &[u8]) -> (Cqe, Vec<u8>) {
        x.start(&s, data).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((c, d)) = x.poll().pop() {
                assert_eq!(c.seq, s.seq);
                assert_eq!(c.out_len.get() as usize, d.len());
                return (Cqe::read_from_bytes(&c.cqe).unwrap(), d);
            }
            assert!(Instant::now() < deadline, "the job completed");
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Every job type, its host data staged here, gives what the job means: the bytes
    /// copied, filled, their CRC-32C and SHA-256, with the guest's tag in the completion.
    #[test]
    fn jobs_from_the_link_run_on_the_real_vf_with_their_host_data() {
        let (_d, vf) = device();
        let mut x = Exported::open(&Target::Socket(vf.clone()), 4).unwrap();
        let input: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        // The guest's IOVAs mean nothing here: any values.
        let (src, dst) = (0x5555_0000, 0x6666_0000);
        let (c, out) = run(&mut x, submit(1, JobOp::Copy, 0, src, dst, 5000, 0), &input);
        assert_eq!(Cqe::status_of(c.status.get()), Some(JobStatus::Ok));
        assert_eq!(c.tag.get(), 1001, "the guest's tag");
        assert_eq!(out, input);
        let (_, out) = run(&mut x, submit(2, JobOp::Fill, 0, 0, dst, 300, 0xAB), &[]);
        assert_eq!(out, vec![0xAB; 300]);
        let (c, out) = run(&mut x, submit(3, JobOp::Crc32c, 0, src, 0, 5000, 0), &input);
        assert_eq!(c.result.get(), shared_abi::jobs::crc32c(0, &input) as u64);
        assert!(out.is_empty());
        let (_, out) = run(
            &mut x,
            submit(4, JobOp::Sha256, 0, src, dst, 5000, 0),
            &input,
        );
        use sha2::Digest;
        assert_eq!(out, sha2::Sha256::digest(&input).to_vec());
        assert_eq!(x.running(), 0);
    }

    /// What cannot run is answered here, and the slot it would have used stays free.
    #[test]
    fn a_job_that_cannot_run_is_answered_with_bad_descriptor() {
        let (_d, vf) = device();
        let mut x = Exported::open(&Target::Socket(vf.clone()), 1).unwrap();
        // Data shorter than the entry says.
        let s = submit(1, JobOp::Crc32c, 0, 0, 0, 100, 0);
        let (c, _) = x.start(&s, &[0; 99]).unwrap_err();
        let cqe = Cqe::read_from_bytes(&c.cqe).unwrap();
        assert_eq!(
            Cqe::status_of(cqe.status.get()),
            Some(JobStatus::BadDescriptor)
        );
        assert_eq!(cqe.tag.get(), 1001);
        // The one slot is still there for a good job.
        let (c, _) = run(
            &mut x,
            submit(2, JobOp::Crc32c, 0, 0, 0, 4, 0),
            &[1, 2, 3, 4],
        );
        assert_eq!(Cqe::status_of(c.status.get()), Some(JobStatus::Ok));
    }

    /// A large job's input arrives in pieces and its output leaves in frames of one chunk
    /// each, the COMPLETE last; a piece out of order is refused; a second large job while the
    /// first is gathering is answered BAD_DESCRIPTOR.
    #[test]
    fn a_large_job_is_gathered_and_its_output_goes_in_chunks() {
        let (_d, vf) = device();
        let mut x = Exported::open(&Target::Socket(vf.clone()), 2).unwrap();
        let n = 3 * CHUNK + 100;
        let input: Vec<u8> = (0..n).map(|i| (i * 13 % 253) as u8).collect();
        let mut s = submit(1, JobOp::Copy, 0, 0x1000, 0x9000, n as u32, 0);
        s.in_len = (CHUNK as u32).into();
        assert_eq!(x.start(&s, &input[..CHUNK]), Ok(Started::Gathering));
        let d = |off: usize, len: usize| Data {
            seq: 1.into(),
            offset: (off as u32).into(),
            len: (len as u32).into(),
        };
        // Not where the input left off.
        assert!(x
            .more(&d(2 * CHUNK, CHUNK), &input[2 * CHUNK..3 * CHUNK])
            .is_err());
        // Another large job now has no room.
        let other = submit(2, JobOp::Crc32c, 0, 0x1000, 0, n as u32, 0);
        assert!(x.start(&other, &input[..CHUNK]).is_err());
        assert!(x
            .more(&d(CHUNK, CHUNK), &input[CHUNK..2 * CHUNK])
            .unwrap()
            .is_none());
        assert!(x
            .more(&d(2 * CHUNK, CHUNK + 100), &input[2 * CHUNK..])
            .unwrap()
            .is_none());
        let deadline = Instant::now() + Duration::from_secs(20);
        let f = loop {
            if let Some(f) = x.poll().pop() {
                break f;
            }
            assert!(Instant::now() < deadline, "the job completed");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(f.1 == input);
        let frames = frames(&f.0, &f.1);
        assert_eq!(frames.len(), 4);
        let mut back = Vec::new();
        for (i, m) in frames.iter().enumerate() {
            match m {
                WithData::Data(h, b) => {
                    assert_eq!(h.offset.get() as usize, back.len());
                    back.extend_from_slice(b);
                }
                WithData::Complete(c, b) => {
                    assert_eq!(i, 3, "the COMPLETE comes last");
                    assert_eq!(c.out_len.get() as usize, b.len());
                    back.extend_from_slice(b);
                }
                other => panic!("{other:?}"),
            }
            assert!(
                crate::wire::encode_data_into(*m, &mut Vec::new()).is_ok(),
                "every frame fits"
            );
        }
        assert!(back == input);
    }
}
