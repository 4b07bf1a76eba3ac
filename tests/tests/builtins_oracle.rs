//! Every built-in function (map, filter, key_by + count, keyed count/sum/min/max/avg, tumbling
//! and sliding windows, windowed join) run end to end on 1, 2 and 4 shards under every policy,
//! compared per key with a plain sequential reference over the replayed generator input.

mod common;

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use common::{
    aggregate, assert_keyed_eq, b, by_key, f, for_each_setup, generated, i, parse, run_placed, s, u, window_starts,
    Apps, Keyed, Out,
};
use dirigo_actors::record::Value;
use dirigo_engine::policy::{Builtin, Policy};

/// Input fields: `k` is the generator's key, `ts` its event time (1000 events per ms); the rest
/// are random: `a` in [0, 1000), `b` in [-1000, 1000), `x` in [0, 1), `s` in `s0`..`s99`.
const SCHEMA: &str = r#"{ k = "u64", a = "u64", b = "i64", x = "f64", flag = "bool", s = "string", ts = "u64" }"#;
const K: usize = 0;
const A: usize = 1;
const B: usize = 2;
const X: usize = 3;
const FLAG: usize = 4;
const S: usize = 5;

/// Events per run: 2000 (3000 for windows, 2000 per join side) keep a run under ~1 s in debug.
const EVENTS: usize = 2000;
const WINDOW_EVENTS: usize = 3000;

type Events = Vec<(u64, Vec<Value>)>;

/// One app over a generator `in` of `events` events and 50 keys, with `body` appended.
fn app(name: &str, events: usize, body: &str) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\nslo = \"50ms\"\nschema = {SCHEMA}\nevent_time = \"ts\"\nwatermark_every = 250\n\
         [[app.source]]\nname = \"in\"\nkind = \"generator\"\nrate = 0\nevents = {events}\nkeys = 50\nseed = 7\n{body}"
    )
}

/// A function `name` of `kind` with extra `keys`, read by a collecting sink `name_out`.
fn function(name: &str, kind: &str, keys: &str) -> String {
    format!(
        "[[app.function]]\nname = \"{name}\"\nkind = \"{kind}\"\n{keys}\n\
         [[app.sink]]\nname = \"{name}_out\"\nkind = \"stdout\"\ninput = \"{name}\"\n"
    )
}

/// Run `config` in every setup and compare each `(sink, reference)` pair per key; every run
/// must take in exactly `events_in` events.
fn check_all(config: &str, events_in: usize, references: &[(&str, Keyed)]) -> Result<()> {
    let config = parse(config)?;
    for_each_setup(&config, |run| {
        ensure!(run.summary.apps[0].events_in == events_in as u64, "events_in {}", run.summary.apps[0].events_in);
        for (sink, want) in references {
            assert_keyed_eq(sink, &run.keyed(sink), want)?;
        }
        Ok(())
    })
}

/// Stateless reference: `f` of each event (None: dropped), keeping its key hash 0 and time.
fn stateless(events: &Events, f: impl Fn(&[Value]) -> Option<Vec<Value>>) -> Keyed {
    let outs: Vec<Out> =
        events.iter().filter_map(|(t, e)| Some(Out { key_hash: 0, event_time: *t, values: f(e)? })).collect();
    by_key(&outs)
}

