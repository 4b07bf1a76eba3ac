//! NEXMark queries 1, 2, 5, 7 and 8 as Dirigo user functions, and a sequential reference for each.
//!
//! Window semantics (engine and reference alike), event time in ms:
//!
//! - A window is `[end - size, end)`; it is identified by its `end`, a multiple of the slide (of
//!   the size for tumbling windows). An event at `t` is in every window with
//!   `t < end <= t + size` (one tumbling window, `size / slide` sliding ones; windows may start
//!   before the first event).
//! - A window fires when the watermark reaches `end` (`watermark >= end`), and every window still
//!   open fires when the stream ends. Each source instance's events are in event-time order, and
//!   a window fires on the least watermark of all instances, so nothing is late. Only windows
//!   with at least one relevant event exist.
//!
//! Queries:
//!
//! - Q1: every bid with its price in euro cents, `price * 908 / 1000`: `(auction, bidder, price,
//!   date_time)`.
//! - Q2: bids with `auction % 123 == 0`: `(auction, price, date_time)`.
//! - Q5: hot items: per sliding window (10 s, slide 2 s), the auction(s) with the most bids:
//!   `(window_end, auction, bids)`, one row per auction tied at the maximum.
//! - Q7: highest bid per tumbling 10 s window: `(window_end, auction, bidder, price, date_time)`,
//!   one row per bid tied at the maximum price.
//! - Q8: new users: persons who registered and opened an auction in the same tumbling 10 s
//!   window: `(window_end, person_id, name)`, once per (window, person).
//!
//! Engine shape: one source instance per shard, reading the stream in splits of
//! [`SPLIT_EVENTS`] events, each instance the next split not yet read when it has read one
//! (events keyed by auction for bids, by person id for persons and by seller for auctions). Q1 and Q2 run where
//! the events are read. Q5 and Q7 pre-aggregate there too (per-shard counts, per-shard maxima)
//! and add a second stage keyed by window end that merges the shards' partials when its
//! watermark (the minimum over both first-stage instances) passes the window end. Q8 selects
//! persons and auctions where they are read and joins them keyed by person (= seller).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use dirigo_engine::api::{key_u64, Cx, EngineBuilder, Function, Route};
use dirigo_engine::report::Summary;
use rkyv::Archived;

use super::gen::{self, ArchivedEvent, Event};

/// Q5's sliding window size and slide (ms).
pub const Q5_SIZE_MS: u64 = 10_000;
pub const Q5_SLIDE_MS: u64 = 2_000;
/// Q7's and Q8's tumbling window size (ms).
pub const TUMBLE_MS: u64 = 10_000;
/// Sources emit a watermark every this many events (1 s of event time).
const WATERMARK_EVERY: u64 = 100;
/// Events per split of the stream (`AppBuilder::split_source`): each source instance reads a
/// split whole and then asks for the next, so a shard on a quieter core reads more of the
/// stream (about half a millisecond of work per split).
pub const SPLIT_EVENTS: u64 = 4_096;

/// A query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Query {
    Q1,
    Q2,
    Q5,
    Q7,
    Q8,
}

impl Query {
    /// Every query, in order.
    pub const ALL: [Query; 5] = [Query::Q1, Query::Q2, Query::Q5, Query::Q7, Query::Q8];

    /// Lower-case name (`q1`...).
    pub fn name(self) -> &'static str {
        match self {
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
        }
    }

    /// Whether outputs have a defined order per key (the auction, for the per-bid queries).
    pub fn ordered_per_key(self) -> bool {
        matches!(self, Query::Q1 | Query::Q2)
    }
}

/// One output row of any query (fields as in the module docs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Row {
    Q1 { auction: u64, bidder: u64, price: u64, date_time: u64 },
    Q2 { auction: u64, price: u64, date_time: u64 },
    Q5 { window_end: u64, auction: u64, bids: u64 },
    Q7 { window_end: u64, auction: u64, bidder: u64, price: u64, date_time: u64 },
    Q8 { window_end: u64, person: u64, name: String },
}

