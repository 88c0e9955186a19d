//! Memory per open session, on a fresh server so that the throughput runs
//! do not pollute it, and the optional soak (is memory flat under load?).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mcpgate_testkit::{TestIssuer, unix_now, with};
use serde_json::json;

use crate::driver::{self, Conn};
use crate::scenario::{self, Method};
use crate::servers::{Binaries, Kind, Server, start};

/// One session: its id and the token of the user who opened it.
pub struct Session {
    id: String,
    token: String,
}

/// What one server's session-memory run found.
pub struct SessionMemory {
    /// KB per session, for each batch that opened all its sessions.
    pub batches_kb: Vec<f64>,
    /// Set if the server stopped accepting sessions: how many it took.
    pub capped_at: Option<usize>,
    pub sessions: Vec<Session>,
}

/// Tokens for `n` distinct users (distinct `oid` and `sub`).
pub fn distinct_tokens(issuer: &TestIssuer, n: usize) -> Vec<String> {
    let now = unix_now();
    (0..n)
        .map(|i| {
            let claims = with(
                issuer.claims(now),
                &[
                    ("oid", json!(format!("00000000-0000-4000-8000-{i:012x}"))),
                    ("sub", json!(format!("load-user-{i}"))),
                ],
            );
            issuer.sign("key-a", &claims)
        })
        .collect()
}

/// Opens `batches` × `batch` sessions (one token each: initialize,
/// notifications/initialized, one tools/call) and reads the server's RSS
/// before and `settle` after each batch. Stops early, without error, if
/// the server refuses an `initialize`.
pub async fn session_memory(
    server: &Server,
    tokens: &[String],
    batch: usize,
    batches: usize,
    settle: Duration,
) -> anyhow::Result<SessionMemory> {
    let mut conn = Conn::open(server.addr).await?;
    // One session first, not counted: the JWKS fetch and first-use caches
    // are not per-session memory.
    let mut out = SessionMemory {
        batches_kb: Vec::new(),
        capped_at: None,
        sessions: Vec::new(),
    };
    let warm = tokens.first().context("no tokens")?;
    if scenario::open_session(&mut conn, &server.host, warm)
        .await?
        .is_none()
    {
        out.capped_at = Some(0);
        return Ok(out);
    }
    tokio::time::sleep(settle).await;
    let mut tokens = tokens.iter().cycle();
    for _ in 0..batches {
        let batch_tokens: Vec<&String> = tokens.by_ref().take(batch).collect();
        // Each user's token is seen once first (a stateless call): the
        // verified-token cache is the validator's memory, not the session's.
        for token in &batch_tokens {
            let warm = scenario::stateless(Method::ToolsList, 1, token);
            let r = conn.exchange(&warm.to_bytes(&server.host, "/mcp")).await?;
            if !r.is_good() {
                bail!(
                    "stateless tools/list: status {}, body: {}",
                    r.status,
                    r.body_prefix(300)
                );
            }
        }
        tokio::time::sleep(settle).await;
        let before = server.rss_kb().context("reading VmRSS")?;
        for token in batch_tokens {
            let Some(id) = scenario::open_session(&mut conn, &server.host, token).await? else {
                // The uncounted first session was accepted too.
                out.capped_at = Some(out.sessions.len() + 1);
                return Ok(out);
            };
            let call = scenario::in_session(Method::ToolsCall, 1, &id, token);
            let r = conn.exchange(&call.to_bytes(&server.host, "/mcp")).await?;
            if !r.is_good() {
                bail!(
                    "tools/call on a new session: status {}, body: {}",
                    r.status,
                    r.body_prefix(300)
                );
            }
            out.sessions.push(Session {
                id,
                token: token.clone(),
            });
        }
        tokio::time::sleep(settle).await;
        let after = server.rss_kb().context("reading VmRSS")?;
        out.batches_kb
            .push((after as f64 - before as f64) / batch as f64);
    }
    Ok(out)
}

/// The session-memory runs on fresh servers, printed as they finish.
/// Returns the authenticated server's KB per session, per batch.
pub async fn run(
    bins: &Binaries,
    issuer: &TestIssuer,
    batch: usize,
    settle: Duration,
    soak: Option<(Duration, usize)>,
) -> anyhow::Result<Vec<f64>> {
    let tokens = distinct_tokens(issuer, 2 * batch);
    println!();
    println!("== RSS per open session (fresh servers, 2 batches of {batch} sessions)");
    let auth = start(bins, Kind::Auth, &issuer.issuer())?;
    let m = session_memory(&auth, &tokens, batch, 2, settle).await?;
    if let Some(n) = m.capped_at {
        bail!("the authenticated server refused a session after {n}, one user each");
    }
    for (i, kb) in m.batches_kb.iter().enumerate() {
        println!(
            "  auth, distinct users, batch {}: {kb:.2} KB/session",
            i + 1
        );
    }
    if let Some((duration, connections)) = soak {
        let sessions = &m.sessions[..batch.min(m.sessions.len())];
        soak_run(&auth, sessions, duration, connections).await?;
    }
    let kb = m.batches_kb;
    drop(auth);

    // One anonymous caller: the server may cap sessions per principal.
    let open = start(bins, Kind::NoAuth, "")?;
    let anon = &tokens[..1];
    let m = session_memory(&open, anon, batch, 2, settle).await?;
    for (i, kb) in m.batches_kb.iter().enumerate() {
        println!("  no-auth, one caller, batch {}: {kb:.2} KB/session", i + 1);
    }
    if let Some(n) = m.capped_at {
        println!(
            "  no-auth: the server accepted {n} sessions from one caller, then refused (a cap)"
        );
    }
    Ok(kb)
}

/// Drives tools/call round-robin over `sessions` for `duration`, sampling
/// the server's RSS every 10 s.
async fn soak_run(
    server: &Server,
    sessions: &[Session],
    duration: Duration,
    connections: usize,
) -> anyhow::Result<()> {
    println!(
        "  soak: tools/call over {} sessions, {connections} connections, {} s",
        sessions.len(),
        duration.as_secs()
    );
    let plans: Vec<Vec<Arc<[u8]>>> = (0..connections)
        .map(|c| {
            sessions
                .iter()
                .skip(c)
                .step_by(connections)
                .map(|s| {
                    let req =
                        scenario::in_session(Method::ToolsCall, c as u64 + 1, &s.id, &s.token);
                    Arc::from(req.to_bytes(&server.host, "/mcp"))
                })
                .collect()
        })
        .collect();
    let mut samples = vec![server.rss_kb().context("reading VmRSS")?];
    let step = Duration::from_secs(10);
    let mut left = duration;
    while !left.is_zero() {
        let this = left.min(step);
        left -= this;
        let o = driver::drive(server.addr, plans.clone(), this).await?;
        if o.errors > 0 {
            bail!(
                "soak: {} errors; first: {}",
                o.errors,
                o.first_error.unwrap_or_default()
            );
        }
        let rss = server.rss_kb().context("reading VmRSS")?;
        println!(
            "  t+{:>4} s  {:>7.0} req/s  VmRSS {rss} KB",
            (duration - left).as_secs(),
            o.per_sec()
        );
        samples.push(rss);
    }
    // The growth under load; the idle sample before it lacks the
    // connections' buffers.
    let loaded = &samples[1..];
    let (lo, hi) = (
        loaded.iter().min().copied().unwrap_or(0),
        loaded.iter().max().copied().unwrap_or(0),
    );
    println!(
        "  VmRSS samples (KB, the first before load): {samples:?}; max−min under load {} KB",
        hi - lo
    );
    Ok(())
}
