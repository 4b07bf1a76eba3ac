//! Unit tests of the lessor and lessee state machines, one protocol step at a time.

use super::*;
use crate::state::{Exclusive, Sum};

type Out = Vec<Command<Sum<u64>, u64>>;

fn config(max_lessees: usize, channels: u16) -> Config {
    Config { access: AccessMode::Mergeable, max_lessees, channels }
}

/// The control messages in `out`, draining it.
fn sends(out: &mut Out) -> Vec<(ShardId, Control<Sum<u64>, u64>)> {
    out.drain(..)
        .filter_map(|command| match command {
            Command::Send { to, control } => Some((to, control)),
            Command::Schedule | Command::Done { .. } => None,
        })
        .collect()
}

fn fold(state: &mut Sum<u64>, work: Work<u64>) {
    if let Work::Regular(value) = work {
        state.add(value);
    }
}

fn run_all(lessor: &mut Lessor<Sum<u64>, u64>, out: &mut Out) -> Vec<u64> {
    let mut views = Vec::new();
    let mut apply = |state: &mut Sum<u64>, work: Work<u64>| match work {
        Work::Critical { .. } => views.push(state.0),
        regular => fold(state, regular),
    };
    while lessor.run_next(&mut apply, out).unwrap() {}
    views
}

/// A lessor with one lessee on shard 1 that took message `value` (accepted, not yet run).
fn leased(value: u64, out: &mut Out) -> (Lessor<Sum<u64>, u64>, Lessee<Sum<u64>, u64>) {
    let mut lessor = Lessor::new(Sum(0), config(1, 1));
    lessor.route(0, value, Decision::NewLessee(1), out).unwrap();
    let mut to_lessee = sends(out).into_iter().map(|(to, control)| {
        assert_eq!(to, 1);
        control
    });
    let Some(Control::Lease { initial }) = to_lessee.next() else { panic!("a new lessee starts with Lease") };
    let mut lessee = Lessee::new(0, initial);
    lessee.receive(to_lessee.next().unwrap(), out).unwrap();
    assert!(lessee.admit(Admission::Accept, out));
    for (_, control) in sends(out) {
        lessor.receive(1, control, out).unwrap();
    }
    assert_eq!(lessor.in_flight(), 0);
    (lessor, lessee)
}

#[test]
fn refused_forward_runs_on_the_lessor() {
    let mut out = Out::new();
    let mut lessor = Lessor::new(Sum(0), config(1, 1));
    lessor.route(0, 7, Decision::NewLessee(1), &mut out).unwrap();
    let mut lessee = Lessee::new(0, Sum(0));
    let forward = sends(&mut out).pop().unwrap().1;
    lessee.receive(forward, &mut out).unwrap();
    lessee.admit(Admission::Refuse, &mut out);
    let (_, refuse) = sends(&mut out).pop().unwrap();
    assert_eq!(refuse, Control::Refuse { seq: 0 });
    lessor.receive(1, refuse, &mut out).unwrap();
    run_all(&mut lessor, &mut out);
    assert_eq!(lessor.state(), &Sum(7));
}

#[test]
fn barrier_waits_for_the_lessee_partial() {
    let mut out = Out::new();
    let (mut lessor, mut lessee) = leased(5, &mut out);
    lessor.route(0, 1, Decision::Local, &mut out).unwrap();
    lessor.barrier(0, 1, Some(100), &mut out).unwrap();
    assert_eq!(lessor.mode(), Mode::Blocked { barrier: 1 });
    lessor.route(0, 1000, Decision::Lessee(1), &mut out).unwrap();
    assert_eq!(lessor.buffered(), 1, "after the barrier on its channel: buffered");
    assert!(run_all(&mut lessor, &mut out).is_empty(), "partial still owed");
    let block = sends(&mut out).pop().unwrap().1;
    lessee.receive(block, &mut out).unwrap();
    assert_eq!(lessee.mode(), LesseeMode::Draining { barrier: 1 });
    assert!(lessee.run_next(fold, &mut out));
    let partial = sends(&mut out).pop().unwrap().1;
    assert_eq!(partial, Control::Partial { barrier: 1, state: Sum(5) });
    assert_eq!(lessee.state(), &Sum(0), "reset to the partition value");
    lessor.receive(1, partial, &mut out).unwrap();
    assert_eq!(run_all(&mut lessor, &mut out), vec![6], "critical sees 5 + 1, not 1000");
    assert_eq!(lessor.mode(), Mode::Runnable);
    assert_eq!(lessor.state(), &Sum(6), "the buffered message replays after the critical");
    let replayed = Control::Forward { seq: 1, msg: 1000 };
    assert_eq!(
        sends(&mut out),
        vec![(1, Control::Unblock { barrier: 1 }), (1, replayed)],
        "with the placement chosen on arrival (the lessee), after the unblock"
    );
}