#[test]
fn map_computes_every_field_like_direct_arithmetic() -> Result<()> {
    let fields = r#"fields = { k = "k", lin = "a * 3 + k % 7", wrap = "a - 500", neg = "b * 2 - 7", minus = "-b + 3", scaled = "x * 2.5 + 1", mixed = "a + x", quarter = "b / 4.0", zero_div = "a / (k - k)", big = "a > 500 && flag || s == \"s7\"", low = "s < \"s5\"", label = "s" }"#;
    let config = app("map", EVENTS, &function("m", "map", &format!("input = \"in\"\n{fields}")));
    let want = stateless(&generated(&parse(&config)?, "in")?, |e| {
        let (k, a, bb, x) = (u(&e[K]), u(&e[A]), i(&e[B]), f(&e[X]));
        Some(vec![
            Value::U64(k),
            Value::U64(a.wrapping_mul(3).wrapping_add(k % 7)),
            Value::U64(a.wrapping_sub(500)),
            Value::I64(bb.wrapping_mul(2).wrapping_sub(7)),
            Value::I64(bb.wrapping_neg().wrapping_add(3)),
            Value::F64(x * 2.5 + 1.0),
            Value::F64(a as f64 + x),
            Value::F64(bb as f64 / 4.0),
            Value::U64(0), // integer division by zero gives 0
            Value::Bool(a > 500 && b(&e[FLAG]) || s(&e[S]) == "s7"),
            Value::Bool(s(&e[S]) < "s5"),
            e[S].clone(),
        ])
    });
    check_all(&config, EVENTS, &[("m_out", want)])
}

#[test]
fn filter_keeps_exactly_the_records_its_predicate_accepts() -> Result<()> {
    let p1 = r#"predicate = "(a > 200 && b < 0) || s == \"s3\" || !flag && x >= 0.5""#;
    let p2 = r#"predicate = "s <= \"s5\" && a % 3 != 1 || b >= 900 || x < 0.05""#;
    let body = function("f1", "filter", &format!("input = \"in\"\n{p1}"))
        + &function("f2", "filter", &format!("input = \"in\"\n{p2}"));
    let config = app("filter", EVENTS, &body);
    let events = generated(&parse(&config)?, "in")?;
    let f1 = stateless(&events, |e| {
        let keep = (u(&e[A]) > 200 && i(&e[B]) < 0) || s(&e[S]) == "s3" || !b(&e[FLAG]) && f(&e[X]) >= 0.5;
        keep.then(|| e.to_vec())
    });
    let f2 = stateless(&events, |e| {
        let keep = s(&e[S]) <= "s5" && u(&e[A]) % 3 != 1 || i(&e[B]) >= 900 || f(&e[X]) < 0.05;
        keep.then(|| e.to_vec())
    });
    ensure!(f1[&0].len() > 300 && f2[&0].len() > 300, "the predicates keep a fair share");
    check_all(&config, EVENTS, &[("f1_out", f1), ("f2_out", f2)])
}

