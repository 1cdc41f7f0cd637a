//! No job lost, none run twice, across dropped links: the two ends of a session's job window.
//!
//! The importer numbers jobs from 1 and keeps every job it has no completion for
//! ([`Outstanding`]); after a reconnect it submits them all again. The exporter remembers, for
//! the session, each job it has started and the completion of each it finished
//! ([`Completions`]): a job it sees again is answered from that memory (or, still running,
//! answered when it ends), never run again. The importer acknowledges completions it has
//! delivered (ACK: everything below a sequence number), and may only submit inside a window
//! of `credits` sequence numbers from there, so the exporter's memory of a session is bounded
//! by the credits it granted.
use crate::wire::{Complete, Submit};
use std::collections::BTreeMap;

/// What the exporter does with a SUBMIT.
#[derive(Debug, PartialEq, Eq)]
pub enum OnSubmit {
    /// A job never seen: run it (and [`Completions::finish`] it).
    Run,
    /// Seen and running: its completion goes out when it ends.
    Running,
    /// Seen and finished: send this completion again.
    Resend(Complete, Vec<u8>),
}

/// Why the exporter refuses a SUBMIT (the importer broke the protocol: its link is cut).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Below the window: the importer acknowledged this job's completion already.
    #[error("job {0} was acknowledged already")]
    Acknowledged(u64),
    /// Past the window the credits allow.
    #[error("job {seq} is past the window [{below}, {below} + {credits})")]
    PastWindow {
        /// The job.
        seq: u64,
        /// The window's start.
        below: u64,
        /// Its size.
        credits: u32,
    },
    /// An ACK that goes backwards or past what was submitted.
    #[error("acknowledgement of {0} is out of order")]
    Ack(u64),
}

/// The exporter's memory of one session's jobs.
#[derive(Debug)]
pub struct Completions {
    credits: u32,
    /// Every job below this is acknowledged: forgotten.
    below: u64,
    started: BTreeMap<u64, Option<(Complete, Vec<u8>)>>,
}

impl Completions {
    /// A session that granted `credits` (at least 1).
    pub fn new(credits: u32) -> Self {
        Completions {
            credits: credits.max(1),
            below: 1,
            started: BTreeMap::new(),
        }
    }

    /// A SUBMIT of job `s.seq`.
    pub fn submit(&mut self, s: &Submit) -> Result<OnSubmit, WindowError> {
        let seq = s.seq.get();
        if seq < self.below {
            return Err(WindowError::Acknowledged(seq));
        }
        if seq - self.below >= self.credits as u64 {
            return Err(WindowError::PastWindow {
                seq,
                below: self.below,
                credits: self.credits,
            });
        }
        Ok(match self.started.get(&seq) {
            None => {
                self.started.insert(seq, None);
                OnSubmit::Run
            }
            Some(None) => OnSubmit::Running,
            Some(Some((c, d))) => OnSubmit::Resend(*c, d.clone()),
        })
    }

    /// Job `c.seq` ended: its completion is kept until acknowledged, and returned to be sent
    /// (from here, not copied). None if it was not started (or already forgotten): nothing
    /// is kept, nothing is to be sent.
    pub fn finish(&mut self, c: Complete, data: Vec<u8>) -> Option<&(Complete, Vec<u8>)> {
        match self.started.get_mut(&c.seq.get()) {
            Some(slot @ None) => Some(slot.insert((c, data))),
            _ => None,
        }
    }

    /// ACK: every job below `below` is delivered; their completions are forgotten. A job
    /// below it that has not finished is a protocol error (the importer cannot have its
    /// completion).
    pub fn ack(&mut self, below: u64) -> Result<(), WindowError> {
        if below < self.below {
            return Err(WindowError::Ack(below));
        }
        if self.started.range(..below).any(|(_, done)| done.is_none())
            || below - self.below > self.credits as u64
        {
            return Err(WindowError::Ack(below));
        }
        self.started = self.started.split_off(&below);
        self.below = below;
        Ok(())
    }

    /// Completions held (at most the credits granted).
    pub fn held(&self) -> usize {
        self.started.len()
    }
}

/// The importer's jobs without a completion, in submission order.
#[derive(Debug)]
pub struct Outstanding<J> {
    credits: u32,
    next: u64,
    jobs: BTreeMap<u64, J>,
    acked: u64,
}

