//! The manager against the fake pinger: what a request dropped half-way leaves behind.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::*;
use crate::engine::fake::{FakePinger, Step};
use crate::session::StoreOptions;

fn request(target: &str) -> StartRequest {
    StartRequest {
        target: target.to_owned(),
        count: Some(2),
        interval: Some("100ms".to_owned()),
        ..StartRequest::default()
    }
}

/// Polls `fut` once and drops it, as a server does with a handler whose client went away.
fn poll_once_and_drop<F: Future>(fut: F) -> bool {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(fut.as_mut().poll(&mut cx), Poll::Ready(_))
}

#[tokio::test]
async fn a_start_dropped_half_way_neither_keeps_its_slot_nor_leaves_a_running_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
    let fake = FakePinger::new();
    let ip: IpAddr = "198.18.0.1".parse().unwrap();
    fake.script(
        ip,
        vec![Step::Reply {
            rtt: Duration::from_millis(1),
            ttl: 64,
        }],
    );
    let manager = SessionManager::new(store, Arc::new(fake));
    let mut config = Config::embedded_default();
    config.sessions.max_active = 1;
    // A literal: nothing to ask a name server.
    let resolver = Resolver::with_servers(&[SocketAddr::from(([127, 0, 0, 1], 9))]).unwrap();

    let done = poll_once_and_drop(manager.start(request("198.18.0.1"), &config, &resolver));
    assert!(
        !done,
        "the start went to the store, so its first poll waits"
    );

    // The session that was let in runs to its end and gives its slot back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while manager.active() > 0 {
        assert!(
            Instant::now() < deadline,
            "the slot of a dropped start is still taken after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page = manager.store().list(10, None).await.unwrap();
    assert_eq!(page.items.len(), 1, "{page:?}");
    assert_eq!(page.items[0].status, SessionStatus::Completed);

    // And the next start gets the slot.
    let next = manager
        .start(request("198.18.0.1"), &config, &resolver)
        .await;
    assert!(next.is_ok(), "{next:?}");
}
