//! A user function unit-tested without the engine: `Harness` applies it to messages in order and
//! collects what it emits, exactly as one activation on a shard would.

use std::collections::BTreeMap;

use dirigo_actors::envelope::Header;
use dirigo_actors::function::{key_u64, Cx, ErasedFunction, Function, Harness};
use dirigo_actors::operator::Emitter;

/// Per-key sums over tumbling event-time windows of `size` ms, emitted when the watermark passes
/// a window's end, and what is left at the end of input.
struct WindowedSum {
    size: u64,
    /// (window end, key) -> sum.
    open: BTreeMap<(u64, u64), u64>,
}

impl WindowedSum {
    fn fire(&mut self, cx: &mut Cx<'_>, upto: u64) {
        let due: Vec<_> = self.open.range(..(upto + 1, 0)).map(|(k, v)| (*k, *v)).collect();
        for ((end, key), sum) in due {
            self.open.remove(&(end, key));
            cx.emit(key_u64(key), end, &(key, end, sum));
        }
    }
}

impl Function for WindowedSum {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        let end = (cx.event_time() / self.size + 1) * self.size;
        *self.open.entry((end, msg.0.to_native())).or_default() += msg.1.to_native();
    }
    fn on_watermark(&mut self, cx: &mut Cx<'_>, watermark: u64) {
        self.fire(cx, watermark);
    }
    fn on_end(&mut self, cx: &mut Cx<'_>) {
        self.fire(cx, u64::MAX - 1);
    }
}

#[test]
fn windowed_sum_matches_a_sequential_reference() {
    let size = 10;
    // (event time, key, value), in event-time order, with a watermark every 25 ms.
    let input: Vec<(u64, u64, u64)> = (0..200u64).map(|i| (i / 2, i % 7, i * 3 % 11)).collect();
    let mut h = Harness::new(WindowedSum { size, open: BTreeMap::new() });
    let mut expected: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut next_watermark = 25;
    for &(t, k, v) in &input {
        if t >= next_watermark {
            h.watermark(next_watermark);
            next_watermark += 25;
        }
        h.send(key_u64(k), t, &(k, v));
        *expected.entry((k, (t / size + 1) * size)).or_default() += v;
    }
    h.end();

    let mut got: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for o in h.outputs() {
        let (key, end, sum) = o.decode::<(u64, u64, u64)>().expect("a valid (key, end, sum)");
        assert_eq!((o.key_hash, o.event_time), (key_u64(key), end), "emitted under its key and window end");
        assert!(got.insert((key, end), sum).is_none(), "window ({key}, {end}) fired twice");
    }
    assert_eq!(got, expected);
    // Windows fire in order of their end: the watermark never lets a later window out first.
    let ends: Vec<u64> = h.outputs().iter().map(|o| o.event_time).collect();
    assert!(ends.windows(2).all(|w| w[0] <= w[1]), "windows fired out of order: {ends:?}");
}

#[test]
fn nothing_fires_before_its_watermark() {
    let mut h = Harness::new(WindowedSum { size: 10, open: BTreeMap::new() });
    h.send(key_u64(1), 3, &(1u64, 5u64)).send(key_u64(1), 12, &(1u64, 4u64));
    assert!(h.outputs().is_empty());
    h.watermark(10);
    let fired: Vec<_> = h.take_outputs().iter().map(|o| o.decode::<(u64, u64, u64)>().unwrap()).collect();
    assert_eq!(fired, [(1, 10, 5)]);
    h.end();
    let rest: Vec<_> = h.outputs().iter().map(|o| o.decode::<(u64, u64, u64)>().unwrap()).collect();
    assert_eq!(rest, [(1, 20, 4)]);
}

/// Takes `(u64, u64)` messages.
struct Pairs;

impl Function for Pairs {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        cx.emit(cx.key_hash(), cx.event_time(), &(msg.0.to_native() + msg.1.to_native()));
    }
}

