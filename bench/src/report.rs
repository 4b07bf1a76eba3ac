//! What scenarios report: plain-text tables, medians over repeats, latency percentiles, and the
//! JSON document every scenario writes (its fields are described in `bench/README.md`).

use std::fmt::Write;
use std::time::Duration;

use dirigo_engine::report::LatencyUs;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{sys, Opts};

/// A histogram of nanoseconds with the engine's bounds (1 ns to 60 s, 3 significant digits), so
/// baselines and Dirigo are read with the same precision.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency percentiles (µs) of a histogram of nanoseconds, as the engine reports them.
pub fn latency_of(h: &Histogram<u64>) -> LatencyUs {
    LatencyUs::of(h)
}

/// Median of `xs` (the mean of the middle two for an even count; 0 when empty).
/// `items` in the order round `round` runs them: as given, then reversed, in turn, so that no
/// system or setup always runs first (interleaved A/B on a noisy machine).
pub fn interleaved<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut order = items.to_vec();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Percentile-wise median of several latency summaries (each percentile on its own).
pub fn median_latency(ls: &[&LatencyUs]) -> LatencyUs {
    let of = |f: fn(&LatencyUs) -> f64| median(&ls.iter().map(|l| f(l)).collect::<Vec<_>>());
    let count = of(|l| l.count as f64) as u64;
    LatencyUs {
        p50: of(|l| l.p50),
        p90: of(|l| l.p90),
        p99: of(|l| l.p99),
        p999: of(|l| l.p999),
        max: of(|l| l.max),
        count,
    }
}

/// `a / b`, or NaN when `b` is 0 (serialised as `null`).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

/// A text table: a header and rows of preformatted cells, columns right-aligned but the first.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    /// Add a row (as many cells as the header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let width = |c: usize| self.rows.iter().map(|r| r[c].len()).chain([self.header[c].len()]).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols).map(width).collect();
        let mut s = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (c, cell) in r.iter().enumerate() {
                match c {
                    0 => {
                        let _ = write!(s, "{cell:<w$}", w = widths[0]);
                    }
                    _ => {
                        let _ = write!(s, "  {cell:>w$}", w = widths[c]);
                    }
                }
            }
            s.push('\n');
        }
        s
    }
}

/// A number of microseconds for a table cell.
pub fn us(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.1}")
    }
}

/// A ratio for a table cell.
pub fn times(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "-".to_owned()
    }
}

/// Events per second for a table cell, in millions.
pub fn meps(x: f64) -> String {
    format!("{:.2}M", x / 1e6)
}

/// Where and how a run happened: the top of every result file.
#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    load_avg_1m_before: f64,
    load_avg_1m_after: f64,
}

/// The document a scenario writes: common fields around its own `results`.
pub fn envelope(scenario: &str, opts: Opts, elapsed: Duration, results: Value) -> Value {
    let machine =
        Machine { cpus: sys::cpus(), load_avg_1m_before: sys::load_before(), load_avg_1m_after: sys::load_avg() };
    json!({
        "scenario": scenario,
        "quick": opts.quick,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "elapsed_seconds": elapsed.as_secs_f64(),
        "machine": machine,
        "results": results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["name", "x"]);
        t.row(vec!["a".into(), "10".into()]);
        assert_eq!(t.render(), "name   x\na     10\n");
    }
}