/// A generator of scalars (no string field) whose one edge goes to a map: under the policies
/// that fuse (fifo, edf, laxity) its events are made a batch at a time and handed to the map
/// together, each row computed and routed in turn. A batch must end at every watermark (one
/// every 7 events, which batches of up to 32 straddle), at the source's end (3,001 events) and
/// where the next event is not due (the paced source), so that the map's rows, its windows'
/// firings and the keyed counts equal the sequential reference, at 1, 2 and 4 shards under
/// every policy. `fanned` feeds three functions (its rows are routed along three edges);
/// `chained` feeds one map, fused into it (each row goes on through that map).
#[test]
fn generators_of_scalars_hand_fused_maps_their_events_in_batches() -> Result<()> {
    const EVENTS: usize = 3001;
    let app = |name: &str, rate: u64, body: &str| {
        format!(
            "[[app]]\nname = \"{name}\"\nslo = \"50ms\"\n\
             schema = {{ k = \"u64\", a = \"u64\", b = \"i64\", x = \"f64\", ts = \"u64\" }}\n\
             event_time = \"ts\"\nwatermark_every = 7\n\
             [[app.source]]\nname = \"in\"\nkind = \"generator\"\nrate = {rate}\nevents = {EVENTS}\nkeys = 40\nseed = 11\n{body}"
        )
    };
    let map = |name: &str, input: &str, a: &str| {
        format!(
            "[[app.function]]\nname = \"{name}\"\nkind = \"map\"\ninput = \"{input}\"\n\
             fields = {{ k = \"k\", a = \"{a}\", ts = \"ts\" }}\n"
        )
    };
    let window = |input: &str| {
        let keys = format!(
            "input = \"{input}\"\nkey = \"k\"\nwindow = {{ type = \"tumbling\", size = \"1ms\" }}\n\
             aggregate = {{ op = \"sum\", field = \"a\" }}"
        );
        function(&format!("{input}_sum"), "window", &keys)
    };
    // The map's rows as the reference computes them: (k, a', ts) at the event's time.
    let mapped = |events: &Events, a: fn(u64) -> u64| -> Events {
        events.iter().map(|(t, e)| (*t, vec![e[K].clone(), Value::U64(a(u(&e[A]))), e[4].clone()])).collect()
    };
    let fanned = map("fanned", "in", "a * 3 + 1")
        + "[[app.sink]]\nname = \"fanned_out\"\nkind = \"stdout\"\ninput = \"fanned\"\n"
        + &window("fanned")
        + &function("counts", "count", "input = \"fanned\"\nkey = \"k\"");
    let chained = map("first", "in", "a + 5") + &map("chained", "first", "a * 2") + &window("chained");
    // Closed loop, and paced (100,000 events/s: some polls find the next event not due).
    for rate in [0, 100_000] {
        let config = app("fanned", rate, &fanned);
        let rows = mapped(&generated(&parse(&config)?, "in")?, |a| a * 3 + 1);
        let want = [
            ("fanned_out", stateless(&rows, |e| Some(e.to_vec()))),
            ("fanned_sum_out", windows(&rows, 1, 1, "sum", Some(1), 0)),
            ("counts_out", rolling(&rows, "count", None, field_key(0))),
        ];
        check_all(&config, EVENTS, &want)?;
        let config = app("chained", rate, &chained);
        let rows = mapped(&generated(&parse(&config)?, "in")?, |a| (a + 5) * 2);
        check_all(&config, EVENTS, &[("chained_sum_out", windows(&rows, 1, 1, "sum", Some(1), 0))])?;
        // Under fifo on one shard every event is fused into its map (and into the next one).
        let run = run_placed(&parse(&config)?, 1, Builtin::by_name("fifo").expect("fifo"), Apps::Spread)?;
        let fused = run.summary.apps[0].fused;
        ensure!(fused >= 2 * EVENTS as u64, "{fused} records fused of {} made", 2 * EVENTS);
    }
    Ok(())
}

/// Rolling reference: per key (hash and value from `key_of`), `op` over the key's values of
/// `field` so far, one output per input at the input's event time.
fn rolling(events: &Events, op: &str, field: Option<usize>, key_of: impl Fn(&[Value]) -> (u64, Value)) -> Keyed {
    let mut seen: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut outs = Vec::new();
    for (t, e) in events {
        let (hash, key) = key_of(e);
        let xs = seen.entry(format!("{key:?}")).or_default();
        xs.push(field.map_or(Value::Bool(true), |p| e[p].clone()));
        outs.push(Out { key_hash: hash, event_time: *t, values: vec![key, aggregate(op, xs)] });
    }
    by_key(&outs)
}

/// The key of a `key = <field>` aggregate: the field's value, routed by its hash.
fn field_key(pos: usize) -> impl Fn(&[Value]) -> (u64, Value) {
    move |e| (e[pos].key_hash(), e[pos].clone())
}

#[test]
fn key_by_then_count_counts_per_key_hash() -> Result<()> {
    let body = "[[app.function]]\nname = \"by_k\"\nkind = \"key_by\"\ninput = \"in\"\nkey = \"k\"\n\
                [[app.function]]\nname = \"by_s\"\nkind = \"key_by\"\ninput = \"in\"\nkey = \"s\"\n"
        .to_owned()
        + &function("count_k", "count", "input = \"by_k\"")
        + &function("count_s", "count", "input = \"by_s\"");
    let config = app("key_by", EVENTS, &body);
    let events = generated(&parse(&config)?, "in")?;
    // Without `key`, count keys by the upstream key hash and emits that hash as a u64.
    let hashed = |pos: usize| move |e: &[Value]| (e[pos].key_hash(), Value::U64(e[pos].key_hash()));
    let by_k = rolling(&events, "count", None, hashed(K));
    let by_s = rolling(&events, "count", None, hashed(S));
    check_all(&config, EVENTS, &[("count_k_out", by_k), ("count_s_out", by_s)])
}