#[test]
#[should_panic(expected = "is not an archived `(u64, u64)`")]
fn a_message_of_another_type_is_refused_not_misread() {
    // A wiring mistake: the upstream emits strings. The function's input is checked as it is
    // read, so it fails clearly instead of reading a string's bytes as two integers.
    Harness::new(Pairs).send(key_u64(1), 0, &"not a pair".to_owned());
}

/// Passes on the pairs whose second field is even, unchanged.
struct EvenPairs;

impl Function for EvenPairs {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        if msg.1.to_native().is_multiple_of(2) {
            cx.pass_on(cx.key_hash() ^ 1, cx.event_time() + 1);
        }
    }
    fn on_end(&mut self, cx: &mut Cx<'_>) {
        cx.pass_on(0, 0);
    }
}

#[test]
fn pass_on_emits_the_message_applied_byte_for_byte() {
    let mut h = Harness::new(EvenPairs);
    for i in 0..6u64 {
        h.send(key_u64(i), 10 + i, &(i, i * 3));
    }
    let outs = h.take_outputs();
    let got: Vec<(u64, u64, (u64, u64))> =
        outs.iter().map(|o| (o.key_hash, o.event_time, o.decode::<(u64, u64)>().unwrap())).collect();
    let want: Vec<(u64, u64, (u64, u64))> =
        [0u64, 2, 4].iter().map(|&i| (key_u64(i) ^ 1, 11 + i, (i, i * 3))).collect();
    assert_eq!(got, want);
    // The bytes are the input's archive, as sent.
    let sent = rkyv::to_bytes::<rkyv::rancor::Error>(&(2u64, 6u64)).unwrap();
    assert_eq!(&outs[1].archive[..], &sent[..]);
}

#[test]
#[should_panic(expected = "`Cx::pass_on` outside `on_message`")]
fn pass_on_outside_a_message_is_refused() {
    Harness::new(EvenPairs).end();
}

/// `EvenPairs` reading the values its source made as well (`Function::on_value`): one body.
struct EvenPairValues;

impl EvenPairValues {
    fn pair(cx: &mut Cx<'_>, second: u64) {
        if second.is_multiple_of(2) {
            cx.pass_on(cx.key_hash() ^ 1, cx.event_time() + 1);
        }
    }
}

impl Function for EvenPairValues {
    type In = (u64, u64);
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        EvenPairValues::pair(cx, msg.1.to_native());
    }
    fn on_value(&mut self, cx: &mut Cx<'_>, msg: &(u64, u64)) {
        EvenPairValues::pair(cx, msg.1);
    }
}

/// What a function emits for messages handed as values, as the engine hands a typed source's
/// events to a function that runs in its poll.
fn sent_as_values(mut h: Harness, msgs: &[(u64, u64)]) -> Vec<(u64, u64, Vec<u8>)> {
    for (i, m) in msgs.iter().enumerate() {
        h.send_value(key_u64(i as u64), 10 + i as u64, m);
    }
    h.take_outputs().into_iter().map(|o| (o.key_hash, o.event_time, o.archive.to_vec())).collect()
}

/// A message handed as a value gives what its archive gives, byte for byte: to a function that
/// takes values (`on_value`; a value passed on is archived where it goes), and to one that does
/// not (the value archived once for `on_message`).
#[test]
fn a_message_handed_as_a_value_emits_what_its_archive_emits() {
    let msgs: Vec<(u64, u64)> = (0..6u64).map(|i| (i, i * 3)).collect();
    let mut archived = Harness::new(EvenPairs);
    for (i, m) in msgs.iter().enumerate() {
        archived.send(key_u64(i as u64), 10 + i as u64, m);
    }
    let want: Vec<(u64, u64, Vec<u8>)> =
        archived.take_outputs().into_iter().map(|o| (o.key_hash, o.event_time, o.archive.to_vec())).collect();
    assert_eq!(want.len(), 3);
    assert_eq!(sent_as_values(Harness::new(EvenPairValues), &msgs), want);
    assert_eq!(sent_as_values(Harness::new(EvenPairs), &msgs), want);
}

