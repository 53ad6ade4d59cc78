//! The receive side of the engine: the timer task that expires deadlines, and each socket's
//! receive task (replies, ICMP errors and TX timestamps from the error queue).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Times out probes as their deadlines pass: one task and one sleep for every probe.
pub(super) async fn timer_task(shared: Arc<Shared>) {
    loop {
        // Armed under the table's lock, so a sender sees either this deadline or the one
        // before, and wakes the task when its probe is due sooner (a wake-up that comes before
        // the task waits is kept by `Notify` as a permit).
        let next = shared.table.lock().arm();
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.instant().into()) => {}
                    () = shared.timer.notified() => {}
                }
            }
            None => shared.timer.notified().await,
        }
        // Delivered under the lock, like every event, so a late reply read meanwhile by a
        // receive task cannot overtake its probe's timeout in the sink.
        let now = shared.clock.pair();
        let mut table = shared.table.lock();
        let expired = table.expire(now.mono, now.wall);
        shared.deliver(expired);
    }
}

/// Packets read per wake-up before yielding to other tasks.
const BATCH: usize = 1024;
/// Largest ICMP message we read in full (IP header + 64 KiB payload fits).
const RECV_BUF: usize = 65_536 + 60;

/// The receive task's buffers: one batch for the normal queue and one for the error queue,
/// which a reply may need read while the normal batch is still in use.
struct Buffers {
    data: RecvBatch,
    err: RecvBatch,
}

/// Reads every packet of one socket and settles the probes they answer.
pub(super) async fn receive_task(sock: Arc<IcmpSocket>, shared: Arc<Shared>) {
    let mut b = Buffers {
        data: RecvBatch::new(socket::MAX_BATCH, RECV_BUF),
        err: RecvBatch::new(socket::MAX_BATCH, RECV_BUF),
    };
    loop {
        let mut guard = match sock.fd.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "ICMP socket readiness failed; receive task ends");
                return;
            }
        };
        // The error queue first: a TX timestamp is queued before the reply to its request.
        let errq_done = !sock.has_errqueue() || drain_err(&sock, &shared, &mut b.err);
        let normal_done = drain(&sock, &shared, &mut b);
        if normal_done && errq_done {
            // Clears only the readiness this guard saw: a packet queued after the last read
            // raised a new one, so a read that found the queue short of a batch loses nothing.
            guard.clear_ready();
        } else {
            // Keep the readiness and let other tasks run before the next batch.
            drop(guard);
            tokio::task::yield_now().await;
        }
    }
}

/// Counts a `recvmsg` failure unless it only reports a pending ICMP error; true when the
/// queue should be left for now.
fn recv_failed(sock: &IcmpSocket, shared: &Shared, e: &std::io::Error, errqueue: bool) {
    // Datagram sockets with IP_RECVERR also report a pending ICMP error as the return of a
    // plain recvmsg; the error queue read that follows carries it.
    if !(sock.kind == SocketKind::Dgram && socket::is_pending_icmp_error(e)) {
        bump(&shared.counters.receive_errors);
    }
    tracing::trace!(error = %e, errqueue, "recvmsg failed");
}

