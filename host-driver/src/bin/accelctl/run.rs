//! `accelctl vf run`: keeps a VF's queues full of one job type for a while and reports
//! throughput and latency, checking every result against a host reference.

use host_driver::error::{Error, Result};
use host_driver::vf::{Buf, Job, Queue, VfDev};
use shared_abi::jobs::{self, JobOp, JobStatus};
use std::io::Write;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub op: JobOp,
    pub size: u32,
    pub queues: u32,
    pub depth: u32,
    pub duration: Duration,
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub job: &'static str,
    pub size: u32,
    pub queues: u32,
    pub depth: u32,
    pub seconds: f64,
    /// Of `seconds`, the time after the deadline spent waiting for jobs already submitted.
    pub drain_seconds: f64,
    pub jobs: u64,
    pub bytes: u64,
    pub gib_per_s: f64,
    pub jobs_per_s: f64,
    pub latency_us_p50: f64,
    pub latency_us_p99: f64,
    pub latency_us_max: f64,
}

pub fn op_name(op: JobOp) -> &'static str {
    match op {
        JobOp::Copy => "copy",
        JobOp::Fill => "fill",
        JobOp::Crc32c => "crc32c",
        JobOp::Sha256 => "sha256",
    }
}

pub fn parse_op(s: &str) -> Result<JobOp> {
    JobOp::ALL
        .iter()
        .copied()
        .find(|&o| op_name(o) == s)
        .ok_or_else(|| Error::Invalid(format!("--job {s}: one of copy, fill, crc32c, sha256")))
}

struct Lane {
    q: Queue,
    src: Buf,
    dst: Buf,
    submitted: Vec<Option<Instant>>,
}

pub use host_driver::vf::Target;

/// Looks at the completion rings without giving the core away, after the last completion:
/// a local VF's small job completes within these.
const SPIN_POLLS: u32 = 2_000;

