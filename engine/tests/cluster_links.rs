//! Cluster links in one process (two nodes of one shard each, their shards played by the test):
//! credit bounds what a receiver that does not consume makes its peer buffer, and once it
//! consumes, every batch arrives exactly once and in order; nodes that do not share the cluster
//! secret refuse each other, and a forged hello cannot take over a live link.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::free_address;
use dirigo_actors::envelope::Header;
use dirigo_actors::record::{archive_values_into, Value};
use dirigo_net::link::wire::{Hello, ProofFrame, Refusal};
use dirigo_net::link::{node_mesh, wire, ClusterSpec, LinkError, LinkSettings, NodeSpec, Secret, Transport};
use dirigo_net::mailbox::{Batch, Inbox, Outbox};
use dirigo_net::signal::ShardSignal;
use dirigo_net::{FrameDecoder, FrameType};
use rkyv::util::AlignedVec;

/// Batches in flight per channel, and batches per ring.
const CREDITS: usize = 4;
const DEADLINE: Duration = Duration::from_secs(20);

/// Nodes `a` (shard 0) and `b` (shard 1) in this process, with the same secret: shard 0's ring
/// to shard 1, shard 1's ring from shard 0, the two nodes' links, and `b`'s view of the cluster.
fn two_nodes() -> (Outbox, Inbox, Transport, Transport, ClusterSpec) {
    let secret = Secret::random();
    let specs = specs([secret.clone(), secret], Duration::from_secs(10));
    let spec_b = specs[1].clone();
    let (ends, started) = start(specs);
    let [a, b] = started.map(|t| t.expect("links up"));
    let (out, inbox) = ends;
    (out.expect("ring to b"), inbox.expect("ring from a"), a, b, spec_b)
}

/// Nodes `a` (shard 0) and `b` (shard 1) on free loopback ports, holding these secrets.
fn specs(secrets: [Secret; 2], timeout: Duration) -> [ClusterSpec; 2] {
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
    let mut me = 0..;
    secrets.map(|secret| ClusterSpec {
        nodes: nodes.clone(),
        me: me.next().expect("0.."),
        settings,
        secret: Some(secret),
    })
}

/// Start both nodes at once: shard 0's ring to shard 1, shard 1's ring from shard 0, and how
/// each node's start ended.
type Started = ((Option<Outbox>, Option<Inbox>), [Result<Transport, LinkError>; 2]);

