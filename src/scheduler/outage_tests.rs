//! Tests of the outage tracker and of an address's outage state (src/scheduler/outage.rs).

use super::*;
use std::time::Duration;

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + s)
}

// Every address keeps one, tens of thousands at once: a budget, so that growth is a choice
// (the run and the open outage are boxed: 160 bytes inline before; the one pending entry
// inline, 24 bytes, instead of a ring of four on the heap).
#[test]
fn an_outage_tracker_stays_small() {
    let size = std::mem::size_of::<OutageTracker>();
    assert!(size <= 104, "{size}");
    let mut tr = OutageTracker::new(OutageRule { after: 2, until: 1 });
    let mut out = Vec::new();
    // One probe in flight at a time, its send noted before or after it settles.
    for seq in 1..=100 {
        let lost = Outcome::Lost { icmp_error: false };
        if seq % 2 == 0 {
            tr.sent(seq, t(seq), &mut out);
            tr.settled(seq, lost, &mut out);
        } else {
            tr.settled(seq, Outcome::Reply, &mut out);
            tr.sent(seq, t(seq), &mut out);
        }
    }
    assert_eq!(tr.pending.heap_bytes(), 0);
    assert!(tr.pending.is_empty());
}

/// Feeds `pattern` ('.' reply, 'x' timeout, 'e' ICMP error) in order, one probe a second,
/// and returns the changes with the second they happened at.
fn run(rule: (u32, u32), pattern: &str) -> Vec<(usize, Change)> {
    let mut tr = OutageTracker::new(OutageRule {
        after: rule.0,
        until: rule.1,
    });
    let mut all = Vec::new();
    for (i, c) in pattern.chars().enumerate() {
        let mut out = Vec::new();
        let seq = i as u64 + 1;
        tr.sent(seq, t(seq), &mut out);
        let outcome = match c {
            '.' => Outcome::Reply,
            'e' => Outcome::Lost { icmp_error: true },
            _ => Outcome::Lost { icmp_error: false },
        };
        tr.settled(seq, outcome, &mut out);
        all.extend(out.into_iter().map(|c| (i, c)));
    }
    all
}

fn summary(changes: &[(usize, Change)]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|(i, c)| match c {
            Change::Opened(s) => Some(format!("open@{i} lost={}", s.lost)),
            Change::Closed(s) => Some(format!(
                "close@{i} start={} end={} lost={} icmp={}",
                s.start.duration_since(t(0)).map_or(0, |d| d.as_secs()),
                s.end
                    .and_then(|e| e.duration_since(t(0)).ok())
                    .map_or(0, |d| d.as_secs()),
                s.lost,
                s.icmp_errors
            )),
            Change::Grew(_) => None,
        })
        .collect()
}

#[test]
fn scenarios() {
    let cases: &[((u32, u32), &str, &[&str])] = &[
        // Two lost in a row is not an outage with after 3.
        ((3, 3), "..xx..xx..", &[]),
        // Three are; it ends at the first of three replies; start is the first lost probe.
        (
            (3, 3),
            "..xxx...",
            &["open@4 lost=3", "close@7 start=3 end=6 lost=3 icmp=0"],
        ),
        // Flapping inside the outage does not open a second one, and its losses count.
        (
            (3, 3),
            "xxx.x..xx...",
            &["open@2 lost=3", "close@11 start=1 end=10 lost=6 icmp=0"],
        ),
        // ICMP errors are losses, counted apart.
        (
            (2, 1),
            ".ex.",
            &["open@2 lost=2", "close@3 start=2 end=4 lost=2 icmp=1"],
        ),
        // after 1, until 1: every lost run is an outage.
        (
            (1, 1),
            "x.x.",
            &[
                "open@0 lost=1",
                "close@1 start=1 end=2 lost=1 icmp=0",
                "open@2 lost=1",
                "close@3 start=3 end=4 lost=1 icmp=0",
            ],
        ),
        // Still open at the end.
        ((2, 5), "xx....", &["open@1 lost=2"]),
    ];
    for (rule, pattern, want) in cases {
        let got = summary(&run(*rule, pattern));
        assert_eq!(&got, want, "rule {rule:?} pattern {pattern}");
    }
}

