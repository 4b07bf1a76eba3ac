//! Node-to-node one-hop latency: a one-envelope batch sent from a shard's mailbox on node `a`
//! to a shard on node `b` and back, over Dirigo's cluster links (outbound link thread, framing,
//! TCP on loopback, validation at the receiver, inbound link thread, the receiving shard's
//! ring), next to a plain TCP ping-pong of the same frame size between two threads in the same
//! run. One hop is half a round trip. Both nodes run in this process; the two "shards" are
//! threads polling their rings (yielding between polls), so what is measured is the transport,
//! not a shard's scheduling.
//!
//! ```text
//! cargo run --release -p dirigo-bench --example node_hop -- [--pings 5000] [--rounds 5] [--spin-us 0]
//! ```
//!
//! `--spin-us` is the outbound link's spin window before it parks (the engine's `spin`; 0 is
//! what unpinned shards use). Prints the medians over interleaved rounds of p50 and p99 for
//! each path and their ratio.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dirigo_actors::envelope::Header;
use dirigo_actors::record::{archive_values_into, Value};
use dirigo_net::link::{node_mesh, wire, ClusterSpec, LinkSettings, NodeSpec, Secret, Transport};
use dirigo_net::mailbox::{Batch, Inbox, Outbox};
use dirigo_net::signal::ShardSignal;
use hdrhistogram::Histogram;
use rkyv::util::AlignedVec;

struct Args {
    pings: usize,
    rounds: usize,
    spin: Duration,
}

fn args() -> Args {
    let mut a = Args { pings: 5000, rounds: 5, spin: Duration::ZERO };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<u64>().ok()).expect("flags take a number");
        match pair[0].as_str() {
            "--pings" => a.pings = value as usize,
            "--rounds" => a.rounds = value as usize,
            "--spin-us" => a.spin = Duration::from_micros(value),
            other => panic!("unknown flag {other}; flags: --pings N --rounds N --spin-us N"),
        }
    }
    a
}

fn free_address() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address")
}

/// One end of the ping-pong: the rings of one shard to and from the other node's shard.
struct End {
    out: Outbox,
    inbox: Inbox,
    record: AlignedVec,
    seq: u32,
    from: u16,
}

impl End {
    fn send(&mut self) {
        let mut b = self.out.reclaim().unwrap_or_else(|| Batch::with_capacity(1));
        let mut h = Header::data(0, 0, 7);
        h.from_shard = self.from;
        h.seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        b.push_bytes(h, &self.record);
        self.out.try_send(b).expect("credit for one batch");
        self.out.peer.notify();
    }

    fn recv(&mut self) {
        loop {
            if let Some(b) = self.inbox.recv() {
                self.inbox.give_back(b);
                return;
            }
            std::thread::yield_now();
        }
    }
}

/// Start nodes `a` (shard 0) and `b` (shard 1) in this process; the two ends and the links.
fn link_pair(spin: Duration) -> (End, End, Transport, Transport) {
    let settings = LinkSettings {
        connect_timeout: Duration::from_secs(5),
        reconnect_timeout: Duration::from_secs(5),
        credits: 64,
        spin,
        drop_after: None,
    };
    let nodes = vec![
        NodeSpec { id: "a".into(), address: free_address(), shards: 0..1 },
        NodeSpec { id: "b".into(), address: free_address(), shards: 1..2 },
    ];
    let limits = wire::Limits { apps: 1, functions: 1 };
    let mut record = AlignedVec::new();
    archive_values_into(&[Value::U64(42), Value::U64(7)], &mut record);
    let secret = Secret::random();
    let mut ends = Vec::new();
    let mut starts = Vec::new();
    for me in 0..2 {
        let spec = ClusterSpec { nodes: nodes.clone(), me, settings, secret: Some(secret.clone()) };
        let signals: Vec<Arc<ShardSignal>> = (0..2).map(|_| Arc::new(ShardSignal::new(1).0)).collect();
        let (mut mesh, peers) = node_mesh(&spec, &signals, 1);
        let other = 1 - me;
        let out = mesh.outboxes[me][other].take().expect("ring to the other node");
        let inbox = mesh.inboxes[me][other].take().expect("ring from the other node");
        ends.push(End { out, inbox, record: record.clone(), seq: 0, from: me as u16 });
        starts.push(std::thread::spawn(move || Transport::start(spec, peers, limits).expect("links up")));
    }
    let b = starts.pop().expect("b").join().expect("b starts");
    let a = starts.pop().expect("a").join().expect("a starts");
    let eb = ends.pop().expect("b");
    let ea = ends.pop().expect("a");
    (ea, eb, a, b)
}

