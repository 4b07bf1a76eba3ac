//! Oracle test of the dual-mode protocol: a deterministic simulator of one lessor, its lessees and
//! FIFO mailboxes, driven by generated scripts, compared with a sequential single activation.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;

use dirigo_actors::dual_mode::{
    Admission, BarrierId, Command, Config, Control, Decision, Ledger, Lessee, LesseeMode, Lessor, Mode, SlotPhase, Work,
};
use dirigo_actors::ids::ShardId;
use dirigo_actors::state::{AccessMode, Count, Exclusive, Max, Mergeable, SetUnion, Sum};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

/// Shards that may hold lessees: 1..=LESSEE_SHARDS (the lessor is on shard 0).
const LESSEE_SHARDS: u16 = 3;

/// A message of the simulated actor: a regular fold, or a critical query (a window fire when
/// `reset`).
#[derive(Clone, Debug, PartialEq)]
enum Msg {
    Fold { id: u64, value: u64 },
    Query { id: u64, reset: bool },
}

/// One item of an input channel, in channel order.
#[derive(Clone, Debug)]
enum Item {
    Fold { id: u64, value: u64 },
    Barrier { barrier: BarrierId, query: Option<Msg> },
}

/// What a state does with a fold and a reset: the function under test.
trait Model {
    type State: Mergeable + Clone + Debug + PartialEq;
    const ACCESS: AccessMode;
    fn zero() -> Self::State;
    fn fold(state: &mut Self::State, id: u64, value: u64);
    fn reset(state: &mut Self::State);
}

/// Sum, count, set union and max: every built-in mergeable strategy at once.
struct Aggregates;

impl Model for Aggregates {
    type State = (Sum<u64>, Count, SetUnion<u64>, Max<u64>);
    const ACCESS: AccessMode = AccessMode::Mergeable;
    fn zero() -> Self::State {
        Default::default()
    }
    fn fold(state: &mut Self::State, _id: u64, value: u64) {
        state.0.add(value);
        state.1.increment();
        state.2.insert(value % 17);
        state.3.observe(value);
    }
    fn reset(state: &mut Self::State) {
        *state = state.partition();
    }
}

/// An order-sensitive log of message ids: exclusive state.
struct Log;

impl Model for Log {
    type State = Exclusive<Vec<u64>>;
    const ACCESS: AccessMode = AccessMode::Exclusive;
    fn zero() -> Self::State {
        Exclusive(Vec::new())
    }
    fn fold(state: &mut Self::State, id: u64, _value: u64) {
        state.0.push(id);
    }
    fn reset(_state: &mut Self::State) {}
}

/// A generated script: input channels and the scheduling choices that interleave them.
#[derive(Clone, Debug)]
struct Script {
    channels: Vec<Vec<Item>>,
    steps: Vec<Step>,
    max_lessees: usize,
}

fn script() -> impl Strategy<Value = Script> {
    let max_lessees = prop_oneof![1 => Just(0usize), 6 => 1usize..=3];
    (1usize..=3, 0usize..=4, max_lessees).prop_flat_map(|(k, rounds, max_lessees)| {
        let segment = prop::collection::vec(0u64..1000, 0..24);
        let channel = (
            prop::collection::vec(segment, rounds + 1),
            prop::collection::vec(prop::option::of(any::<bool>()), rounds),
        );
        let steps = prop::collection::vec(any::<Step>(), 100..800);
        let channels = prop::collection::vec(channel, k);
        (channels, steps, Just(max_lessees)).prop_map(build)
    })
}

/// A channel as generated: its fold values per round, and per barrier an optional query
/// (`Some(reset)`).
type RawChannel = (Vec<Vec<u64>>, Vec<Option<bool>>);
/// A step: action byte and two argument bytes.
type Step = (u8, u8, u8);

/// Numbers every message and lays each channel out as segments separated by barriers.
fn build((channels, steps, max_lessees): (Vec<RawChannel>, Vec<Step>, usize)) -> Script {
    let mut next_id = 0u64;
    let mut id = || {
        next_id += 1;
        next_id
    };
    let channels = channels
        .into_iter()
        .map(|(segments, queries)| {
            let mut items = Vec::new();
            for (round, segment) in segments.into_iter().enumerate() {
                items.extend(segment.into_iter().map(|value| Item::Fold { id: id(), value }));
                if let Some(query) = queries.get(round) {
                    let query = query.map(|reset| Msg::Query { id: id(), reset });
                    items.push(Item::Barrier { barrier: 3 * round as u64 + 1, query });
                }
            }
            items
        })
        .collect();
    Script { channels, steps, max_lessees }
}