/// Reads up to [`BATCH`] messages of the normal queue, a `recvmmsg` at a time; true when it
/// is empty. The pair read after a `recvmmsg` is every message's user-space receive time: each
/// was queued before the call.
fn drain(sock: &IcmpSocket, shared: &Shared, b: &mut Buffers) -> bool {
    let mut read = 0;
    while read < BATCH {
        match b.data.read(sock.fd.get_ref(), false) {
            Ok(n) => {
                let at = shared.clock.pair();
                read += n;
                for (data, rx) in (0..n).filter_map(|i| b.data.message(i)) {
                    handle_packet(sock, shared, data, &rx, at, &mut b.err);
                }
                if !b.data.filled() {
                    // The queue ran dry during the read: no second call to hear it again. A
                    // packet queued since raises the readiness anew (see `receive_task`).
                    return true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                recv_failed(sock, shared, &e, false);
                return true;
            }
        }
    }
    false
}

/// Reads up to [`BATCH`] messages of the error queue, a `recvmmsg` at a time; true when it is
/// empty.
fn drain_err(sock: &IcmpSocket, shared: &Shared, err: &mut RecvBatch) -> bool {
    let mut read = 0;
    while read < BATCH {
        match err.read(sock.errqueue_socket(), true) {
            Ok(n) => {
                let at = shared.clock.pair();
                read += n;
                for (data, rx) in (0..n).filter_map(|i| err.message(i)) {
                    handle_errqueue(sock, shared, data, &rx, at);
                }
                if !err.filled() {
                    return true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                recv_failed(sock, shared, &e, true);
                read += 1;
            }
        }
    }
    false
}

/// The receive side of a reply: the pair read after `recvmsg`, and the kernel's timestamp or
/// why there is none.
fn recv_times(sock: &IcmpSocket, rx: &Received, at: ClockPair) -> RecvTimes {
    let kernel = match (sock.timestamps.rx, rx.kernel_time) {
        (None, Some(t)) => Stamp::Kernel(t),
        (None, None) if rx.cmsg_error => Stamp::User(Fallback::ControlMessage),
        (None, None) => Stamp::User(Fallback::Missing),
        (Some(why), _) => Stamp::User(why),
    };
    RecvTimes { user: at, kernel }
}

fn handle_packet(
    sock: &IcmpSocket,
    shared: &Shared,
    data: &[u8],
    rx: &Received,
    at: ClockPair,
    err: &mut RecvBatch,
) {
    let times = recv_times(sock, rx, at);
    let parsed = match (sock.v6, sock.kind) {
        (false, SocketKind::Raw) => packet::parse_ipv4_packet(data)
            .map(|(ip, m)| (Some(ip.ttl), Some(IpAddr::V4(ip.src)), m)),
        (false, SocketKind::Dgram) => packet::parse_icmpv4(data).map(|m| (rx.ttl, rx.from, m)),
        (true, _) => packet::parse_icmpv6(data).map(|m| (rx.ttl, rx.from, m)),
    };
    let (ttl, from, msg) = match parsed {
        Ok(p) => p,
        Err(e) => {
            bump(&shared.counters.malformed_packets);
            tracing::trace!(error = %e, "malformed ICMP packet ignored");
            return;
        }
    };
    let Some(from) = from else { return };
    match msg {
        Icmp::EchoReply(echo) => {
            let stamp = packet::read_stamp(echo.payload);
            if echo.ident != sock.ident || stamp == PayloadStamp::Foreign {
                bump(&shared.counters.unmatched_packets);
                return;
            }
            let key = echo_key(from, &echo);
            let size = packet::ECHO_HEADER_LEN + echo.payload.len();
            let wait_tx = sock.tx_kernel.load(Ordering::Relaxed);
            let mut outcome = shared
                .table
                .lock()
                .reply(key, stamp, &times, ttl, size, wait_tx);
            if let (ReplyOutcome::AwaitTx, _) = outcome {
                // Its TX timestamp was queued after the error queue was last read: read it now.
                drain_err(sock, shared, err);
                outcome = shared
                    .table
                    .lock()
                    .reply(key, stamp, &times, ttl, size, false);
            }
            let (outcome, measured) = outcome;
            if let Some(m) = &measured {
                shared.account(m);
                if wait_tx {
                    note_tx(sock, m);
                }
            }
            match outcome {
                ReplyOutcome::Deliver(d) => shared.deliver([d]),
                ReplyOutcome::TimeoutThenLate(t, l) => shared.deliver([t, l]),
                ReplyOutcome::Stale => bump(&shared.counters.stale_replies),
                ReplyOutcome::Unknown | ReplyOutcome::AwaitTx => {
                    bump(&shared.counters.unmatched_packets)
                }
            }
        }
        Icmp::Error(q) => {
            if q.ident != sock.ident {
                return;
            }
            let info = IcmpErrorInfo {
                kind: packet::classify_error(sock.v6, q.icmp_type, q.icmp_code),
                icmp_type: q.icmp_type,
                icmp_code: q.icmp_code,
                from,
                rtt: None,
            };
            let key = Key {
                ip: q.orig_dst,
                ident: q.ident,
                seq: q.seq,
            };
            let mut table = shared.table.lock();
            let d = table.error_measured(key, info, &times);
            shared.deliver(d);
        }
        // Our own requests looped back on raw sockets, neighbour discovery, and the like.
        Icmp::EchoRequest(_) | Icmp::Other { .. } => {}
    }
}

/// Tracks whether a socket that should give TX timestamps does: after [`TX_GIVE_UP`] replies
/// in a row without one, on a socket that never gave one, it stops waiting for them.
fn note_tx(sock: &IcmpSocket, m: &Measured) {
    if m.tx_fallback != Some(Fallback::Missing) {
        sock.tx_misses.store(0, Ordering::Relaxed);
        return;
    }
    let misses = sock.tx_misses.fetch_add(1, Ordering::Relaxed) + 1;
    if misses >= TX_GIVE_UP && !sock.tx_seen.load(Ordering::Relaxed) {
        sock.tx_kernel.store(false, Ordering::Relaxed);
        tracing::debug!(
            family = sock.family(),
            kind = sock.kind.as_str(),
            misses,
            "no kernel TX timestamps on this socket; send times from user space from now on"
        );
    }
}

fn handle_errqueue(sock: &IcmpSocket, shared: &Shared, data: &[u8], rx: &Received, at: ClockPair) {
    let Some(ext) = rx.ext_err else {
        if rx.cmsg_error {
            bump(&shared.counters.malformed_packets);
            tracing::debug!("error-queue entry with unreadable control messages");
        }
        return;
    };
    if ext.origin == SO_EE_ORIGIN_TIMESTAMPING {
        handle_tx_timestamp(sock, shared, data, rx, ext.info, ext.data);
        return;
    }
    if ext.origin != SO_EE_ORIGIN_ICMP && ext.origin != SO_EE_ORIGIN_ICMP6 {
        // Local errors (e.g. EMSGSIZE) were already returned by the send.
        return;
    }
    let Some(dst) = rx.from else { return };
    let (ident, seq) = match packet::parse_quoted_echo(data, sock.v6) {
        Ok(x) => x,
        Err(e) => {
            bump(&shared.counters.malformed_packets);
            tracing::trace!(error = %e, "unparseable error-queue entry");
            return;
        }
    };
    let info = IcmpErrorInfo {
        kind: packet::classify_error(sock.v6, ext.icmp_type, ext.icmp_code),
        icmp_type: ext.icmp_type,
        icmp_code: ext.icmp_code,
        from: ext.offender.unwrap_or(dst),
        rtt: None,
    };
    // The kernel matched the socket by identifier already; the quoted identifier is ours.
    let key = Key {
        ip: dst,
        ident,
        seq,
    };
    let times = recv_times(sock, rx, at);
    let mut table = shared.table.lock();
    let d = table.error_measured(key, info, &times);
    shared.deliver(d);
}

/// A kernel TX timestamp: attached to the probe whose request it carries, if the request's
/// destination, identifier, sequence and payload stamp name a probe in flight and its `OPT_ID`
/// is the one expected; anything less leaves the probe on its user-space send time.
fn handle_tx_timestamp(
    sock: &IcmpSocket,
    shared: &Shared,
    data: &[u8],
    rx: &Received,
    info: u32,
    opt_id: u32,
) {
    if info != SCM_TSTAMP_SND {
        return;
    }
    let (Some(at), Some((dst, echo))) = (rx.kernel_time, packet::parse_sent_request(data, sock.v6))
    else {
        // The probe it belonged to falls back (`missing`) when its reply comes.
        bump(&shared.counters.malformed_packets);
        tracing::debug!(
            cmsg_error = rx.cmsg_error,
            len = data.len(),
            "TX timestamp without a time or a readable request"
        );
        return;
    };
    if echo.ident != sock.ident {
        bump(&shared.counters.unmatched_packets);
        return;
    }
    let key = echo_key(dst, &echo);
    let stamp = packet::read_stamp(echo.payload);
    let drift = sock.tx_drift.load(Ordering::Relaxed);
    let result = shared
        .table
        .lock()
        .tx_timestamp(&key, stamp, opt_id.wrapping_sub(drift), at);
    match result {
        TxMatch::Attached => sock.tx_seen.store(true, Ordering::Relaxed),
        TxMatch::Mismatch { tx_id } => {
            // Re-base: later timestamps compare against the kernel's count as it now stands.
            sock.tx_drift
                .store(opt_id.wrapping_sub(tx_id), Ordering::Relaxed);
            tracing::debug!(
                opt_id,
                expected = tx_id.wrapping_add(drift),
                "TX timestamp OPT_ID drifted; re-based"
            );
        }
        // Its probe settled already (an ICMP error, a timeout), or it is not ours.
        TxMatch::Unknown => {}
    }
}

/// The in-flight key of the echo request `echo` to `ip` (a reply's source, or where a sent
/// request went).
fn echo_key(ip: IpAddr, echo: &packet::Echo<'_>) -> Key {
    Key {
        ip,
        ident: echo.ident,
        seq: echo.seq,
    }
}
