//! Unit tests of the generator: determinism across parallelism, schedule, key distributions, errors.

use std::time::Duration;

use dirigo_actors::record::{FieldType, Schema, Value};

use super::generator::{Burst, FieldRole, Generator, GeneratorError, GeneratorSpec, KeyDistribution};

/// key u64, event time u64, then one field of every other type.
fn schema() -> Schema {
    Schema::new(vec![
        ("key".into(), FieldType::U64),
        ("ts".into(), FieldType::U64),
        ("n".into(), FieldType::I64),
        ("x".into(), FieldType::F64),
        ("b".into(), FieldType::Bool),
        ("s".into(), FieldType::Str),
        ("u".into(), FieldType::U64),
    ])
}

fn spec(rate: u64) -> GeneratorSpec {
    GeneratorSpec {
        rate,
        events: None,
        duration: None,
        keys: 1000,
        key_field: 0,
        distribution: KeyDistribution::Uniform,
        seed: 42,
        bursts: vec![],
        event_time_field: Some(1),
        instance: 0,
        parallelism: 1,
    }
}

fn generator(spec: GeneratorSpec) -> Generator {
    Generator::new(spec, &schema()).expect("valid spec")
}

/// Every event of a generator: (due ns, event time ms, fields).
fn drain(mut g: Generator) -> Vec<(u64, u64, Vec<Value>)> {
    let mut out = Vec::new();
    let mut values = Vec::new();
    while let Some(due) = g.next_due_ns() {
        let ms = g.next_event(&mut values).expect("due events are produced");
        out.push((due, ms, values.clone()));
    }
    assert_eq!(g.next_event(&mut values), None);
    assert_eq!(g.produced(), out.len() as u64);
    out
}

fn instance(mut s: GeneratorSpec, instance: u32, parallelism: u32) -> GeneratorSpec {
    (s.instance, s.parallelism) = (instance, parallelism);
    s
}

/// Keys of `n` events of a generator.
fn keys(s: GeneratorSpec, n: u64) -> Vec<u64> {
    let mut g = generator(GeneratorSpec { events: Some(n), ..s });
    let mut values = Vec::new();
    let mut out = Vec::with_capacity(n as usize);
    while g.next_event(&mut values).is_some() {
        let Value::U64(k) = values[0] else { panic!("u64 key expected") };
        out.push(k);
    }
    out
}

#[test]
fn same_seed_same_events_other_seed_other_events() {
    let s = GeneratorSpec { events: Some(500), ..spec(10_000) };
    assert_eq!(drain(generator(s.clone())), drain(generator(s.clone())));
    let other = drain(generator(GeneratorSpec { seed: 43, ..s.clone() }));
    assert_ne!(drain(generator(s)), other);
}

#[test]
fn parallel_instances_split_the_same_stream() {
    for (rate, parallelism) in [(5_000, 2), (5_000, 3), (0, 2), (0, 4)] {
        let s = GeneratorSpec { events: Some(1001), distribution: KeyDistribution::Zipf { s: 1.1 }, ..spec(rate) };
        let whole = drain(generator(s.clone()));
        assert_eq!(whole.len(), 1001);
        let parts: Vec<_> = (0..parallelism).map(|k| drain(generator(instance(s.clone(), k, parallelism)))).collect();
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 1001);
        for (i, event) in whole.iter().enumerate() {
            let p = parallelism as usize;
            assert_eq!(&parts[i % p][i / p], event, "event {i} at parallelism {p}");
        }
    }
}

#[test]
fn events_are_due_at_the_base_rate() {
    let events = drain(generator(GeneratorSpec { events: Some(2000), ..spec(1000) }));
    for (i, (due, ms, values)) in events.iter().enumerate() {
        assert_eq!(*due, i as u64 * 1_000_000);
        assert_eq!(*ms, i as u64);
        assert_eq!(values[1], Value::U64(i as u64));
    }
    // 3 events/s: due times round up to the first nanosecond the integral reaches i.
    let thirds = drain(generator(GeneratorSpec { events: Some(4), ..spec(3) }));
    let due: Vec<u64> = thirds.iter().map(|e| e.0).collect();
    assert_eq!(due, [0, 333_333_334, 666_666_667, 1_000_000_000]);
}