fn start(specs: [ClusterSpec; 2]) -> Started {
    let limits = wire::Limits { apps: 1, functions: 1 };
    let mut ends = (None, None);
    let starts = specs.map(|spec| {
        let signals: Vec<Arc<ShardSignal>> = (0..2).map(|_| Arc::new(ShardSignal::new(1).0)).collect();
        let (mut mesh, peers) = node_mesh(&spec, &signals, 1);
        match spec.me {
            0 => ends.0 = mesh.outboxes[0][1].take(),
            _ => ends.1 = mesh.inboxes[1][0].take(),
        }
        std::thread::spawn(move || Transport::start(spec, peers, limits))
    });
    (ends, starts.map(|t| t.join().expect("start")))
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
    let (mut out, mut inbox, a, _b, _) = two_nodes();
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

/// Send batches numbered `seqs` from shard 0 and receive them on shard 1 (which finishes each
/// at once): each exactly once, in order, and nothing else.
fn flow(out: &mut Outbox, inbox: &mut Inbox, record: &AlignedVec, seqs: Range<u32>) {
    let (mut pushed, mut next) = (seqs.start, seqs.start);
    until("every batch has arrived", || {
        if pushed < seqs.end && out.try_send(batch(pushed, record)).is_ok() {
            out.peer.notify();
            pushed += 1;
        }
        while out.reclaim().is_some() {}
        if let Some(b) = inbox.recv() {
            for e in &b.entries {
                assert_eq!(e.header.seq, next, "batches skipped, repeated, reordered or forged");
                assert_eq!(b.payload(e.off, e.len), &record[..]);
                next += 1;
            }
            inbox.give_back(b);
        }
        next == seqs.end
    });
}

#[test]
fn nodes_with_different_secrets_refuse_each_other_and_say_why() {
    let secrets = [Secret::new(*b"one secret").unwrap(), Secret::new(*b"another secret").unwrap()];
    let (_, started) = start(specs(secrets, Duration::from_secs(2)));
    for (node, result) in ["a", "b"].iter().zip(started) {
        let err = match result {
            Ok(_) => panic!("node {node} came up with a peer of another secret"),
            Err(e) => e,
        };
        let LinkError::Startup { no_link_to, not_connected, .. } = &err else { panic!("node {node}: {err}") };
        // Refused in both directions: its own proof, and the peer's.
        let refused_here = not_connected.iter().any(|m| m.last.as_ref().is_some_and(|f| f.is_authentication()));
        let refused_there = no_link_to.iter().any(|m| m.last.as_ref().is_some_and(|f| f.is_authentication()));
        assert!(refused_here && refused_there, "node {node}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("it does not accept this node's proof: the two nodes hold different cluster secrets"),
            "{text}"
        );
        assert!(text.contains("its proof does not verify: it does not hold this node's cluster secret"), "{text}");
    }
}

/// A client that speaks a link's frames by hand.
struct Forger {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl Forger {
    /// Connect to `spec`'s node and send a well-formed hello from node 0 (a live peer of it)
    /// carrying the right config fingerprint.
    fn hello(spec: &ClusterSpec) -> Forger {
        let stream = TcpStream::connect(spec.nodes[spec.me].address).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        // It claims a new process of node 0: a node that acted on that before the proof would
        // fail (a restarted peer) for a forger.
        let hello = Hello {
            fingerprint: spec.fingerprint(),
            from: 0,
            to: spec.me as u32,
            epoch: 0,
            nonce: [7; 32],
            incarnation: 7,
            running: false,
        };
        let mut forger = Forger { stream, decoder: FrameDecoder::default() };
        forger.send(|out| hello.encode(out));
        forger
    }

    fn send(&mut self, encode: impl FnOnce(&mut AlignedVec) -> Result<(), dirigo_net::EncodeError>) {
        let mut out = AlignedVec::new();
        encode(&mut out).expect("encode");
        self.stream.write_all(&out).expect("send");
    }

    /// The next frame's type and payload; None when the node closed the connection.
    fn next(&mut self) -> Option<(FrameType, Vec<u8>)> {
        loop {
            if let Some(f) = self.decoder.next_frame().expect("frames") {
                return Some((f.ty, f.payload.to_vec()));
            }
            let window = self.decoder.recv_window(4096).expect("window");
            match self.stream.read(window) {
                Ok(0) => return None,
                Ok(n) => self.decoder.commit(n).expect("frames"),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("forger: {e}"),
            }
        }
    }
}

#[test]
fn a_forged_hello_cannot_take_over_a_live_link() {
    let (mut out, mut inbox, a, b, spec_b) = two_nodes();
    let mut record = AlignedVec::new();
    archive_values_into(&[Value::U64(1)], &mut record);
    flow(&mut out, &mut inbox, &record, 0..50);
    assert_eq!(b.connections_accepted(), 1, "a's link to b");

    // A forger with a well-formed hello as node a, and a made-up proof: refused, told why.
    let mut forger = Forger::hello(&spec_b);
    let (ty, challenge) = forger.next().expect("b's challenge");
    assert_eq!(ty, FrameType::Hello);
    assert_eq!(Hello::decode(&challenge).expect("a hello").from, 1);
    forger.send(|out| ProofFrame { proof: [0; 32], next: 0 }.encode(out));
    let (ty, refusal) = forger.next().expect("b's refusal");
    assert_eq!((ty, Refusal::decode(&refusal).expect("a refusal")), (FrameType::Error, Refusal::BadProof));
    assert!(forger.next().is_none(), "b closes the forger's connection");

    // A forger that sends data right after its hello, as an unauthenticated link once could.
    let mut forger = Forger::hello(&spec_b);
    let _challenge = forger.next().expect("b's challenge");
    let mut forged = Batch::with_capacity(1);
    forged.push_bytes(Header::data(0, 0, 999), &record);
    forger.send(|out| wire::encode_batch(50, 0, 1, &forged, out));
    assert!(forger.next().is_none(), "b closes the forger's connection");

    // A forger that says hello and then nothing holds no lock the live link needs.
    let mut silent = Forger::hello(&spec_b);
    let _challenge = silent.next().expect("b's challenge");
    flow(&mut out, &mut inbox, &record, 50..150);
    let _ = silent.stream.shutdown(Shutdown::Both);

    // The live link was never displaced: still its one connection, still delivering.
    flow(&mut out, &mut inbox, &record, 150..200);
    assert_eq!(b.connections_accepted(), 1, "a forger replaced a's connection");
    assert!(a.failure().is_none() && b.failure().is_none(), "{:?} {:?}", a.failure(), b.failure());
    assert!(inbox.recv().is_none(), "nothing beyond what a sent");
}
