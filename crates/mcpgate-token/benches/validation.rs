//! Validation cost: a token seen for the first time (signature check and
//! claims) against one seen before (the verified-token cache).

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mcpgate_testkit::{API_APP_ID, TestIssuer, unix_now, with};
use mcpgate_token::{ValidationPolicy, Validator};
use serde_json::json;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let issuer = rt.block_on(TestIssuer::start());
    let policy = ValidationPolicy {
        issuers: vec![issuer.issuer()],
        audiences: vec![format!("api://{API_APP_ID}"), API_APP_ID.to_owned()],
        required_scopes: vec![format!("api://{API_APP_ID}/mcp:tools")],
        ..Default::default()
    };
    let validator = Arc::new(Validator::builder(policy).build().expect("policy"));
    let now = unix_now();
    let cached = issuer.sign("key-a", &issuer.claims(now));
    rt.block_on(validator.validate(&cached))
        .expect("warm: keys fetched");

    let mut group = c.benchmark_group("validate");
    let mut n = 0u64;
    group.bench_function("first_sight", |b| {
        b.iter_batched(
            || {
                n += 1;
                issuer.sign(
                    "key-a",
                    &with(issuer.claims(now), &[("uti", json!(n.to_string()))]),
                )
            },
            |token| rt.block_on(validator.validate(&token)).expect("valid"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("cached", |b| {
        b.iter(|| rt.block_on(validator.validate(&cached)).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
