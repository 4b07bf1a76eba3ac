//! Embedding Dirigo: a word count over your own rkyv types and functions, run in-process.
//!
//! ```text
//! cargo run --release -p dirigo-engine --example wordcount
//! ```
//! Lines are split into words on the shard that reads them (a stateless function, no hop); each
//! word is then routed to its home shard, where a keyed function counts it; a collecting sink
//! hands every updated count back to this program.

use std::collections::HashMap;
use std::time::Duration;

use dirigo_engine::api::{key_str, Cx, EngineBuilder, Function, Route};

/// Splits a line into words, each keyed by the word.
struct Split;

impl Function for Split {
    type In = String;
    fn on_message(&mut self, cx: &mut Cx<'_>, line: &rkyv::Archived<String>) {
        for word in line.as_str().split_whitespace() {
            let word = word.to_lowercase();
            cx.emit(key_str(&word), cx.event_time(), &word);
        }
    }
}

/// Counts each word (the state of every word actor homed on this shard).
#[derive(Default)]
struct Count {
    counts: HashMap<String, u64>,
}

impl Function for Count {
    type In = String;
    fn on_message(&mut self, cx: &mut Cx<'_>, word: &rkyv::Archived<String>) {
        let n = self.counts.entry(word.as_str().to_owned()).or_default();
        *n += 1;
        cx.emit(cx.key_hash(), cx.event_time(), &(word.as_str().to_owned(), *n));
    }
}

pub const TEXT: &str = "the quick brown fox jumps over the lazy dog
the dog barks and the fox runs
a lazy afternoon for the brown dog";

/// Run the word count over `TEXT` repeated `times` on `shards` shards; the final count per word.
pub fn word_counts(shards: usize, times: usize) -> HashMap<String, u64> {
    let mut engine = EngineBuilder::new().shards(shards);
    let mut app = engine.app("wordcount", Duration::from_millis(10));
    let lines = app.source("lines", 1, move |_| {
        let lines: Vec<String> = TEXT.lines().map(str::to_owned).collect();
        (0..times).flat_map(move |_| lines.clone()).enumerate().map(|(i, l)| (0, i as u64, l))
    });
    let words = app.function("split", lines, Route::Forward, || Split);
    let counts = app.function("count", words, Route::ByKey, Count::default);
    let out = app.collect("counts", counts);
    engine.run().expect("the engine runs");
    let mut last = HashMap::new();
    for o in out.drain() {
        // SAFETY: `Count` emits archived `(String, u64)`.
        let (w, n) = unsafe { rkyv::access_unchecked::<rkyv::Archived<(String, u64)>>(&o.archive) }.clone_pair();
        let e = last.entry(w).or_insert(0);
        *e = n.max(*e);
    }
    last
}

trait ClonePair {
    fn clone_pair(&self) -> (String, u64);
}

impl ClonePair for rkyv::Archived<(String, u64)> {
    fn clone_pair(&self) -> (String, u64) {
        (self.0.as_str().to_owned(), self.1.to_native())
    }
}

#[allow(dead_code)]
fn main() {
    let counts = word_counts(2, 1000);
    let mut top: Vec<_> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (word, n) in top.iter().take(5) {
        println!("{word:>10} {n}");
    }
}
