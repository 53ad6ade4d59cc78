//! Tests of the daemon state: typed reload outcomes, counters read at scrape time.

use super::*;
use crate::engine::fake::FakePinger;

fn write(path: &std::path::Path, targets: &str) {
    let db = path.with_file_name("sessions.db");
    let yaml = format!(
        "targets:\n{targets}sessions: {{database: {}}}\n",
        db.display()
    );
    std::fs::write(path, yaml).unwrap_or_else(|e| panic!("{e}"));
}

async fn app(path: &std::path::Path) -> App {
    let config = config::load_file(path).unwrap_or_else(|e| panic!("{e}"));
    let options = AppOptions {
        config_path: Some(path.to_owned()),
        ..AppOptions::default()
    };
    App::start(options, config, Arc::new(FakePinger::new()))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn reload_gauge(app: &App) -> bool {
    let text = app
        .metrics()
        .encode_text()
        .unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .any(|l| l == "pingscope_config_last_reload_successful 1")
}

#[tokio::test(start_paused = true)]
async fn reload_outcomes_are_typed_and_set_the_gauge() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("pingscope.yml");
    write(&path, "  - {host: 192.0.2.1}\n");
    let app = app(&path).await;
    assert!(reload_gauge(&app));

    write(&path, "  - {host: 192.0.2.1, bogus: 1}\n");
    let err = app.reload().await.err();
    assert!(
        matches!(&err, Some(ReloadError::Invalid { issues }) if issues.issues.len() == 1),
        "{err:?}"
    );
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.starts_with("config reload rejected; the running config stays:\n")
            && text.contains("targets[0].bogus: unknown key"),
        "{text}"
    );
    assert!(!reload_gauge(&app));

    write(&path, "  - {host: 192.0.2.1}\n  - {host: 192.0.2.2}\n");
    let ok = app.reload().await.map(|r| r.to_string());
    assert_eq!(
        ok.ok().as_deref(),
        Some("config reloaded: 2 targets (1 added, 0 changed, 0 removed)")
    );
    assert!(reload_gauge(&app));
    app.shutdown().await;
}

fn counter(app: &App, name: &str) -> Option<u64> {
    let text = app
        .metrics()
        .encode_text()
        .unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

// The engine's and the store's own counters reach /metrics, read at scrape time.
#[tokio::test(start_paused = true)]
async fn engine_and_store_counters_are_exported() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("pingscope.yml");
    write(&path, "  - {host: 192.0.2.1}\n");
    let config = config::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let fake = FakePinger::new();
    let app = App::start(AppOptions::default(), config, Arc::new(fake.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dropped = "pingscope_engine_events_dropped_total";
    let unmatched = "pingscope_engine_unmatched_packets_total";
    let samples = "pingscope_session_samples_dropped_total";
    assert_eq!(counter(&app, dropped), Some(0));
    assert_eq!(counter(&app, unmatched), Some(0));
    assert_eq!(counter(&app, samples), Some(0));
    fake.set_counters(crate::engine::EngineCounters {
        events_dropped: 3,
        unmatched_packets: 7,
        ..Default::default()
    });
    assert_eq!(counter(&app, dropped), Some(3));
    assert_eq!(counter(&app, unmatched), Some(7));
    // Opening the store hands its counter to the registry (moving it needs a stalled
    // writer: tests/session_store.rs checks the reader against the store's count).
    assert!(app.sessions().await.is_ok());
    assert_eq!(counter(&app, samples), Some(0));
    app.shutdown().await;
}
