use std::net::SocketAddr;

use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, Type};

use super::*;

/// A receiving UDP socket on loopback, non-blocking, reporting the TTL of each datagram,
/// and a sender connected to it.
fn pair() -> (Socket, Socket) {
    let rx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    rx.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    rx.set_nonblocking(true).unwrap();
    setsockopt(&rx, sockopt::Ipv4RecvTtl, &true).unwrap();
    let tx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    tx.connect(&rx.local_addr().unwrap()).unwrap();
    (rx, tx)
}

#[test]
fn a_batch_reads_every_queued_datagram_with_what_came_with_it() {
    let (rx, tx) = pair();
    setsockopt(&rx, sockopt::ReceiveTimestampns, &true).unwrap();
    let sent: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; usize::from(i) * 10]).collect();
    let before = crate::engine::clock::Wall::now();
    for d in &sent {
        tx.send(d).unwrap();
    }
    let mut batch = RecvBatch::new(8, 2048);
    assert_eq!(batch.read(&rx, false).unwrap(), 5);
    let after = crate::engine::clock::Wall::now();
    for (i, want) in sent.iter().enumerate() {
        let (data, got) = batch.message(i).unwrap();
        assert_eq!(data, &want[..], "message {i}");
        assert_eq!(got.len, want.len());
        assert_eq!(got.from, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(got.ttl, Some(64));
        assert!(!got.cmsg_error);
        let t = got.kernel_time.expect("a kernel receive timestamp");
        // The kernel stamps a datagram when it is queued, or at the read when the system's
        // receive timestamps were switched on (deferred work) only after it was queued.
        assert!(
            before <= t && t <= after,
            "{t:?} outside {before:?}..{after:?}"
        );
    }
    assert!(batch.message(5).is_none());
    let e = batch.read(&rx, false).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert!(batch.message(0).is_none(), "a failed read holds nothing");
}

#[test]
fn a_burst_beyond_the_first_ask_is_read_whole_and_the_ask_follows_the_queue() {
    let (rx, tx) = pair();
    let mut batch = RecvBatch::new(MAX_BATCH, 64);
    let send = |from: u32, to: u32| {
        for i in from..to {
            tx.send(&i.to_be_bytes()).unwrap();
        }
    };
    let mut read = |got: &mut Vec<u32>| {
        let n = batch.read(&rx, false).unwrap();
        for i in 0..n {
            let (data, _) = batch.message(i).unwrap();
            got.push(u32::from_be_bytes(data.try_into().unwrap()));
        }
        (n, batch.filled())
    };
    send(0, 40);
    let mut got = Vec::new();
    // The first read asks for 8; each full read doubles the ask (16, then 32 for the last 16).
    assert_eq!(read(&mut got), (8, true));
    assert_eq!(read(&mut got), (16, true));
    assert_eq!(read(&mut got), (16, false));
    assert_eq!(got, (0..40).collect::<Vec<_>>(), "every datagram, in order");
    // After a read of one the ask is back at 8: a burst of 20 takes two reads.
    send(40, 41);
    assert_eq!(read(&mut got), (1, false));
    send(41, 61);
    assert_eq!(read(&mut got), (8, true));
    assert_eq!(read(&mut got), (12, false));
    assert_eq!(got, (0..61).collect::<Vec<_>>());
    let e = batch.read(&rx, false).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert!(!batch.filled(), "a failed read is not full");
}

#[test]
fn a_reused_batch_has_room_for_control_messages_an_earlier_read_did_not_get() {
    // recvmsg writes back the control length it used: a batch that kept it would read the
    // next, larger set of control messages truncated.
    let (rx, tx) = pair();
    let mut batch = RecvBatch::new(4, 256);
    tx.send(b"no timestamp").unwrap();
    assert_eq!(batch.read(&rx, false).unwrap(), 1);
    let (_, first) = batch.message(0).unwrap();
    assert_eq!(first.kernel_time, None);
    assert_eq!(first.ttl, Some(64));
    setsockopt(&rx, sockopt::ReceiveTimestampns, &true).unwrap();
    tx.send(b"timestamped").unwrap();
    assert_eq!(batch.read(&rx, false).unwrap(), 1);
    let (data, second) = batch.message(0).unwrap();
    assert_eq!(data, b"timestamped");
    assert!(!second.cmsg_error, "control messages truncated");
    assert!(second.kernel_time.is_some());
    assert_eq!(second.ttl, Some(64));
}

#[test]
fn a_datagram_larger_than_its_slot_keeps_its_real_length() {
    let (rx, tx) = pair();
    let mut batch = RecvBatch::new(2, 16);
    tx.send(&[7u8; 100]).unwrap();
    tx.send(&[8u8; 4]).unwrap();
    assert_eq!(batch.read(&rx, false).unwrap(), 2);
    let (data, got) = batch.message(0).unwrap();
    assert_eq!((data, got.len), (&[7u8; 16][..], 100));
    let (data, got) = batch.message(1).unwrap();
    assert_eq!((data, got.len), (&[8u8; 4][..], 4));
}

#[test]
fn one_read_and_a_batch_read_see_the_same_message() {
    let (rx, tx) = pair();
    setsockopt(&rx, sockopt::ReceiveTimestampns, &true).unwrap();
    tx.send(b"one").unwrap();
    tx.send(b"two").unwrap();
    let (mut buf, mut cmsg) = (vec![0u8; 64], cmsg_buffer());
    let one = recv(&rx, &mut buf, &mut cmsg, false).unwrap();
    assert_eq!(&buf[..one.len], b"one");
    let mut batch = RecvBatch::new(4, 64);
    assert_eq!(batch.read(&rx, false).unwrap(), 1);
    let (data, two) = batch.message(0).unwrap();
    assert_eq!(data, b"two");
    assert_eq!((one.from, one.ttl), (two.from, two.ttl));
    assert!(one.kernel_time.is_some() && two.kernel_time.is_some());
    let e = recv(&rx, &mut buf, &mut cmsg, true).unwrap_err();
    assert_eq!(
        e.kind(),
        io::ErrorKind::WouldBlock,
        "the error queue is empty"
    );
}

#[test]
fn a_control_message_running_past_the_buffer_is_reported() {
    // A header claiming more bytes than were written: counted, never read past.
    let mut control = vec![0u8; 64];
    let h = libc::cmsghdr {
        cmsg_len: 200,
        cmsg_level: libc::SOL_SOCKET,
        cmsg_type: libc::SCM_TIMESTAMPNS,
    };
    // SAFETY: a cmsghdr's bytes, copied into a buffer larger than it.
    unsafe { std::ptr::write_unaligned(control.as_mut_ptr().cast(), h) };
    // SAFETY: all-zero is a valid sockaddr_storage.
    let name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let head = Header {
        bytes: 0,
        flags: 0,
        namelen: 0,
        controllen: 64,
    };
    let got = received(head, &name, &control);
    assert!(got.cmsg_error);
    assert_eq!(got.kernel_time, None);
    let trunc = Header {
        flags: libc::MSG_CTRUNC,
        ..head
    };
    assert!(received(trunc, &name, &control).cmsg_error);
}