/// A keyed rolling `op` per (function name, field, key field), each with its own sink.
fn check_rolling(op: &str, specs: &[(&str, Option<usize>, usize)]) -> Result<()> {
    let schema_names = ["k", "a", "b", "x", "flag", "s", "ts"];
    let body: String = specs
        .iter()
        .map(|(name, field, key)| {
            let field = field.map_or(String::new(), |p| format!("field = \"{}\"\n", schema_names[p]));
            function(name, op, &format!("input = \"in\"\n{field}key = \"{}\"", schema_names[*key]))
        })
        .collect();
    let config = app(op, EVENTS, &body);
    let events = generated(&parse(&config)?, "in")?;
    let sinks: Vec<String> = specs.iter().map(|(name, ..)| format!("{name}_out")).collect();
    let references: Vec<(&str, Keyed)> = specs
        .iter()
        .zip(&sinks)
        .map(|((_, field, key), sink)| (sink.as_str(), rolling(&events, op, *field, field_key(*key))))
        .collect();
    check_all(&config, EVENTS, &references)
}

#[test]
fn keyed_count_matches_reference() -> Result<()> {
    check_rolling("count", &[("by_k", None, K), ("by_s", None, S), ("by_flag", None, FLAG)])
}

#[test]
fn keyed_sum_matches_reference() -> Result<()> {
    check_rolling("sum", &[("sum_a", Some(A), K), ("sum_b", Some(B), K), ("sum_x", Some(X), S)])
}

#[test]
fn keyed_min_matches_reference() -> Result<()> {
    check_rolling("min", &[("min_a", Some(A), S), ("min_b", Some(B), K), ("min_x", Some(X), K)])
}

#[test]
fn keyed_max_matches_reference() -> Result<()> {
    check_rolling("max", &[("max_a", Some(A), K), ("max_b", Some(B), S), ("max_x", Some(X), K)])
}

#[test]
fn keyed_avg_matches_reference() -> Result<()> {
    check_rolling("avg", &[("avg_a", Some(A), K), ("avg_b", Some(B), K), ("avg_x", Some(X), S)])
}

/// Batch window reference for in-order input: every (key, window) with a record fires once,
/// with all of its records, each key's windows in ascending end order, at event time `end`.
fn windows(events: &Events, size: u64, slide: u64, op: &str, field: Option<usize>, key: usize) -> Keyed {
    let mut panes: BTreeMap<(String, u64), (Value, Vec<Value>)> = BTreeMap::new();
    for (t, e) in events {
        for start in window_starts(*t, size, slide) {
            let pane = panes.entry((format!("{:?}", e[key]), start)).or_insert_with(|| (e[key].clone(), Vec::new()));
            pane.1.push(field.map_or(Value::Bool(true), |p| e[p].clone()));
        }
    }
    let outs: Vec<Out> = panes
        .into_iter()
        .map(|((_, start), (k, xs))| {
            let values = vec![k.clone(), Value::U64(start), Value::U64(start + size), aggregate(op, &xs)];
            Out { key_hash: k.key_hash(), event_time: start + size, values }
        })
        .collect();
    by_key(&outs)
}

/// Window functions `(name, op, field, key)` of one shape, each with its own sink.
fn check_windows(shape: &str, size: u64, slide: u64, specs: &[(&str, &str, Option<&str>, &str)]) -> Result<()> {
    check_windows_with(shape, size, slide, specs, "")
}