impl<J: Clone> Outstanding<J> {
    /// A session with `credits` granted.
    pub fn new(credits: u32) -> Self {
        Outstanding {
            credits: credits.max(1),
            next: 1,
            jobs: BTreeMap::new(),
            acked: 1,
        }
    }

    /// The lowest job without a completion (everything below is delivered), or the next
    /// sequence number if none is outstanding: what an ACK says.
    pub fn below(&self) -> u64 {
        self.jobs.keys().next().copied().unwrap_or(self.next)
    }

    /// Numbers `job` and keeps it; None while the window is full (wait for completions and
    /// send the ACK [`Outstanding::ack_due`] gives). The window starts at the last ACK sent,
    /// not at what has been delivered since: the exporter's window moves only with ACKs.
    pub fn push(&mut self, job: J) -> Option<u64> {
        if self.next - self.acked >= self.credits as u64 {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        self.jobs.insert(seq, job);
        Some(seq)
    }

    /// A completion for `seq` arrived: the job, if it was outstanding (a duplicate, after a
    /// resubmission, finds nothing and is dropped).
    pub fn complete(&mut self, seq: u64) -> Option<J> {
        self.jobs.remove(&seq)
    }

    /// Job `seq`, if it is outstanding.
    pub fn get(&self, seq: u64) -> Option<&J> {
        self.jobs.get(&seq)
    }

    /// An ACK to send, if the window's start moved since the last one.
    pub fn ack_due(&mut self) -> Option<u64> {
        let b = self.below();
        (b > self.acked).then(|| {
            self.acked = b;
            b
        })
    }

    /// After a reconnect: the ACK to send first (the last one may have been lost with the
    /// link; the exporter takes it again harmlessly), then every job without a completion,
    /// in order, to submit again.
    pub fn resume(&self) -> (u64, Vec<(u64, J)>) {
        (
            self.acked,
            self.jobs.iter().map(|(s, j)| (*s, j.clone())).collect(),
        )
    }

    /// Whether [`Outstanding::push`] would take another job now.
    pub fn has_room(&self) -> bool {
        self.next - self.acked < self.credits as u64
    }

    /// The credits the window was made with.
    pub fn credits(&self) -> u32 {
        self.credits
    }

    /// Gives up every job (the link stayed down too long): they complete with an error.
    pub fn fail_all(&mut self) -> Vec<(u64, J)> {
        std::mem::take(&mut self.jobs).into_iter().collect()
    }

    /// Jobs without a completion.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn submit(seq: u64) -> Submit {
        Submit {
            seq: seq.into(),
            queue: 0.into(),
            in_len: 0.into(),
            sqe: [0; shared_abi::jobs::SQE_SIZE],
        }
    }

    fn done(seq: u64) -> Complete {
        Complete {
            seq: seq.into(),
            queue: 0.into(),
            out_len: 0.into(),
            cqe: [seq as u8; shared_abi::jobs::CQE_SIZE],
        }
    }

    #[test]
    fn a_job_seen_again_is_answered_not_run() {
        let mut c = Completions::new(4);
        assert_eq!(c.submit(&submit(1)), Ok(OnSubmit::Run));
        assert_eq!(c.submit(&submit(1)), Ok(OnSubmit::Running));
        assert!(c.finish(done(1), vec![7]).is_some());
        assert_eq!(c.submit(&submit(1)), Ok(OnSubmit::Resend(done(1), vec![7])));
        assert!(c.finish(done(9), vec![]).is_none(), "never started");
        c.ack(2).unwrap();
        assert_eq!(c.held(), 0);
        assert_eq!(c.submit(&submit(1)), Err(WindowError::Acknowledged(1)));
        assert!(matches!(
            c.submit(&submit(6)),
            Err(WindowError::PastWindow { .. })
        ));
        assert_eq!(c.submit(&submit(5)), Ok(OnSubmit::Run));
        // An ACK over a job still running, or backwards, is refused.
        assert_eq!(c.ack(6), Err(WindowError::Ack(6)));
        assert_eq!(c.ack(1), Err(WindowError::Ack(1)));
    }

