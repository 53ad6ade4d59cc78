//! The timers of every probe loop: a few wheel tasks (one per runtime worker) each keep their
//! addresses' next ticks in one ordered map of due times, sleep until the earliest, and send
//! every probe that is due in that one wake-up, in batches of [`SEND_BATCH`] with a yield to
//! the worker's other tasks between them.
//!
//! A task and a timer entry per address cost a task poll, a timer re-registration, a waker and
//! often a cross-thread wake-up per probe, and the task's memory for as long as the address
//! lives. Here a probe costs a push onto the list of its next due time, and a wheel's lock is
//! held while it sends, so an address taken off a wheel (its [`OnWheel`] dropped) sends nothing
//! after that.
//!
//! Wake-ups, not sends, are what a probe costs most at moderate rates (a worker parked and
//! unparked, the replies read one by one): so an address's ticks after its first probe are put
//! on a grid of [`GRID`] steps, and with an interval that is a multiple of the step (1 s,
//! 100 ms, 15 s...) they stay on it. A thousand addresses at 1 s then wake a wheel fifty times a
//! second, not a thousand, each tick still exact (the grid moves the phase, never the interval)
//! and still late only by the timer's resolution. Each wheel's grid is offset by a share of the
//! step, so the wheels take turns instead of waking together. The grid also makes the due
//! times few (fifty a second per wheel at most, for intervals on it), so the addresses due
//! at one time share one list: a wake-up takes the whole list, and no per-probe ordering work
//! (a binary heap's sift over thousands of entries, a cache miss a level) is left.

use std::collections::{BTreeMap, btree_map};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Deps;
use super::tick::ProbeLoop;
use super::wall::WallClock;
use crate::probe::Ticks;

/// Probes a wheel sends in one poll before it lets the other tasks of its worker run. A
/// wheel that is behind (more due than the machine can send in time) would otherwise send
/// without ever returning to the runtime, and the replies its worker should read would wait in
/// the socket's queue until the kernel drops them: losses that are not on the network. At
/// 10–25 µs a probe (user and kernel, bench/RESULTS.md), a batch is 3–6 ms.
pub(super) const SEND_BATCH: usize = 256;

/// The step of the grid that ticks are put on. 20 ms rather than 10: half the wake-ups (at
/// 1,000 targets on two workers, a hundred a second in all instead of two hundred) for bursts of
/// twice the probes, each still sent at its own exact tick.
pub(super) const GRID: Duration = Duration::from_millis(20);

/// The first point of the grid `origin + k·GRID` at or after `at`.
fn on_grid(origin: Instant, at: Instant) -> Instant {
    let since = at.saturating_duration_since(origin).as_nanos();
    let step = GRID.as_nanos();
    let steps = u32::try_from(since.div_ceil(step)).unwrap_or(u32::MAX);
    origin + GRID.saturating_mul(steps)
}

/// An address's place on a wheel: dropping it takes the address off, and once the drop has
/// returned the address sends nothing more.
pub(super) struct OnWheel {
    wheel: Arc<Wheel>,
    id: u64,
}

impl Drop for OnWheel {
    fn drop(&mut self) {
        // The entry is dropped under the lock, so no batch is still sending from it.
        self.wheel.state.lock().entries.remove(self.id);
    }
}

/// The wheels of one scheduler; addresses are dealt to them in turn.
pub(super) struct Wheels {
    wheels: Box<[Arc<Wheel>]>,
    next: AtomicUsize,
    /// Where the grids start (wheel `i`'s is offset by `i/n` of a step).
    origin: Instant,
}

impl Wheels {
    /// One wheel per runtime worker (the runtime's default worker count), so that sending is
    /// spread over the workers as it was with a task per address.
    pub(super) fn new(deps: &Deps, shutdown: &CancellationToken) -> Self {
        let count = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let wheels = (0..count)
            .map(|i| {
                Arc::new(Wheel {
                    state: Mutex::new(State::default()),
                    changed: Notify::new(),
                    started: AtomicBool::new(false),
                    logs_steps: i == 0,
                    deps: deps.clone(),
                    shutdown: shutdown.clone(),
                })
            })
            .collect();
        Self {
            wheels,
            next: AtomicUsize::new(0),
            origin: Instant::now(),
        }
    }