impl Row {
    /// The key whose outputs are ordered (Q1, Q2: the auction), and the split its event was
    /// read in: outputs are ordered per key and split (one source instance reads a split whole,
    /// in order; splits go to whichever instance asks), as in any parallel engine.
    pub fn order_key(&self) -> Option<(u64, u64)> {
        match self {
            Row::Q1 { auction, date_time, .. } | Row::Q2 { auction, date_time, .. } => {
                Some((*auction, gen::index_of(*date_time) / SPLIT_EVENTS))
            }
            _ => None,
        }
    }
}

fn q1_price(p: u64) -> u64 {
    p * 908 / 1000
}

fn tumble_end(t: u64) -> u64 {
    (t / TUMBLE_MS + 1) * TUMBLE_MS
}

/// Ends of the sliding windows holding `t`: `t < end <= t + size`.
fn sliding_ends(t: u64) -> impl Iterator<Item = u64> {
    let first = (t / Q5_SLIDE_MS + 1) * Q5_SLIDE_MS;
    (first..=t + Q5_SIZE_MS).step_by(Q5_SLIDE_MS as usize)
}

/// Removes and returns the windows with `end <= watermark`.
fn take_ready<V>(windows: &mut BTreeMap<u64, V>, watermark: u64) -> BTreeMap<u64, V> {
    match watermark.checked_add(1) {
        Some(bound) => {
            let rest = windows.split_off(&bound);
            std::mem::replace(windows, rest)
        }
        None => std::mem::take(windows),
    }
}

// ---------------------------------------------------------------------------------------------
// Engine functions.

/// Q1: currency conversion, per bid. Each function of the queries here reads its input both
/// as an archive (`on_message`) and as the value its source made (`on_value`, which the
/// engine calls where the function runs in the source's poll): both go through one body over
/// the bid's fields.
struct Q1Map;

impl Q1Map {
    fn bid(cx: &mut Cx<'_>, auction: u64, bidder: u64, price: u64, date_time: u64) {
        cx.emit(cx.key_hash(), cx.event_time(), &(auction, bidder, q1_price(price), date_time));
    }
}

impl Function for Q1Map {
    type In = Event;
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, cx: &mut Cx<'_>, e: &Archived<Event>) {
        if let ArchivedEvent::Bid(b) = e {
            Q1Map::bid(cx, b.auction.to_native(), b.bidder.to_native(), b.price.to_native(), b.date_time.to_native());
        }
    }
    fn on_value(&mut self, cx: &mut Cx<'_>, e: &Event) {
        if let Event::Bid(b) = e {
            Q1Map::bid(cx, b.auction, b.bidder, b.price, b.date_time);
        }
    }
}

/// Q2: selection by auction id.
struct Q2Filter;

impl Q2Filter {
    fn bid(cx: &mut Cx<'_>, auction: u64, price: u64, date_time: u64) {
        if auction.is_multiple_of(123) {
            cx.emit(cx.key_hash(), cx.event_time(), &(auction, price, date_time));
        }
    }
}

impl Function for Q2Filter {
    type In = Event;
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, cx: &mut Cx<'_>, e: &Archived<Event>) {
        if let ArchivedEvent::Bid(b) = e {
            Q2Filter::bid(cx, b.auction.to_native(), b.price.to_native(), b.date_time.to_native());
        }
    }
    fn on_value(&mut self, cx: &mut Cx<'_>, e: &Event) {
        if let Event::Bid(b) = e {
            Q2Filter::bid(cx, b.auction, b.price, b.date_time);
        }
    }
}

/// Q5 stage 1, on the shard that read the bids: this shard's bids per auction per sliding
/// window; at the window's end, its partial counts `(window_end, [(auction, bids)])` go to the
/// stage keyed by window end. A local pre-aggregation, as Q7's (and Flink's two-phase
/// aggregation): NEXMark sends half of all bids to one hot auction, which keyed by auction would
/// put most of the counting on one shard.
#[derive(Default)]
struct Q5Count {
    windows: BTreeMap<u64, HashMap<u64, u64>>,
}

impl Q5Count {
    fn fire(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        for (end, counts) in take_ready(&mut self.windows, watermark) {
            let partial: Vec<(u64, u64)> = counts.into_iter().collect();
            cx.emit(key_u64(end), end - 1, &(end, partial));
        }
    }
}

impl Q5Count {
    fn bid(&mut self, auction: u64, date_time: u64) {
        for end in sliding_ends(date_time) {
            *self.windows.entry(end).or_default().entry(auction).or_default() += 1;
        }
    }
}