    #[test]
    fn the_importer_window_holds_credits_jobs_and_acks_what_it_delivered() {
        let mut o = Outstanding::new(2);
        assert_eq!(o.push('a'), Some(1));
        assert_eq!(o.push('b'), Some(2));
        assert_eq!(o.push('c'), None, "window full");
        assert_eq!(o.complete(2), Some('b'));
        assert_eq!(o.push('c'), None, "job 1 still holds the window's start");
        assert_eq!(o.ack_due(), None);
        assert_eq!(o.complete(1), Some('a'));
        assert_eq!(o.complete(1), None, "a duplicate completion is dropped");
        assert_eq!(o.ack_due(), Some(3));
        assert_eq!(o.push('c'), Some(3));
        assert_eq!(o.resume(), (3, vec![(3, 'c')]));
        assert_eq!(o.fail_all(), vec![(3, 'c')]);
        assert!(o.is_empty());
    }

    proptest! {
        /// Jobs flow through a link that drops at arbitrary moments, losing whatever was on
        /// the wire (submissions, completions, acknowledgements); the importer reconnects
        /// and resubmits what it has no completion for. Every job runs exactly once on the
        /// exporter and completes exactly once at the importer.
        #[test]
        fn across_dropped_links_no_job_is_lost_or_run_twice(
            events in proptest::collection::vec(0u8..6, 1..400),
            credits in 1u32..8,
        ) {
            const JOBS: u64 = 40;
            let mut imp = Outstanding::new(credits);
            let mut exp = Completions::new(credits);
            let made = std::cell::Cell::new(0u64);
            // In flight on the current link, each way.
            let mut to_exp: Vec<crate::wire::Message> = Vec::new();
            let mut to_imp: Vec<(u64, bool)> = Vec::new(); // (seq, is a completion)
            let mut running: Vec<u64> = Vec::new();
            let mut runs = vec![0u32; JOBS as usize + 1];
            let mut delivered = vec![0u32; JOBS as usize + 1];
            let mut step = |e: u8, imp: &mut Outstanding<u64>, exp: &mut Completions| {
                match e {
                    // The importer submits the next job if its window allows.
                    0 if made.get() < JOBS => {
                        if let Some(seq) = imp.push(made.get() + 1) {
                            made.set(made.get() + 1);
                            to_exp.push(crate::wire::Message::Submit(submit(seq), vec![]));
                        }
                    }
                    // The exporter takes the oldest frame in flight.
                    1 if !to_exp.is_empty() => match to_exp.remove(0) {
                        crate::wire::Message::Submit(s, _) => match exp.submit(&s).unwrap() {
                            OnSubmit::Run => {
                                runs[s.seq.get() as usize] += 1;
                                running.push(s.seq.get());
                            }
                            OnSubmit::Running => {}
                            OnSubmit::Resend(c, _) => to_imp.push((c.seq.get(), true)),
                        },
                        crate::wire::Message::Ack(a) => exp.ack(a.below.get()).unwrap(),
                        _ => unreachable!(),
                    },
                    // A running job ends.
                    2 if !running.is_empty() => {
                        let seq = running.remove(0);
                        exp.finish(done(seq), vec![]);
                        to_imp.push((seq, true));
                    }
                    // The importer takes the oldest completion in flight.
                    3 if !to_imp.is_empty() => {
                        let (seq, _) = to_imp.remove(0);
                        if imp.complete(seq).is_some() {
                            delivered[seq as usize] += 1;
                        }
                        if let Some(b) = imp.ack_due() {
                            to_exp.push(crate::wire::Message::Ack(crate::wire::Ack { below: b.into() }));
                        }
                    }
                    // The link drops: what was on the wire is lost; the importer resubmits.
                    4 => {
                        to_exp.clear();
                        to_imp.clear();
                        let (ack, again) = imp.resume();
                        to_exp.push(crate::wire::Message::Ack(crate::wire::Ack { below: ack.into() }));
                        for (seq, _) in again {
                            to_exp.push(crate::wire::Message::Submit(submit(seq), vec![]));
                        }
                    }
                    _ => {}
                }
            };
            for e in events {
                step(e, &mut imp, &mut exp);
            }
            // Then a link that stays up until everything is done.
            for _ in 0..100_000 {
                if made.get() == JOBS && imp.is_empty() {
                    break;
                }
                for e in 0..4 {
                    step(e, &mut imp, &mut exp);
                }
            }
            prop_assert!(imp.is_empty());
            for seq in 1..=JOBS as usize {
                prop_assert_eq!(runs[seq], 1, "job {} ran {} times", seq, runs[seq]);
                prop_assert_eq!(delivered[seq], 1, "job {} delivered {} times", seq, delivered[seq]);
            }
            prop_assert!(exp.held() <= credits as usize);
        }
    }
}