    /// How many wheels there are.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.wheels.len()
    }

    /// Sends `probe` at `first`, then on its wheel's grid every `interval` from the first point
    /// of the grid at or after `first`, until the returned [`OnWheel`] is dropped. Call from
    /// inside the runtime (the wheel's task starts with its first address).
    pub(super) fn add(&self, first: Instant, interval: Duration, probe: ProbeLoop) -> OnWheel {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.wheels.len();
        let wheel = &self.wheels[index];
        let offset = GRID.as_nanos() * index as u128 / self.wheels.len() as u128;
        let origin = self.origin + Duration::from_nanos(u64::try_from(offset).unwrap_or(0));
        // The first probe goes out at `first` itself (a new target answers as soon as its
        // phase says, and a restart is not a grid step slower to its first reply); the ticks after
        // it are on the grid.
        let id = wheel.add(first, Ticks::new(on_grid(origin, first), interval), probe);
        if !wheel.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(wheel.clone().run());
        }
        OnWheel {
            wheel: wheel.clone(),
            id,
        }
    }
}

/// One address on a wheel.
struct Entry {
    probe: ProbeLoop,
    ticks: Ticks,
    seq: u64,
}

#[derive(Default)]
struct State {
    /// The ids of the entries whose next tick is due at each time, in the order they were put
    /// there; ids of removed entries are skipped when they come up (each entry is in exactly
    /// one list, so there is at most one stale id per removed address, gone within an interval).
    due: BTreeMap<Instant, Vec<u64>>,
    entries: Entries<Entry>,
    /// Emptied due lists, kept for the next due times: a wheel takes a list or two at each
    /// wake-up and makes as many, so each would otherwise cost an allocation, its growth and a
    /// free.
    spare: Vec<Vec<u64>>,
}

/// Spare due lists kept at most, and the most ids a kept one has room for (a list as long as
/// a burst at 100,000 addresses is let go).
const SPARE_LISTS: usize = 8;
const SPARE_ROOM: usize = 4096;

impl State {
    /// Puts `id` on the list due at `at`, made from a spare list if it is new.
    fn schedule(&mut self, at: Instant, id: u64) {
        let spare = &mut self.spare;
        self.due
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(id);
    }

    /// Puts `run`, ids whose next tick is at `at` in the order they were sent, at the end of the
    /// list due then; a new due time takes the run as its list. The ids of one list sent
    /// together are most often due together again, so a batch searches the map once a run
    /// rather than once an id.
    fn file(&mut self, at: Instant, run: Vec<u64>) {
        match self.due.entry(at) {
            btree_map::Entry::Vacant(list) => {
                list.insert(run);
            }
            btree_map::Entry::Occupied(mut list) => {
                list.get_mut().extend_from_slice(&run);
                self.recycle(run);
            }
        }
    }

    /// Keeps an emptied list for [`Self::schedule`] and runs, if there is room for it.
    fn recycle(&mut self, mut list: Vec<u64>) {
        if self.spare.len() < SPARE_LISTS && list.capacity() <= SPARE_ROOM {
            list.clear();
            self.spare.push(list);
        }
    }
}

/// A wheel's entries, found by id: a slot of a vector and the slot's generation, so that the
/// stale id of a removed entry finds nothing even once its slot holds another. No hashing on
/// the send path, and room grows by a quarter (a hash map of 216-byte entries kept room for up
/// to twice as many as it held: 1.8 MB for 5,000 addresses).
struct Entries<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

struct Slot<T> {
    generation: u32,
    entry: Option<T>,
}

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Entries<T> {
    fn insert(&mut self, entry: T) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                if self.slots.len() == self.slots.capacity() {
                    self.slots.reserve_exact((self.slots.len() / 4).max(16));
                }
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                // More than 2^32 addresses on one wheel would not fit in memory.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return u64::MAX;
        };
        slot.entry = Some(entry);
        (u64::from(slot.generation) << 32) | u64::from(index)
    }

    fn slot(&mut self, id: u64) -> Option<&mut Slot<T>> {
        // The low half is the slot, the high half its generation.
        #[allow(clippy::cast_possible_truncation)]
        let (index, generation) = (id as u32, (id >> 32) as u32);
        self.slots
            .get_mut(index as usize)
            .filter(|slot| slot.generation == generation)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.slot(id)?.entry.as_mut()
    }

    fn remove(&mut self, id: u64) -> Option<T> {
        let slot = self.slot(id)?;
        let entry = slot.entry.take()?;
        // A slot is reused at most once per removal, and a stale id lives one interval at most.
        slot.generation = slot.generation.wrapping_add(1);
        #[allow(clippy::cast_possible_truncation)]
        self.free.push(id as u32);
        Some(entry)
    }
}