impl Function for Q5Count {
    type In = Event;
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, _cx: &mut Cx<'_>, e: &Archived<Event>) {
        if let ArchivedEvent::Bid(b) = e {
            self.bid(b.auction.to_native(), b.date_time.to_native());
        }
    }
    fn on_value(&mut self, _cx: &mut Cx<'_>, e: &Event) {
        if let Event::Bid(b) = e {
            self.bid(b.auction, b.date_time);
        }
    }
    fn on_watermark(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        self.fire(cx, watermark);
    }
    fn on_end(&mut self, cx: &mut Cx<'_>) {
        self.fire(cx, u64::MAX);
    }
}

/// Q5 stage 2, keyed by window end: the shards' partial counts summed, and at the window's end
/// the auction(s) with the most bids.
#[derive(Default)]
struct Q5Max {
    windows: BTreeMap<u64, HashMap<u64, u64>>,
}

impl Q5Max {
    fn fire(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        for (end, counts) in take_ready(&mut self.windows, watermark) {
            let max = counts.values().copied().max().unwrap_or(0);
            let mut top: Vec<u64> = counts.iter().filter(|(_, &c)| c == max).map(|(&a, _)| a).collect();
            top.sort_unstable();
            for auction in top {
                cx.emit(key_u64(end), end - 1, &(end, auction, max));
            }
        }
    }
}

impl Function for Q5Max {
    type In = (u64, Vec<(u64, u64)>);
    fn on_message(&mut self, _cx: &mut Cx<'_>, m: &Archived<(u64, Vec<(u64, u64)>)>) {
        let w = self.windows.entry(m.0.to_native()).or_default();
        for p in m.1.iter() {
            *w.entry(p.0.to_native()).or_default() += p.1.to_native();
        }
    }
    fn on_watermark(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        self.fire(cx, watermark);
    }
    fn on_end(&mut self, cx: &mut Cx<'_>) {
        self.fire(cx, u64::MAX);
    }
}

/// A bid as Q7 reports it: `(auction, bidder, price, date_time)`.
type BidRow = (u64, u64, u64, u64);

/// Q7 stage 1, on the shard that read the bids: this shard's highest bid(s) per tumbling window:
/// `(window_end, price, bids)`.
#[derive(Default)]
struct Q7Local {
    windows: BTreeMap<u64, (u64, Vec<BidRow>)>,
}

fn keep_max(w: &mut (u64, Vec<BidRow>), price: u64, bids: impl Iterator<Item = BidRow>) {
    if price > w.0 || w.1.is_empty() {
        *w = (price, Vec::new());
    }
    if price == w.0 {
        w.1.extend(bids);
    }
}

impl Q7Local {
    fn fire(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        for (end, (price, bids)) in take_ready(&mut self.windows, watermark) {
            cx.emit(key_u64(end), end - 1, &(end, price, bids));
        }
    }
}

impl Q7Local {
    fn bid(&mut self, row: BidRow) {
        let (price, t) = (row.2, row.3);
        keep_max(self.windows.entry(tumble_end(t)).or_default(), price, std::iter::once(row));
    }
}

impl Function for Q7Local {
    type In = Event;
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, _cx: &mut Cx<'_>, e: &Archived<Event>) {
        if let ArchivedEvent::Bid(b) = e {
            self.bid((b.auction.to_native(), b.bidder.to_native(), b.price.to_native(), b.date_time.to_native()));
        }
    }
    fn on_value(&mut self, _cx: &mut Cx<'_>, e: &Event) {
        if let Event::Bid(b) = e {
            self.bid((b.auction, b.bidder, b.price, b.date_time));
        }
    }
    fn on_watermark(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        self.fire(cx, watermark);
    }
    fn on_end(&mut self, cx: &mut Cx<'_>) {
        self.fire(cx, u64::MAX);
    }
}

/// Q7 stage 2, keyed by window end: the highest of the shards' highest bids.
#[derive(Default)]
struct Q7Max {
    windows: BTreeMap<u64, (u64, Vec<BidRow>)>,
}

impl Q7Max {
    fn fire(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        for (end, (_, mut bids)) in take_ready(&mut self.windows, watermark) {
            bids.sort_unstable();
            for b in bids {
                cx.emit(key_u64(end), end - 1, &(end, b.0, b.1, b.2, b.3));
            }
        }
    }
}

