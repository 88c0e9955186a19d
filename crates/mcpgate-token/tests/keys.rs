//! The validator against a real issuer on loopback: discovery, rotation,
//! outages, and the refresh rate limit.

use std::sync::Arc;
use std::time::Duration;

use mcpgate_testkit::{API_APP_ID, TENANT, TestIssuer, with};
use mcpgate_token::clock::{Clock, ManualClock};
use mcpgate_token::jwks::{JwksOptions, KeysFrom};
use mcpgate_token::{ValidationError, ValidationPolicy, Validator};
use serde_json::json;

fn policy(issuer: &TestIssuer) -> ValidationPolicy {
    ValidationPolicy {
        issuers: vec![issuer.issuer()],
        audiences: vec![format!("api://{API_APP_ID}"), API_APP_ID.to_owned()],
        required_scopes: vec![format!("api://{API_APP_ID}/mcp:tools")],
        ..Default::default()
    }
}

fn validator(clock: &ManualClock, policy: ValidationPolicy) -> Validator {
    Validator::builder(policy)
        .clock(Arc::new(clock.clone()))
        .jwks_options(JwksOptions {
            min_refresh_interval: Duration::from_secs(10),
            ..Default::default()
        })
        .build()
        .expect("policy compiles")
}

#[tokio::test]
async fn discovers_keys_and_caches_verified_tokens() {
    let issuer = TestIssuer::start().await;
    let clock = ManualClock::starting_now();
    let v = validator(&clock, policy(&issuer));
    let token = issuer.sign("key-a", &issuer.claims(clock.unix_now()));
    let p = v.validate(&token).await.expect("valid token");
    assert_eq!(p.tenant_id.as_deref(), Some(TENANT));
    assert_eq!(p.scopes, ["mcp:tools"]);
    v.validate(&token).await.expect("still valid");
    assert_eq!(issuer.jwks_fetches(), 1, "one fetch for both validations");
}

#[tokio::test]
async fn a_cached_tokens_signature_on_another_payload_is_refused() {
    let issuer = TestIssuer::start().await;
    let clock = ManualClock::starting_now();
    let v = validator(&clock, policy(&issuer));
    let now = clock.unix_now();
    let alice = issuer.sign("key-a", &issuer.claims(now));
    v.validate(&alice).await.expect("valid token, now cached");
    // The cache is keyed by the signature: graft Alice's onto Mallory's
    // claims and present it.
    let mallory = issuer.sign(
        "key-a",
        &with(issuer.claims(now), &[("oid", json!("mallory"))]),
    );
    let (mallory_signed, _) = mallory.rsplit_once('.').expect("a JWT");
    let (_, alice_signature) = alice.rsplit_once('.').expect("a JWT");
    let forged = format!("{mallory_signed}.{alice_signature}");
    assert!(matches!(
        v.validate(&forged).await,
        Err(ValidationError::BadSignature)
    ));
    // Alice's own token still passes, from the cache.
    let p = v.validate(&alice).await.expect("still valid");
    assert_ne!(p.object_id.as_deref(), Some("mallory"));
}

#[tokio::test]
async fn rotated_in_key_is_accepted_without_restart() {
    let issuer = TestIssuer::start().await;
    let clock = ManualClock::starting_now();
    let v = validator(&clock, policy(&issuer));
    let now = clock.unix_now();
    v.validate(&issuer.sign("key-a", &issuer.claims(now)))
        .await
        .expect("first key");
    issuer.publish("key-b");
    // Refreshes for unknown kids are at most one per interval (10 s here).
    clock.advance(Duration::from_secs(11));
    let now = clock.unix_now();
    v.validate(&issuer.sign("key-b", &issuer.claims(now)))
        .await
        .expect("new kid triggers a refresh");
    assert_eq!(issuer.jwks_fetches(), 2);
}

#[tokio::test]
async fn removed_key_stops_verifying_once_the_cache_refreshes() {
    let issuer = TestIssuer::start().await;
    issuer.publish("key-b");
    issuer.set_cache_control("max-age=600");
    let clock = ManualClock::starting_now();
    let v = validator(&clock, policy(&issuer));
    let token = issuer.sign("key-a", &issuer.claims(clock.unix_now()));
    v.validate(&token).await.expect("valid while published");

    issuer.unpublish("key-a");
    v.validate(&token)
        .await
        .expect("the cached set still holds key-a");
    clock.advance(Duration::from_secs(601));
    // The stale set serves while it revalidates in the background; once
    // that refresh lands, key-a is gone.
    let _ = v.validate(&token).await;
    v.key_caches()[0].settled().await;
    assert_eq!(issuer.jwks_fetches(), 2);
    let err = v.validate(&token).await.expect_err("key-a is gone");
    assert_eq!(
        err,
        ValidationError::UnknownKey {
            kid: "key-a".into()
        }
    );
    // A fresh token from the remaining key is fine.
    let fresh = issuer.sign("key-b", &issuer.claims(clock.unix_now()));
    v.validate(&fresh).await.expect("key-b still published");
}

