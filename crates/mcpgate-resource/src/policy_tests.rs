use mcpgate_token::{Claims, Principal};
use serde_json::json;

use super::*;

fn principal(claims: serde_json::Value) -> Principal {
    let claims: Claims = serde_json::from_value(claims).expect("test claims");
    Principal::from_verified_claims(&claims, "https://issuer.test", 0)
}

fn delegated(scp: &str) -> Principal {
    principal(json!({"sub": "u", "tid": "t-1", "scp": scp}))
}

fn policy(toml_text: &str) -> Policy {
    Policy::compile(&config(toml_text)).expect("policy compiles")
}

fn config(toml_text: &str) -> PolicyConfig {
    #[derive(Deserialize)]
    struct File {
        policy: PolicyConfig,
    }
    toml::from_str::<File>(toml_text).expect("test TOML").policy
}

fn denial(d: Decision) -> Denial {
    match d {
        Decision::Deny(denial) => denial,
        Decision::Allow => panic!("expected a refusal"),
    }
}

const MAIL: &str = r#"
[policy]
[[policy.rules]]
name = "mail senders"
tools = ["send_*", "mail.delete"]
scopes = ["Mail.Send"]
"#;

#[test]
fn no_rules_allow_everything_and_default_deny_refuses_unmatched() {
    let p = Policy::allow_all();
    assert_eq!(p.decide(None, Kind::Tool, "anything"), Decision::Allow);
    let p = policy("[policy]\ndefault = \"deny\"\n");
    let d = denial(p.decide(Some(&delegated("a")), Kind::Prompt, "x"));
    assert_eq!(d.rule, None);
    assert!(d.step_up_scopes.is_empty());
    assert!(d.reason.contains("prompt") && d.reason.contains("default is deny"));
}

#[test]
fn exact_and_glob_names_match_only_their_kind() {
    let p = policy(MAIL);
    let reader = delegated("Mail.Read");
    for name in ["send_mail", "send_", "mail.delete"] {
        assert!(!p.visible(Some(&reader), Kind::Tool, name), "{name}");
    }
    // `.` is literal, and a near miss is not a match.
    for name in ["mailxdelete", "mail.delete2", "resend_mail"] {
        assert!(p.visible(Some(&reader), Kind::Tool, name), "{name}");
    }
    assert!(p.visible(Some(&reader), Kind::Prompt, "send_mail"));
    assert!(p.visible(Some(&reader), Kind::Resource, "send_mail"));
    assert!(p.visible(Some(&delegated("Mail.Send")), Kind::Tool, "send_mail"));
}

#[test]
fn scopes_alone_unmet_ask_for_step_up() {
    let p = policy(MAIL);
    let d = denial(p.decide(Some(&delegated("Mail.Read")), Kind::Tool, "send_mail"));
    assert_eq!(d.rule.as_deref(), Some("mail senders"));
    assert_eq!(d.step_up_scopes, ["Mail.Send"]);
    assert!(d.reason.contains("Mail.Send"), "{}", d.reason);
}

#[test]
fn first_matching_rule_decides() {
    let p = policy(
        r#"
[policy]
[[policy.rules]]
tools = ["admin.readonly"]
[[policy.rules]]
name = "admin"
tools = ["admin.*"]
deny = true
"#,
    );
    let who = delegated("a");
    assert!(p.visible(Some(&who), Kind::Tool, "admin.readonly"));
    let d = denial(p.decide(Some(&who), Kind::Tool, "admin.drop"));
    assert_eq!(d.rule.as_deref(), Some("admin"));
    assert!(d.step_up_scopes.is_empty());

    // The other order: the deny rule comes first and wins.
    let p = policy(
        r#"
[policy]
[[policy.rules]]
tools = ["admin.*"]
deny = true
[[policy.rules]]
tools = ["admin.readonly"]
"#,
    );
    let d = denial(p.decide(Some(&who), Kind::Tool, "admin.readonly"));
    assert_eq!(d.rule.as_deref(), Some("policy.rules[0]"));
}

#[test]
fn categories_combine_with_and_values_with_or() {
    let p = policy(
        r#"
[policy]
[[policy.rules]]
tools = ["*"]
scopes = ["A", "B"]
roles = ["R"]
tenants = ["t-1"]
"#,
    );
    let ok = principal(json!({"sub": "u", "tid": "t-1", "scp": "B", "roles": ["R"]}));
    assert!(p.visible(Some(&ok), Kind::Tool, "x"));
    let other_tenant = principal(json!({"sub": "u", "tid": "t-2", "scp": "B", "roles": ["R"]}));
    let d = denial(p.decide(Some(&other_tenant), Kind::Tool, "x"));
    assert!(
        d.step_up_scopes.is_empty(),
        "a tenant is not fixed by scope"
    );
    assert!(d.reason.contains("tenants") && !d.reason.contains("t-1"));
    // Scope and role both missing: more scope alone would not do.
    let d = denial(p.decide(Some(&delegated("C")), Kind::Tool, "x"));
    assert!(d.step_up_scopes.is_empty());
    assert!(d.reason.contains("app roles R") && d.reason.contains("scopes A, B"));
}

