//! Remote VFs (the fourth design patent): a VM on one host uses a VF of an accelerator in
//! another, its jobs converted in user mode into network commands and forwarded over mutual
//! TLS.
//!
//! This crate is being built in order; what is here works and is tested:
//!
//! - [`wire`]: the versioned wire protocol, framing and every message, decoded strictly (a
//!   frame that is malformed, oversized or of another version is refused, never guessed at);
//! - [`admission`]: which importer (by its certificate's name) may have which exported VF,
//!   and one importer per VF at a time;
//! - [`convert`]: the user-mode conversion of one job — which host bytes travel with it
//!   and back, and which addresses are host memory (staged) or device memory (kept);
//! - [`export`]: the exporter's data path — jobs from the link run on the real VF, their
//!   host data in staging slots of its own, one per credit;
//! - [`link`]: frames over a byte stream behind the [`link::Link`] trait, and TCP with mutual
//!   TLS as its transport between hosts;
//! - [`session`]: the job window of a session at both ends, so that across dropped links no
//!   job is lost or run twice (resubmission, the exporter's completion memory, ACKs);
//! - [`tls`]: mutual TLS configurations from PEM files (`cargo xtask certs` makes development
//!   ones), and the client identity a verified certificate carries.
#![forbid(unsafe_code)]

pub mod admission;
pub mod convert;
pub mod export;
pub mod exporter;
pub mod importer;
pub mod link;
pub mod session;
#[cfg(test)]
mod testcerts;
pub mod tls;
pub mod wire;
