//! # acceld: the device daemon (issue 21, under construction)
//!
//! One service will own each device, keep the VF layout its users asked for, and restore it
//! after every reset. What is here so far is the part every other piece stands on: the
//! desired state of a device as a file that is always whole ([`state`]).
#![forbid(unsafe_code)]

pub mod state;