struct Wheel {
    state: Mutex<State>,
    /// Wakes the task when an address comes in (its first tick may be the earliest).
    changed: Notify,
    started: AtomicBool,
    /// Whether this wheel logs the steps of the wall clock it follows: every wheel follows
    /// them, one says so (a step is one event, not one per worker).
    logs_steps: bool,
    deps: Deps,
    shutdown: CancellationToken,
}

impl Wheel {
    /// Adds an entry whose first probe is due at `first` (at or before `ticks.due()`), and
    /// every later one on `ticks` past it.
    fn add(&self, first: Instant, ticks: Ticks, probe: ProbeLoop) -> u64 {
        let mut state = self.state.lock();
        let id = state.entries.insert(Entry {
            probe,
            ticks,
            seq: 0,
        });
        state.schedule(first, id);
        drop(state);
        self.changed.notify_one();
        id
    }

    async fn run(self: Arc<Self>) {
        // Far enough never to come while the wheel is empty; reset as ticks come in.
        let idle = Duration::from_secs(86_400);
        // Send times for outages: the monotonic clock (tokio's, paused in tests) anchored to the
        // wall clock, the anchor moved at each wake-up that finds the wall clock stepped.
        let mut clock = WallClock::new(&*self.deps.clock);
        let sleep = tokio::time::sleep(idle);
        // The shutdown and wake-up futures live across wake-ups too: made anew at each, they
        // registered and removed a waiter on the token and on the `Notify` each time. A `notify_one` while the task is
        // busy is kept as a permit, which the next `Notified` takes.
        let cancelled = self.shutdown.cancelled();
        let changed = self.changed.notified();
        tokio::pin!(sleep, cancelled, changed);
        loop {
            let next = self.state.lock().due.first_key_value().map(|(due, _)| *due);
            sleep
                .as_mut()
                .reset(next.unwrap_or_else(|| Instant::now() + idle));
            tokio::select! {
                biased;
                () = &mut cancelled => return,
                () = &mut changed => changed.set(self.changed.notified()),
                () = &mut sleep => {
                    // Behind (more due than one batch): the worker's other tasks, the receive
                    // tasks among them, run between batches, so replies are still read.
                    if let Some(step) = clock.follow(&*self.deps.clock)
                        && self.logs_steps
                    {
                        tracing::info!(step_s = step, "wall clock stepped; outage times follow it");
                    }
                    while self.send_due(&clock) {
                        tokio::task::yield_now().await;
                        if self.shutdown.is_cancelled() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Sends the probes that are due, each at its own tick, at most [`SEND_BATCH`] of them;
    /// true when more are due (the caller yields, then calls again). An address more than an
    /// interval behind skips the missed ticks instead of bursting.
    fn send_due(&self, clock: &WallClock) -> bool {
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut budget = SEND_BATCH;
        loop {
            let now = Instant::now();
            let Some(mut entry) = state.due.first_entry() else {
                return false;
            };
            let due = *entry.key();
            if due > now {
                return false;
            }
            if budget == 0 {
                return true;
            }
            // The whole list when it fits the batch (the common case: no copy), else its head;
            // the rest stays due at the same time, first in line for the next batch.
            let ids = if entry.get().len() <= budget {
                entry.remove()
            } else {
                let rest = entry.get_mut().split_off(budget);
                std::mem::replace(entry.get_mut(), rest)
            };
            budget -= ids.len();
            let mut run: Option<(Instant, Vec<u64>)> = None;
            for &id in &ids {
                let Some(entry) = state.entries.get_mut(id) else {
                    continue;
                };
                let now = Instant::now();
                self.deps
                    .metrics
                    .observe_scheduler_lag(now.saturating_duration_since(due).as_secs_f64());
                entry.seq += 1;
                let at = clock.at(now);
                entry.probe.send(&self.deps, entry.seq, at);
                entry.ticks.advance(now);
                let next = entry.ticks.due();
                match &mut run {
                    Some((run_due, list)) if *run_due == next => list.push(id),
                    _ => {
                        if let Some((run_due, list)) = run.take() {
                            state.file(run_due, list);
                        }
                        let mut list = state.spare.pop().unwrap_or_default();
                        list.push(id);
                        run = Some((next, list));
                    }
                }
            }
            if let Some((run_due, list)) = run {
                state.file(run_due, list);
            }
            state.recycle(ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_entrys_id_finds_nothing_once_its_slot_is_reused() {
        let mut entries = Entries::default();
        let a = entries.insert('a');
        let b = entries.insert('b');
        assert_ne!(a, b);
        assert_eq!(entries.remove(a), Some('a'));
        assert_eq!(entries.remove(a), None, "removed once");
        assert_eq!(entries.get_mut(a), None);
        // The freed slot is reused under a new id; the old id still finds nothing.
        let c = entries.insert('c');
        assert_ne!(c, a);
        assert_eq!(c as u32, a as u32, "same slot");
        assert_eq!(entries.get_mut(a), None);
        assert_eq!(entries.remove(a), None);
        assert_eq!(entries.get_mut(c), Some(&mut 'c'));
        assert_eq!(entries.get_mut(b), Some(&mut 'b'));
        assert_eq!(entries.get_mut(u64::MAX), None);
    }

    #[test]
    fn entries_take_room_for_a_quarter_more_than_they_hold() {
        let mut entries = Entries::default();
        for i in 0..5_000u32 {
            entries.insert(i);
            let (len, room) = (entries.slots.len(), entries.slots.capacity());
            assert!(room <= (len * 5 / 4 + 1).max(len + 16), "{room} for {len}");
        }
    }

    #[test]
    fn an_emptied_due_list_makes_the_next_one_and_a_long_one_is_let_go() {
        let mut state = State::default();
        let t = Instant::now();
        let mut room = Vec::with_capacity(64);
        room.push(7);
        let kept = room.as_ptr();
        state.recycle(room);
        state.schedule(t, 1);
        state.schedule(t, 2);
        assert!(state.spare.is_empty());
        let list = state.due.remove(&t).unwrap_or_default();
        assert_eq!(list, [1, 2], "emptied before reuse");
        assert_eq!(list.as_ptr(), kept, "the spare list's own room");
        state.recycle(Vec::with_capacity(SPARE_ROOM + 1));
        assert!(state.spare.is_empty());
        for _ in 0..SPARE_LISTS + 3 {
            state.recycle(Vec::with_capacity(4));
        }
        assert_eq!(state.spare.len(), SPARE_LISTS);
    }

    #[test]
    fn a_run_becomes_a_new_list_or_goes_at_the_end_of_the_one_there() {
        let mut state = State::default();
        let t = Instant::now();
        let run = vec![3, 4];
        let kept = run.as_ptr();
        state.file(t, run);
        assert_eq!(
            state.due.get(&t).map(Vec::as_ptr),
            Some(kept),
            "taken as the list"
        );
        state.spare.clear();
        state.file(t, vec![5]);
        state.schedule(t, 6);
        assert_eq!(
            state.due.get(&t).map(Vec::as_slice),
            Some(&[3, 4, 5, 6][..])
        );
        assert_eq!(
            state.spare.len(),
            1,
            "the run appended is kept for the next"
        );
    }

    #[test]
    fn ticks_go_to_the_next_point_of_the_grid() {
        let origin = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(on_grid(origin, origin), origin);
        assert_eq!(on_grid(origin, origin + ms(1)), origin + GRID);
        assert_eq!(on_grid(origin, origin + GRID), origin + GRID);
        assert_eq!(
            on_grid(origin, origin + GRID + Duration::from_nanos(1)),
            origin + GRID * 2
        );
        assert_eq!(on_grid(origin + ms(5), origin), origin + ms(5));
        for us in (0..50_000).step_by(777) {
            let at = origin + Duration::from_micros(us);
            let on = on_grid(origin, at);
            assert!(on >= at && on < at + GRID, "{us} µs went to {on:?}");
            assert_eq!((on - origin).as_nanos() % GRID.as_nanos(), 0);
        }
    }
}
