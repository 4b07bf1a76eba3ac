//! Cluster links in one process (two nodes of one shard each, their shards played by the test):
//! credit bounds what a receiver that does not consume makes its peer buffer, and once it
//! consumes, every batch arrives exactly once and in order.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::free_address;
use dirigo_actors::envelope::Header;
use dirigo_actors::record::{archive_values_into, Value};
use dirigo_net::link::{node_mesh, wire, ClusterSpec, LinkSettings, NodeSpec, Transport};
use dirigo_net::mailbox::{Batch, Inbox, Outbox};
use dirigo_net::signal::ShardSignal;
use rkyv::util::AlignedVec;

/// Batches in flight per channel, and batches per ring.
const CREDITS: usize = 4;
const DEADLINE: Duration = Duration::from_secs(20);

/// Nodes `a` (shard 0) and `b` (shard 1) in this process: shard 0's ring to shard 1, shard 1's
/// ring from shard 0, and the two nodes' links.
fn two_nodes() -> (Outbox, Inbox, Transport, Transport) {
    let timeout = Duration::from_secs(10);
    let settings = LinkSettings {
        connect_timeout: timeout,
        reconnect_timeout: timeout,
        credits: CREDITS,
        spin: Duration::ZERO,
        drop_after: None,
    };
    let nodes = vec![
        NodeSpec { id: "a".into(), address: free_address(), shards: 0..1 },
        NodeSpec { id: "b".into(), address: free_address(), shards: 1..2 },
    ];
    let limits = wire::Limits { apps: 1, functions: 1 };
    let mut starts = Vec::new();
    let mut ends = (None, None);
    for me in 0..2 {
        let spec = ClusterSpec { nodes: nodes.clone(), me, settings };
        let signals: Vec<Arc<ShardSignal>> = (0..2).map(|_| Arc::new(ShardSignal::new(1).0)).collect();
        let (mut mesh, peers) = node_mesh(&spec, &signals, 1);
        match me {
            0 => ends.0 = mesh.outboxes[0][1].take(),
            _ => ends.1 = mesh.inboxes[1][0].take(),
        }
        starts.push(std::thread::spawn(move || Transport::start(spec, peers, limits).expect("links up")));
    }
    let b = starts.pop().expect("b").join().expect("b");
    let a = starts.pop().expect("a").join().expect("a");
    (ends.0.expect("ring to b"), ends.1.expect("ring from a"), a, b)
}

/// A batch of one record, numbered `seq` on channel 0 -> 1.
fn batch(seq: u32, record: &AlignedVec) -> Batch {
    let mut b = Batch::with_capacity(1);
    let mut h = Header::data(0, 0, u64::from(seq));
    h.seq = seq;
    b.push_bytes(h, record);
    b
}

/// Wait (bounded by [`DEADLINE`]) until `done`, which does one step of the work each call.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

#[test]
fn credit_bounds_what_a_slow_receiver_makes_its_peer_buffer_and_nothing_is_lost() {
    let (mut out, mut inbox, a, _b) = two_nodes();
    let mut record = AlignedVec::new();
    archive_values_into(&[Value::U64(1)], &mut record);
    // The receiving shard consumes nothing: the link takes CREDITS batches from the sender's
    // ring, then the ring fills with CREDITS more, and the sender is pushed back.
    let mut pushed = 0u32;
    until("the sender is pushed back", || {
        if out.try_send(batch(pushed, &record)).is_ok() {
            out.peer.notify();
            pushed += 1;
        }
        pushed as usize == 2 * CREDITS && a.frames_sent() == CREDITS as u64
    });
    // It stays pushed back while the receiver consumes nothing (watched for 200 ms).
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(200) {
        assert!(out.try_send(batch(pushed, &record)).is_err(), "a batch beyond ring and credit was accepted");
        assert_eq!(a.frames_sent(), CREDITS as u64, "frames beyond the credit were sent");
        std::thread::yield_now();
    }
    // The receiver consumes: the rest flows, each batch exactly once, in order.
    let total = 300u32;
    let mut next = 0u32;
    until("every batch has arrived", || {
        if pushed < total && out.try_send(batch(pushed, &record)).is_ok() {
            out.peer.notify();
            pushed += 1;
        }
        while out.reclaim().is_some() {}
        if let Some(b) = inbox.recv() {
            for e in &b.entries {
                assert_eq!(e.header.seq, next, "batches skipped, repeated or reordered");
                assert_eq!(b.payload(e.off, e.len), &record[..]);
                next += 1;
            }
            inbox.give_back(b);
        }
        next == total
    });
    assert!(inbox.recv().is_none(), "nothing beyond what was sent");
}
