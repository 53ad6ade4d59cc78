//! The one test DNS server: `hickory-server` on 127.0.0.1 (UDP and TCP, same port), answering A
//! and AAAA from a zone the test changes while it runs, and PTR for addresses given names with
//! [`DnsServer::set_ptr`].
//!
//! A name not in the zone gets NXDOMAIN; a known name without records of the asked type gets an
//! empty NOERROR answer (NODATA); a name marked [`DnsServer::silence`] gets no answer at all.
//! Every query received is counted. Start it after `TestNet::enter` and it listens on that
//! namespace's loopback. It runs on a thread of its own, so sync and async tests use it alike;
//! dropping it stops that thread.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_server::ServerFuture;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Header, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, PTR};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// TTL of records set without one: short, so a daemon re-resolves about every second.
pub const DEFAULT_TTL: u32 = 1;

#[derive(Debug, Default)]
struct Zone {
    /// Lower-case name without the final dot -> (address, TTL).
    records: HashMap<String, Vec<(IpAddr, u32)>>,
    silent: HashSet<String>,
    /// Reverse name (`1.0.18.198.in-addr.arpa`, lower case, no final dot) -> (name, TTL).
    ptr: HashMap<String, (String, u32)>,
}

#[derive(Debug)]
struct Handler {
    // One lock, held only to copy a name's records out: tests only.
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicUsize>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        header.set_recursion_available(true);
        let Ok(info) = request.request_info() else {
            header.set_response_code(ResponseCode::FormErr);
            return header.into();
        };
        let name = key(&info.query.name().to_string());
        let qtype = info.query.query_type();
        let owner = info.query.original().name().clone();
        let (found, ptr) = {
            let zone = self.zone.lock();
            if zone.silent.contains(&name) {
                return header.into();
            }
            (
                zone.records.get(&name).cloned(),
                zone.ptr.get(&name).cloned(),
            )
        };
        let found = match (found, ptr) {
            (None, Some((target, ttl))) => {
                let answers = if qtype == RecordType::PTR {
                    let target = Name::from_utf8(format!("{target}."))
                        .unwrap_or_else(|e| panic!("PTR target {target:?}: {e}"));
                    vec![Record::from_rdata(
                        owner.clone(),
                        ttl,
                        RData::PTR(PTR(target)),
                    )]
                } else {
                    Vec::new()
                };
                let builder = MessageResponseBuilder::from_message_request(request);
                let message = builder.build(header, answers.iter(), [], [], []);
                return match response.send_response(message).await {
                    Ok(info) => info,
                    Err(_) => header.into(),
                };
            }
            (found, _) => found,
        };
        let answers: Vec<Record> = match found {
            None => {
                header.set_response_code(ResponseCode::NXDomain);
                Vec::new()
            }
            Some(records) => records
                .into_iter()
                .filter_map(|(ip, ttl)| {
                    let rdata = match (ip, qtype) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                        _ => return None,
                    };
                    Some(Record::from_rdata(owner.clone(), ttl, rdata))
                })
                .collect(),
        };
        let builder = MessageResponseBuilder::from_message_request(request);
        let message = builder.build(header, answers.iter(), [], [], []);
        match response.send_response(message).await {
            Ok(info) => info,
            Err(_) => header.into(),
        }
    }
}

/// A running server; see the module docs.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicUsize>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    /// An empty zone (every name NXDOMAIN) on a free port of 127.0.0.1.
    pub fn start() -> DnsServer {
        Self::start_on("127.0.0.1:0".parse().expect("an address"))
    }

    /// As [`DnsServer::start`], on `bind` (port 0: a free one), e.g. a test network's hub
    /// address that several namespaces reach.
    pub fn start_on(bind: SocketAddr) -> DnsServer {
        // Bound here, on the caller's thread, so the sockets live in its network namespace.
        let udp = std::net::UdpSocket::bind(bind).expect("binding the test DNS server");
        let addr = udp.local_addr().expect("the DNS server's address");
        let tcp = std::net::TcpListener::bind(addr).expect("binding the test DNS server (TCP)");
        udp.set_nonblocking(true).expect("non-blocking UDP");
        tcp.set_nonblocking(true).expect("non-blocking TCP");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let handler = Handler {
            zone: zone.clone(),
            queries: queries.clone(),
        };
        let token = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the DNS server");
            rt.block_on(async move {
                let mut server = ServerFuture::new(handler);
                server.register_socket(tokio::net::UdpSocket::from_std(udp).expect("UDP socket"));
                server.register_listener(
                    tokio::net::TcpListener::from_std(tcp).expect("TCP listener"),
                    Duration::from_secs(5),
                );
                token.cancelled().await;
                let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown_gracefully())
                    .await;
            });
        });
        DnsServer {
            addr,
            zone,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    /// A server already holding `name -> addresses` (default TTL).
    pub fn with(records: &[(&str, &[&str])]) -> DnsServer {
        let dns = DnsServer::start();
        for (name, addrs) in records {
            dns.set(name, addrs);
        }
        dns
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received so far (answered or not).
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }

    /// `name` resolves to `addrs` (literals) with [`DEFAULT_TTL`]; an empty list is NODATA.
    pub fn set(&self, name: &str, addrs: &[&str]) {
        self.set_ttl(name, addrs, DEFAULT_TTL);
    }

    /// `name` resolves to `addrs` with this TTL, replacing what it had.
    pub fn set_ttl(&self, name: &str, addrs: &[&str], ttl: u32) {
        let records = addrs.iter().map(|a| (parse(a), ttl)).collect();
        let mut zone = self.zone.lock();
        zone.silent.remove(&key(name));
        zone.records.insert(key(name), records);
    }

    /// Adds `addrs` with this TTL to what `name` has (for different TTLs per family).
    pub fn add(&self, name: &str, addrs: &[&str], ttl: u32) {
        let mut zone = self.zone.lock();
        let entry = zone.records.entry(key(name)).or_default();
        entry.extend(addrs.iter().map(|a| (parse(a), ttl)));
    }

    /// `name` is no longer in the zone: NXDOMAIN.
    pub fn remove(&self, name: &str) {
        let mut zone = self.zone.lock();
        zone.records.remove(&key(name));
        zone.silent.remove(&key(name));
    }

    /// `ip` points back to `name` (a PTR record, [`DEFAULT_TTL`]).
    pub fn set_ptr(&self, ip: &str, name: &str) {
        let reverse = key(&Name::from(parse(ip)).to_string());
        self.zone.lock().ptr.insert(
            reverse,
            (name.trim_end_matches('.').to_owned(), DEFAULT_TTL),
        );
    }

    /// Queries for `name` are never answered.
    pub fn silence(&self, name: &str) {
        self.zone.lock().silent.insert(key(name));
    }
}

fn parse(addr: &str) -> IpAddr {
    addr.parse()
        .unwrap_or_else(|e| panic!("{addr:?} is not an address literal: {e}"))
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