/// Round trips over the cluster links, in ns.
fn link_round(a: &mut End, b: End, pings: usize) -> (Histogram<u64>, End) {
    let pong = std::thread::spawn(move || {
        let mut b = b;
        for _ in 0..pings + 100 {
            b.recv();
            b.send();
        }
        b
    });
    let mut h = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    for i in 0..pings + 100 {
        let t0 = Instant::now();
        a.send();
        a.recv();
        if i >= 100 {
            h.record(t0.elapsed().as_nanos() as u64).expect("in range");
        }
    }
    (h, pong.join().expect("pong"))
}

/// Round trips of a plain TCP ping-pong of `size`-byte messages between two threads, in ns.
fn tcp_round(pings: usize, size: usize) -> Histogram<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let pong = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; size];
        for _ in 0..pings + 100 {
            s.read_exact(&mut buf).expect("read");
            s.write_all(&buf).expect("write");
        }
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = vec![1u8; size];
    let mut h = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    for i in 0..pings + 100 {
        let t0 = Instant::now();
        s.write_all(&buf).expect("write");
        s.read_exact(&mut buf).expect("read");
        if i >= 100 {
            h.record(t0.elapsed().as_nanos() as u64).expect("in range");
        }
    }
    pong.join().expect("pong");
    h
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

fn main() {
    let args = args();
    let (mut a, mut b, ta, tb) = link_pair(args.spin);
    // The frame a link writes for this batch: header, batch prefix, envelope header, payload.
    let mut frame = AlignedVec::new();
    let mut probe = Batch::with_capacity(1);
    probe.push_bytes(Header::data(0, 0, 7), &a.record);
    wire::encode_batch(0, 0, 1, &probe, &mut frame).expect("frame");
    let size = frame.len();
    let (mut link_p50, mut link_p99, mut tcp_p50, mut tcp_p99) = (vec![], vec![], vec![], vec![]);
    for round in 0..args.rounds {
        let (h, back) = link_round(&mut a, b, args.pings);
        b = back;
        let t = tcp_round(args.pings, size);
        let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "round {round}: link rtt p50 {:.1} us p99 {:.1} us | tcp rtt p50 {:.1} us p99 {:.1} us",
            us(&h, 0.5),
            us(&h, 0.99),
            us(&t, 0.5),
            us(&t, 0.99)
        );
        link_p50.push(us(&h, 0.5));
        link_p99.push(us(&h, 0.99));
        tcp_p50.push(us(&t, 0.5));
        tcp_p99.push(us(&t, 0.99));
    }
    let (lp50, lp99, tp50, tp99) = (median(link_p50), median(link_p99), median(tcp_p50), median(tcp_p99));
    println!(
        "\nmedians over {} rounds of {} pings, {size}-byte frames, link spin {:?}",
        args.rounds, args.pings, args.spin
    );
    println!("path              one-hop p50   one-hop p99   (round trip / 2)");
    println!("dirigo link       {:>8.1} us   {:>8.1} us", lp50 / 2.0, lp99 / 2.0);
    println!("plain tcp         {:>8.1} us   {:>8.1} us", tp50 / 2.0, tp99 / 2.0);
    println!("ratio link/tcp    {:>8.2}x     {:>8.2}x", lp50 / tp50, lp99 / tp99);
    println!("frames sent by the links: {}", ta.frames_sent() + tb.frames_sent());
    // The links stay up until the process exits (the ends hold no shard that could finish).
    std::mem::forget((ta, tb));
}
