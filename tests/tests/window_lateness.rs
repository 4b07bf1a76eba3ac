//! Event-time windows over out-of-order NDJSON input with a watermark delay and allowed
//! lateness (source -> window, one hop): on-time firings, late re-emissions and dropped records
//! all match a sequential simulation of the documented rules, on 1, 2 and 4 shards under every
//! policy; and the run summary reports the dropped records.

mod common;

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use common::{aggregate, assert_keyed_eq, by_key, for_each_setup, parse, run, run_with, window_starts, Forced};
use common::{Keyed, Out, TempFile};
use dirigo_actors::record::Value;
use dirigo_engine::config::Config;
use rand::{Rng, SeedableRng};

const RECORDS: usize = 3000;
/// `watermark_delay` and `watermark_every` of the app.
const DELAY_MS: u64 = 3;
const EVERY: usize = 7;

/// One input record: user, value, event time (ms).
type Record = (String, i64, u64);

/// Seeded out-of-order input: event time advances 1 ms every 10 records; most records lag it
/// by up to the watermark delay, some by more (late, often within lateness), a few by far more
/// (beyond lateness: dropped).
fn records(seed: u64) -> Vec<Record> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..RECORDS)
        .map(|n| {
            let base = n as u64 / 10;
            let lag = match rng.gen_range(0..100) {
                0..75 => rng.gen_range(0..=DELAY_MS),
                75..93 => rng.gen_range(DELAY_MS + 1..=14),
                _ => rng.gen_range(15..=60),
            };
            (format!("u{}", rng.gen_range(0..12)), rng.gen_range(-100..=100), base.saturating_sub(lag))
        })
        .collect()
}

fn ndjson(records: &[Record]) -> String {
    records
        .iter()
        .map(|(user, v, ts)| serde_json::json!({ "user": user, "v": v, "ts": ts }).to_string() + "\n")
        .collect()
}

/// A window function `name` over the file source, with a collecting sink `name_out`.
fn window_fn(name: &str, window: &str, aggregate: &str) -> String {
    format!(
        "[[app.function]]\nname = \"{name}\"\nkind = \"window\"\ninput = \"in\"\nkey = \"user\"\nwindow = {window}\naggregate = {aggregate}\n\
         [[app.sink]]\nname = \"{name}_out\"\nkind = \"stdout\"\ninput = \"{name}\"\n"
    )
}

fn config(path: &std::path::Path, functions: &str) -> String {
    format!(
        "[[app]]\nname = \"late\"\nslo = \"50ms\"\nschema = {{ user = \"string\", v = \"i64\", ts = \"u64\" }}\n\
         event_time = \"ts\"\nwatermark_delay = \"{DELAY_MS}ms\"\nwatermark_every = {EVERY}\n\
         [[app.source]]\nname = \"in\"\nkind = \"file\"\npath = \"{}\"\n{functions}",
        path.display()
    )
}