/// Runs `load` on the VF at `target`.
pub fn run(target: &Target, load: Load) -> Result<Report> {
    if load.size == 0 || load.size > jobs::MAX_JOB_LEN {
        return Err(Error::Invalid(format!(
            "--size: 1 byte to {} MiB",
            jobs::MAX_JOB_LEN >> 20
        )));
    }
    // Checked before sizing this process's memory by them.
    if load.queues == 0 || load.queues as usize > shared_abi::regs::VF_MAX_QUEUES {
        return Err(Error::Invalid(format!(
            "--queues {}: from 1 to the VF's queue count",
            load.queues
        )));
    }
    if !load.depth.is_power_of_two() || !(jobs::MIN_RING..=jobs::MAX_RING).contains(&load.depth) {
        return Err(Error::Invalid(format!(
            "queue depth {}: a power of two from {} to {}",
            load.depth,
            jobs::MIN_RING,
            jobs::MAX_RING
        )));
    }
    let size = load.size as usize;
    let rings = load.depth as usize * (jobs::SQE_SIZE + jobs::CQE_SIZE) + 8192;
    let mem = load.queues as usize * (2 * size.div_ceil(4096) * 4096 + rings);
    let mut dev = target.open(mem)?;
    if load.queues > dev.queue_count() {
        return Err(Error::Invalid(format!(
            "--queues {}: the VF owns {}",
            load.queues,
            dev.queue_count()
        )));
    }
    // Every source holds the same bytes, so one reference checks every result.
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let want_crc = jobs::crc32c(0, &data) as u64;
    let mut lanes = Vec::new();
    for q in 0..load.queues {
        let queue = dev.queue(q, load.depth)?;
        let src = dev.alloc(size, 4096)?;
        let dst = dev.alloc(size.max(32), 4096)?;
        dev.write(src, 0, &data)?;
        lanes.push(Lane {
            q: queue,
            src,
            dst,
            submitted: vec![None; load.depth as usize],
        });
    }
    let job = |l: &Lane| Job {
        op: load.op,
        src: Some(l.src.into()),
        dst: Some(l.dst.into()),
        len: load.size,
        value: if load.op == JobOp::Fill { 0x5A } else { 0 },
    };
    let progress = crate::output::interactive() && load.duration >= Duration::from_secs(2);
    let mut lat: Vec<Duration> = Vec::new();
    let start = Instant::now();
    let mut last_draw = start;
    let mut done = 0u64;
    let stop_at = start + load.duration;
    let mut idle_since: Option<Instant> = None;
    let mut idle_polls = 0u32;
    loop {
        let submitting = Instant::now() < stop_at;
        let mut busy = false;
        for l in lanes.iter_mut() {
            while submitting && l.q.inflight() < l.q.depth() {
                let j = job(l);
                let tag = dev.submit(&mut l.q, &j)?;
                l.submitted[(tag % load.depth) as usize] = Some(Instant::now());
                busy = true;
            }
            while let Some(c) = dev.poll(&mut l.q) {
                busy = true;
                if c.status != JobStatus::Ok {
                    return Err(Error::Invalid(format!(
                        "job {} failed on the device: {:?}",
                        c.tag, c.status
                    )));
                }
                if load.op == JobOp::Crc32c && c.result != want_crc {
                    return Err(Error::Protocol(format!(
                        "CRC32C came back {:#010x}, the host computes {want_crc:#010x}",
                        c.result
                    )));
                }
                if let Some(t) = l.submitted[(c.tag % load.depth) as usize].take() {
                    lat.push(t.elapsed());
                }
                done += 1;
            }
        }
        if !submitting && lanes.iter().all(|l| l.q.inflight() == 0) {
            break;
        }
        if busy {
            idle_since = None;
            idle_polls = 0;
        } else {
            let since = *idle_since.get_or_insert_with(Instant::now);
            idle_polls += 1;
            // Polling is the queue's design, but a tenant whose jobs take a while gives its
            // core away between looks (on a shared host the engine's workers, or a remote
            // VF's importer, run on it); the clock is read every 64th look.
            if idle_polls < SPIN_POLLS {
                std::hint::spin_loop();
                continue;
            }
            std::thread::yield_now();
            if !idle_polls.is_multiple_of(64) {
                continue;
            }
            if since.elapsed() > Duration::from_secs(10) {
                let st = lanes
                    .iter()
                    .map(|l| dev.queue_status(&l.q))
                    .collect::<Result<Vec<_>>>()?;
                return Err(Error::Protocol(format!(
                    "no job completed for 10 s; queue status {st:?}"
                )));
            }
        }
        if progress && last_draw.elapsed() >= Duration::from_millis(200) {
            last_draw = Instant::now();
            draw(start.elapsed(), load.duration, done * load.size as u64);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let drain = Instant::now()
        .saturating_duration_since(stop_at)
        .as_secs_f64();
    if progress {
        eprint!("\r{:70}\r", "");
    }
    check_output(&dev, &lanes, load, &data)?;
    lat.sort();
    let pct = |p: usize| {
        lat.get((lat.len().saturating_sub(1)) * p / 100)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    let bytes = done * load.size as u64;
    Ok(Report {
        job: op_name(load.op),
        size: load.size,
        queues: load.queues,
        depth: load.depth,
        seconds: secs,
        drain_seconds: drain,
        jobs: done,
        bytes,
        gib_per_s: bytes as f64 / secs / (1u64 << 30) as f64,
        jobs_per_s: done as f64 / secs,
        latency_us_p50: pct(50),
        latency_us_p99: pct(99),
        latency_us_max: pct(100),
    })
}

/// The last job's output is in each destination: check it against the host's answer.
fn check_output(dev: &VfDev, lanes: &[Lane], load: Load, data: &[u8]) -> Result<()> {
    for l in lanes {
        let want: Vec<u8> = match load.op {
            JobOp::Copy => data.to_vec(),
            JobOp::Fill => vec![0x5A; data.len()],
            JobOp::Sha256 => {
                use sha2::Digest;
                sha2::Sha256::digest(data).to_vec()
            }
            JobOp::Crc32c => continue,
        };
        let mut got = vec![0u8; want.len()];
        dev.read(l.dst, 0, &mut got)?;
        if got != want {
            return Err(Error::Protocol(format!(
                "{} output differs from the host's",
                op_name(load.op)
            )));
        }
    }
    Ok(())
}

fn draw(elapsed: Duration, total: Duration, bytes: u64) {
    let frac = (elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0);
    let w = 30;
    let filled = (frac * w as f64) as usize;
    let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-9) / (1u64 << 30) as f64;
    let mut e = std::io::stderr();
    let _ = write!(
        e,
        "\r[{}{}] {:5.1}s/{:.0}s  {rate:8.3} GiB/s",
        "#".repeat(filled),
        ".".repeat(w - filled),
        elapsed.as_secs_f64(),
        total.as_secs_f64()
    );
    let _ = e.flush();
}
