//! # acceld: the device daemon
//!
//! One service owns each device: it opens each PF once and keeps it open (over kernel VFIO
//! an open resets the function, and a PF reset destroys every VF), serves every management
//! command over gRPC on a UNIX socket (`accelvirt.v1`, the `.proto` in `api/`), lets only
//! root and its group manage, keeps the VF layout its users asked for ([`state`]) and puts
//! it back whenever the device comes back empty ([`device`]), reads the firmware's event
//! ring ([`events`]) and serves health and Prometheus metrics ([`metrics`]).
#![deny(unsafe_code)]

pub mod access;
pub mod coalesce;
pub mod device;
pub mod events;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod service;
pub mod state;
pub mod sys;