#[test]
fn barrier_aligns_across_channels() {
    let mut out = Out::new();
    let mut lessor: Lessor<Sum<u64>, u64> = Lessor::new(Sum(0), config(0, 2));
    lessor.barrier(0, 1, Some(0), &mut out).unwrap();
    lessor.route(0, 10, Decision::Local, &mut out).unwrap();
    lessor.route(1, 1, Decision::Local, &mut out).unwrap();
    lessor.barrier(1, 1, None, &mut out).unwrap();
    assert_eq!(lessor.mode(), Mode::Blocked { barrier: 1 }, "channel 1's message runs first");
    assert_eq!(run_all(&mut lessor, &mut out), vec![1]);
    assert_eq!(lessor.state(), &Sum(11));
    let err = lessor.barrier(0, 1, None, &mut out).unwrap_err();
    assert_eq!(err, ProtocolError::BarrierRegressed { got: 1, last: 1 });
}

#[test]
fn retired_lessee_hands_back_what_it_did_not_run() {
    let mut out = Out::new();
    let (mut lessor, mut lessee) = leased(5, &mut out);
    lessor.route(0, 2, Decision::Lessee(1), &mut out).unwrap();
    lessor.retire(1, &mut out).unwrap();
    lessor.route(0, 3, Decision::Lessee(1), &mut out).unwrap();
    for (_, control) in sends(&mut out) {
        lessee.receive(control, &mut out).unwrap();
    }
    assert_eq!(lessee.mode(), LesseeMode::Retired);
    let answers = sends(&mut out);
    assert_eq!(answers[0].1, Control::Refuse { seq: 1 });
    assert_eq!(answers[1].1, Control::Retired { partial: Sum(0), returned: vec![5] });
    for (_, control) in answers {
        lessor.receive(1, control, &mut out).unwrap();
    }
    run_all(&mut lessor, &mut out);
    assert_eq!(lessor.state(), &Sum(10));
    assert_eq!(lessor.lessees().count(), 0);
}

#[test]
fn answers_out_of_order_are_rejected() {
    let mut out = Out::new();
    let mut lessor = Lessor::new(Sum(0), config(1, 1));
    lessor.route(0, 1, Decision::NewLessee(1), &mut out).unwrap();
    lessor.route(0, 2, Decision::Lessee(1), &mut out).unwrap();
    let err = lessor.receive(1, Control::Accept { seq: 1 }, &mut out).unwrap_err();
    assert_eq!(err, ProtocolError::UnexpectedSeq { from: 1, expected: Some(0), got: 1 });
    let err = lessor.receive(1, Control::Retire, &mut out).unwrap_err();
    assert!(matches!(err, ProtocolError::UnexpectedAtLessor { .. }));
}

#[test]
fn exclusive_and_zero_limit_never_forward() {
    let mut out = Vec::new();
    let exclusive = Config { access: AccessMode::Exclusive, max_lessees: 4, channels: 1 };
    let mut lessor: Lessor<Exclusive<Vec<u64>>, u64> = Lessor::new(Exclusive(vec![]), exclusive);
    lessor.route(0, 1, Decision::NewLessee(1), &mut out).unwrap();
    assert_eq!(out, vec![Command::Schedule]);
    let mut capped: Lessor<Sum<u64>, u64> = Lessor::new(Sum(0), config(0, 1));
    let mut out = Out::new();
    capped.route(0, 1, Decision::NewLessee(1), &mut out).unwrap();
    assert_eq!(out, vec![Command::Schedule]);
}

#[test]
fn control_crosses_cores_as_an_archive() {
    type Wire = Control<Sum<u64>, u64>;
    let control: Wire = Control::Retired { partial: Sum(9), returned: vec![1, 2] };
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&control).unwrap();
    let back: Wire = rkyv::from_bytes::<_, rkyv::rancor::Error>(&bytes).unwrap();
    assert_eq!(back, control);
}