#[test]
fn a_burst_raises_the_rate_over_exactly_its_window() {
    let s = GeneratorSpec {
        duration: Some(Duration::from_secs(3)),
        bursts: vec![Burst { at: Duration::from_secs(1), duration: Duration::from_secs(1), rate: 10_000 }],
        ..spec(1000)
    };
    let events = drain(generator(s));
    let in_window = |from: u64, to: u64| events.iter().filter(move |e| e.0 >= from && e.0 < to);
    let second = 1_000_000_000;
    assert_eq!(in_window(0, second).count(), 1000);
    assert_eq!(in_window(second, 2 * second).count(), 10_000);
    assert_eq!(in_window(2 * second, 3 * second).count(), 1000);
    assert_eq!(events.len(), 12_000);
    assert_eq!(events[1000].0, second);
    assert_eq!(events[1001].0, second + 100_000);
    assert_eq!(events[11_000].0, 2 * second);
    assert_eq!(events[11_001].0, 2 * second + 1_000_000);
}

#[test]
fn bursts_in_any_order_and_a_pause() {
    let pause = Burst { at: Duration::from_millis(10), duration: Duration::from_millis(5), rate: 0 };
    let fast = Burst { at: Duration::from_millis(2), duration: Duration::from_millis(1), rate: 2000 };
    let events = drain(generator(GeneratorSpec { events: Some(14), bursts: vec![pause, fast], ..spec(1000) }));
    let ms: Vec<u64> = events.iter().map(|e| e.0 / 100_000).collect();
    // 0, 1 ms; 2, 2.5 ms (burst); 1 per ms from 3 ms; the pause [10, 15) ms delays event 12 to 16 ms.
    assert_eq!(ms, [0, 10, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 160, 170]);
}

#[test]
fn duration_cuts_off_every_instance() {
    let s = GeneratorSpec { duration: Some(Duration::from_secs(1)), ..spec(1000) };
    assert_eq!(drain(generator(s.clone())).len(), 1000);
    let halves: Vec<_> = (0..2).map(|k| drain(generator(instance(s.clone(), k, 2)))).collect();
    assert_eq!(halves[0].len() + halves[1].len(), 1000);
    assert!(halves.iter().flatten().all(|e| e.0 < 1_000_000_000));
}

#[test]
fn events_cut_off_across_instances() {
    let s = GeneratorSpec { events: Some(10), ..spec(1000) };
    let counts: Vec<usize> = (0..3).map(|k| drain(generator(instance(s.clone(), k, 3))).len()).collect();
    assert_eq!(counts, [4, 3, 3]);
}

#[test]
fn unbounded_rate_is_always_due_on_a_logical_clock() {
    let events = drain(generator(GeneratorSpec { duration: Some(Duration::from_millis(3)), ..spec(0) }));
    assert_eq!(events.len(), 3000);
    assert!(events.iter().all(|e| e.0 == 0));
    assert_eq!(events[999].1, 0);
    assert_eq!(events[1000].1, 1);
    assert_eq!(events[2999].1, 2);
}