/// As `check_windows`, with `extra` lines in every window function.
fn check_windows_with(
    shape: &str,
    size: u64,
    slide: u64,
    specs: &[(&str, &str, Option<&str>, &str)],
    extra: &str,
) -> Result<()> {
    let body: String = specs
        .iter()
        .map(|(name, op, field, key)| {
            let field = field.map_or(String::new(), |f| format!(", field = \"{f}\""));
            let keys = format!(
                "input = \"in\"\nkey = \"{key}\"\nwindow = {shape}\naggregate = {{ op = \"{op}\"{field} }}\n{extra}"
            );
            function(name, "window", &keys)
        })
        .collect();
    let config = app("windows", WINDOW_EVENTS, &body);
    let events = generated(&parse(&config)?, "in")?;
    let position = |n: &str| ["k", "a", "b", "x", "flag", "s", "ts"].iter().position(|f| *f == n).expect("a field");
    let sinks: Vec<String> = specs.iter().map(|(name, ..)| format!("{name}_out")).collect();
    let references: Vec<(&str, Keyed)> = specs
        .iter()
        .zip(&sinks)
        .map(|((_, op, field, key), sink)| {
            (sink.as_str(), windows(&events, size, slide, op, field.map(position), position(key)))
        })
        .collect();
    check_all(&config, WINDOW_EVENTS, &references)
}

