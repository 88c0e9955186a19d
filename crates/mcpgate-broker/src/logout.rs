//! `GET /logout`: ends the broker's grant and sends the browser to the
//! upstream's end-session endpoint, so the upstream session ends too.
//!
//! The grant is named by `id_token_hint` carrying one of the broker's own
//! access tokens (the broker issues no ID tokens; the hint is the token
//! the client holds, expired or not). It must carry the broker's
//! signature and issuer; then its refresh family is revoked and the sealed
//! upstream tokens for its (user, client) are deleted. Without a valid
//! hint only the upstream session is ended. `POST /logout` takes the same
//! as a form, keeping the token out of URLs. Nothing here redirects to a
//! caller-chosen address.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use http::StatusCode;
use mcpgate_store::FamilyId;

use crate::grant::grant_key;
use crate::params::Params;
use crate::server::{Broker, page_error, redirect};

pub(crate) async fn logout(
    State(broker): State<Arc<Broker>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    end(&broker, &params).await
}

/// The same as a form post, which keeps the token out of URLs and the
/// access logs that record them.
pub(crate) async fn logout_post(State(broker): State<Arc<Broker>>, body: Body) -> Response {
    let params = Params::from_body(body).await.unwrap_or_default();
    end(&broker, &params).await
}

async fn end(broker: &Broker, params: &Params) -> Response {
    if let Some(hint) = params.get("id_token_hint") {
        end_grant(broker, hint).await;
    }
    match broker.upstream.logout_url(None) {
        Some(url) => redirect(StatusCode::FOUND, url.as_str()),
        None => page_error(
            StatusCode::OK,
            "Signed out",
            "You are signed out of this MCP server.",
            None,
        ),
    }
}

async fn end_grant(broker: &Broker, hint: &str) {
    let Some(claims) = broker.keys.verify(hint, broker.now_secs()) else {
        tracing::info!("broker: logout hint is not one of this broker's tokens; ignored");
        return;
    };
    if claims["iss"].as_str() != Some(broker.config.issuer.as_str()) {
        return;
    }
    let text = |name: &str| claims[name].as_str().map(str::to_owned);
    if let Some(family) = text("sid")
        && let Err(e) = broker.store.revoke_family(&FamilyId::new(family)).await
    {
        tracing::error!(error = %e, "broker: logout could not revoke the grant");
    }
    if let (Some(oid), Some(client)) = (text("oid"), text("azp")) {
        let key = grant_key(text("tid").as_deref(), &oid, &client);
        match broker.store.delete_upstream(&key).await {
            Ok(_) => tracing::info!(client_id = %client, oid = %oid, "broker: signed out"),
            Err(e) => {
                tracing::error!(error = %e, "broker: logout could not delete the upstream grant")
            }
        }
    }
}