#[test]
fn probes_count_in_sending_order_not_settling_order() {
    // Timeouts settle after later probes' replies: 1..=3 lost, 4 answered, but 4's reply
    // comes before 1's timeout. In settling order there would be no three in a row.
    let mut tr = OutageTracker::new(OutageRule { after: 3, until: 1 });
    let mut out = Vec::new();
    for seq in 1..=4 {
        tr.sent(seq, t(seq), &mut out);
    }
    tr.settled(4, Outcome::Reply, &mut out);
    assert!(out.is_empty());
    tr.settled(1, Outcome::Lost { icmp_error: false }, &mut out);
    tr.settled(3, Outcome::Lost { icmp_error: false }, &mut out);
    assert!(out.is_empty(), "2 has not settled yet: {out:?}");
    tr.settled(2, Outcome::Lost { icmp_error: false }, &mut out);
    let kinds: Vec<&str> = out
        .iter()
        .map(|c| match c {
            Change::Opened(_) => "opened",
            Change::Grew(_) => "grew",
            Change::Closed(_) => "closed",
        })
        .collect();
    assert_eq!(kinds, ["opened", "closed"]);
}

#[test]
fn nothing_is_noted_after_the_address_went_away() -> Result<(), Box<dyn std::error::Error>> {
    use crate::session::outages::OutageNote;
    let config = crate::config::parse_str(
        "targets:\n  - {host: 192.0.2.1, outage: {after: 2, until: 1}}\n",
        "t.yml",
        std::path::Path::new(""),
    )?;
    let cfg = &config.targets[0];
    let ip = IpAddr::from([192, 0, 2, 1]);
    let labels = crate::metrics::TargetLabels::new(cfg.name.clone(), ip, Vec::new())?;
    let metrics = crate::metrics::Metrics::new(Default::default())?;
    let (log, mut rx) = OutageLog::new(16);
    let mut a = AddressOutage::new(cfg, metrics.outage(&labels));
    let of = Of { cfg, ip, log: &log };
    let lost = Outcome::Lost { icmp_error: false };
    for seq in 1..=4 {
        a.sent(of, seq, t(seq));
    }
    a.settled(of, 1, lost);
    a.settled(of, 2, lost);
    a.interrupt(of);
    // 3 and 4 were in flight: their timeouts come after the address went away.
    a.settled(of, 3, lost);
    a.settled(of, 4, lost);
    let statuses: Vec<OutageStatus> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|n| match n {
            OutageNote::Outage { rec, .. } => {
                // The record names the address it was given.
                assert_eq!((rec.target.as_str(), rec.ip), (&*cfg.name, ip));
                Some(rec.status)
            }
            OutageNote::LossCrossed { .. } => None,
        })
        .collect();
    assert_eq!(statuses, [OutageStatus::Open, OutageStatus::Interrupted]);
    Ok(())
}

#[test]
fn a_reply_before_its_send_is_recorded_waits_and_a_skipped_send_is_no_probe() {
    let mut tr = OutageTracker::new(OutageRule { after: 2, until: 1 });
    let mut out = Vec::new();
    // The engine may deliver a loopback reply before the tick loop notes the send.
    tr.settled(1, Outcome::Lost { icmp_error: false }, &mut out);
    tr.sent(1, t(1), &mut out);
    tr.skipped(2, &mut out);
    tr.sent(3, t(3), &mut out);
    tr.settled(3, Outcome::Lost { icmp_error: false }, &mut out);
    assert!(matches!(&out[..], [Change::Opened(s)] if s.lost == 2 && s.start == t(1)));
    assert_eq!(tr.consecutive_lost(), 2);
    assert!(tr.pending.is_empty());
}

#[test]
fn probes_that_never_settle_are_taken_as_lost_past_the_bound() {
    let mut tr = OutageTracker::new(OutageRule { after: 3, until: 1 });
    let mut out = Vec::new();
    let n = MAX_PENDING as u64 + 2;
    for seq in 1..=n {
        tr.sent(seq, t(seq), &mut out);
    }
    // The two oldest went as lost to make room; the rest still wait.
    assert_eq!(tr.pending.len(), MAX_PENDING);
    assert_eq!(tr.consecutive_lost(), 2);
    assert!(out.is_empty());
    // A sequence far ahead (a bug elsewhere) takes everything before it, with no gap left.
    tr.sent(n + 10 * MAX_PENDING as u64, t(1), &mut out);
    assert!(tr.pending.len() <= MAX_PENDING);
    assert!(matches!(&out[0], Change::Opened(s) if s.start == t(1) && s.lost == 3));
    assert_eq!(tr.consecutive_lost(), n);
}
