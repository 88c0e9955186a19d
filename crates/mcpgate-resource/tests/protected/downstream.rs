//! `get_user_details`: listed only with a source, answered for the caller
//! the token names, and a failure is a tool error the model can read.

use std::sync::Arc;

use mcpgate_resource::downstream::{
    DownstreamError, DownstreamFuture, UserDetails, UserDetailsSource,
};
use mcpgate_token::Principal;
use serde_json::json;

use crate::support::*;

/// A directory that knows one user, the one the test issuer signs for.
#[derive(Debug)]
struct Directory;

impl UserDetailsSource for Directory {
    fn user_details<'a>(&'a self, caller: &'a Principal) -> DownstreamFuture<'a> {
        Box::pin(async move {
            match caller.preferred_username.as_deref() {
                Some("alice@test.example") => Ok(UserDetails {
                    display_name: caller.name.clone(),
                    user_principal_name: caller.preferred_username.clone(),
                    id: caller.object_id.clone(),
                    job_title: Some("Engineer".into()),
                    mail: None,
                }),
                _ => Err(DownstreamError::NoGrant),
            }
        })
    }
}

async fn tool_names(gate: &Gate) -> Vec<String> {
    let resp = gate
        .stateless("tools/list", None, stateless_body("tools/list", json!({})))
        .bearer_auth(gate.token())
        .send()
        .await
        .expect("tools/list");
    assert_eq!(resp.status(), 200);
    let msg = jsonrpc(&resp.text().await.expect("body"));
    msg["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn listed_only_where_a_source_answers_it() {
    let plain = Gate::start().await;
    assert_eq!(tool_names(&plain).await, ["whoami"]);
    let with = Gate::with_user_details(Arc::new(Directory)).await;
    let mut names = tool_names(&with).await;
    names.sort();
    assert_eq!(names, ["get_user_details", "whoami"]);
}

#[tokio::test]
async fn answers_for_the_caller_and_reports_failures_as_tool_errors() {
    let gate = Gate::with_user_details(Arc::new(Directory)).await;
    let resp = gate
        .stateless(
            "tools/call",
            Some("get_user_details"),
            call_body("get_user_details"),
        )
        .bearer_auth(gate.token())
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), 200);
    let msg = jsonrpc(&resp.text().await.expect("body"));
    let details = &msg["result"]["structuredContent"];
    assert_eq!(details["userPrincipalName"], "alice@test.example", "{msg}");
    assert_eq!(details["jobTitle"], "Engineer");
    assert_ne!(msg["result"]["isError"], true);

    // Someone the directory does not know: a tool error, with what to do.
    let claims = mcpgate_testkit::with(
        gate.issuer.claims(mcpgate_testkit::unix_now()),
        &[("preferred_username", json!("mallory@test.example"))],
    );
    let resp = gate
        .stateless(
            "tools/call",
            Some("get_user_details"),
            call_body("get_user_details"),
        )
        .bearer_auth(gate.issuer.sign("key-a", &claims))
        .send()
        .await
        .expect("call");
    let msg = jsonrpc(&resp.text().await.expect("body"));
    assert_eq!(msg["result"]["isError"], true, "{msg}");
    let text = msg["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("sign in again"), "{text}");
}
