//! The scheduler's tables of targets and of addresses, each entry found by the target name (and
//! address) it holds itself.
//!
//! A table holds its entries alone: a map from (name, address) kept a second copy of every
//! name beside the entry that already had it, 24 bytes a bucket and the name's allocation, about
//! a megabyte per table at 10,000 targets.

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// What an entry is found by: its target's name, and its address for a per-address entry.
pub(super) type Key<'a> = (&'a str, Option<IpAddr>);

/// An entry of a [`Table`].
pub(super) trait Keyed {
    fn key(&self) -> Key<'_>;
}

/// Entries by their [`Keyed::key`], at most one per key.
#[derive(Debug)]
pub(super) struct Table<T> {
    table: HashTable<T>,
    hasher: foldhash::fast::RandomState,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<T: Keyed> Table<T> {
    /// Adds `entry`; an entry of the same key is replaced and returned.
    pub(super) fn insert(&mut self, entry: T) -> Option<T> {
        let hasher = &self.hasher;
        let key = entry.key();
        let found = self.table.entry(
            hasher.hash_one(key),
            |e| e.key() == key,
            |e| hasher.hash_one(e.key()),
        );
        match found {
            Entry::Occupied(mut e) => Some(std::mem::replace(e.get_mut(), entry)),
            Entry::Vacant(e) => {
                e.insert(entry);
                None
            }
        }
    }

    pub(super) fn get(&self, key: Key<'_>) -> Option<&T> {
        self.table
            .find(self.hasher.hash_one(key), |e| e.key() == key)
    }

    pub(super) fn contains(&self, key: Key<'_>) -> bool {
        self.get(key).is_some()
    }

    /// Takes out the entry of `key`.
    pub(super) fn remove(&mut self, key: Key<'_>) -> Option<T> {
        let found = self
            .table
            .find_entry(self.hasher.hash_one(key), |e| e.key() == key);
        found.ok().map(|e| e.remove().0)
    }

    /// Every entry, in no order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.table.iter()
    }

    /// Takes out every entry.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.table.drain()
    }
}
