//! The store's contract, run against every backend; then what only the
//! durable backends promise.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod suite;

use mcpgate_store::Options;
use suite::{Harness, ManualClock, test_limits};

async fn memory() -> Harness {
    let clock = ManualClock::new();
    let options = Options {
        limits: test_limits(),
        clock: clock.clock(),
        ..Options::default()
    };
    Harness {
        store: mcpgate_store::open("memory:", options).await.unwrap(),
        clock: Some(clock),
        keep: Box::new(()),
    }
}

mod memory {
    contract_tests!(super::memory);
}
