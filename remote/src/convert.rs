//! The user-mode conversion of one job: what of a guest's submission entry must travel, and
//! how the exporter points the job at its own buffers.
//!
//! A job names host memory by IOVA, which means something only on the importer's host (the
//! guest's memory), and device memory by VF virtual address, which means the same on the real
//! VF wherever the job comes from (two-stage translation happens there). So:
//!
//! - the importer sends the bytes a job reads from host memory (`src` of COPY, CRC32C and
//!   SHA256 without [`flags::SRC_DEVICE`]) with the SUBMIT, and writes back the bytes it
//!   writes to host memory (`dst` of COPY, FILL and SHA256 without [`flags::DST_DEVICE`])
//!   from the COMPLETE ([`Plan`]);
//! - the exporter puts those bytes in staging memory of its own and points the job's host
//!   addresses there (`crate::export`); device addresses are left as they are.
//!
//! Host data travels in frames of at most [`CHUNK`] bytes: a job's first chunk of input with
//! its SUBMIT and the rest in DATA frames; its output in DATA frames and a last chunk with its
//! COMPLETE. A job with more than one chunk either way is *large*: a session has at most one
//! large job that is not yet acknowledged, so the exporter's memory for a session stays
//! bounded (one large job's staging, whatever the credits). A job past the device's own limit
//! ([`MAX_JOB_LEN`]) is not converted ([`PlanError::TooLarge`]): it completes with
//! BAD_DESCRIPTOR at the importer, as the device would answer it.
use crate::wire::MAX_PAYLOAD;
use shared_abi::jobs::{flags, JobOp, Sqe, SqeHead, MAX_JOB_LEN};

/// Host bytes one frame carries (one frame's payload, less the largest head).
pub const CHUNK: usize = MAX_PAYLOAD - 256;

/// Host bytes a job has at most each way: the device's own limit.
pub const MAX_JOB_DATA: usize = MAX_JOB_LEN as usize;

/// What crosses the link for one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// What the job does.
    pub op: JobOp,
    /// Bytes the job reads at `src` (COPY, CRC32C, SHA256), in host or device memory.
    pub reads: Option<usize>,
    /// Bytes the job writes at `dst` (COPY, FILL, SHA256), in host or device memory.
    pub writes: Option<usize>,
    /// Host bytes the job reads: (IOVA on the importer, length), sent with the SUBMIT.
    pub input: Option<(u64, usize)>,
    /// Host bytes the job writes: (IOVA on the importer, length), returned with the COMPLETE
    /// and written there before the completion is published.
    pub output: Option<(u64, usize)>,
}

impl Plan {
    /// More than one frame's host data either way: see the module's doc.
    pub fn large(&self) -> bool {
        [self.input, self.output]
            .iter()
            .flatten()
            .any(|(_, n)| *n > CHUNK)
    }
}

/// Why a job is not converted; it completes at the importer with BAD_DESCRIPTOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not a job this format version defines (the real VF would refuse it too; refusing it
    /// here sends nothing).
    #[error("not a valid job entry")]
    Invalid,
    /// More host data than one frame carries.
    #[error("{0} bytes of host data, more than {MAX_JOB_DATA} per job")]
    TooLarge(usize),
}

/// SHA-256's digest, what SHA256 writes at `dst`.
const DIGEST: usize = 32;

