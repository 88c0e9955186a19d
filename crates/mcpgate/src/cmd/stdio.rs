//! `mcpgate stdio`: an MCP server over stdio whose tools act for the user
//! who runs it. The user signs in as a public client (no secret on the
//! desktop) on the first tool call, not at start: from the token cache
//! `mcpgate login` shares, else in the browser, else with a device code.
//! stdout belongs to the protocol; every prompt goes to stderr and, where
//! the host supports it, to the host as a URL elicitation.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use mcpgate_client::SignIn;
use mcpgate_client::account::{Account, AccountOptions};
use mcpgate_client::claims::{Claims, ClaimsError};
use mcpgate_client::redirect::SystemBrowser;
use mcpgate_client::store::Store;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

use crate::cli::StdioArgs;
use crate::outbound::{client_builder, http_client};

/// Microsoft Graph, where `get_user_details` reads `/me`.
const GRAPH: &str = "https://graph.microsoft.com/v1.0";

/// `mcpgate stdio`.
pub async fn run(args: StdioArgs) -> anyhow::Result<ExitCode> {
    let mut args = args.with_config()?;
    let setup = Setup::from_args(&mut args)?;
    let store = Store::new(args.cache_dir.clone().unwrap_or_else(Store::default_dir));
    let http = http_client(args.ca_file.as_deref(), Duration::from_secs(30))?;
    let no_redirect = client_builder(args.ca_file.as_deref(), Duration::from_secs(30))?
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let prompter = Arc::new(Prompter::default());
    let shown = prompter.clone();
    let account = Arc::new(Account::new(
        http.clone(),
        no_redirect,
        AccountOptions {
            authority: setup.authority.clone(),
            client_id: setup.client_id.clone(),
            scopes: setup.scopes.clone(),
            api: setup.graph.clone(),
            sign_in: if args.device_code {
                SignIn::DeviceCode
            } else {
                SignIn::Browser
            },
            store,
            notify: Arc::new(move |m: &str| shown.prompt(m)),
            browser: Arc::new(SystemBrowser),
        },
    ));
    if args.logout {
        let n = account.forget().await;
        eprintln!(
            "mcpgate stdio: forgot {n} cached token set(s) for {}",
            setup.graph
        );
        return Ok(ExitCode::SUCCESS);
    }
    let server = StdioServer {
        signer: Arc::new(Signer::new(
            account,
            Duration::from_secs(args.sign_in_timeout_secs.unwrap_or(120).max(1)),
        )),
        prompter,
        http,
        me_url: format!("{}/me", setup.graph.trim_end_matches('/')),
    };
    let service = server
        .serve(rmcp::transport::stdio())
        .await
        .context("starting MCP over stdio")?;
    service.waiting().await.context("MCP over stdio failed")?;
    Ok(ExitCode::SUCCESS)
}

/// Where the user signs in, and what for.
#[derive(Debug)]
struct Setup {
    authority: String,
    client_id: String,
    scopes: Vec<String>,
    // Graph's base URL (`…/v1.0`); also the tokens' key in the cache.
    graph: String,
}

impl Setup {
    fn from_args(args: &mut StdioArgs) -> anyhow::Result<Self> {
        if args.authority.is_none() && args.client_id.is_none() {
            // Nothing configured: the development IdP of a `serve` or `idp`
            // running on this machine, if there is one.
            if let Some(running) = crate::devidp::running_here(&args.data_dir()) {
                eprintln!(
                    "mcpgate stdio: no --authority given: signing in at the DEVELOPMENT identity provider running on this machine ({}); for a real tenant set --authority and --client-id",
                    running.authority
                );
                args.authority = Some(running.authority);
                args.client_id = Some(running.client_id);
                if args.ca_file.is_none() {
                    args.ca_file = running.ca_file;
                }
            }
        }
        let (Some(authority), Some(client_id)) = (&args.authority, &args.client_id) else {
            anyhow::bail!(
                "mcpgate stdio needs --authority (your tenant, e.g. https://login.microsoftonline.com/<tenant-id>) and --client-id (a public client app registration), or MCPGATE_AUTHORITY and MCPGATE_CLIENT_ID; or a `mcpgate serve` or `mcpgate idp` running on this machine"
            );
        };
        let parsed = url::Url::parse(authority)
            .with_context(|| format!("--authority {authority:?} is not a URL"))?;
        if mcpgate_client::discovery::require_secure("authority", parsed.as_str()).is_err() {
            anyhow::bail!("--authority {authority} must be https (http only on loopback)");
        }
        let graph = match &args.graph_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            // The development IdP answers Graph's `/me` itself.
            None if mcpgate_resource::is_loopback_host(&parsed) => {
                format!("{}/v1.0", parsed.origin().ascii_serialization())
            }
            None => GRAPH.to_owned(),
        };
        let scopes = if args.scopes.is_empty() {
            vec!["User.Read".to_owned()]
        } else {
            args.scopes.clone()
        };
        Ok(Self {
            authority: authority.trim_end_matches('/').to_owned(),
            client_id: client_id.clone(),
            scopes,
            graph,
        })
    }
}

