//! The throughput runs: every scenario and method against the three
//! servers, back to back within a round, so that drift on the machine
//! (thermal, neighbours) hits all three alike.

use std::time::Duration;

use anyhow::bail;

use crate::driver;
use crate::report::{Cell, Results, Sample};
use crate::scenario::{self, Method, Scenario};
use crate::servers::{Kind, Server};

/// The three servers and the sessions each has open, per scenario.
pub struct Targets<'a> {
    pub servers: [(Kind, &'a Server); 3],
    /// `sessions[k][s]`: server k's sessions for scenario s.
    pub sessions: Vec<Vec<Vec<String>>>,
}

pub struct Plan {
    pub scenarios: Vec<Scenario>,
    pub methods: Vec<Method>,
    pub connections: usize,
    pub rounds: u32,
    pub measure: Duration,
    pub warm_up: Duration,
}

/// What one measurement found.
enum Measured {
    Sample(Sample),
    /// Every answer was JSON-RPC "method not found": the server does not
    /// offer this method on this wire. Reported, not an error.
    Unsupported,
}

/// One measurement; any other error fails the run.
async fn measure(
    targets: &Targets<'_>,
    plan: &Plan,
    token: &str,
    (k, s): (usize, usize),
    method: Method,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let (kind, server) = targets.servers[k];
    let scenario = plan.scenarios[s];
    let plans = scenario::plans(
        server,
        scenario,
        method,
        plan.connections,
        &targets.sessions[k][s],
        token,
    )?;
    let cpu_before = server.cpu_seconds();
    let o = driver::drive(server.addr, plans, duration).await?;
    let cpu_after = server.cpu_seconds();
    let label = format!(
        "{} {} against {}",
        scenario.name(),
        method.name(),
        kind.name()
    );
    if o.ok == 0 && o.errors > 0 && o.not_found == o.errors {
        return Ok(Measured::Unsupported);
    }
    if o.errors > 0 {
        bail!(
            "{label}: {} errors in {} requests; first: {}",
            o.errors,
            o.errors + o.ok,
            o.first_error.unwrap_or_default()
        );
    }
    if o.ok == 0 {
        bail!("{label}: no request completed");
    }
    let cpu_us = match kind {
        Kind::Echo => None,
        Kind::Auth | Kind::NoAuth => cpu_before
            .zip(cpu_after)
            .map(|(b, a)| (a - b) * 1e6 / o.ok as f64),
    };
    Ok(Measured::Sample(Sample {
        per_sec: o.per_sec(),
        p50_us: o.quantile_us(0.5),
        p99_us: o.quantile_us(0.99),
        cpu_us,
    }))
}

/// Warms every server on every scenario, then measures `plan.rounds`
/// rounds; prints one table per scenario and method.
pub async fn run(targets: &Targets<'_>, plan: &Plan, token: &str) -> anyhow::Result<Results> {
    let mut results: Results = plan
        .scenarios
        .iter()
        .flat_map(|&sc| plan.methods.iter().map(move |&m| (sc, m, Cell::default())))
        .collect();
    // Warm-up: connections, the JWKS fetch, the verified-token cache,
    // allocators; and which methods each server offers on each wire.
    let warm = plan.warm_up / plan.methods.len().max(1) as u32;
    for (scenario, method, cell) in &mut results {
        let s = index_of(plan, *scenario);
        for (k, &(kind, _)) in targets.servers.iter().enumerate() {
            if let Measured::Unsupported =
                measure(targets, plan, token, (k, s), *method, warm).await?
            {
                cell.mark_unsupported(kind);
            }
        }
    }
    for round in 1..=plan.rounds {
        eprintln!("round {round} of {}", plan.rounds);
        for (scenario, method, cell) in &mut results {
            let s = index_of(plan, *scenario);
            for (k, &(kind, _)) in targets.servers.iter().enumerate() {
                if cell.is_unsupported(kind) {
                    continue;
                }
                match measure(targets, plan, token, (k, s), *method, plan.measure).await? {
                    Measured::Sample(sample) => cell.push(kind, sample),
                    Measured::Unsupported => bail!(
                        "{} {} against {}: \"method not found\" after the warm-up succeeded",
                        scenario.name(),
                        method.name(),
                        kind.name()
                    ),
                }
            }
        }
    }
    for (scenario, method, cell) in &results {
        crate::report::print_cell(*scenario, *method, plan.connections, cell);
    }
    Ok(results)
}

fn index_of(plan: &Plan, scenario: Scenario) -> usize {
    plan.scenarios
        .iter()
        .position(|x| *x == scenario)
        .unwrap_or_default()
}