#[test]
fn fields_have_their_documented_ranges() {
    let s = Schema::new(vec![
        ("s".into(), FieldType::Str),
        ("key".into(), FieldType::Str),
        ("n".into(), FieldType::I64),
        ("x".into(), FieldType::F64),
        ("u".into(), FieldType::U64),
        ("b".into(), FieldType::Bool),
    ]);
    let spec = GeneratorSpec { key_field: 1, event_time_field: None, events: Some(5000), keys: 7, ..spec(0) };
    let mut g = Generator::new(spec.clone(), &s).unwrap();
    // A buffer of the wrong shape is refilled to the schema's.
    let mut values = vec![Value::Bool(false); 9];
    let mut trues = 0;
    while g.next_event(&mut values).is_some() {
        assert_eq!(values.len(), 6);
        let [Value::Str(a), Value::Str(k), Value::I64(n), Value::F64(x), Value::U64(u), Value::Bool(b)] = &values[..]
        else {
            panic!("types follow the schema: {values:?}")
        };
        assert!(a.strip_prefix('s').unwrap().parse::<u64>().unwrap() < 100);
        assert!(k.strip_prefix('k').unwrap().parse::<u64>().unwrap() < 7);
        assert!((-1000..1000).contains(n) && (0.0..1.0).contains(x) && *u < 1000);
        trues += *b as u32;
    }
    // String buffers are refilled in place, not reallocated.
    let before = match &values[0] {
        Value::Str(s) => s.as_ptr(),
        other => panic!("string expected, got {other:?}"),
    };
    let mut g = Generator::new(GeneratorSpec { events: None, ..spec }, &s).unwrap();
    g.next_event(&mut values);
    assert!(matches!(&values[0], Value::Str(s) if s.as_ptr() == before));
    assert!((2300..2700).contains(&trues), "{trues} trues of 5000");
}

#[test]
fn uniform_keys_cover_the_space_evenly() {
    let n = 100_000;
    let mut counts = vec![0u64; 100];
    for k in keys(GeneratorSpec { keys: 100, ..spec(0) }, n) {
        counts[k as usize] += 1;
    }
    let expected = n as f64 / 100.0;
    let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
    // 99 degrees of freedom: mean 99, standard deviation 14.
    assert!(chi2 < 170.0, "chi-square {chi2}");
}

#[test]
fn zipf_key_zero_has_its_theoretical_frequency() {
    let n = 100_000;
    for (keys, s) in [(1000u64, 1.0), (1000, 1.5), (10_000_000, 0.8), (50, 2.5), (1, 1.0)] {
        let harmonic: f64 = (1..=keys.min(1_000_000)).map(|k| (k as f64).powf(-s)).sum::<f64>() + tail(keys, s);
        let sample = keys_of(keys, s, n);
        assert!(sample.iter().all(|&k| k < keys));
        let p0 = sample.iter().filter(|&&k| k == 0).count() as f64 / n as f64;
        let p1 = sample.iter().filter(|&&k| k == 1).count() as f64 / n as f64;
        let (e0, e1) = (1.0 / harmonic, 2f64.powf(-s) / harmonic);
        assert!((p0 - e0).abs() < 0.006, "keys {keys} s {s}: p0 {p0} vs {e0}");
        assert!(keys == 1 || (p1 - e1).abs() < 0.006, "keys {keys} s {s}: p1 {p1}");
    }
}

/// Sum of k^-s over (10^6, keys], by the integral (exact enough for these tests).
fn tail(keys: u64, s: f64) -> f64 {
    let from = 1_000_000.5f64;
    match keys > 1_000_000 {
        true => ((keys as f64 + 0.5).powf(1.0 - s) - from.powf(1.0 - s)) / (1.0 - s),
        false => 0.0,
    }
}

fn keys_of(keys: u64, s: f64, n: u64) -> Vec<u64> {
    let spec = GeneratorSpec { keys, distribution: KeyDistribution::Zipf { s }, ..spec(0) };
    self::keys(spec, n)
}