/// The sequential single-activation reference: each barrier's queries (in channel order) see
/// exactly the folds before that barrier on every channel.
fn reference<Mo: Model>(script: &Script) -> (Vec<(u64, Mo::State)>, Mo::State) {
    let mut state = Mo::zero();
    let mut views = Vec::new();
    let mut cursors = vec![0usize; script.channels.len()];
    loop {
        let mut queries = Vec::new();
        for (channel, cursor) in script.channels.iter().zip(&mut cursors) {
            while let Some(item) = channel.get(*cursor) {
                *cursor += 1;
                match item {
                    Item::Fold { id, value } => Mo::fold(&mut state, *id, *value),
                    Item::Barrier { query, .. } => {
                        queries.extend(query.clone());
                        break;
                    }
                }
            }
        }
        for query in queries {
            let Msg::Query { id, reset } = query else { unreachable!() };
            views.push((id, state.clone()));
            if reset {
                Mo::reset(&mut state);
            }
        }
        if cursors.iter().zip(&script.channels).all(|(c, ch)| *c >= ch.len()) {
            return (views, state);
        }
    }
}

/// What a run exercised, summed over all cases.
#[derive(Debug, Default)]
struct Coverage {
    forwards: usize,
    refusals: usize,
    retirements: usize,
    blocked_with_forwards_in_flight: usize,
    lessees_draining: usize,
    buffered: usize,
    criticals: usize,
}

impl Coverage {
    fn add(&mut self, run: Coverage) {
        self.forwards += run.forwards;
        self.refusals += run.refusals;
        self.retirements += run.retirements;
        self.blocked_with_forwards_in_flight += run.blocked_with_forwards_in_flight;
        self.lessees_draining += run.lessees_draining;
        self.buffered += run.buffered;
        self.criticals += run.criticals;
    }
}

enum Action {
    Input,
    Deliver,
    Admit,
    Run,
    Retire,
}

/// A scheduling mix: the weights of input, deliver, admit, run and retire steps.
type Mix = [u8; 5];
const STEADY: Mix = [6, 4, 2, 4, 1];
const CHURN: Mix = [3, 2, 1, 2, 2];

/// The action a step's first byte picks under `mix`.
fn pick(mix: &Mix, byte: u8) -> Action {
    let total: u8 = mix.iter().sum();
    let mut rest = byte % total;
    let actions = [Action::Input, Action::Deliver, Action::Admit, Action::Run];
    for (action, weight) in actions.into_iter().zip(mix) {
        if rest < *weight {
            return action;
        }
        rest -= weight;
    }
    Action::Retire
}

type Net<S> = BTreeMap<(ShardId, ShardId), VecDeque<Control<S, Msg>>>;

/// One simulated actor: the lessor on shard 0, lessee slots on shards 1..=LESSEE_SHARDS.
struct Sim<Mo: Model> {
    lessor: Lessor<Mo::State, Msg>,
    lessees: Vec<Option<Lessee<Mo::State, Msg>>>,
    net: Net<Mo::State>,
    inputs: Vec<VecDeque<Item>>,
    out: Vec<Command<Mo::State, Msg>>,
    ledger: Ledger,
    views: Vec<(u64, Mo::State)>,
    coverage: Coverage,
}

impl<Mo: Model> Sim<Mo> {
    fn new(script: &Script) -> Self {
        let config =
            Config { access: Mo::ACCESS, max_lessees: script.max_lessees, channels: script.channels.len() as u16 };
        Sim {
            lessor: Lessor::new(Mo::zero(), config),
            lessees: (0..=LESSEE_SHARDS).map(|_| None).collect(),
            net: BTreeMap::new(),
            inputs: script.channels.iter().map(|c| c.iter().cloned().collect()).collect(),
            out: Vec::new(),
            ledger: Ledger::new(),
            views: Vec::new(),
            coverage: Coverage::default(),
        }
    }

    /// Puts the commands of shard `from`'s last input on the mailboxes.
    fn post(&mut self, from: ShardId) {
        for command in self.out.drain(..) {
            if let Command::Send { to, control } = command {
                assert!(Mo::ACCESS.allows_lessees(), "exclusive actor sent {control:?}");
                if matches!(control, Control::Forward { .. }) {
                    self.coverage.forwards += 1;
                }
                self.net.entry((from, to)).or_default().push_back(control);
            }
        }
    }

