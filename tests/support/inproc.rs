//! The API in-process, without root: `App` with the scripted fake pinger, its router in the
//! daemon's layers, served on 127.0.0.1:0 by a runtime on a thread of its own (so the tests stay
//! synchronous and use the same blocking client as against the daemon). Nothing here opens an
//! ICMP socket; unscripted addresses time out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

// The one place that names the module of `App`.
use pingscope::engine::fake::FakePinger;
use pingscope::http::serve::{ServeOptions, layered, serve_with};
use pingscope::state::{App, AppOptions};
use tokio_util::sync::CancellationToken;

use super::api::Endpoint;

/// A running in-process API; stopped (app shut down, server closed) when dropped.
#[derive(Debug)]
pub struct InProcess {
    addr: SocketAddr,
    /// The fake network: script addresses on it, read how many probes it was asked for.
    pub fake: FakePinger,
    dir: tempfile::TempDir,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Endpoint for InProcess {
    fn url(&self, path: &str) -> String {
        InProcess::url(self, path)
    }
}

impl InProcess {
    /// Parses `config` (`{{DIR}}` in it becomes a temp dir that lives as long as the server)
    /// and serves it with default options.
    pub fn start(config: &str) -> InProcess {
        Self::start_with(config, AppOptions::default())
    }

    /// As [`InProcess::start`], with these options.
    pub fn start_with(config: &str, options: AppOptions) -> InProcess {
        let dir = tempfile::tempdir().expect("a temp dir for the in-process app");
        let text = config.replace("{{DIR}}", &dir.path().display().to_string());
        let config = pingscope::config::parse_str(&text, "pingscope.yml", dir.path())
            .unwrap_or_else(|e| panic!("the test config is invalid: {e}\n{text}"));
        let fake = FakePinger::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the listener's address");
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (pinger, token) = (fake.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the in-process app");
            rt.block_on(async move {
                let app = match App::start(options, config, Arc::new(pinger)).await {
                    Ok(app) => app,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                let opts = ServeOptions::default();
                let router = layered(pingscope::http::router(app.clone()), &opts);
                let http = CancellationToken::new();
                let server = tokio::spawn(serve_with(
                    vec![listener],
                    router,
                    http.clone(),
                    Duration::from_secs(1),
                    opts,
                ));
                let _ = ready_tx.send(Ok(()));
                token.cancelled().await;
                app.shutdown().await;
                http.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
            });
        });
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("App::start failed: {e}"),
            Err(e) => panic!("the in-process app did not start: {e}"),
        }
        InProcess {
            addr,
            fake,
            dir,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The temp dir `{{DIR}}` stood for.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