/// Sends each sign-in prompt to stderr and, where the host supports URL
/// elicitation, to the host, which can then show the link itself.
#[derive(Default)]
struct Prompter {
    peer: Mutex<Option<Peer<RoleServer>>>,
}

impl Prompter {
    fn set_peer(&self, peer: &Peer<RoleServer>) {
        *self.peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(peer.clone());
    }

    fn prompt(&self, message: &str) {
        eprintln!("mcpgate stdio: {message}");
        let Some(url) = first_url(message) else {
            return;
        };
        let peer = self.peer.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(peer) = peer else { return };
        let message = message.to_owned();
        tokio::spawn(async move {
            let id = format!("mcpgate-sign-in-{}", std::process::id());
            // A host without URL elicitation says so; the prompt on stderr
            // stands either way.
            if let Err(e) = peer.elicit_url(message, url, id).await {
                tracing::debug!(error = %e, "the host took no URL elicitation");
            }
        });
    }
}

/// The first http(s) URL in a prompt.
fn first_url(message: &str) -> Option<url::Url> {
    let start = message
        .find("https://")
        .or_else(|| message.find("http://"))?;
    let rest = &message[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '>')
        .unwrap_or(rest.len());
    url::Url::parse(rest[..end].trim_end_matches(['.', ',', ')'])).ok()
}

type SignInResult = Result<String, String>;

/// One sign-in at a time, which a tool call waits for up to a limit; the
/// sign-in goes on without it, and the next call picks up its outcome.
struct Signer {
    account: Arc<Account>,
    wait: Duration,
    current: Mutex<Option<Shared<BoxFuture<'static, SignInResult>>>>,
}

impl Signer {
    fn new(account: Arc<Account>, wait: Duration) -> Self {
        Self {
            account,
            wait,
            current: Mutex::new(None),
        }
    }

    /// An access token, or why there is none yet.
    async fn token(&self) -> SignInResult {
        self.join_or_start(None).await
    }

    /// A token from a new sign-in that sends `claims` (an API's claims
    /// challenge), or why there is none yet.
    async fn sign_in_with_claims(&self, claims: Claims) -> SignInResult {
        self.join_or_start(Some(claims)).await
    }

    // Joins the sign-in under way, or starts one; a sign-in with claims
    // always starts anew (the one under way may not send them).
    async fn join_or_start(&self, claims: Option<Claims>) -> SignInResult {
        let pending = {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            match current.as_ref() {
                Some(running) if running.peek().is_none() && claims.is_none() => running.clone(),
                _ => {
                    let account = self.account.clone();
                    // A task of its own: a caller that stops waiting does not
                    // stop the sign-in.
                    let task = tokio::spawn(async move {
                        let token = match &claims {
                            Some(claims) => account.sign_in_with_claims(claims).await,
                            None => account.token().await,
                        };
                        token.map_err(|e| e.to_string())
                    });
                    let shared = async move {
                        task.await
                            .unwrap_or_else(|e| Err(format!("the sign-in stopped: {e}")))
                    }
                    .boxed()
                    .shared();
                    *current = Some(shared.clone());
                    shared
                }
            }
        };
        match tokio::time::timeout(self.wait, pending).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "sign-in is still waiting for you after {} s: finish it with the link or code shown (on stderr, or by your MCP host), then call the tool again",
                self.wait.as_secs()
            )),
        }
    }

    /// The API refused the token: the next call signs in anew.
    async fn forget(&self) {
        self.account.forget().await;
    }
}

struct StdioServer {
    signer: Arc<Signer>,
    prompter: Arc<Prompter>,
    http: reqwest::Client,
    me_url: String,
}

impl StdioServer {
    async fn get_user_details(&self) -> Result<CallToolResult, McpError> {
        let mut token = match self.signer.token().await {
            Ok(token) => token,
            Err(why) => return Ok(failed(&why)),
        };
        let mut retried = false;
        let mut claims_sent = false;
        loop {
            let response = self
                .http
                .get(&self.me_url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| McpError::internal_error(format!("{}: {e}", self.me_url), None))?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED {
                let next = match graph_claims(response.headers()) {
                    // Graph wants more of the sign-in (a second factor):
                    // sign in again sending its claims, once.
                    Some(Ok(_)) if claims_sent => {
                        return Ok(failed(&format!(
                            "{} still asks for claims (insufficient_claims) after a sign-in that sent them",
                            self.me_url
                        )));
                    }
                    Some(Ok(claims)) => {
                        claims_sent = true;
                        self.signer.sign_in_with_claims(claims).await
                    }
                    Some(Err(e)) => {
                        return Ok(failed(&format!(
                            "{} asked for claims (insufficient_claims), and its claims value is unusable: {e}",
                            self.me_url
                        )));
                    }
                    // Revoked or no longer valid: sign in again, once.
                    None if !retried => {
                        retried = true;
                        self.signer.forget().await;
                        self.signer.token().await
                    }
                    None => return Ok(failed("Microsoft Graph refused the token twice")),
                };
                token = match next {
                    Ok(token) => token,
                    Err(why) => return Ok(failed(&why)),
                };
                continue;
            }
            if !response.status().is_success() {
                return Ok(failed(&format!(
                    "{} answered HTTP {}",
                    self.me_url,
                    response.status()
                )));
            }
            let me: Value = response
                .json()
                .await
                .map_err(|e| McpError::internal_error(format!("{}: {e}", self.me_url), None))?;
            let details = json!({
                "displayName": me["displayName"],
                "mail": me["mail"],
                "userPrincipalName": me["userPrincipalName"],
                "jobTitle": me["jobTitle"],
                "id": me["id"],
            });
            let mut result = CallToolResult::structured(details.clone());
            result.content = vec![ContentBlock::text(details.to_string())];
            return Ok(result);
        }
    }