#[test]
fn tumbling_windows_match_reference() -> Result<()> {
    let specs = [
        ("count_k", "count", None, "k"),
        ("sum_a", "sum", Some("a"), "k"),
        ("min_b", "min", Some("b"), "s"),
        ("max_x", "max", Some("x"), "k"),
        ("avg_b", "avg", Some("b"), "k"),
    ];
    check_windows(r#"{ type = "tumbling", size = "1ms" }"#, 1, 1, &specs)
}

/// The same windows as dual-mode actors (`max_lessees = 1`): under policies that never lease,
/// their records take the plain queue path while the lessor is idle, and barriers (watermarks
/// that fire, forced migrations) still come in order after them.
#[test]
fn tumbling_windows_as_dual_mode_actors_match_reference() -> Result<()> {
    let specs = [("count_k", "count", None, "k"), ("sum_a", "sum", Some("a"), "k"), ("max_x", "max", Some("x"), "k")];
    check_windows_with(r#"{ type = "tumbling", size = "1ms" }"#, 1, 1, &specs, "max_lessees = 1")
}

/// On one shard a window's records chain from the source (`shard::chain`) under the policies
/// that never lease (fifo, fair), whenever its machine is idle; under those that may (edf,
/// laxity), none does.
/// Either way the windows equal the reference (the same checks as above, on one setup each).
#[test]
fn window_records_chain_to_an_idle_window_under_policies_that_never_lease() -> Result<()> {
    let specs = [("sum_a", "sum", Some("a"), "k"), ("max_x", "max", Some("x"), "k")];
    let body: String = specs
        .iter()
        .map(|(name, op, field, key)| {
            let field = field.map_or(String::new(), |f| format!(", field = \"{f}\""));
            let keys = format!(
                "input = \"in\"\nkey = \"{key}\"\nwindow = {{ type = \"tumbling\", size = \"1ms\" }}\n\
                 aggregate = {{ op = \"{op}\"{field} }}\nmax_lessees = 1"
            );
            function(name, "window", &keys)
        })
        .collect();
    let config = parse(&app("windows", WINDOW_EVENTS, &body))?;
    let events = generated(&config, "in")?;
    let position = |n: &str| ["k", "a", "b", "x", "flag", "s", "ts"].iter().position(|f| *f == n).expect("a field");
    let window_records = (specs.len() * WINDOW_EVENTS) as u64;
    for policy in ["fifo", "edf", "fair", "laxity"] {
        let run = run_placed(&config, 1, Builtin::by_name(policy).expect("policy"), Apps::Spread)?;
        for (name, op, field, key) in specs {
            let want = windows(&events, 1, 1, op, field.map(position), position(key));
            assert_keyed_eq(&format!("{policy}: {name}"), &run.keyed(&format!("{name}_out")), &want)?;
        }
        // Records reach a window through its machine instead while a watermark it has not run
        // yet (one every 250 events) is staged or queued for it: most still chain.
        let chained = run.summary.apps[0].chained;
        if Builtin::by_name(policy).expect("policy").may_lease() {
            ensure!(chained == 0, "{policy}: {chained} records chained to windows that may lease");
        } else {
            ensure!(chained > window_records / 2, "{policy}: {chained} of {window_records} window records chained");
        }
    }
    Ok(())
}

#[test]
fn sliding_windows_as_dual_mode_actors_match_reference() -> Result<()> {
    let specs = [("sum_x", "sum", Some("x"), "k"), ("avg_a", "avg", Some("a"), "k")];
    check_windows_with(r#"{ type = "sliding", size = "3ms", slide = "1ms" }"#, 3, 1, &specs, "max_lessees = 1")
}

#[test]
fn sliding_windows_match_reference() -> Result<()> {
    let specs = [
        ("count_s", "count", None, "s"),
        ("sum_x", "sum", Some("x"), "k"),
        ("avg_a", "avg", Some("a"), "k"),
        ("max_b", "max", Some("b"), "k"),
    ];
    check_windows(r#"{ type = "sliding", size = "3ms", slide = "1ms" }"#, 3, 1, &specs)
}

/// Join reference: per (key, window), every (left, right) pair, left-arrival then
/// right-arrival order; each key's windows in ascending end order.
fn join(left: &Events, right: &Events, size: u64, slide: u64) -> Keyed {
    type Sides<'a> = (Vec<&'a [Value]>, Vec<&'a [Value]>);
    let mut panes: BTreeMap<(u64, u64), Sides<'_>> = BTreeMap::new();
    for (side, events) in [left, right].into_iter().enumerate() {
        for (t, e) in events {
            for start in window_starts(*t, size, slide) {
                let pane = panes.entry((u(&e[0]), start)).or_default();
                [&mut pane.0, &mut pane.1][side].push(e.as_slice());
            }
        }
    }
    let mut outs = Vec::new();
    for ((key, start), (ls, rs)) in panes {
        for l in &ls {
            for r in &rs {
                let mut values = vec![Value::U64(start), Value::U64(start + size)];
                values.extend(l.iter().chain(r.iter()).cloned());
                outs.push(Out { key_hash: Value::U64(key).key_hash(), event_time: start + size, values });
            }
        }
    }
    by_key(&outs)
}

#[test]
fn windowed_join_matches_reference() -> Result<()> {
    let source = |name: &str, seed: u64| {
        format!("[[app.source]]\nname = \"{name}\"\nkind = \"generator\"\nrate = 0\nevents = {EVENTS}\nkeys = 1000\nseed = {seed}\n")
    };
    let join_fn = |name: &str, window: &str| {
        let keys =
            format!("left = \"left\"\nright = \"right\"\nleft_key = \"k\"\nright_key = \"k\"\nwindow = {window}");
        function(name, "join", &keys)
    };
    let config = format!(
        "[[app]]\nname = \"join\"\nslo = \"50ms\"\nschema = {{ k = \"u64\", v = \"u64\", ts = \"u64\" }}\nevent_time = \"ts\"\n{}{}{}{}",
        source("left", 1),
        source("right", 2),
        join_fn("tumbling", r#"{ type = "tumbling", size = "1ms" }"#),
        join_fn("sliding", r#"{ type = "sliding", size = "2ms", slide = "1ms" }"#),
    );
    let parsed = parse(&config)?;
    let (left, right) = (generated(&parsed, "left")?, generated(&parsed, "right")?);
    let tumbling = join(&left, &right, 1, 1);
    let sliding = join(&left, &right, 2, 1);
    ensure!(tumbling.values().map(Vec::len).sum::<usize>() > 500, "the join makes pairs");
    check_all(&config, 2 * EVENTS, &[("tumbling_out", tumbling), ("sliding_out", sliding)])
}
