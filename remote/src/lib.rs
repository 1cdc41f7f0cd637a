//! Remote VFs (the fourth design patent): a VM on one host uses a VF of an accelerator in
//! another, its jobs converted in user mode into network commands and forwarded over mutual
//! TLS.
//!
//! `accel-remote export` (host A, [`exporter`]) serves chosen VFs; `accel-remote import`
//! (host B, [`importer`]) presents one as a local vfio-user device. docs/remote.md has the
//! whole picture; the modules, bottom up:
//!
//! - [`wire`]: the versioned wire protocol, framing and every message, decoded strictly (a
//!   frame that is malformed, oversized or of another version is refused, never guessed at);
//! - [`link`]: frames over a byte stream behind the [`link::Link`] trait (the transport seam),
//!   and TCP with mutual TLS as the transport between hosts;
//! - [`tls`]: mutual TLS configurations from PEM files (`cargo xtask certs` makes development
//!   ones), and the client identity a verified certificate carries;
//! - [`convert`]: the user-mode conversion of one job — which host bytes travel with it
//!   and back, and which addresses are host memory (staged) or device memory (kept);
//! - [`session`]: the job window of a session at both ends, so that across dropped links no
//!   job is lost or run twice (resubmission, the exporter's completion memory, ACKs);
//! - [`admission`]: which importer (by its certificate's name) may have which exported VF,
//!   and one importer per VF at a time;
//! - [`export`]: the exporter's data path — jobs from the link run on the real VF, their
//!   host data in staging of its own;
//! - [`exporter`]: the exporter's sessions and their serving loops;
//! - [`importer`]: the imported VF (a device model of its own) and its engine.
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
