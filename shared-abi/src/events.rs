//! The event ring: asynchronous notifications from firmware to host.
//!
//! [`crate::regs::EVENT_RING_ENTRIES`] entries of 16 bytes at `pf::EVENT_RING`. The firmware
//! writes entry `EVQ_PROD % N` then increments `EVQ_PROD` and raises PF vector
//! `PF_VECTOR_EVENTS`; the host consumes up to `EVQ_PROD` and writes `EVQ_CONS`. When the ring
//! is full the firmware drops the event and sets [`EventKind::Overflow`] as the next entry it
//! can write, so the host knows it missed some.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One event ring entry.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Event {
    /// [`EventKind`].
    pub kind: U16,
    /// VF index, or 0xFFFF for the device.
    pub vf: U16,
    /// Kind-specific code (a fault code, a new state).
    pub code: U32,
    /// Kind-specific data (a counter, a sequence number).
    pub data: U64,
}

/// VF field value for device-wide events.
pub const DEVICE: u16 = 0xFFFF;

wire_enum! {
    /// Event kinds.
    EventKind: u16 {
        /// Firmware became ready (code = firmware version).
        FwReady = 1,
        /// A VF completed a function level reset (data = its FLR count).
        VfFlrDone = 2,
        /// A VF access was refused (code = [`crate::resources::VfFault`]).
        VfFault = 3,
        /// A VF changed state (code = [`crate::resources::VfState`]).
        VfStateChanged = 4,
        /// The firmware faulted (code = [`crate::mailbox::FaultCode`]).
        FwFault = 5,
        /// Events were dropped because the ring was full (data = how many).
        Overflow = 6,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_size() {
        assert_eq!(
            core::mem::size_of::<super::Event>(),
            crate::regs::EVENT_SIZE
        );
        assert_eq!(
            super::EventKind::from_wire(6),
            Some(super::EventKind::Overflow)
        );
        assert_eq!(super::EventKind::from_wire(0), None);
    }
}