impl Function for Q7Max {
    type In = (u64, u64, Vec<BidRow>);
    fn on_message(&mut self, _cx: &mut Cx<'_>, m: &Archived<(u64, u64, Vec<BidRow>)>) {
        let (end, price) = (m.0.to_native(), m.1.to_native());
        let bids = m.2.iter().map(|b| (b.0.to_native(), b.1.to_native(), b.2.to_native(), b.3.to_native()));
        keep_max(self.windows.entry(end).or_default(), price, bids);
    }
    fn on_watermark(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        self.fire(cx, watermark);
    }
    fn on_end(&mut self, cx: &mut Cx<'_>) {
        self.fire(cx, u64::MAX);
    }
}

/// Q8's selection, where the events are read: persons and auctions go on (unchanged, as
/// archived) to the join, keyed by person and seller; bids stop here, as in Beam's and Flink's
/// Q8, which select new persons and new auctions before they join them.
struct Q8Select;

impl Function for Q8Select {
    type In = Event;
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, cx: &mut Cx<'_>, e: &Archived<Event>) {
        if !matches!(e, ArchivedEvent::Bid(_)) {
            cx.pass_on(cx.key_hash(), cx.event_time());
        }
    }
    /// A value passed on is archived once, where it goes: bids never are.
    fn on_value(&mut self, cx: &mut Cx<'_>, e: &Event) {
        if !matches!(e, Event::Bid(_)) {
            cx.pass_on(cx.key_hash(), cx.event_time());
        }
    }
}

/// Per window: persons registered (id -> name) and sellers who opened an auction.
type Q8Window = (BTreeMap<u64, String>, BTreeSet<u64>);

/// Q8, keyed by person id (persons) = seller (auctions): the windowed join.
#[derive(Default)]
struct Q8Join {
    windows: BTreeMap<u64, Q8Window>,
}

impl Q8Join {
    fn fire(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        for (end, (persons, sellers)) in take_ready(&mut self.windows, watermark) {
            for (id, name) in persons {
                if sellers.contains(&id) {
                    cx.emit(key_u64(id), end - 1, &(end, id, name));
                }
            }
        }
    }
}

impl Function for Q8Join {
    type In = Event;
    fn on_message(&mut self, _cx: &mut Cx<'_>, e: &Archived<Event>) {
        match e {
            ArchivedEvent::Person(p) => {
                let w = self.windows.entry(tumble_end(p.date_time.to_native())).or_default();
                w.0.insert(p.id.to_native(), p.name.as_str().to_owned());
            }
            ArchivedEvent::Auction(a) => {
                let w = self.windows.entry(tumble_end(a.date_time.to_native())).or_default();
                w.1.insert(a.seller.to_native());
            }
            ArchivedEvent::Bid(_) => {}
        }
    }
    fn on_watermark(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        self.fire(cx, watermark);
    }
    fn on_end(&mut self, cx: &mut Cx<'_>) {
        self.fire(cx, u64::MAX);
    }
}

// ---------------------------------------------------------------------------------------------
// Running a query on the engine.

/// The key an event is routed by: bids by auction, persons by id, auctions by seller (Q8's join
/// key; the other queries ignore persons and auctions).
fn route_key(e: &Event) -> u64 {
    match e {
        Event::Person(p) => key_u64(p.id),
        Event::Auction(a) => key_u64(a.seller),
        Event::Bid(b) => key_u64(b.auction),
    }
}

/// Outputs of one engine run, in the order the sink received them, and its summary.
pub struct EngineRun {
    pub rows: Vec<Row>,
    pub summary: Summary,
}

/// What an engine run does with the query's outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outputs {
    /// Hand them to a collector, to be checked against the reference (the run holds every
    /// output in memory until it ends).
    Collect,
    /// Only time them (a latency sink), as a throughput run does: a NEXMark run discards its
    /// outputs, and storing millions of rows measures the memory they take, not the query.
    Discard,
}