/// The plan for `sqe`.
pub fn plan(sqe: &Sqe) -> Result<Plan, PlanError> {
    let head = SqeHead::from_word(sqe.head.get());
    let op = JobOp::from_wire(head.op).ok_or(PlanError::Invalid)?;
    if head.version != shared_abi::jobs::VERSION || head.flags & !flags::ALL != 0 {
        return Err(PlanError::Invalid);
    }
    let len = sqe.len.get() as usize;
    let host_src = head.flags & flags::SRC_DEVICE == 0;
    let host_dst = head.flags & flags::DST_DEVICE == 0;
    let (reads, writes) = match op {
        JobOp::Copy => (Some(len), Some(len)),
        JobOp::Fill => (None, Some(len)),
        JobOp::Crc32c => (Some(len), None),
        JobOp::Sha256 => (Some(len), Some(DIGEST)),
    };
    let input = reads.filter(|_| host_src).map(|n| (sqe.src.get(), n));
    let output = writes.filter(|_| host_dst).map(|n| (sqe.dst.get(), n));
    for (_, n) in input.iter().chain(output.iter()) {
        if *n > MAX_JOB_DATA {
            return Err(PlanError::TooLarge(*n));
        }
    }
    Ok(Plan {
        op,
        reads,
        writes,
        input,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    fn sqe(op: JobOp, fl: u8, src: u64, dst: u64, len: u32) -> Sqe {
        let mut e = Sqe::new_zeroed();
        e.head = SqeHead {
            phase: 1,
            version: shared_abi::jobs::VERSION,
            op: op.wire(),
            flags: fl,
        }
        .to_word()
        .into();
        e.src = src.into();
        e.dst = dst.into();
        e.len = len.into();
        e
    }

    #[test]
    fn host_data_travels_and_device_addresses_stay() {
        let p = |e: &Sqe| plan(e).unwrap();
        let copy = sqe(JobOp::Copy, 0, 0x1000, 0x9000, 4096);
        assert_eq!(
            p(&copy),
            Plan {
                op: JobOp::Copy,
                reads: Some(4096),
                writes: Some(4096),
                input: Some((0x1000, 4096)),
                output: Some((0x9000, 4096))
            }
        );
        // Device to host, host to device, device to device.
        let d2h = sqe(JobOp::Copy, flags::SRC_DEVICE, 0x7000, 0x9000, 100);
        assert_eq!(p(&d2h).input, None);
        assert_eq!(p(&d2h).output, Some((0x9000, 100)));
        let h2d = sqe(JobOp::Copy, flags::DST_DEVICE, 0x1000, 0x7000, 100);
        assert_eq!((p(&h2d).input, p(&h2d).output), (Some((0x1000, 100)), None));
        let d2d = sqe(JobOp::Copy, flags::ALL, 1, 2, 100);
        assert_eq!((p(&d2d).input, p(&d2d).output), (None, None));
        assert_eq!((p(&d2d).reads, p(&d2d).writes), (Some(100), Some(100)));
        assert_eq!(p(&sqe(JobOp::Fill, 0, 0, 0x9000, 64)).input, None);
        assert_eq!(p(&sqe(JobOp::Crc32c, 0, 0x1000, 0, 64)).output, None);
        assert_eq!(
            p(&sqe(JobOp::Sha256, 0, 0x1000, 0x9000, 5000)).output,
            Some((0x9000, 32))
        );
    }

    #[test]
    fn what_cannot_travel_is_refused() {
        let mut bad = sqe(JobOp::Copy, 0, 0, 0, 1);
        bad.head = SqeHead {
            phase: 1,
            version: 1,
            op: 99,
            flags: 0,
        }
        .to_word()
        .into();
        assert_eq!(plan(&bad), Err(PlanError::Invalid));
        assert_eq!(
            plan(&sqe(JobOp::Copy, 0x80, 0, 0, 1)),
            Err(PlanError::Invalid)
        );
        let big = (MAX_JOB_DATA + 1) as u32;
        assert_eq!(
            plan(&sqe(JobOp::Crc32c, 0, 0, 0, big)),
            Err(PlanError::TooLarge(big as usize))
        );
        let large = plan(&sqe(JobOp::Crc32c, 0, 0, 0, (CHUNK + 1) as u32)).unwrap();
        assert!(large.large());
        assert!(!plan(&sqe(JobOp::Sha256, 0, 0, 0, CHUNK as u32))
            .unwrap()
            .large());
        // The same length between device addresses moves nothing over the link.
        assert!(plan(&sqe(JobOp::Copy, flags::ALL, 0, 0, big)).is_ok());
    }
}