    async fn whoami(&self) -> Result<CallToolResult, McpError> {
        let token = match self.signer.token().await {
            Ok(token) => token,
            Err(why) => return Ok(failed(&why)),
        };
        let claims = token_claims(&token);
        let mut result = CallToolResult::structured(claims.clone());
        result.content = vec![ContentBlock::text(claims.to_string())];
        Ok(result)
    }
}

/// The claims of Graph's `WWW-Authenticate: Bearer
/// error="insufficient_claims", claims="…"`: `None` for any other 401.
fn graph_claims(headers: &reqwest::header::HeaderMap) -> Option<Result<Claims, ClaimsError>> {
    let challenge = mcpgate_client::challenge::parse(
        headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )?;
    if !challenge.is_insufficient_claims() {
        return None;
    }
    challenge.claims()
}

fn failed(why: &str) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(why.to_owned())])
}

/// What the held token says of its user, read from its payload (never the
/// token itself). An access token is its audience's to verify: this only
/// reports it.
fn token_claims(token: &str) -> Value {
    use base64::Engine as _;
    const SHOWN: [&str; 14] = [
        "aud",
        "iss",
        "tid",
        "oid",
        "sub",
        "name",
        "preferred_username",
        "upn",
        "scp",
        "roles",
        "azp",
        "appid",
        "iat",
        "exp",
    ];
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|p| serde_json::from_slice::<serde_json::Map<String, Value>>(&p).ok());
    match payload {
        Some(claims) => Value::Object(
            claims
                .into_iter()
                .filter(|(k, _)| SHOWN.contains(&k.as_str()))
                .collect(),
        ),
        None => {
            json!({ "opaque": true, "note": "the access token is not a JWT its holder can read" })
        }
    }
}

fn tools() -> Vec<Tool> {
    let no_arguments = Arc::new(
        json!({ "type": "object", "properties": {} })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    vec![
        Tool::new(
            "get_user_details",
            "The signed-in user's profile from Microsoft Graph /me: display name, mail, user principal name, job title, id",
            no_arguments.clone(),
        ),
        Tool::new(
            "whoami",
            "The claims of the access token this server holds for its user (never the token)",
            no_arguments,
        ),
    ]
}

impl ServerHandler for StdioServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcpgate-stdio", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools that act for the user who runs this server, signed in with their own account on first use.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.prompter.set_peer(&context.peer);
        let result = match &*request.name {
            "get_user_details" => self.get_user_details().await?,
            "whoami" => self.whoami().await?,
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown tool: {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_give_their_link() {
        assert_eq!(
            first_url("To sign in, open https://idp.example/devicelogin and enter the code AB-CD.")
                .map(|u| u.to_string()),
            Some("https://idp.example/devicelogin".to_owned())
        );
        assert_eq!(
            first_url("Sign in at: http://127.0.0.1:5000/authorize?x=1").map(|u| u.to_string()),
            Some("http://127.0.0.1:5000/authorize?x=1".to_owned())
        );
        assert!(first_url("no link here").is_none());
    }

    #[test]
    fn graphs_claims_challenge_is_read_and_a_bad_one_is_an_error() {
        use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_str(value).expect("a header value"),
            );
            headers
        };
        let graph = with(
            r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiYzEifX19""#,
        );
        let claims = graph_claims(&graph)
            .expect("a claims challenge")
            .expect("valid");
        assert!(claims.as_json().contains("acrs"), "{claims}");
        assert!(matches!(
            graph_claims(&with(r#"Bearer error="insufficient_claims", claims="!!""#)),
            Some(Err(_))
        ));
        assert!(graph_claims(&with(r#"Bearer error="invalid_token""#)).is_none());
        assert!(graph_claims(&HeaderMap::new()).is_none());
    }

    #[test]
    fn whoami_shows_claims_and_never_the_token() {
        use base64::Engine as _;
        let enc =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.c2ln",
            enc(&json!({"alg": "RS256"})),
            enc(&json!({"aud": "graph", "oid": "o-1", "secretish": "x", "scp": "User.Read"}))
        );
        let claims = token_claims(&token);
        assert_eq!(
            claims,
            json!({"aud": "graph", "oid": "o-1", "scp": "User.Read"})
        );
        assert!(!claims.to_string().contains("c2ln"));
        assert_eq!(token_claims("opaque")["opaque"], true);
    }
}