const SUM_TUMBLING: (&str, &str, &str) =
    ("sum_t", r#"{ type = "tumbling", size = "10ms", lateness = "6ms" }"#, r#"{ op = "sum", field = "v" }"#);
const COUNT_SLIDING: (&str, &str, &str) =
    ("count_s", r#"{ type = "sliding", size = "10ms", slide = "5ms", lateness = "4ms" }"#, r#"{ op = "count" }"#);

/// One key's window `[start, start + size)`: its key, accepted values and whether it has fired.
struct Pane {
    key: Value,
    xs: Vec<Value>,
    fired: bool,
}

/// Sequential simulation of one window function under the documented rules (`panes.rs`):
/// a pane fires once when the watermark reaches its end (or at end of input); until the
/// watermark passes `end + lateness`, a record reaching it updates it and re-emits at once; a
/// record all of whose windows have `end + lateness <= watermark` is dropped.
struct Sim {
    size: u64,
    slide: u64,
    lateness: u64,
    op: &'static str,
    watermark: u64,
    panes: BTreeMap<(String, u64), Pane>,
    outs: Vec<Out>,
    dropped: u64,
    late_emits: usize,
    fired: usize,
}

impl Sim {
    fn new(size: u64, slide: u64, lateness: u64, op: &'static str) -> Sim {
        let panes = BTreeMap::new();
        Sim { size, slide, lateness, op, watermark: 0, panes, outs: Vec::new(), dropped: 0, late_emits: 0, fired: 0 }
    }

    fn emit(outs: &mut Vec<Out>, op: &str, (key, start, end): (&Value, u64, u64), xs: &[Value]) {
        let key = key.clone();
        let values = vec![key.clone(), Value::U64(start), Value::U64(end), aggregate(op, xs)];
        outs.push(Out { key_hash: key.key_hash(), event_time: end, values });
    }

    fn record(&mut self, key: &Value, t: u64, x: Value) {
        let user = format!("{key:?}");
        let (size, wm) = (self.size, self.watermark);
        let live: Vec<u64> = window_starts(t, size, self.slide).filter(|s| s + size + self.lateness > wm).collect();
        if live.is_empty() {
            self.dropped += 1;
        }
        for start in live {
            let pane = self.panes.entry((user.clone(), start)).or_insert(Pane {
                key: key.clone(),
                xs: Vec::new(),
                fired: start + size <= wm,
            });
            pane.xs.push(x.clone());
            if pane.fired {
                self.late_emits += 1;
                Self::emit(&mut self.outs, self.op, (key, start, start + size), &pane.xs);
            }
        }
    }

    /// Fire the unfired panes ending by `limit`, in (end, key) order.
    fn fire(&mut self, limit: u64) {
        let mut due: Vec<(u64, String, u64)> = (self.panes.iter())
            .filter(|((_, start), p)| !p.fired && start + self.size <= limit)
            .map(|((user, start), _)| (start + self.size, user.clone(), *start))
            .collect();
        due.sort();
        for (end, user, start) in due {
            let pane = self.panes.get_mut(&(user.clone(), start)).expect("due pane");
            pane.fired = true;
            self.fired += 1;
            Self::emit(&mut self.outs, self.op, (&pane.key, start, end), &pane.xs);
        }
    }

    fn watermark(&mut self, wm: u64) {
        if wm > self.watermark {
            self.watermark = wm;
            self.fire(wm);
        }
    }

    /// Feed `records` as the file source does: a watermark of `max event time - delay` after
    /// every `EVERY`-th record (when it advances), then end of input.
    fn replay(self, records: &[Record], value: impl Fn(&Record) -> Value) -> Sim {
        self.replay_keyed(records, |r| Value::Str(r.0.clone()), value)
    }

    /// [`Sim::replay`] with each record's key `key`.
    fn replay_keyed(self, records: &[Record], key: impl Fn(&Record) -> Value, value: impl Fn(&Record) -> Value) -> Sim {
        self.replay_kept(records, |_| true, key, value)
    }

    /// `replay_keyed` of the records that `keep` keeps (filters upstream of the window): the
    /// others still advance the source's watermark, as the source reads them too.
    fn replay_kept(
        mut self,
        records: &[Record],
        keep: impl Fn(&Record) -> bool,
        key: impl Fn(&Record) -> Value,
        value: impl Fn(&Record) -> Value,
    ) -> Sim {
        let (mut max_t, mut last) = (0, 0);
        for (n, r) in records.iter().enumerate() {
            if keep(r) {
                self.record(&key(r), r.2, value(r));
            }
            max_t = max_t.max(r.2);
            let wm = max_t.saturating_sub(DELAY_MS);
            if (n + 1) % EVERY == 0 && wm > last {
                last = wm;
                self.watermark(wm);
            }
        }
        self.fire(u64::MAX - self.size);
        self
    }
}

fn sum_tumbling(records: &[Record]) -> Sim {
    Sim::new(10, 10, 6, "sum").replay(records, |r| Value::I64(r.1))
}

fn count_sliding(records: &[Record]) -> Sim {
    Sim::new(10, 5, 4, "count").replay(records, |_| Value::Bool(true))
}

#[test]
fn late_records_are_re_emitted_or_dropped_as_documented() -> Result<()> {
    let input = records(2024);
    let file = TempFile::with_text("lateness", "ndjson", &ndjson(&input))?;
    let functions = [SUM_TUMBLING, COUNT_SLIDING].map(|(n, w, a)| window_fn(n, w, a)).concat();
    let config = parse(&config(&file.0, &functions))?;
    let sims = [("sum_t_out", sum_tumbling(&input)), ("count_s_out", count_sliding(&input))];
    for (name, sim) in &sims {
        // The input exercises every rule: on-time firings, late updates, drops.
        ensure!(
            sim.fired > 100 && sim.late_emits > 20 && sim.dropped > 20,
            "{name}: {} fired, {} late, {} dropped",
            sim.fired,
            sim.late_emits,
            sim.dropped
        );
    }
    let want: Vec<(&str, Keyed)> = sims.iter().map(|(name, sim)| (*name, by_key(&sim.outs))).collect();
    for_each_setup(&config, |run| {
        ensure!(run.summary.apps[0].events_in == RECORDS as u64, "events_in {}", run.summary.apps[0].events_in);
        want.iter().try_for_each(|(sink, w)| assert_keyed_eq(sink, &run.keyed(sink), w))
    })
}

/// The user's number (`u7` -> 7).
fn uid(r: &Record) -> u64 {
    r.0[1..].parse().expect("a user is `u` and a number")
}

/// Windows behind maps of scalars, which are fused into the source and into each other under
/// the policies whose hooks do nothing with their records (fifo, edf, laxity): a watermark
/// must still reach each window after every record made before it and before every record
/// made after it, or late records would be kept or dropped otherwise than sequentially.
/// `scaled` feeds a map and a window (two edges); `shifted` is a map fused into a map.
#[test]
fn windows_behind_fused_maps_keep_every_record_on_its_side_of_each_watermark() -> Result<()> {
    let input = records(4242);
    let text: String = (input.iter())
        .map(|r| serde_json::json!({ "user": r.0, "uid": uid(r), "v": r.1, "ts": r.2 }).to_string() + "\n")
        .collect();
    let file = TempFile::with_text("fused", "ndjson", &text)?;
    let map = |name: &str, input: &str, v: &str| {
        format!(
            "[[app.function]]\nname = \"{name}\"\nkind = \"map\"\ninput = \"{input}\"\n\
             fields = {{ uid = \"uid\", v = \"{v}\", ts = \"ts\" }}\n"
        )
    };
    let window = |(name, window, aggregate): (&str, &str, &str), input: &str| {
        format!(
            "[[app.function]]\nname = \"{name}\"\nkind = \"window\"\ninput = \"{input}\"\nkey = \"uid\"\n\
             window = {window}\naggregate = {aggregate}\n\
             [[app.sink]]\nname = \"{name}_out\"\nkind = \"stdout\"\ninput = \"{name}\"\n"
        )
    };
    let functions = map("scaled", "in", "v * 2")
        + &map("shifted", "scaled", "v - 1")
        + &window(SUM_TUMBLING, "shifted")
        + &window(COUNT_SLIDING, "scaled");
    let text = config(&file.0, &functions)
        .replace("schema = { user = \"string\", v", "schema = { user = \"string\", uid = \"u64\", v");
    let config = parse(&text)?;
    let key = |r: &Record| Value::U64(uid(r));
    let sum = Sim::new(10, 10, 6, "sum").replay_keyed(&input, key, |r| Value::I64(2 * r.1 - 1));
    let count = Sim::new(10, 5, 4, "count").replay_keyed(&input, key, |_| Value::Bool(true));
    ensure!(sum.late_emits > 20 && sum.dropped > 20, "{} late, {} dropped", sum.late_emits, sum.dropped);
    let want = [("sum_t_out", by_key(&sum.outs)), ("count_s_out", by_key(&count.outs))];
    // Each record passes two maps.
    check_fused_windows(&config, &want, RECORDS as u64)
}

/// Run `config` in every setup against the windows' simulated outputs `want`, then check that
/// on one shard more than `min_fused` records are fused under fifo and laxity, and none under
/// fair (whose hooks observe every record).
fn check_fused_windows(config: &Config, want: &[(&str, Keyed)], min_fused: u64) -> Result<()> {
    for_each_setup(config, |run| {
        ensure!(run.summary.apps[0].events_in == RECORDS as u64, "events_in {}", run.summary.apps[0].events_in);
        want.iter().try_for_each(|(sink, w)| assert_keyed_eq(sink, &run.keyed(sink), w))
    })?;
    for (policy, fuses) in [("fifo", true), ("laxity", true), ("fair", false)] {
        let fused = run(config, 1, policy)?.summary.apps[0].fused;
        ensure!(
            if fuses { fused > min_fused } else { fused == 0 },
            "{policy}: {fused} records of maps and filters fused (more than {min_fused} expected)"
        );
    }
    Ok(())
}

/// Filters fused as maps are, around fused maps: `kept` reads the file's records (values: it
/// tests them archived once), `big` the row of the map of two edges before it (`scaled`),
/// `small` the row of the map fused into it (`shifted`, behind `big`). Every firing, late
/// re-emission and drop equals the simulation of the filtered input (whose dropped records
/// still advance the watermark, as the source reads them), at 1, 2 and 4 shards under every
/// policy; the filters and maps are fused under fifo and laxity, never under fair.
#[test]
fn windows_behind_fused_filters_see_exactly_the_records_that_pass() -> Result<()> {
    let input = records(777);
    let text: String = (input.iter())
        .map(|r| serde_json::json!({ "user": r.0, "uid": uid(r), "v": r.1, "ts": r.2 }).to_string() + "\n")
        .collect();
    let file = TempFile::with_text("filtered", "ndjson", &text)?;
    let node = |name: &str, input: &str, body: &str| {
        format!("[[app.function]]\nname = \"{name}\"\ninput = \"{input}\"\n{body}\n")
    };
    let map = |v: &str| format!("kind = \"map\"\nfields = {{ uid = \"uid\", v = \"{v}\", ts = \"ts\" }}");
    let filter = |p: &str| format!("kind = \"filter\"\npredicate = \"{p}\"");
    let window = |(name, window, aggregate): (&str, &str, &str), input: &str| {
        node(name, input, &format!("kind = \"window\"\nkey = \"uid\"\nwindow = {window}\naggregate = {aggregate}"))
            + &format!("[[app.sink]]\nname = \"{name}_out\"\nkind = \"stdout\"\ninput = \"{name}\"\n")
    };
    let functions = node("kept", "in", &filter("v % 3 != 0"))
        + &node("scaled", "kept", &map("v * 2"))
        + &node("big", "scaled", &filter("v > -150"))
        + &node("shifted", "big", &map("v - 1"))
        + &node("small", "shifted", &filter("v < 151"))
        + &window(SUM_TUMBLING, "small")
        + &window(COUNT_SLIDING, "scaled");
    let text = config(&file.0, &functions)
        .replace("schema = { user = \"string\", v", "schema = { user = \"string\", uid = \"u64\", v");
    let config = parse(&text)?;
    let key = |r: &Record| Value::U64(uid(r));
    let kept = |r: &Record| r.1 % 3 != 0;
    let small = |r: &Record| kept(r) && 2 * r.1 > -150 && 2 * r.1 - 1 < 151;
    let sum = Sim::new(10, 10, 6, "sum").replay_kept(&input, small, key, |r| Value::I64(2 * r.1 - 1));
    let count = Sim::new(10, 5, 4, "count").replay_kept(&input, kept, key, |_| Value::Bool(true));
    let passed = input.iter().filter(|r| small(r)).count();
    ensure!(passed < RECORDS * 2 / 3 && passed > RECORDS / 3, "the filters pass {passed} of {RECORDS}");
    ensure!(sum.late_emits > 10 && sum.dropped > 10, "{} late, {} dropped", sum.late_emits, sum.dropped);
    let want = [("sum_t_out", by_key(&sum.outs)), ("count_s_out", by_key(&count.outs))];
    // Every record passes `kept` fused, most of them three more functions.
    check_fused_windows(&config, &want, 3 * RECORDS as u64)
}

/// Dual-mode scaling forced on every other message (random refusals and retirements, a policy
/// tick every 100 µs), with 2 shards and with 4 (more than this machine's CPUs): on-time records
/// fold into lessees' partials, which are merged at every watermark (the barrier), and every
/// output equals the sequential simulation's; nothing is lost or counted twice.
#[test]
fn windows_scaled_out_on_every_other_message_equal_the_simulation() -> Result<()> {
    let input = records(99);
    let file = TempFile::with_text("forced", "ndjson", &ndjson(&input))?;
    let functions = [SUM_TUMBLING, COUNT_SLIDING].map(|(n, w, a)| window_fn(n, w, a)).concat();
    let text = format!("[engine]\ntick = \"100us\"\n{}", config(&file.0, &functions));
    let config = parse(&text)?;
    let sims = [("sum_t_out", sum_tumbling(&input)), ("count_s_out", count_sliding(&input))];
    let dropped: u64 = sims.iter().map(|(_, s)| s.dropped).sum();
    for shards in [2, 4] {
        for seed in 1..=3 {
            let run = run_with(&config, shards, Forced::new(seed))?;
            let app = &run.summary.apps[0];
            let a = &app.actors;
            ensure!(
                a.forwarded > 200 && a.refused > 0,
                "{shards} shards: forwarded {}, refused {}",
                a.forwarded,
                a.refused
            );
            ensure!(a.lessees_created > 0 && a.lessees_retired == a.lessees_created, "lessees {a:?}");
            ensure!(
                a.barriers > 100 && a.partial_bytes > 0,
                "barriers {}, partial bytes {}",
                a.barriers,
                a.partial_bytes
            );
            ensure!(
                app.events_in == RECORDS as u64 && app.late_dropped == dropped,
                "in {} dropped {}",
                app.events_in,
                app.late_dropped
            );
            for (sink, sim) in &sims {
                assert_keyed_eq(sink, &run.keyed(sink), &by_key(&sim.outs))?;
            }
        }
    }
    Ok(())
}

/// Regression: the summary's `late_dropped` ("records dropped for arriving after their
/// window's allowed lateness") must count what the window dropped.
#[test]
fn summary_counts_records_dropped_for_lateness() -> Result<()> {
    let input = records(7);
    let file = TempFile::with_text("dropped", "ndjson", &ndjson(&input))?;
    let (name, window, aggregate) = SUM_TUMBLING;
    let config = parse(&config(&file.0, &window_fn(name, window, aggregate)))?;
    let dropped = sum_tumbling(&input).dropped;
    ensure!(dropped > 20, "the input has records beyond lateness");
    for shards in [1, 2] {
        let summary = run(&config, shards, "fifo")?.summary;
        ensure!(
            summary.apps[0].late_dropped == dropped,
            "{shards} shard(s): summary late_dropped is {}, the window dropped {dropped}",
            summary.apps[0].late_dropped
        );
    }
    Ok(())
}