#[test]
fn every_constructor_error() {
    let err = |s: GeneratorSpec| Generator::new(s, &schema()).unwrap_err();
    let base = spec(1000);
    let burst =
        |at: u64, ms: u64| Burst { at: Duration::from_millis(at), duration: Duration::from_millis(ms), rate: 5 };
    let cases = [
        (
            GeneratorSpec { key_field: 9, ..base.clone() },
            GeneratorError::NoSuchField { role: FieldRole::Key, position: 9, fields: 7 },
        ),
        (
            GeneratorSpec { event_time_field: Some(7), ..base.clone() },
            GeneratorError::NoSuchField { role: FieldRole::EventTime, position: 7, fields: 7 },
        ),
        (
            GeneratorSpec { key_field: 3, ..base.clone() },
            GeneratorError::KeyFieldType { name: "x".into(), found: FieldType::F64 },
        ),
        (
            GeneratorSpec { event_time_field: Some(2), ..base.clone() },
            GeneratorError::EventTimeFieldType { name: "n".into(), found: FieldType::I64 },
        ),
        (
            GeneratorSpec { event_time_field: Some(0), ..base.clone() },
            GeneratorError::KeyIsEventTime { name: "key".into() },
        ),
        (GeneratorSpec { parallelism: 0, ..base.clone() }, GeneratorError::ZeroParallelism),
        (instance(base.clone(), 2, 2), GeneratorError::InstanceOutOfRange { instance: 2, parallelism: 2 }),
        (
            GeneratorSpec { distribution: KeyDistribution::Zipf { s: 0.0 }, ..base.clone() },
            GeneratorError::ZipfExponent { s: 0.0 },
        ),
        (GeneratorSpec { keys: 0, ..base.clone() }, GeneratorError::NoKeys),
        (
            GeneratorSpec { bursts: vec![burst(50, 10), burst(0, 5), burst(45, 10)], ..base.clone() },
            GeneratorError::OverlappingBursts { first: 0, second: 2 },
        ),
        (GeneratorSpec { bursts: vec![burst(0, 5)], ..spec(0) }, GeneratorError::BurstsWithUnboundedRate),
    ];
    for (spec, expected) in cases {
        assert_eq!(err(spec), expected);
    }
    let nan = GeneratorSpec { distribution: KeyDistribution::Zipf { s: f64::NAN }, ..base };
    assert!(matches!(err(nan), GeneratorError::ZipfExponent { .. }));
    // Adjacent bursts do not overlap; error messages name the problem.
    let adjacent = GeneratorSpec { bursts: vec![burst(5, 5), burst(0, 5)], ..spec(1000) };
    assert!(Generator::new(adjacent, &schema()).is_ok());
    assert!(GeneratorError::ZeroParallelism.to_string().contains("parallelism"));
}

/// A generator of scalars makes, as archived cells (the shard's path), exactly the events it
/// makes as values, for every scalar type, key type and key distribution, at the same times.
#[test]
fn scalar_events_as_cells_are_the_events_as_values() {
    let scalars = |key: FieldType| {
        Schema::new(vec![
            ("key".into(), key),
            ("ts".into(), FieldType::U64),
            ("n".into(), FieldType::I64),
            ("x".into(), FieldType::F64),
            ("b".into(), FieldType::Bool),
            ("u".into(), FieldType::U64),
        ])
    };
    for (key, distribution) in
        [(FieldType::U64, KeyDistribution::Uniform), (FieldType::I64, KeyDistribution::Zipf { s: 1.1 })]
    {
        let s = GeneratorSpec { events: Some(777), distribution, ..instance(spec(0), 1, 2) };
        let (mut by_values, mut by_cells) =
            (Generator::new(s.clone(), &scalars(key)).unwrap(), Generator::new(s, &scalars(key)).unwrap());
        assert!(by_cells.is_scalar());
        let (mut values, mut cells) = (Vec::new(), Vec::new());
        let mut n = 0;
        while let Some(due) = by_values.next_due_ns() {
            assert_eq!(by_cells.next_due_ns(), Some(due));
            let ms = by_values.next_event(&mut values);
            assert_eq!(by_cells.next_cells(&mut cells), ms);
            assert_eq!(cells.iter().map(|c| c.to_value()).collect::<Vec<_>>(), values, "event {n}");
            n += 1;
        }
        assert_eq!((n, by_cells.next_due_ns(), by_cells.next_cells(&mut cells)), (388, None, None));
    }
    // A string field (here the key, or another field) keeps the generator on values.
    assert!(!generator(spec(0)).is_scalar());
    assert!(!Generator::new(spec(0), &scalars(FieldType::Str)).unwrap().is_scalar());
}