/// Messages handed as a batch of values, in one call (as the engine hands a batch of a typed
/// source's events to a function that runs in its poll), give what their archives give, byte
/// for byte and in order, and each emit names the message it was made from (its key hash and
/// event time): to a function that takes values, and to one that does not.
#[test]
fn messages_handed_as_a_batch_of_values_emit_what_their_archives_emit_each_from_its_own() {
    let msgs: Vec<(u64, u64)> = (0..7u64).map(|i| (i, i * 3)).collect();
    let mut archived = Harness::new(EvenPairs);
    for (i, m) in msgs.iter().enumerate() {
        archived.send(key_u64(i as u64), 10 + i as u64, m);
    }
    let want: Vec<(u64, u64, Vec<u8>)> =
        archived.take_outputs().into_iter().map(|o| (o.key_hash, o.event_time, o.archive.to_vec())).collect();
    // Messages 0, 2, 4 and 6 have an even second field.
    let from: Vec<Option<(u64, u64)>> = [0u64, 2, 4, 6].iter().map(|&i| Some((key_u64(i), 10 + i))).collect();
    let batch = || msgs.iter().enumerate().map(|(i, &m)| (key_u64(i as u64), 10 + i as u64, m)).collect::<Vec<_>>();
    for mut h in [Harness::new(EvenPairValues), Harness::new(EvenPairs)] {
        let out = h.send_values(batch()).take_outputs();
        assert_eq!(out.iter().map(|o| o.made_from).collect::<Vec<_>>(), from);
        assert_eq!(out.into_iter().map(|o| (o.key_hash, o.event_time, o.archive.to_vec())).collect::<Vec<_>>(), want);
    }
}

/// Messages applied as a stretch, in one call (as the engine applies a stretch of records of
/// one function where no hook runs around each), give what they give one at a time, byte for
/// byte and in order, each emit naming the message it was made from: a typed function, and one
/// written against `ErasedFunction` (the default `on_messages`).
#[test]
fn a_stretch_of_messages_in_one_call_emits_what_they_emit_one_at_a_time_each_from_its_own() {
    let msgs: Vec<(u64, u64, (u64, u64))> = (0..7u64).map(|i| (key_u64(i), 10 + i, (i, i * 3))).collect();
    let from: Vec<Option<(u64, u64)>> = [0u64, 2, 4, 6].iter().map(|&i| Some((key_u64(i), 10 + i))).collect();
    let each = |h: &mut Harness| {
        msgs.iter().for_each(|(k, t, m)| {
            h.send(*k, *t, m);
        });
        h.take_outputs().into_iter().map(|o| (o.key_hash, o.event_time, o.archive.to_vec())).collect::<Vec<_>>()
    };
    let want = each(&mut Harness::new(EvenPairs));
    assert_eq!(want.len(), 4);
    assert_eq!(each(&mut Harness::of_erased(Box::new(ErasedEvenPairs))), want);
    for mut h in [Harness::new(EvenPairs), Harness::of_erased(Box::new(ErasedEvenPairs))] {
        let out = h.send_stretch(&msgs).take_outputs();
        assert_eq!(out.iter().map(|o| o.made_from).collect::<Vec<_>>(), from);
        assert_eq!(out.into_iter().map(|o| (o.key_hash, o.event_time, o.archive.to_vec())).collect::<Vec<_>>(), want);
    }
}

/// A panic on one message of a stretch applied in one call stops it there.
#[test]
fn a_panic_in_a_stretch_stops_it_there() {
    let mut h = Harness::new(FailsOnThree);
    let msgs: Vec<(u64, u64, (u64, u64))> = (0..6u64).map(|i| (key_u64(i), i, (i, i))).collect();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        h.send_stretch(&msgs);
    }));
    let message = failed.expect_err("the stretch failed");
    assert_eq!(message.downcast_ref::<String>().map(String::as_str), Some("failed on value 3"));
    let out: Vec<(u64, u64)> = h.take_outputs().iter().map(|o| o.decode::<(u64, u64)>().unwrap()).collect();
    assert_eq!(out, vec![(0, 0), (1, 1), (2, 2)]);
}

