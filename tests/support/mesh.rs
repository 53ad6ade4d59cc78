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