/// Run `q` over events `0..events` of stream `seed` on `shards` shards; the rows are empty
/// unless `outputs` is [`Outputs::Collect`].
pub fn run_engine(q: Query, seed: u64, events: u64, shards: usize, outputs: Outputs) -> anyhow::Result<EngineRun> {
    let mut engine = EngineBuilder::new().shards(shards);
    let mut app = engine.app(q.name(), Duration::from_millis(100));
    app.watermarks(WATERMARK_EVERY, 0);
    // One source instance per shard, as each of a parallel engine's workers reads its share:
    // instance k makes events k, k + shards, k + 2 shards... (each in event-time order).
    let splits = u32::try_from(events.div_ceil(SPLIT_EVENTS)).expect("at most 2^32 splits");
    let src = app.split_source("nexmark", splits, move |s| {
        let first = u64::from(s) * SPLIT_EVENTS;
        (first..(first + SPLIT_EVENTS).min(events)).map(move |i| {
            let e = gen::event(seed, i);
            (route_key(&e), e.date_time(), e)
        })
    });
    let out = match q {
        // Stateless queries and a local pre-aggregation run where their events are read (each
        // source instance feeds its own shard's instance, as a chained operator does in Flink).
        Query::Q1 => app.function("q1", src, Route::Forward, || Q1Map),
        Query::Q2 => app.function("q2", src, Route::Forward, || Q2Filter),
        Query::Q5 => {
            let local = app.function("q5-count", src, Route::Forward, Q5Count::default);
            app.function("q5-max", local, Route::ByKey, Q5Max::default)
        }
        Query::Q7 => {
            let local = app.function("q7-local", src, Route::Forward, Q7Local::default);
            app.function("q7-max", local, Route::ByKey, Q7Max::default)
        }
        Query::Q8 => {
            let select = app.function("q8-select", src, Route::Forward, || Q8Select);
            app.function("q8", select, Route::ByKey, Q8Join::default)
        }
    };
    let rx = match outputs {
        Outputs::Collect => Some(app.collect("out", out)),
        Outputs::Discard => {
            app.measure("out", out);
            None
        }
    };
    let summary = engine.run()?;
    let rows = rx.map(|rx| rx.drain().map(|o| decode(q, &o.archive)).collect()).unwrap_or_default();
    Ok(EngineRun { rows, summary })
}