    fn input(&mut self, channel: usize, decision: Decision) -> bool {
        let Some(item) = self.inputs[channel].pop_front() else {
            return false;
        };
        let channel_id = channel as u16;
        match item {
            Item::Fold { id, value } => {
                let msg = Msg::Fold { id, value };
                self.lessor.route(channel_id, msg, decision, &mut self.out).unwrap();
            }
            Item::Barrier { barrier, query } => {
                let was_runnable = self.lessor.mode() == Mode::Runnable;
                self.lessor.barrier(channel_id, barrier, query, &mut self.out).unwrap();
                if was_runnable && self.lessor.in_flight() > 0 {
                    self.coverage.blocked_with_forwards_in_flight += 1;
                }
            }
        }
        self.post(0);
        true
    }

    /// Delivers the oldest control message on the `pick`-th non-empty mailbox.
    fn deliver(&mut self, pick: usize) -> bool {
        let busy: Vec<_> = self.net.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| *k).collect();
        let Some(&(from, to)) = busy.get(pick % busy.len().max(1)) else {
            return false;
        };
        let control = self.net.get_mut(&(from, to)).unwrap().pop_front().unwrap();
        if to == 0 {
            self.coverage.refusals += usize::from(matches!(control, Control::Refuse { .. }));
            self.lessor.receive(from, control, &mut self.out).unwrap();
        } else {
            self.at_lessee(to, control);
        }
        self.post(to);
        true
    }

    fn at_lessee(&mut self, shard: ShardId, control: Control<Mo::State, Msg>) {
        let slot = &mut self.lessees[usize::from(shard)];
        if let Control::Lease { initial } = control {
            assert!(slot.is_none(), "lease on shard {shard} while a lessee lives there");
            *slot = Some(Lessee::new(0, initial));
            return;
        }
        let lessee = slot.as_mut().expect("control for a lessee that does not exist");
        lessee.receive(control, &mut self.out).unwrap();
        match lessee.mode() {
            LesseeMode::Retired => *slot = None,
            LesseeMode::Draining { .. } => self.coverage.lessees_draining += 1,
            _ => {}
        }
    }

    fn admit(&mut self, shard: ShardId, admission: Admission) -> bool {
        let Some(lessee) = self.lessees[usize::from(shard)].as_mut() else {
            return false;
        };
        let admitted = lessee.admit(admission, &mut self.out);
        self.post(shard);
        admitted
    }

    /// Runs the next work item of shard `shard`'s activation.
    fn run(&mut self, shard: ShardId) -> bool {
        let ledger = &mut self.ledger;
        let ran = if shard == 0 {
            let (owed, in_flight) = (self.lessor.owed_partials(), self.lessor.in_flight());
            let views = &mut self.views;
            let critical = |state: &mut Mo::State, work| match work {
                Work::Regular(Msg::Fold { id, value }) => {
                    ledger.applied(id).unwrap();
                    Mo::fold(state, id, value);
                }
                Work::Critical { barrier, msg: Msg::Query { id, reset } } => {
                    ledger.critical(barrier, owed, in_flight).unwrap();
                    views.push((id, state.clone()));
                    if reset {
                        Mo::reset(state);
                    }
                }
                other => panic!("{other:?} ran on the lessor"),
            };
            self.lessor.run_next(critical, &mut self.out).unwrap()
        } else {
            let Some(lessee) = self.lessees[usize::from(shard)].as_mut() else {
                return false;
            };
            let fold = |state: &mut Mo::State, work| match work {
                Work::Regular(Msg::Fold { id, value }) => {
                    ledger.applied(id).unwrap();
                    Mo::fold(state, id, value);
                }
                other => panic!("{other:?} ran on a lessee"),
            };
            lessee.run_next(fold, &mut self.out)
        };
        self.post(shard);
        ran
    }

    fn retire(&mut self, shard: ShardId) {
        let leased = self.lessor.lessees().any(|(s, phase)| s == shard && phase == SlotPhase::Leased);
        if self.lessor.mode() == Mode::Runnable && leased {
            self.lessor.retire(shard, &mut self.out).unwrap();
            self.coverage.retirements += 1;
            self.post(0);
        }
    }

    fn step(&mut self, mix: &Mix, (action, a, b): Step) {
        let shard = 1 + u16::from(a) % LESSEE_SHARDS;
        match pick(mix, action) {
            Action::Input => {
                let lessee = 1 + u16::from(b / 4) % LESSEE_SHARDS;
                let decision = match b % 4 {
                    0 => Decision::Local,
                    1 => Decision::Lessee(lessee),
                    _ => Decision::NewLessee(lessee),
                };
                self.input(usize::from(a) % self.inputs.len(), decision);
            }
            Action::Deliver => {
                self.deliver(usize::from(a));
            }
            Action::Admit => {
                let refuse = b % 4 == 0;
                self.admit(shard, if refuse { Admission::Refuse } else { Admission::Accept });
            }
            Action::Run => {
                self.run(u16::from(a) % (LESSEE_SHARDS + 1));
            }
            Action::Retire => self.retire(shard),
        }
        self.coverage.buffered = self.coverage.buffered.max(self.lessor.buffered());
    }

    /// Runs everything left to quiescence, in a fixed order.
    fn quiesce(&mut self) {
        let shards = 0..=LESSEE_SHARDS;
        while self.deliver(0)
            || shards.clone().any(|s| self.admit(s, Admission::Accept))
            || shards.clone().any(|s| self.run(s))
            || (0..self.inputs.len()).any(|c| self.input(c, Decision::NewLessee(1 + c as u16)))
        {}
        assert_eq!(self.lessor.mode(), Mode::Runnable);
        assert_eq!((self.lessor.buffered(), self.lessor.in_flight()), (0, 0));
    }

    /// The actor's whole state: the lessor's with every live lessee's partial combined in.
    fn final_state(&self) -> Mo::State {
        let mut state = self.lessor.state().clone();
        for lessee in self.lessees.iter().flatten() {
            state.combine(lessee.state().clone());
        }
        state
    }
}