/// Passes on every message whose second field is even, written against `ErasedFunction`
/// directly (no `on_values` of its own): its emits name no message.
struct ErasedEvenPairs;

impl ErasedFunction for ErasedEvenPairs {
    fn on_message(&mut self, h: &Header, payload: &[u8], out: &mut dyn Emitter) {
        let msg = rkyv::access::<rkyv::Archived<(u64, u64)>, rkyv::rancor::Error>(payload).expect("a pair");
        if msg.1.to_native().is_multiple_of(2) {
            out.forward(h.key_hash ^ 1, h.event_time + 1, payload);
        }
    }
}

/// A function written against `ErasedFunction` without an `on_values` of its own takes a batch
/// through the default, `on_value` for each message: the same outputs as one message at a
/// time, each made from its own message.
#[test]
fn the_default_on_values_applies_each_value_with_its_own_header() {
    let msgs: Vec<(u64, u64)> = (0..7u64).map(|i| (i, i * 3)).collect();
    let mut one = Harness::of_erased(Box::new(ErasedEvenPairs));
    for (i, m) in msgs.iter().enumerate() {
        one.send_value(key_u64(i as u64), 10 + i as u64, m);
    }
    let want: Vec<(u64, u64, Vec<u8>)> =
        one.take_outputs().into_iter().map(|o| (o.key_hash, o.event_time, o.archive.to_vec())).collect();
    assert_eq!(want.len(), 4);
    let batch = msgs.iter().enumerate().map(|(i, &m)| (key_u64(i as u64), 10 + i as u64, m)).collect();
    let out = Harness::of_erased(Box::new(ErasedEvenPairs)).send_values(batch).take_outputs();
    let from: Vec<Option<(u64, u64)>> = [0u64, 2, 4, 6].iter().map(|&i| Some((key_u64(i), 10 + i))).collect();
    assert_eq!(out.iter().map(|o| o.made_from).collect::<Vec<_>>(), from);
    assert_eq!(out.into_iter().map(|o| (o.key_hash, o.event_time, o.archive.to_vec())).collect::<Vec<_>>(), want);
}

/// Emits every value, and panics on the one whose second field is 3.
struct FailsOnThree;

impl Function for FailsOnThree {
    type In = (u64, u64);
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        self.on_value(cx, &(msg.0.to_native(), msg.1.to_native()));
    }
    fn on_value(&mut self, cx: &mut Cx<'_>, msg: &(u64, u64)) {
        assert!(msg.1 != 3, "failed on value {}", msg.1);
        cx.emit(cx.key_hash(), cx.event_time(), msg);
    }
}

/// A panic on one value of a batch stops the batch there: the values before it were applied,
/// none after it, and the failure is the panic's.
#[test]
fn a_panic_in_a_batch_of_values_stops_it_there() {
    let mut h = Harness::new(FailsOnThree);
    let batch = (0..6u64).map(|i| (key_u64(i), i, (i, i))).collect();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        h.send_values(batch);
    }));
    let message = failed.expect_err("the batch failed");
    assert_eq!(message.downcast_ref::<String>().map(String::as_str), Some("failed on value 3"));
    let out: Vec<(u64, u64)> = h.take_outputs().iter().map(|o| o.decode::<(u64, u64)>().unwrap()).collect();
    assert_eq!(out, vec![(0, 0), (1, 1), (2, 2)]);
}

/// Claims to take values but has no `on_value`.
struct ClaimsValues;

impl Function for ClaimsValues {
    type In = u64;
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, _: &mut Cx<'_>, _: &rkyv::Archived<u64>) {}
}

#[test]
#[should_panic(expected = "a function that sets `TAKES_VALUES` must implement `on_value`")]
fn taking_values_without_on_value_is_a_clear_failure() {
    Harness::new(ClaimsValues).send_value(0, 0, &1u64);
}
