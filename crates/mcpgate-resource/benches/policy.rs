//! Per-tool policy on the call path: one `decide` against a 20-rule policy
//! (exact names and globs, the usual mix), for a name the last rule
//! matches, one no rule matches, and a refusal that writes its reason.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mcpgate_resource::policy::{DefaultAction, Kind, Policy, PolicyConfig, RuleConfig};
use mcpgate_token::{Claims, Principal};
use serde_json::json;

fn twenty_rules() -> Policy {
    let rules = (0..20)
        .map(|i| RuleConfig {
            name: Some(format!("rule {i}")),
            tools: if i % 2 == 0 {
                vec![format!("svc{i}_*"), format!("svc{i}.exact")]
            } else {
                vec![format!("tool_{i}"), format!("other{i}.?et")]
            },
            resources: vec![format!("file:///r{i}/*")],
            scopes: vec![format!("Scope.{i}"), "Common".to_owned()],
            roles: if i % 3 == 0 {
                vec![format!("Role{i}")]
            } else {
                Vec::new()
            },
            ..Default::default()
        })
        .collect();
    Policy::compile(&PolicyConfig {
        default: DefaultAction::Allow,
        rules,
    })
    .expect("bench policy compiles")
}

fn bench(c: &mut Criterion) {
    let policy = twenty_rules();
    let claims: Claims = serde_json::from_value(json!({
        "sub": "u", "tid": "t", "scp": "Common Scope.19", "roles": ["Role18"]
    }))
    .expect("claims");
    let who = Principal::from_verified_claims(&claims, "https://issuer.test", 0);
    let mut g = c.benchmark_group("policy_decide_20_rules");
    g.bench_function("last_rule_allows", |b| {
        b.iter(|| policy.decide(Some(black_box(&who)), Kind::Tool, black_box("tool_19")))
    });
    g.bench_function("no_rule_matches", |b| {
        b.iter(|| {
            policy.decide(
                Some(black_box(&who)),
                Kind::Tool,
                black_box("unlisted_tool"),
            )
        })
    });
    let weak = Principal::from_verified_claims(
        &serde_json::from_value(json!({"sub": "u", "scp": "None"})).expect("claims"),
        "https://issuer.test",
        0,
    );
    g.bench_function("refused_with_step_up", |b| {
        b.iter(|| policy.decide(Some(black_box(&weak)), Kind::Tool, black_box("svc18_send")))
    });
    g.bench_function("visible_glob", |b| {
        b.iter(|| policy.visible(Some(black_box(&who)), Kind::Tool, black_box("svc18_send")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