#[tokio::test]
async fn outage_keeps_cached_keys_and_unknown_kid_fails_fast() {
    let issuer = TestIssuer::start().await;
    let clock = ManualClock::starting_now();
    let v = validator(&clock, policy(&issuer));
    let now = clock.unix_now();
    v.validate(&issuer.sign("key-a", &issuer.claims(now)))
        .await
        .expect("warm the cache");

    issuer.go_down();
    // Past the key set's lifetime: the refresh fails, the held keys serve.
    clock.advance(Duration::from_secs(3_700));
    let now = clock.unix_now();
    let fresh = issuer.sign("key-a", &issuer.claims(now));
    v.validate(&fresh).await.expect("cached key still verifies");

    let unknown = issuer.sign("key-c", &issuer.claims(now));
    let err = v.validate(&unknown).await.expect_err("unknown kid");
    assert_eq!(
        err,
        ValidationError::UnknownKey {
            kid: "key-c".into()
        }
    );
}

/// An issuer that stops answering (not refusing) must not stall requests
/// whose key the cache holds, first sight or cached alike.
#[tokio::test]
async fn a_hung_issuer_stalls_no_request_with_a_known_key() {
    let issuer = TestIssuer::start().await;
    issuer.set_cache_control("max-age=300");
    let clock = ManualClock::starting_now();
    // No fetch timeout: a request that waited on the hung fetch would wait
    // for ever.
    let v = Validator::builder(policy(&issuer))
        .clock(Arc::new(clock.clone()))
        .http_client(reqwest::Client::new())
        .build()
        .expect("policy compiles");
    let seen = issuer.sign("key-a", &issuer.claims(clock.unix_now()));
    v.validate(&seen).await.expect("warm the cache");

    issuer.stall();
    // Past the key set's lifetime, within the tokens'.
    clock.advance(Duration::from_secs(301));
    let now = clock.unix_now();
    let fresh = issuer.sign("key-a", &issuer.claims(now));
    // If either waited for the hung fetch, it would never return: the guard
    // turns that hang into a failure instead of a stuck test.
    let guard = Duration::from_secs(30);
    let both = async {
        v.validate(&seen).await.expect("cached token, stale keys");
        v.validate(&fresh).await.expect("new token, stale keys");
        // Many requests, one background fetch in flight.
        for _ in 0..20 {
            v.validate(&fresh).await.expect("still served");
        }
    };
    tokio::time::timeout(guard, both)
        .await
        .expect("a request waited on the hung issuer");

    // The revalidation is under way, and it lands once the issuer answers.
    let fetches = issuer.jwks_fetches();
    issuer.recover();
    tokio::time::timeout(guard, v.key_caches()[0].settled())
        .await
        .expect("the background refresh finishes once the issuer answers");
    assert_eq!(issuer.jwks_fetches(), fetches + 1, "one revalidation");
}

#[tokio::test]
async fn no_keys_at_all_is_keys_unavailable() {
    let issuer = TestIssuer::start().await;
    issuer.go_down();
    let clock = ManualClock::starting_now();
    let v = validator(&clock, policy(&issuer));
    let err = v
        .validate(&issuer.sign("key-a", &issuer.claims(clock.unix_now())))
        .await
        .expect_err("issuer down from the start");
    assert!(
        matches!(err, ValidationError::KeysUnavailable(_)),
        "{err:?}"
    );
    assert!(err.is_server_side());
}

#[tokio::test]
async fn unknown_kids_cannot_hammer_the_issuer() {
    let issuer = TestIssuer::start().await;
    let clock = ManualClock::starting_now();
    let v = Arc::new(validator(&clock, policy(&issuer)));
    let now = clock.unix_now();
    v.validate(&issuer.sign("key-a", &issuer.claims(now)))
        .await
        .expect("warm");
    clock.advance(Duration::from_secs(11));
    // key-c is never published: 50 concurrent tokens with it, one refresh.
    let token = issuer.sign("key-c", &issuer.claims(now));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let v = v.clone();
            let token = token.clone();
            tokio::spawn(async move { v.validate(&token).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.expect("task").is_err());
    }
    assert_eq!(issuer.jwks_fetches(), 2, "warm-up plus one refresh");
    // After the interval, one more refresh is allowed.
    clock.advance(Duration::from_secs(11));
    assert!(v.validate(&token).await.is_err());
    assert_eq!(issuer.jwks_fetches(), 3);
}

