//! Renders the consent page for a sample client to stdout, to look at it
//! in a browser: `cargo run -p mcpgate-broker --example consent_page > /tmp/consent.html`.

use mcpgate_broker::consent_page::{ClientOrigin, ConsentPage};
use mcpgate_broker::redirect::{ApplicationType, RedirectUri};
use mcpgate_broker::registration::{ClientId, ClientName};
use mcpgate_broker::secret::CsrfToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redirect = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "https://app.acme-tools.example/oauth/callback".to_owned());
    let redirect = RedirectUri::parse(&redirect, ApplicationType::Native)?;
    let name = ClientName::sanitize("Acme Code Assistant");
    let client_id = ClientId::new("https://acme-tools.example/mcp/client.json");
    let csrf = CsrfToken::generate()?;
    let page = ConsentPage {
        client_name: name.as_ref(),
        client_id: &client_id,
        origin: ClientOrigin::Document {
            host: "acme-tools.example",
        },
        redirect_uri: &redirect,
        scopes: &["api://mcpgate/mcp:tools", "offline_access"],
        user: "Ada Lovelace (ada@contoso.example)",
        csrf: &csrf,
        action: "/authorize/consent",
        hidden: &[("pending", "sample")],
    };
    println!("{}", page.html());
    Ok(())
}
