//! Producer side of the event ring in PF BAR0 (layout in `shared_abi::events`).

use crate::hal::Regs;
use shared_abi::events::{Event, EventKind, DEVICE};
use shared_abi::pci::PF_VECTOR_EVENTS;
use shared_abi::regs::{pf, EVENT_RING_ENTRIES, EVENT_SIZE};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

/// Producer state.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventRing {
    prod: u32,
    dropped: u32,
}

impl EventRing {
    /// An empty ring.
    pub const fn new() -> Self {
        EventRing {
            prod: 0,
            dropped: 0,
        }
    }

    /// Resets both indices (device reset).
    pub fn boot(&mut self, r: &impl Regs) {
        *self = Self::new();
        r.write32(pf::EVQ_PROD.offset(), 0);
        r.write32(pf::EVQ_CONS.offset(), 0);
    }

    fn space(&self, r: &impl Regs) -> u32 {
        let cons = r.read32(pf::EVQ_CONS.offset());
        // A consumer index ahead of the producer is a host bug: treat the ring as full.
        let used = self.prod.wrapping_sub(cons);
        (EVENT_RING_ENTRIES as u32).saturating_sub(used)
    }

    fn write(&mut self, r: &impl Regs, e: Event) {
        let slot = (self.prod as usize) % EVENT_RING_ENTRIES;
        r.write_bytes(pf::EVENT_RING.start() + slot * EVENT_SIZE, e.as_bytes());
        self.prod = self.prod.wrapping_add(1);
    }

    /// Posts an event and raises the events vector; drops it (counting) when the ring is full.
    pub fn post(&mut self, r: &impl Regs, kind: EventKind, vf: u16, code: u32, data: u64) {
        let need = if self.dropped > 0 { 2 } else { 1 };
        if self.space(r) < need {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        if self.dropped > 0 {
            let n = self.dropped;
            self.dropped = 0;
            self.write(r, event(EventKind::Overflow, DEVICE, 0, n as u64));
        }
        self.write(r, event(kind, vf, code, data));
        r.write32(pf::EVQ_PROD.offset(), self.prod);
        r.write32(pf::IRQ_RAISE.offset(), PF_VECTOR_EVENTS as u32);
    }
}

fn event(kind: EventKind, vf: u16, code: u32, data: u64) -> Event {
    Event {
        kind: U16::new(kind as u16),
        vf: U16::new(vf),
        code: U32::new(code),
        data: U64::new(data),
    }
}
