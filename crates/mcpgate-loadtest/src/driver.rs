//! The load driver, a small wrk. On a 2-core machine the client shares the
//! CPU with the server, so a heavy client (reqwest: hyper's pool, tower
//! layers, a task per connection) takes a fixed cost per request off every
//! server alike and squeezes their throughputs together: the ratios we
//! want to measure would move towards 1. wrk is not installed here, so
//! this does what `wrk -t1 -c N` does: one thread (the caller's
//! current-thread runtime), N keep-alive HTTP/1.1 connections, one request
//! in flight on each, requests serialised once up front, responses parsed
//! in place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::http1::{self, Response};

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Writes one serialised request and reads its response.
    pub async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        self.stream.write_all(request).await?;
        loop {
            if let Some((response, used)) = http1::parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(response);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                bail!("the server closed the connection mid-response");
            }
        }
    }
}

/// What one measurement saw.
pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    /// Of the errors, JSON-RPC "method not found" answers.
    pub not_found: u64,
    /// The first bad response (or I/O error), for the report.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Latency of good responses, in microseconds.
    pub latency: Histogram<u64>,
}

impl Outcome {
    pub fn empty() -> Self {
        Self {
            ok: 0,
            errors: 0,
            not_found: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: histogram(),
        }
    }

    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency at quantile `q`, in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds")
}

/// Drives `addr` for `duration`: one connection per entry of `plans`, each
/// sending its requests in turn (round-robin) until the deadline. All
/// connections are opened before the clock starts.
pub async fn drive(
    addr: SocketAddr,
    plans: Vec<Vec<Arc<[u8]>>>,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let mut conns = Vec::with_capacity(plans.len());
    for _ in &plans {
        conns.push(Conn::open(addr).await?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for (conn, plan) in conns.into_iter().zip(plans) {
        tasks.spawn(run_conn(conn, plan, deadline));
    }
    let mut total = Outcome::empty();
    while let Some(joined) = tasks.join_next().await {
        let one = joined.context("a connection task panicked")?;
        total.ok += one.ok;
        total.errors += one.errors;
        total.not_found += one.not_found;
        if total.first_error.is_none() {
            total.first_error = one.first_error;
        }
        total
            .latency
            .add(&one.latency)
            .context("merging histograms")?;
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

async fn run_conn(mut conn: Conn, plan: Vec<Arc<[u8]>>, deadline: Instant) -> Outcome {
    let mut out = Outcome::empty();
    for request in plan.iter().cycle() {
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        match conn.exchange(request).await {
            Ok(r) if r.is_good() => {
                out.ok += 1;
                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                out.latency.saturating_record(us.max(1));
                if r.close {
                    out.errors += 1;
                    out.first_error
                        .get_or_insert_with(|| "the server closed a keep-alive connection".into());
                    break;
                }
            }
            Ok(r) => {
                out.errors += 1;
                out.not_found += u64::from(r.is_method_not_found());
                out.first_error.get_or_insert_with(|| {
                    format!("status {}, body: {}", r.status, r.body_prefix(300))
                });
                if r.close {
                    break;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                // The connection's framing is lost.
                break;
            }
        }
    }
    out
}
