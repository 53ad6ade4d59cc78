//! The sinks of the probes an [`InFlightTable`](super::table::InFlightTable) holds, each kept
//! once however many of its probes are in flight or remembered.
//!
//! A probe used to carry its own clone of its sink. For a monitor's handler that is an atomic
//! increment of the handler's reference count at send and a decrement when the settled ring
//! forgets the probe, tens of thousands of probes later: two operations per probe on a cache
//! line nothing else touches at those moments (bench/RESULTS.md, "Still missed after this
//! (suite-2026-12-04-collector)"). Here a probe carries a slot number; a handler finds its
//! slot by the address it points at, and the slot counts the probes that refer to it under the
//! table's own lock. A channel sink cannot be told apart from another clone of its channel, so
//! each of its probes takes a slot of its own.

use std::sync::Arc;

use foldhash::HashMap;

use super::EventSink;

/// A probe's sink in [`Sinks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SinkId(u32);

#[derive(Debug)]
struct Slot {
    /// `None` while the slot is free.
    sink: Option<EventSink>,
    /// Probes that refer to the slot.
    probes: u32,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Sinks {
    slots: Vec<Slot>,
    /// The slot of each handler with probes here, by the address the handler points at. The
    /// slot holds a clone of the handler, so no other handler can have that address meanwhile.
    handlers: HashMap<usize, u32>,
    free: Vec<u32>,
}

/// The address a handler sink points at; `None` for a channel.
fn handler_address(sink: &EventSink) -> Option<usize> {
    match sink {
        EventSink::Handler(h) => Some(Arc::as_ptr(h).cast::<()>() as usize),
        EventSink::Channel(_) => None,
    }
}

impl Sinks {
    /// A slot for one more probe of `sink`: the handler's own slot when it has one.
    pub(super) fn hold(&mut self, sink: &EventSink) -> SinkId {
        let address = handler_address(sink);
        if let Some(a) = address
            && let Some(&i) = self.handlers.get(&a)
            && let Some(slot) = self.slots.get_mut(i as usize)
        {
            slot.probes += 1;
            return SinkId(i);
        }
        let slot = Slot {
            sink: Some(sink.clone()),
            probes: 1,
        };
        // The slots in use are never more than the table's probes, which its bounds keep far
        // below 2^32.
        let i = match self.free.pop() {
            Some(i) if (i as usize) < self.slots.len() => {
                self.slots[i as usize] = slot;
                i
            }
            _ => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        if let Some(a) = address {
            self.handlers.insert(a, i);
        }
        SinkId(i)
    }

    /// The sink of slot `id`, while a probe holds it.
    pub(super) fn get(&self, id: SinkId) -> Option<&EventSink> {
        self.slots.get(id.0 as usize)?.sink.as_ref()
    }

    /// One probe of slot `id` is gone; the last one frees the slot and drops its sink.
    pub(super) fn release(&mut self, id: SinkId) {
        let Some(slot) = self.slots.get_mut(id.0 as usize) else {
            return;
        };
        slot.probes = slot.probes.saturating_sub(1);
        if slot.probes > 0 {
            return;
        }
        if let Some(sink) = slot.sink.take() {
            if let Some(a) = handler_address(&sink) {
                self.handlers.remove(&a);
            }
            self.free.push(id.0);
        }
    }

    /// Slots holding a sink.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.slots.iter().filter(|s| s.sink.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EventHandler, ProbeEvent};

    #[derive(Debug)]
    struct Nothing;

    impl EventHandler for Nothing {
        fn on_event(&self, _: ProbeEvent) {}
    }

    #[test]
    fn a_handler_is_held_once_for_all_its_probes_and_dropped_with_the_last() {
        let handler: Arc<dyn EventHandler> = Arc::new(Nothing);
        let other: Arc<dyn EventHandler> = Arc::new(Nothing);
        let mut sinks = Sinks::default();
        let ids: Vec<SinkId> = (0..5)
            .map(|_| sinks.hold(&EventSink::Handler(handler.clone())))
            .collect();
        assert!(ids.iter().all(|&id| id == ids[0]));
        assert_eq!(Arc::strong_count(&handler), 2, "one clone for five probes");
        let o = sinks.hold(&EventSink::Handler(other.clone()));
        assert_ne!(o, ids[0]);
        assert_eq!(sinks.held(), 2);
        for &id in &ids[..4] {
            sinks.release(id);
            assert!(
                matches!(sinks.get(id), Some(EventSink::Handler(h)) if Arc::ptr_eq(h, &handler))
            );
        }
        sinks.release(ids[4]);
        assert!(sinks.get(ids[4]).is_none());
        assert_eq!(
            Arc::strong_count(&handler),
            1,
            "the last probe dropped the clone"
        );
        assert!(matches!(sinks.get(o), Some(EventSink::Handler(h)) if Arc::ptr_eq(h, &other)));
        // The freed slot is taken again, and the handler coming back gets a slot of its own.
        let again = sinks.hold(&EventSink::Handler(handler.clone()));
        assert_eq!(again, ids[0]);
        assert_eq!(sinks.held(), 2);
        sinks.release(o);
        sinks.release(again);
        assert_eq!(sinks.held(), 0);
        assert_eq!(Arc::strong_count(&other), 1);
    }

    #[test]
    fn each_probe_of_a_channel_has_a_slot_of_its_own() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let sink = EventSink::Channel(tx);
        let mut sinks = Sinks::default();
        let a = sinks.hold(&sink);
        let b = sinks.hold(&sink);
        assert_ne!(a, b);
        sinks.release(a);
        assert!(sinks.get(a).is_none());
        assert!(sinks.get(b).is_some());
        drop(sink);
        sinks.release(b);
        assert!(sinks.get(b).is_none());
        // Every sender is gone with the last slot.
        assert!(rx.try_recv().is_err() && rx.is_closed());
    }
}
