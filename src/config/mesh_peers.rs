//! Which peers a mesh instance pings (issue 19, mesh mode): with `max_peers: k` each instance
//! pings k of the others, chosen so that every instance is pinged by exactly k, the choice is
//! the same on every instance that sees the same member list, and a member joining or leaving
//! changes the choice of only the k members before it.
//!
//! The members (peer addresses or names, the instance itself included) are placed on a ring
//! ordered by FNV-1a 64 of their bytes (ties by the bytes), as `--shard` hashes target names;
//! an instance pings the k members that follow it on the ring. Top-k rendezvous hashing per
//! instance would also be stable, but leaves members pinged by nobody at small k (3 members,
//! k = 1: only 2 of the 8 equally likely choices form a cycle, so 3 times in 4 someone is left
//! out); the ring guarantees that every member is pinged by exactly k.
//!
//! Only the choice is here: the `mesh:` block is [`super::mesh`], discovery and the `source`
//! label are `crate::mesh`.

use super::shard::fnv1a64;

/// The peers `me` pings among `members` (which may or may not list `me`): at most `max_peers`,
/// never `me`, in ring order. Duplicates in `members` count once.
pub fn ring_peers<'a, T: AsRef<[u8]> + Ord>(
    members: &'a [T],
    me: &T,
    max_peers: usize,
) -> Vec<&'a T> {
    let key = |m: &T| (fnv1a64(m.as_ref()), m.as_ref().to_vec());
    let mut ring: Vec<&T> = members.iter().filter(|m| *m != me).collect();
    ring.sort_by_cached_key(|m| key(m));
    ring.dedup();
    let mine = key(me);
    // The first member after `me` on the ring, wrapping around.
    let start = ring.partition_point(|m| key(m) < mine);
    (0..ring.len().min(max_peers))
        .map(|i| ring[(start + i) % ring.len()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("pingscope-{i}")).collect()
    }

    /// member -> how many members ping it.
    fn in_degrees(members: &[String], k: usize) -> BTreeMap<String, usize> {
        let mut d: BTreeMap<String, usize> = members.iter().map(|m| (m.clone(), 0)).collect();
        for me in members {
            for p in ring_peers(members, me, k) {
                *d.entry(p.clone()).or_default() += 1;
            }
        }
        d
    }

    #[test]
    fn three_members_one_peer_each_cover_everyone() {
        let m = names(3);
        for me in &m {
            let peers = ring_peers(&m, me, 1);
            assert_eq!(peers.len(), 1);
            assert_ne!(peers[0], me);
        }
        assert!(in_degrees(&m, 1).values().all(|&d| d == 1));
    }

    #[test]
    fn enough_peers_make_a_full_mesh_without_self() {
        let m = names(3);
        for me in &m {
            let mut peers: Vec<&String> = ring_peers(&m, me, 16);
            peers.sort();
            let mut others: Vec<&String> = m.iter().filter(|x| *x != me).collect();
            others.sort();
            assert_eq!(peers, others);
        }
    }

    #[test]
    fn every_member_pings_k_distinct_others_and_is_pinged_by_k() {
        for n in 1..40 {
            let m = names(n);
            for k in 0..6 {
                let want = k.min(n.saturating_sub(1));
                for me in &m {
                    let peers = ring_peers(&m, me, k);
                    assert_eq!(peers.len(), want, "n={n} k={k}");
                    assert!(!peers.contains(&me));
                    let mut uniq = peers.clone();
                    uniq.sort();
                    uniq.dedup();
                    assert_eq!(uniq.len(), want);
                }
                assert!(
                    in_degrees(&m, k).values().all(|&d| d == want),
                    "n={n} k={k}"
                );
            }
        }
    }

    #[test]
    fn the_choice_ignores_order_and_duplicates_and_works_for_an_unlisted_self() {
        let m = names(10);
        let mut shuffled = m.clone();
        shuffled.reverse();
        shuffled.push(m[3].clone());
        for me in &m {
            assert_eq!(ring_peers(&m, me, 3), ring_peers(&shuffled, me, 3));
        }
        // An instance not (yet) in the list still picks k of the others.
        let outsider = "pingscope-99".to_owned();
        assert_eq!(ring_peers(&m, &outsider, 3).len(), 3);
    }

    #[test]
    fn a_joining_member_changes_only_the_k_choices_before_it() {
        let k = 2;
        let before = names(20);
        let mut after = before.clone();
        after.push("pingscope-20".to_owned());
        let changed = before
            .iter()
            .filter(|me| ring_peers(&before, me, k) != ring_peers(&after, me, k))
            .count();
        assert!(changed <= k, "{changed} members changed their peers");
    }

    #[test]
    fn addresses_work_as_members() {
        let m: Vec<[u8; 4]> = (1..=5).map(|i| [127, 0, 0, i]).collect();
        assert!(ring_peers(&m, &m[0], 2).iter().all(|p| **p != m[0]));
    }
}
