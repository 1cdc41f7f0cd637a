//! The consumer side of the firmware's event ring (`shared_abi::events`, docs/abi.md §5). A
//! device has one consumer, acceld: [`Accel::take_events`] moves `EVQ_CONS`. Anyone may look
//! at what the ring holds without consuming it ([`Accel::peek_events`]).

use crate::accel::Accel;
use crate::error::{Error, Result};
use shared_abi::events::Event;
use shared_abi::regs::{pf, EVENT_RING_ENTRIES, EVENT_SIZE};
use zerocopy::FromBytes;

impl Accel {
    /// Events from ring index `from` to `prod` (at most a ring's worth, the newest).
    fn ring_events(&self, from: u32, prod: u32) -> Result<Vec<Event>> {
        let t = self.transport();
        let n = prod.wrapping_sub(from).min(EVENT_RING_ENTRIES as u32);
        let from = prod.wrapping_sub(n);
        let mut out = Vec::with_capacity(n as usize);
        let mut i = 0;
        // At most two reads (the ring wraps once): over vfio-user each is a message.
        while i < n {
            let slot = (from.wrapping_add(i) as usize) % EVENT_RING_ENTRIES;
            let run = ((EVENT_RING_ENTRIES - slot) as u32).min(n - i) as usize;
            let mut buf = vec![0u8; run * EVENT_SIZE];
            t.read_bytes(pf::EVENT_RING.start() + slot * EVENT_SIZE, &mut buf)?;
            for c in buf.chunks_exact(EVENT_SIZE) {
                out.push(Event::read_from_bytes(c).map_err(|_| Error::BadResponse("event size"))?);
            }
            i += run as u32;
        }
        Ok(out)
    }

    /// Takes the events posted since the last take and hands their slots back to the
    /// firmware (`EVQ_CONS`). For the ring's one consumer.
    pub fn take_events(&self) -> Result<Vec<Event>> {
        let t = self.transport();
        // EVQ_PROD hands the entries before it over (shared_abi::ordering).
        let prod = t.observe32(pf::EVQ_PROD.offset())?;
        let cons = t.read32(pf::EVQ_CONS.offset())?;
        if prod == cons {
            return Ok(Vec::new());
        }
        if prod.wrapping_sub(cons) > EVENT_RING_ENTRIES as u32 {
            // The indices disagree (a reset between the two reads, or a consumer that wrote a
            // wrong index): nothing between them can be trusted. Start again from the producer.
            t.publish32(pf::EVQ_CONS.offset(), prod)?;
            return Err(Error::BadResponse(
                "the event ring's indices disagreed; its consumer index was reset",
            ));
        }
        let events = self.ring_events(cons, prod)?;
        // The slots are free once read.
        t.publish32(pf::EVQ_CONS.offset(), prod)?;
        Ok(events)
    }

    /// What the ring holds and its consumer has not taken, without taking it, and the
    /// backlog (entries produced and not consumed).
    pub fn peek_events(&self) -> Result<(Vec<Event>, u32)> {
        let t = self.transport();
        let prod = t.observe32(pf::EVQ_PROD.offset())?;
        let cons = t.read32(pf::EVQ_CONS.offset())?;
        Ok((self.ring_events(cons, prod)?, prod.wrapping_sub(cons)))
    }
}
