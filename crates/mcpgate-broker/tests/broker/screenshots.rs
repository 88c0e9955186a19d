//! Screenshots of the pages as served, for a person to look at:
//! `MCPGATE_SCREENSHOT_DIR=/tmp cargo test -p mcpgate-broker --test broker
//! screenshots -- --ignored`. Headless Chromium loads the broker's own
//! URLs: an authorization request for an unknown client (the error page)
//! and a callback whose consent page it renders.

use mcpgate_client::oauth::Pkce;

use crate::harness::{Harness, Setup, location};

fn shoot(url: &str, out: &std::path::Path) {
    let status = std::process::Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            &format!("--screenshot={}", out.display()),
            "--window-size=1000,900",
            url,
        ])
        .status()
        .expect("chromium runs");
    assert!(status.success());
    assert!(
        std::fs::metadata(out).is_ok_and(|m| m.len() > 0),
        "{}",
        out.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Chromium; writes screenshots"]
async fn screenshots() {
    let dir = std::path::PathBuf::from(
        std::env::var("MCPGATE_SCREENSHOT_DIR").unwrap_or_else(|_| "/tmp".into()),
    );
    let h = Harness::start(Setup {
        auto_approve: false,
        ..Setup::default()
    })
    .await;
    let pkce = Pkce::new();
    let error_url = format!(
        "{}?response_type=code&client_id=unknown&redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
        h.url("/authorize")
    );
    let out = dir.join("broker-error-page.png");
    tokio::task::block_in_place(|| shoot(&error_url, &out));

    let client_id = h.register_public().await;
    let resp = h.authorize(&Harness::request(&client_id, &pkce, "s")).await;
    let resp = h.http.get(location(&resp)).send().await.expect("IdP");
    let callback = location(&resp);
    let out = dir.join("broker-consent-page.png");
    tokio::task::block_in_place(|| shoot(&callback, &out));
}