/// Decode one sink output of query `q`.
fn decode(q: Query, bytes: &[u8]) -> Row {
    // SAFETY (every arm): the sink's input is the last function of `q`, which emits exactly the
    // archived type accessed here.
    match q {
        Query::Q1 => {
            let v = unsafe { rkyv::access_unchecked::<Archived<(u64, u64, u64, u64)>>(bytes) };
            Row::Q1 {
                auction: v.0.to_native(),
                bidder: v.1.to_native(),
                price: v.2.to_native(),
                date_time: v.3.to_native(),
            }
        }
        Query::Q2 => {
            let v = unsafe { rkyv::access_unchecked::<Archived<(u64, u64, u64)>>(bytes) };
            Row::Q2 { auction: v.0.to_native(), price: v.1.to_native(), date_time: v.2.to_native() }
        }
        Query::Q5 => {
            let v = unsafe { rkyv::access_unchecked::<Archived<(u64, u64, u64)>>(bytes) };
            Row::Q5 { window_end: v.0.to_native(), auction: v.1.to_native(), bids: v.2.to_native() }
        }
        Query::Q7 => {
            let v = unsafe { rkyv::access_unchecked::<Archived<(u64, u64, u64, u64, u64)>>(bytes) };
            Row::Q7 {
                window_end: v.0.to_native(),
                auction: v.1.to_native(),
                bidder: v.2.to_native(),
                price: v.3.to_native(),
                date_time: v.4.to_native(),
            }
        }
        Query::Q8 => {
            let v = unsafe { rkyv::access_unchecked::<Archived<(u64, u64, String)>>(bytes) };
            Row::Q8 { window_end: v.0.to_native(), person: v.1.to_native(), name: v.2.as_str().to_owned() }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sequential references: plain loops over the same events, written independently of the
// functions above.

/// The reference output of `q` over events `0..events` of stream `seed`, in its defined order
/// (event order for Q1 and Q2, window then key order for the others).
pub fn reference(q: Query, seed: u64, events: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    reference_into(q, seed, events, |r| rows.push(r));
    rows
}

/// How many rows the reference makes, each made and dropped as it comes: the sequential
/// reference's throughput with its outputs discarded, as [`Outputs::Discard`] runs the engine.
pub fn reference_discarding(q: Query, seed: u64, events: u64) -> usize {
    let mut n = 0;
    reference_into(q, seed, events, |r| {
        std::hint::black_box(r);
        n += 1;
    });
    n
}

/// The reference rows of `q`, in order, each handed to `out`.
fn reference_into(q: Query, seed: u64, events: u64, out: impl FnMut(Row)) {
    let evs = (0..events).map(|i| gen::event(seed, i));
    let bids = evs.filter_map(|e| if let Event::Bid(b) = e { Some(b) } else { None });
    let rows = match q {
        Query::Q1 => {
            bids.map(|b| Row::Q1 {
                auction: b.auction,
                bidder: b.bidder,
                price: b.price * 908 / 1000,
                date_time: b.date_time,
            })
            .for_each(out);
            return;
        }
        Query::Q2 => {
            bids.filter(|b| b.auction % 123 == 0)
                .map(|b| Row::Q2 { auction: b.auction, price: b.price, date_time: b.date_time })
                .for_each(out);
            return;
        }
        Query::Q5 => {
            // window end -> auction -> bids
            let mut counts: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
            for b in bids {
                let mut end = b.date_time - b.date_time % Q5_SLIDE_MS + Q5_SLIDE_MS;
                while end <= b.date_time + Q5_SIZE_MS {
                    *counts.entry(end).or_default().entry(b.auction).or_default() += 1;
                    end += Q5_SLIDE_MS;
                }
            }
            let mut rows = Vec::new();
            for (window_end, per_auction) in counts {
                let max = *per_auction.values().max().expect("a window holds a bid");
                for (&auction, &n) in &per_auction {
                    if n == max {
                        rows.push(Row::Q5 { window_end, auction, bids: n });
                    }
                }
            }
            rows
        }
        Query::Q7 => {
            let mut per_window: BTreeMap<u64, Vec<gen::Bid>> = BTreeMap::new();
            for b in bids {
                per_window.entry(b.date_time - b.date_time % TUMBLE_MS + TUMBLE_MS).or_default().push(b);
            }
            let mut rows = Vec::new();
            for (window_end, bs) in per_window {
                let max = bs.iter().map(|b| b.price).max().expect("a window holds a bid");
                let mut top: Vec<Row> = bs
                    .iter()
                    .filter(|b| b.price == max)
                    .map(|b| Row::Q7 {
                        window_end,
                        auction: b.auction,
                        bidder: b.bidder,
                        price: b.price,
                        date_time: b.date_time,
                    })
                    .collect();
                top.sort();
                rows.extend(top);
            }
            rows
        }
        Query::Q8 => {
            let mut persons: BTreeMap<(u64, u64), String> = BTreeMap::new();
            let mut sellers: BTreeSet<(u64, u64)> = BTreeSet::new();
            for e in (0..events).map(|i| gen::event(seed, i)) {
                match e {
                    Event::Person(p) => {
                        persons.insert((p.date_time - p.date_time % TUMBLE_MS + TUMBLE_MS, p.id), p.name);
                    }
                    Event::Auction(a) => {
                        sellers.insert((a.date_time - a.date_time % TUMBLE_MS + TUMBLE_MS, a.seller));
                    }
                    Event::Bid(_) => {}
                }
            }
            persons
                .into_iter()
                .filter(|(k, _)| sellers.contains(k))
                .map(|((window_end, person), name)| Row::Q8 { window_end, person, name })
                .collect()
        }
    };
    rows.into_iter().for_each(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_assignment() {
        assert_eq!(sliding_ends(0).collect::<Vec<_>>(), [2_000, 4_000, 6_000, 8_000, 10_000]);
        assert_eq!(sliding_ends(1_999).collect::<Vec<_>>(), [2_000, 4_000, 6_000, 8_000, 10_000]);
        assert_eq!(sliding_ends(2_000).collect::<Vec<_>>(), [4_000, 6_000, 8_000, 10_000, 12_000]);
        assert_eq!(tumble_end(9_999), 10_000);
        assert_eq!(tumble_end(10_000), 20_000);
        let mut m: BTreeMap<u64, ()> = [(1, ()), (2, ()), (3, ())].into();
        assert_eq!(take_ready(&mut m, 2).len(), 2);
        assert_eq!(take_ready(&mut m, u64::MAX).len(), 1);
        assert!(m.is_empty());
    }
}
