//! The in-flight table's short memory of settled probes: a ring in settling order, and an
//! index from a probe's key to its slot in the ring.
//!
//! The index holds ring positions only, 4 bytes a bucket (a map from key to position took 28):
//! to compare a key, or to rehash, it reads the key from the slot. At the daemon's bound of
//! 28,672 probes that is a third of a megabyte instead of 1.9 MB, and a lookup reads the same
//! two cache lines as before (the index's bucket, then the slot it had to read anyway).

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::{Key, Mono, RECENT_KEEP, Recent};

/// Settled probes, oldest first, at most `capacity` of them, found by key.
///
/// A position is the low 32 bits of a slot's count from the first probe ever remembered:
/// positions in the ring are fewer than 2^32 apart, so they subtract exactly with wrapping.
/// A probe forgotten early (its key reused) leaves its slot until it comes round, but its
/// index entry goes at once: every entry points at a slot in the ring that holds its key, and a
/// key has at most one entry.
#[derive(Debug)]
pub(super) struct RecentRing {
    capacity: usize,
    ring: VecDeque<(Key, Recent)>,
    /// The position of the ring's first slot.
    pub(super) start: u64,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

/// The slot at `position` of a ring whose first slot is at `start`.
fn slot(ring: &VecDeque<(Key, Recent)>, start: u64, position: u32) -> Option<&(Key, Recent)> {
    ring.get(position.wrapping_sub(start as u32) as usize)
}

impl RecentRing {
    /// An empty ring for at most `capacity` (at least 1) settled probes.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            ring: VecDeque::new(),
            start: 0,
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Probes that can be found.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Slots in the ring, found or forgotten early.
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.ring.len()
    }

    /// Room in the ring.
    #[cfg(test)]
    pub(super) fn slots_allocated(&self) -> usize {
        self.ring.capacity()
    }

    /// Room in the index.
    #[cfg(test)]
    pub(super) fn allocated(&self) -> usize {
        self.index.capacity()
    }

    /// Bytes the index has allocated.
    #[cfg(test)]
    pub(super) fn index_bytes(&self) -> usize {
        self.index.allocation_size()
    }

    /// The remembered probe of `key`, if any.
    pub(super) fn get_mut(&mut self, key: &Key) -> Option<&mut Recent> {
        let (ring, start) = (&self.ring, self.start);
        let position = *self.index.find(self.hasher.hash_one(key), |&p| {
            slot(ring, start, p).is_some_and(|(k, _)| k == key)
        })?;
        let at = position.wrapping_sub(start as u32) as usize;
        self.ring.get_mut(at).map(|(_, r)| r)
    }

    /// Forgets the probe of `key` (its key is being reused); its slot stays until it comes
    /// round.
    pub(super) fn forget(&mut self, key: &Key) {
        let (ring, start) = (&self.ring, self.start);
        let found = self.index.find_entry(self.hasher.hash_one(key), |&p| {
            slot(ring, start, p).is_some_and(|(k, _)| k == key)
        });
        if let Ok(entry) = found {
            entry.remove();
        }
    }

    /// Remembers a settled probe, forgetting the oldest when the ring is full. A key still
    /// remembered (reused) has its entry moved to the new slot: one lookup of the index per
    /// probe, not one to forget and one to insert.
    pub(super) fn remember(&mut self, key: Key, rec: Recent) {
        // Make room first: inserting into a full index, even for the moment before the oldest
        // entry goes, would make its hash table double.
        while self.ring.len() >= self.capacity && self.forget_oldest() {}
        if self.ring.len() == self.ring.capacity() {
            // Doubling, but never past the bound: a ring of 28,672 would otherwise take room
            // for 32,768.
            let to = (self.ring.len() * 2).clamp(4, self.capacity.max(4));
            self.ring
                .reserve_exact(to.saturating_sub(self.ring.len()).max(1));
        }
        // Truncated on purpose: see the type's docs.
        let position = (self.start + self.ring.len() as u64) as u32;
        let (ring, start, hasher) = (&self.ring, self.start, &self.hasher);
        let entry = self.index.entry(
            hasher.hash_one(key),
            |&p| slot(ring, start, p).is_some_and(|(k, _)| *k == key),
            |&p| slot(ring, start, p).map_or(0, |(k, _)| hasher.hash_one(k)),
        );
        match entry {
            Entry::Occupied(mut reused) => *reused.get_mut() = position,
            Entry::Vacant(new) => {
                new.insert(position);
            }
        }
        self.ring.push_back((key, rec));
    }

    /// Forgets the oldest slot; false when there is none.
    fn forget_oldest(&mut self) -> bool {
        let Some((old, _)) = self.ring.pop_front() else {
            return false;
        };
        let position = self.start as u32;
        // The entry of this slot, if its key was not reused since.
        if let Ok(entry) = self
            .index
            .find_entry(self.hasher.hash_one(old), |&p| p == position)
        {
            entry.remove();
        }
        self.start += 1;
        true
    }

    /// Forgets probes sent [`RECENT_KEEP`] or longer before `now`, oldest first. The ring is in
    /// settling order, which follows sending order up to the spread of timeouts, so a younger
    /// probe ahead of older ones only holds them back that long.
    pub(super) fn forget_old(&mut self, now: Mono) {
        while self
            .ring
            .front()
            .is_some_and(|(_, r)| now.since(r.sent.user.mono) >= RECENT_KEEP)
        {
            self.forget_oldest();
        }
        // What the ring held at its fullest is given back once it is mostly empty.
        if self.ring.capacity() > 64 && self.ring.len() < self.ring.capacity() / 4 {
            self.ring.shrink_to(self.ring.len() * 2);
            let (ring, start, hasher) = (&self.ring, self.start, &self.hasher);
            self.index.shrink_to(ring.len() * 2, |&p| {
                slot(ring, start, p).map_or(0, |(k, _)| hasher.hash_one(k))
            });
        }
    }
}
