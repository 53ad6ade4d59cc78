//! Several network namespaces joined on one test network, for daemons that ping each other.
//!
//! A hub namespace holds a bridge with [`HUB_ADDR`]; each member namespace holds `lo` and one
//! end of a veth pair (`eth0`, `198.18.0.N/24`, N from 1) whose other end is a port of the
//! bridge. Nothing else: traffic to 198.18.0.0/24 stays inside these namespaces. A test runs a
//! [`super::dns::DnsServer`] on the hub's address (every member reaches it) and starts each
//! daemon from a thread that entered its member namespace ([`MeshNet::enter`]). Dropping the
//! net deletes the namespaces, and with them the veth pairs and the bridge.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::daemon::Daemon;
use super::dns::DnsServer;
use super::run_checked;

/// The hub's address on the bridge.
pub const HUB_ADDR: &str = "198.18.0.254";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running mesh network; see the module docs.
#[derive(Debug)]
pub struct MeshNet {
    hub: String,
    members: Vec<String>,
}

impl MeshNet {
    /// A hub and `n` members (at most 200), all links up.
    pub fn start(n: usize) -> MeshNet {
        assert!((1..=200).contains(&n), "1 to 200 members");
        super::remove_stale_namespaces();
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let hub = format!("psn-{pid}-{k}hub");
        let mut net = MeshNet {
            hub: hub.clone(),
            members: Vec::new(),
        };
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HUB_ADDR}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("psn-{pid}-{k}m{i}");
            ip(&["netns", "add", &ns]);
            net.members.push(ns.clone());
            let port = format!("vh{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    /// Member `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("198.18.0.{}", i + 1)
    }

    /// Every member's address.
    pub fn addrs(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.addr(i)).collect()
    }

    /// Moves the calling thread into member `i`'s namespace.
    pub fn enter(&self, i: usize) {
        super::enter_namespace(&self.members[i]);
    }

    /// Moves the calling thread into the hub's namespace.
    pub fn enter_hub(&self) {
        super::enter_namespace(&self.hub);
    }
}

fn ip(args: &[&str]) {
    run_checked(Command::new("ip").args(args));
}

impl Drop for MeshNet {
    fn drop(&mut self) {
        for ns in self.members.iter().chain(std::iter::once(&self.hub)) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Daemons on a [`MeshNet`], one per member, with the DNS server on the hub.
#[derive(Debug)]
pub struct Fleet {
    pub net: MeshNet,
    pub dns: DnsServer,
    pub daemons: Vec<Daemon>,
    dirs: Vec<tempfile::TempDir>,
}

impl Fleet {
    /// `n` members; `name` resolves to all of them with `ttl`. Daemon `i` runs `config(i, dns)`
    /// and also listens on its member address at pingscope's default port (where the mesh view
    /// asks it). Each is started from a thread inside its namespace, and its HTTP client made
    /// there. `None` where the test may not run (support::require_root).
    pub fn start(
        n: usize,
        name: &str,
        ttl: u32,
        config: impl Fn(usize, std::net::SocketAddr) -> String,
    ) -> Option<Fleet> {
        if !super::require_root() {
            return None;
        }
        let net = MeshNet::start(n);
        net.enter_hub();
        let dns = DnsServer::start_on(format!("{HUB_ADDR}:0").parse().expect("an address"));
        let addrs = net.addrs();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        dns.set_ttl(name, &addrs, ttl);
        let mut daemons = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            net.enter(i);
            let dir = tempfile::tempdir().expect("a temp dir");
            let path = super::write_config(dir.path(), "serve.yml", &config(i, dns.addr()));
            let web = format!("{}:{}", net.addr(i), pingscope::DEFAULT_PORT);
            let d = Daemon::start(&path, &["--web.listen-address", &web]);
            let _ = d.http();
            daemons.push(d);
            dirs.push(dir);
        }
        Some(Fleet {
            net,
            dns,
            daemons,
            dirs,
        })
    }

    /// Replaces daemon `i`'s config file (reload it to apply).
    pub fn rewrite_config(&self, i: usize, text: &str) {
        super::write_config(self.dirs[i].path(), "serve.yml", text);
    }
}