#[test]
fn groups_and_overage() {
    let p = policy(
        r#"
[policy]
[[policy.rules]]
resources = ["file:///secret/*"]
groups = ["g-admins"]
"#,
    );
    let member = principal(json!({"sub": "u", "groups": ["g-x", "g-admins"]}));
    assert!(p.visible(Some(&member), Kind::Resource, "file:///secret/a/b.txt"));
    let outsider = principal(json!({"sub": "u", "groups": ["g-x"]}));
    let d = denial(p.decide(Some(&outsider), Kind::Resource, "file:///secret/a"));
    assert!(!d.reason.contains("g-admins") && !d.reason.contains("overage"));
    let overage = principal(json!({"sub": "u", "_claim_names": {"groups": "src1"}}));
    let d = denial(p.decide(Some(&overage), Kind::Resource, "file:///secret/a"));
    assert!(d.reason.contains("overage"), "{}", d.reason);
    assert!(d.step_up_scopes.is_empty());
}

#[test]
fn resource_uris_with_dot_segments_are_refused_when_resources_have_rules() {
    let p = policy(
        r#"
[policy]
[[policy.rules]]
resources = ["file:///secret/*"]
deny = true
"#,
    );
    for uri in [
        "file:///public/../secret/x",
        "file:///public/%2E%2e/secret/x",
        "file:///public/.%2e/secret/x",
        "file:///./secret/x",
        "file:///public\\..\\secret",
    ] {
        let d = denial(p.decide(None, Kind::Resource, uri));
        assert!(d.reason.contains("canonical"), "{uri}: {}", d.reason);
    }
    for uri in [
        "file:///public/x",
        "file:///public/..hidden",
        "file:///a?q=../b",
        "file:///public/.x",
    ] {
        assert!(p.visible(None, Kind::Resource, uri), "{uri}");
    }
    // Tools are names, not paths; and without resource rules nothing changes.
    assert!(p.visible(None, Kind::Tool, ".."));
    assert!(Policy::allow_all().visible(None, Kind::Resource, "file:///a/../b"));
}

#[test]
fn without_a_principal_no_requirement_is_met() {
    let p = policy(MAIL);
    let d = denial(p.decide(None, Kind::Tool, "send_mail"));
    assert!(d.step_up_scopes.is_empty(), "no token, no step-up");
    assert!(d.reason.contains("authentication is off"));
    assert!(p.visible(None, Kind::Tool, "read_mail"));
}

#[test]
fn app_only_tokens_get_no_step_up_for_scopes() {
    let p = policy(MAIL);
    let app = principal(json!({"sub": "app", "roles": ["Other"], "idtyp": "app"}));
    let d = denial(p.decide(Some(&app), Kind::Tool, "send_mail"));
    assert!(d.step_up_scopes.is_empty());
    assert!(d.reason.contains("app-only"));
}

#[test]
fn bad_configs_are_refused() {
    let bad = |text: &str| Policy::compile(&config(text)).expect_err(text);
    let e = bad("[policy]\n[[policy.rules]]\ntools = [\"a[\"]\n");
    assert!(matches!(e, PolicyError::BadPattern { rule: 0, ref pattern, .. } if pattern == "a["));
    let e = bad("[policy]\n[[policy.rules]]\ntools=[\"x\"]\n[[policy.rules]]\nscopes = [\"a\"]\n");
    assert!(matches!(e, PolicyError::NoNames { rule: 1 }));
    let e = bad("[policy]\n[[policy.rules]]\ntools = [\"x\"]\ndeny = true\nroles = [\"r\"]\n");
    assert!(matches!(e, PolicyError::DenyWithRequirements { rule: 0 }));
    let e = bad("[policy]\n[[policy.rules]]\nprompts = [\"\"]\n");
    assert_eq!(e.rule(), Some(0));
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct File {
        policy: PolicyConfig,
    }
    let unknown = toml::from_str::<File>("[policy]\n[[policy.rules]]\ntool = [\"x\"]\n");
    assert!(
        unknown
            .expect_err("unknown key")
            .to_string()
            .contains("tool")
    );
    let wrong = toml::from_str::<File>("[policy]\ndefault = \"maybe\"\n");
    assert!(wrong.is_err());
}

#[test]
fn handle_swaps_whole_policies() {
    let handle = PolicyHandle::default();
    let before = handle.load();
    handle.replace(policy("[policy]\ndefault = \"deny\"\n"));
    assert!(
        before.visible(None, Kind::Tool, "x"),
        "a held policy stays as it was"
    );
    assert!(!handle.load().visible(None, Kind::Tool, "x"));
}
