//! The outage history in the session database (issue 18 part 3): records as they stand, open
//! ones closed as `interrupted` when the store is opened again, filters and the cursor.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use pingscope::session::outages::{OutageQuery, OutageRecord, OutageStatus};
use pingscope::session::{Retention, Store, StoreOptions};

fn at(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn rec(target: &str, start: u64, last_lost: u64, lost: u64, status: OutageStatus) -> OutageRecord {
    OutageRecord {
        id: 0,
        target: target.to_owned(),
        ip: IpAddr::from([127, 0, 0, 1]),
        start: at(start),
        end: (status == OutageStatus::Ended).then(|| at(last_lost + 1)),
        last_lost: at(last_lost),
        lost,
        icmp_errors: 1,
        status,
        capture_session: None,
    }
}

fn query(target: Option<&str>) -> OutageQuery {
    OutageQuery {
        target: target.map(str::to_owned),
        limit: 50,
        ..OutageQuery::default()
    }
}

fn open(path: &std::path::Path) -> Store {
    Store::open(path, StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn outages_are_kept_as_they_stand_and_open_ones_come_back_interrupted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("pingscope.db");
    let store = open(&path);
    // `gw`: opened, grew, ended. `db`: opened and grew, then the daemon stops.
    store.record_outage(rec("gw", 10, 12, 3, OutageStatus::Open));
    store.record_outage(rec("gw", 10, 15, 6, OutageStatus::Open));
    store.record_outage(rec("gw", 10, 15, 6, OutageStatus::Ended));
    store.record_outage(rec("db", 20, 22, 3, OutageStatus::Open));
    store.record_outage(rec("db", 20, 24, 5, OutageStatus::Open));
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    let page = store
        .outages(query(None))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(&str, OutageStatus, u64)> = page
        .items
        .iter()
        .map(|r| (r.target.as_str(), r.status, r.lost))
        .collect();
    assert_eq!(
        got,
        [
            ("db", OutageStatus::Open, 5),
            ("gw", OutageStatus::Ended, 6)
        ]
    );
    assert_eq!(page.items[1].end, Some(at(16)));
    assert_eq!(page.items[0].end, None);
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
    drop(store);

    let store = open(&path);
    let page = store
        .outages(query(Some("db")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.items.len(), 1);
    let db = &page.items[0];
    assert_eq!(db.status, OutageStatus::Interrupted);
    assert_eq!((db.lost, db.icmp_errors), (5, 1));
    assert_eq!(db.end, Some(at(24)), "ends at its last lost probe");
    // A late write of the old outage does not bring it back.
    store.record_outage(rec("db", 20, 30, 9, OutageStatus::Open));
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    let again = store
        .outage(db.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("gone"));
    assert_eq!((again.status, again.lost), (OutageStatus::Interrupted, 5));
    let json = serde_json::to_value(&again).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["status"], "interrupted");
    assert_eq!(json["start"], "2027-01-15T08:00:20.000000Z");
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn filters_by_target_and_time_and_pages_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = open(&dir.path().join("pingscope.db"));
    for i in 0..7u64 {
        let target = if i % 2 == 0 { "even" } else { "odd" };
        store.record_outage(rec(target, i * 100, i * 100 + 10, 3, OutageStatus::Ended));
    }
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    let starts = |p: &pingscope::session::outages::OutagePage| -> Vec<u64> {
        p.items
            .iter()
            .map(|r| r.start.duration_since(at(0)).map_or(0, |d| d.as_secs()))
            .collect()
    };
    let mut q = query(Some("even"));
    q.limit = 3;
    let first = store
        .outages(q.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(starts(&first), [600, 400, 200]);
    q.before = first.next_cursor;
    let second = store.outages(q).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(starts(&second), [0]);
    assert_eq!(second.next_cursor, None);
    // Going on at or after 250 s (each ends 11 s after it began: 300 and later) and begun
    // before 450 s.
    let mut q = query(None);
    q.since = Some(at(250));
    q.until = Some(at(450));
    let window = store.outages(q).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(starts(&window), [400, 300]);
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn retention_applies_to_outages_as_to_sessions() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("pingscope.db");
    let store = open(&path);
    for i in 0..5u64 {
        store.record_outage(rec("t", i, i, 3, OutageStatus::Ended));
    }
    store.record_outage(rec("t", 99, 99, 3, OutageStatus::Open));
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
    drop(store);
    let opts = StoreOptions {
        retention: Retention {
            max_sessions: Some(2),
            max_age: None,
        },
        ..StoreOptions::default()
    };
    let store = Store::open(&path, opts).unwrap_or_else(|e| panic!("{e}"));
    let page = store
        .outages(query(None))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The open one was interrupted at open, then the newest two are kept.
    let starts: Vec<u64> = page
        .items
        .iter()
        .map(|r| r.start.duration_since(at(0)).map_or(0, |d| d.as_secs()))
        .collect();
    assert_eq!(starts, [99, 4]);
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}
