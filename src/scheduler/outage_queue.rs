//! The outage tracker's queue of sequences not taken yet: the oldest inline, the rest in a ring
//! allocated only once two or more wait at the same time.
//!
//! An address has one probe in flight as a rule (its timeout is shorter than its interval), so
//! the queue holds one entry or none. A `VecDeque` of its own allocated room for four (96 bytes
//! and the allocator's header) at the first probe of every address and kept it: a megabyte at
//! 10,000 addresses, for the one entry that now sits in the tracker itself. The ring itself is
//! behind a box too: its 32 bytes inline in every address's slot cost 3 MB at 100,000
//! addresses, for the few that ever have two probes out.

use std::collections::VecDeque;

/// A double-ended queue, oldest first, whose oldest entry is kept inline.
///
/// Invariant: `rest` is empty whenever `head` is `None`. Once allocated, the ring is kept (an
/// address that had two probes out will likely have them again).
#[derive(Debug, Default)]
pub(super) struct InlineFront<T> {
    head: Option<T>,
    // Boxed on purpose: 8 bytes in the slot of every address where the ring inline took 32.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<T>>>,
}

impl<T: Default> InlineFront<T> {
    /// An empty queue (no allocation).
    pub(super) fn new() -> Self {
        Self {
            head: None,
            rest: None,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// The oldest entry.
    pub(super) fn front(&self) -> Option<&T> {
        self.head.as_ref()
    }

    /// Takes the oldest entry out.
    pub(super) fn pop_front(&mut self) -> Option<T> {
        let first = self.head.take()?;
        self.head = self.rest.as_mut().and_then(|r| r.pop_front());
        Some(first)
    }

    /// The entry at `index`, counted from the oldest.
    pub(super) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        match index.checked_sub(1) {
            None => self.head.as_mut(),
            Some(i) => self.rest.as_mut()?.get_mut(i),
        }
    }

    /// Appends default entries until the queue holds `len` (never shortens it).
    pub(super) fn extend_to(&mut self, len: usize) {
        if len == 0 {
            return;
        }
        if self.head.is_none() {
            self.head = Some(T::default());
        }
        if len > 1 {
            let rest = self.rest.get_or_insert_default();
            if rest.len() < len - 1 {
                rest.resize_with(len - 1, T::default);
            }
        }
    }

    /// Bytes on the heap (the ring and its room), for the memory test.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.rest.as_ref().map_or(0, |r| {
            std::mem::size_of::<VecDeque<T>>() + r.capacity() * std::mem::size_of::<T>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::InlineFront;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Clone, Debug)]
    enum Op {
        Extend(usize),
        Pop,
        Set(usize, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..6).prop_map(Op::Extend),
            Just(Op::Pop),
            (0usize..6, any::<u32>()).prop_map(|(i, v)| Op::Set(i, v)),
        ]
    }

    proptest! {
        // Every operation answers as the same operation on a plain VecDeque.
        #[test]
        fn it_behaves_as_a_deque(ops in proptest::collection::vec(op(), 0..60)) {
            let mut q = InlineFront::<u32>::new();
            let mut model = VecDeque::<u32>::new();
            for op in ops {
                match op {
                    Op::Extend(n) => {
                        q.extend_to(n);
                        if model.len() < n {
                            model.resize(n, 0);
                        }
                    }
                    Op::Pop => prop_assert_eq!(q.pop_front(), model.pop_front()),
                    Op::Set(i, v) => {
                        let got = q.get_mut(i).map(|e| {
                            *e = v;
                        });
                        let want = model.get_mut(i).map(|e| {
                            *e = v;
                        });
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.front(), model.front());
                prop_assert_eq!(q.is_empty(), model.is_empty());
                for i in 0..=model.len() {
                    prop_assert_eq!(q.get_mut(i).copied(), model.get(i).copied());
                }
            }
        }
    }

    #[test]
    fn one_entry_at_a_time_never_allocates() {
        let mut q = InlineFront::<u64>::new();
        for n in 0..1000 {
            q.extend_to(1);
            if let Some(e) = q.get_mut(0) {
                *e = n;
            }
            assert_eq!(q.pop_front(), Some(n));
        }
        assert_eq!(q.heap_bytes(), 0);
        q.extend_to(3);
        assert_eq!(q.len(), 3);
        assert!(q.heap_bytes() > 0);
    }
}