#[tokio::test]
async fn multi_tenant_template_checks_tid_and_allow_list() {
    let issuer = TestIssuer::start().await;
    let clock = ManualClock::starting_now();
    let other = "33333333-3333-4333-8333-333333333333";
    let mut p = policy(&issuer);
    p.issuers = vec![issuer.issuer_template()];
    p.allowed_tenants = vec![mcpgate_testkit::TENANT.into()];
    let v = validator(&clock, p);
    let now = clock.unix_now();
    v.validate(&issuer.sign("key-a", &issuer.claims(now)))
        .await
        .expect("home tenant");

    let mismatch = with(issuer.claims(now), &[("tid", json!(other))]);
    let err = v
        .validate(&issuer.sign("key-a", &mismatch))
        .await
        .expect_err("tid differs");
    assert!(
        matches!(err, ValidationError::IssuerTenantMismatch { .. }),
        "{err:?}"
    );

    let foreign = with(
        issuer.claims(now),
        &[
            ("tid", json!(other)),
            ("iss", json!(issuer.issuer_for(other))),
        ],
    );
    let err = v
        .validate(&issuer.sign("key-a", &foreign))
        .await
        .expect_err("not allowed");
    assert_eq!(err, ValidationError::TenantNotAllowed { tid: other.into() });
}

#[tokio::test]
async fn explicit_jwks_url_skips_discovery() {
    let issuer = TestIssuer::start().await;
    let clock = ManualClock::starting_now();
    let v = Validator::builder(policy(&issuer))
        .clock(Arc::new(clock.clone()))
        .keys_for(0, KeysFrom::Jwks(issuer.jwks_uri()))
        .build()
        .expect("compiles");
    v.validate(&issuer.sign("key-a", &issuer.claims(clock.unix_now())))
        .await
        .expect("valid");
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let issuer = TestIssuer::start().await;
    let clock = ManualClock::starting_now();
    let v = Validator::builder(policy(&issuer))
        .clock(Arc::new(clock.clone()))
        .keys_for(
            0,
            KeysFrom::Discovery {
                url: format!(
                    "{}/other-tenant/v2.0/.well-known/openid-configuration",
                    issuer
                        .issuer()
                        .rsplit_once('/')
                        .map(|(a, _)| a)
                        .unwrap_or_default()
                        .rsplit_once('/')
                        .map(|(a, _)| a)
                        .unwrap_or_default()
                ),
                expected_issuer: issuer.issuer(),
            },
        )
        .build()
        .expect("compiles");
    let err = v
        .validate(&issuer.sign("key-a", &issuer.claims(clock.unix_now())))
        .await
        .expect_err("mismatched discovery");
    match err {
        ValidationError::KeysUnavailable(msg) => assert!(msg.contains("names issuer"), "{msg}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn repeated_token_costs_no_fetch_and_expiry_still_applies() {
    let issuer = TestIssuer::start().await;
    let clock = ManualClock::starting_now();
    let v = validator(&clock, policy(&issuer));
    let now = clock.unix_now();
    let short = with(issuer.claims(now), &[("exp", json!(now + 120))]);
    let token = issuer.sign("key-a", &short);
    v.validate(&token).await.expect("valid");
    clock.advance(Duration::from_secs(120 + 61));
    let err = v
        .validate(&token)
        .await
        .expect_err("expired even though cached");
    assert!(matches!(err, ValidationError::Expired { .. }), "{err:?}");
}

#[tokio::test]
async fn v1_issuer_shares_the_v2_key_set() {
    let issuer = TestIssuer::start().await;
    let clock = ManualClock::starting_now();
    let v1 = format!("https://sts.windows.net/{TENANT}/");
    let mut p = policy(&issuer);
    p.issuers.push(v1.clone());
    let v = Validator::builder(p)
        .clock(Arc::new(clock.clone()))
        .keys_shared_with(1, 0)
        .build()
        .expect("compiles");
    let now = clock.unix_now();
    let v1_claims = with(
        issuer.claims(now),
        &[
            ("iss", json!(v1)),
            ("ver", json!("1.0")),
            ("aud", json!(format!("api://{API_APP_ID}"))),
        ],
    );
    v.validate(&issuer.sign("key-a", &v1_claims))
        .await
        .expect("v1 token");
    v.validate(&issuer.sign("key-a", &issuer.claims(now)))
        .await
        .expect("v2 token");
    assert_eq!(issuer.jwks_fetches(), 1, "one key set for both issuers");
}