/// Instances reading in splits share one counter: drained one after the other, the first takes
/// every split (the second finds none left); drained in turn, they take splits alternately.
/// Either way each instance's events are in index order, and together they are exactly the
/// sequential generator's events, each once.
#[test]
fn instances_reading_in_splits_take_the_splits_left_and_make_every_event_once() {
    use std::sync::{atomic::AtomicU64, Arc};
    // 1,000 events a second: each event's time (ms) is its own.
    let s = GeneratorSpec { events: Some(1_003), ..spec(1_000) };
    let whole = drain(generator(s.clone()));
    let split = |i: u32| generator(instance(s.clone(), i, 2));
    // One after the other: the first instance reads everything.
    let taken = Arc::new(AtomicU64::new(0));
    let first = drain(split(0).with_splits(100, taken.clone()));
    let second = drain(split(1).with_splits(100, taken));
    assert_eq!(
        first.iter().map(|e| (e.1, e.2.clone())).collect::<Vec<_>>(),
        whole.iter().map(|e| (e.1, e.2.clone())).collect::<Vec<_>>()
    );
    assert!(second.is_empty(), "the second instance found no split left");
    // In turn, one event each: the events of both, by event time, are the whole stream.
    let taken = Arc::new(AtomicU64::new(0));
    let (mut a, mut b) = (split(0).with_splits(100, taken.clone()), split(1).with_splits(100, taken));
    let (mut got_a, mut got_b, mut values) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let ea = a.next_event(&mut values).map(|t| (t, values.clone()));
        got_a.extend(ea.clone());
        let eb = b.next_event(&mut values).map(|t| (t, values.clone()));
        got_b.extend(eb.clone());
        if ea.is_none() && eb.is_none() {
            break;
        }
    }
    assert!(got_a.windows(2).all(|w| w[0].0 < w[1].0) && got_b.windows(2).all(|w| w[0].0 < w[1].0), "each in order");
    assert!(got_a.len() >= 500 && got_b.len() >= 500, "both read: {} and {}", got_a.len(), got_b.len());
    let mut both: Vec<(u64, Vec<Value>)> = got_a.into_iter().chain(got_b).collect();
    both.sort_by_key(|e| e.0);
    assert_eq!(both, whole.iter().map(|e| (e.1, e.2.clone())).collect::<Vec<_>>());
    // No replay position: which splits the other instance took is not this one's.
    assert!(matches!(
        split(0).with_splits(100, Arc::default()).position(),
        crate::source::SourcePosition::Unreplayable
    ));
}

/// An instance read in splits keeps the schedule of the whole stream, bursts and pauses
/// included, whichever instance it is (the fixed share `new` scheduled first, instance 3's event
/// 3 past the burst at 2 ms, is not where its first split starts).
#[test]
fn an_instance_reading_in_splits_keeps_the_schedule_of_the_whole_stream() {
    use std::sync::{atomic::AtomicU64, Arc};
    let pause = Burst { at: Duration::from_millis(10), duration: Duration::from_millis(5), rate: 0 };
    let fast = Burst { at: Duration::from_millis(2), duration: Duration::from_millis(1), rate: 2000 };
    let s = GeneratorSpec { events: Some(14), bursts: vec![pause, fast], ..spec(1000) };
    let whole = drain(generator(s.clone()));
    let alone = drain(generator(instance(s, 3, 4)).with_splits(5, Arc::new(AtomicU64::new(0))));
    assert_eq!(alone, whole, "due times, event times and fields of every event");
}
