//! Tables and the summary against issue 10's targets. Targets are
//! reported as PASS or MISS, never asserted: speed depends on the machine.

use crate::scenario::{Method, Scenario};
use crate::servers::Kind;

/// One measurement of one server.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Server CPU per good request; `None` for the echo or without procfs.
    pub cpu_us: Option<f64>,
}

/// Every round's samples of one scenario and method, per server.
#[derive(Debug, Default)]
pub struct Cell {
    samples: [Vec<Sample>; 3],
    unsupported: [bool; 3],
}

impl Cell {
    pub fn push(&mut self, kind: Kind, sample: Sample) {
        self.samples[index(kind)].push(sample);
    }

    pub fn mark_unsupported(&mut self, kind: Kind) {
        self.unsupported[index(kind)] = true;
    }

    pub fn is_unsupported(&self, kind: Kind) -> bool {
        self.unsupported[index(kind)]
    }

    fn of(&self, kind: Kind) -> &[Sample] {
        &self.samples[index(kind)]
    }

    /// Per-round ratio `a / b` of `f`, over the rounds both have.
    fn ratios(&self, a: Kind, b: Kind, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.of(a)
            .iter()
            .zip(self.of(b))
            .map(|(x, y)| f(x) / f(y))
            .collect()
    }

    /// Median over rounds of throughput ratio `a / b`.
    pub fn throughput_ratio(&self, a: Kind, b: Kind) -> Option<f64> {
        median(self.ratios(a, b, |s| s.per_sec))
    }

    /// Median over rounds of the p99 ratio `a / b`.
    pub fn p99_ratio(&self, a: Kind, b: Kind) -> Option<f64> {
        median(self.ratios(a, b, |s| s.p99_us as f64))
    }
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::Echo => 0,
        Kind::Auth => 1,
        Kind::NoAuth => 2,
    }
}

/// Results by scenario and method, in the order measured.
pub type Results = Vec<(Scenario, Method, Cell)>;

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

pub fn show(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The table of one scenario and method.
pub fn print_cell(scenario: Scenario, method: Method, connections: usize, cell: &Cell) {
    println!();
    println!(
        "== {} {} ({connections} connections)",
        scenario.name(),
        method.name()
    );
    println!("  server      req/s   p50 µs   p99 µs   CPU µs/req");
    for kind in Kind::ALL {
        if cell.is_unsupported(kind) {
            println!(
                "  {:<8} unsupported: every answer was JSON-RPC -32601 (method not found)",
                kind.name()
            );
            continue;
        }
        let s = cell.of(kind);
        let med = |f: &dyn Fn(&Sample) -> f64| median(s.iter().map(f).collect());
        let cpu = median(s.iter().filter_map(|x| x.cpu_us).collect());
        println!(
            "  {:<8} {:>8}  {:>7}  {:>7}  {:>11}",
            kind.name(),
            show(med(&|x| x.per_sec), 0),
            show(med(&|x| x.p50_us as f64), 0),
            show(med(&|x| x.p99_us as f64), 0),
            if kind == Kind::Echo {
                "-".to_owned()
            } else {
                show(cpu, 1)
            },
        );
    }
    let ratio_line = |label: &str, v: Vec<f64>| {
        if v.is_empty() {
            println!("  {label:<14} -");
            return;
        }
        let (lo, hi) = min_max(&v);
        println!(
            "  {label:<14} {}  (min–max {lo:.3}–{hi:.3})",
            show(median(v), 3)
        );
    };
    ratio_line(
        "auth/echo",
        cell.ratios(Kind::Auth, Kind::Echo, |s| s.per_sec),
    );
    ratio_line(
        "no-auth/echo",
        cell.ratios(Kind::NoAuth, Kind::Echo, |s| s.per_sec),
    );
    ratio_line(
        "auth/no-auth",
        cell.ratios(Kind::Auth, Kind::NoAuth, |s| s.per_sec),
    );
    ratio_line(
        "p99 auth/echo",
        cell.ratios(Kind::Auth, Kind::Echo, |s| s.p99_us as f64),
    );
}

/// The summary against the targets; only what was measured.
pub fn print_summary(results: &Results, rss_kb: Option<&[f64]>) {
    let find = |sc: Scenario, m: Method| {
        results
            .iter()
            .find(|(s, mm, _)| *s == sc && *mm == m)
            .map(|(_, _, c)| c)
    };
    let line = |label: String, value: Option<f64>, pass: bool, target: &str| {
        let verdict = match value {
            Some(_) if pass => "PASS",
            Some(_) => "MISS",
            None => "n/a",
        };
        println!(
            "  {verdict:<5} {label:<44} {:>7}  (target {target})",
            show(value, 3)
        );
    };
    if results.is_empty() && rss_kb.is_none() {
        return;
    }
    println!();
    println!("== issue 10 targets (reported, not asserted)");
    for (sc, min) in [
        (Scenario::Sessions16, 0.35),
        (Scenario::Session1, 0.2),
        (Scenario::Stateless, 0.5),
    ] {
        if let Some(c) = find(sc, Method::ToolsCall) {
            let v = c.throughput_ratio(Kind::Auth, Kind::Echo);
            line(
                format!("auth/echo tools/call {}", sc.name()),
                v,
                v.is_some_and(|v| v >= min),
                &format!("≥ {min}"),
            );
        }
    }
    for sc in [Scenario::Stateless, Scenario::Sessions16] {
        for m in Method::ALL {
            if let Some(c) = find(sc, m) {
                let v = c.throughput_ratio(Kind::Auth, Kind::NoAuth);
                line(
                    format!("auth/no-auth {} {}", m.name(), sc.name()),
                    v,
                    v.is_some_and(|v| v >= 0.95),
                    "≥ 0.95",
                );
            }
        }
    }
    for sc in Scenario::ALL {
        if let Some(c) = find(sc, Method::ToolsCall) {
            let v = c.p99_ratio(Kind::Auth, Kind::Echo);
            line(
                format!("p99 auth/echo tools/call {}", sc.name()),
                v,
                v.is_some_and(|v| v <= 2.0),
                "≤ 2",
            );
        }
    }
    for (sc, m, c) in results {
        for kind in Kind::ALL {
            if c.is_unsupported(kind) {
                println!(
                    "  note: {} does not offer {} on the {} wire (-32601)",
                    kind.name(),
                    m.name(),
                    sc.name()
                );
            }
        }
    }
    if let Some(rss_kb) = rss_kb {
        for (i, kb) in rss_kb.iter().enumerate() {
            line(
                format!("RSS KB per session, auth, batch {}", i + 1),
                Some(*kb),
                *kb <= 8.0,
                "≤ 8",
            );
        }
    }
}