fn fold_ids(script: &Script) -> impl Iterator<Item = u64> + '_ {
    script.channels.iter().flatten().filter_map(|item| match item {
        Item::Fold { id, .. } => Some(*id),
        Item::Barrier { .. } => None,
    })
}

/// Simulates `script` under `mix` and checks it against the sequential reference.
fn run_script<Mo: Model>(script: &Script, mix: &Mix) -> Sim<Mo> {
    let mut sim = Sim::<Mo>::new(script);
    for &step in &script.steps {
        sim.step(mix, step);
    }
    sim.quiesce();
    sim.ledger.finish(fold_ids(script)).unwrap();
    sim
}

fn mergeable_oracle(script: &Script, mix: &Mix) -> Coverage {
    let mut sim = run_script::<Aggregates>(script, mix);
    let (views, state) = reference::<Aggregates>(script);
    assert_eq!(sim.views, views, "critical views differ from the sequential run");
    assert_eq!(sim.final_state(), state, "final state differs from the sequential run");
    sim.coverage.criticals = sim.ledger.criticals();
    sim.coverage
}

fn run_cases(mix: &'static Mix, check: fn(&Coverage)) {
    let total = RefCell::new(Coverage::default());
    let mut runner = TestRunner::new(ProptestConfig::default());
    let cases = runner.config().cases;
    runner
        .run(&script(), |script| {
            total.borrow_mut().add(mergeable_oracle(&script, mix));
            Ok(())
        })
        .unwrap();
    println!("{cases} cases: {:?}", total.borrow());
    check(&total.borrow());
}

#[test]
fn any_interleaving_equals_the_sequential_run() {
    run_cases(&STEADY, |total| {
        assert!(total.forwards > 0 && total.criticals > 0 && total.buffered > 0);
        assert!(total.blocked_with_forwards_in_flight > 0, "never blocked mid-forward");
        assert!(total.lessees_draining > 0, "no lessee ever drained on Block");
    });
}

#[test]
fn no_loss_no_duplicate_through_refusals_and_retirements() {
    run_cases(&CHURN, |total| {
        assert!(total.refusals > 0 && total.retirements > 0);
    });
}

proptest! {
    #[test]
    fn exclusive_state_keeps_arrival_order(script in script()) {
        let sim = run_script::<Log>(&script, &STEADY);
        prop_assert_eq!(sim.lessor.lessees().count(), 0);
        let log = &sim.lessor.state().0;
        for channel in &script.channels {
            let sent: Vec<u64> = channel.iter().filter_map(|item| match item {
                Item::Fold { id, .. } => Some(*id),
                Item::Barrier { .. } => None,
            }).collect();
            let seen: Vec<u64> = log.iter().copied().filter(|id| sent.contains(id)).collect();
            prop_assert_eq!(seen, sent, "per-channel order broken");
        }
        let (views, _) = reference::<Log>(&script);
        prop_assert_eq!(sim.views.len(), views.len());
        for ((id, seen), (ref_id, expected)) in sim.views.iter().zip(&views) {
            prop_assert_eq!(id, ref_id);
            prop_assert_eq!(&seen.0[..], &log[..seen.0.len()], "a view is a prefix of the log");
            let (mut seen, mut expected) = (seen.0.clone(), expected.0.clone());
            seen.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(seen, expected, "a critical saw other messages than its barrier's");
        }
    }
}
