//! The desktop client's commands: `login`, `logout`, `token`, `tools`,
//! `call`, and `bridge` (stdio on one side, the protected server on the
//! other). Prompts go to stderr; stdout carries only what was asked for.
//! While a sign-in waits for its person, a spinner shows on stderr when it
//! is a terminal ([`crate::waiting`]); never in `bridge`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mcpgate_client::error::FlowError;
use mcpgate_client::redirect::SystemBrowser;
use mcpgate_client::secret::ClientSecret;
use mcpgate_client::store::Store;
use mcpgate_client::{Client, ClientError, ClientOptions, Credentials, SignIn};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::cli::{ClientArgs, Output};
use crate::outbound::{client_builder, http_client};
use crate::waiting::{Prompter, say};

/// Where the client's prompts go.
type Notify = Arc<dyn Fn(&str) + Send + Sync>;

/// The server URL as the client keys its cache: parsed and serialised, so
/// that `logout` forgets what `login` kept however the URL is typed.
fn server_url(args: &ClientArgs) -> anyhow::Result<url::Url> {
    url::Url::parse(&args.url).with_context(|| format!("{:?} is not a URL", args.url))
}

fn store(args: &ClientArgs) -> Store {
    Store::new(args.cache_dir.clone().unwrap_or_else(Store::default_dir))
}

/// Builds the client from the flags, its prompts going to `notify`.
fn client(args: &ClientArgs, notify: Notify) -> anyhow::Result<Client> {
    let url = server_url(args)?;
    if mcpgate_client::discovery::require_secure("MCP server", url.as_str()).is_err() {
        anyhow::bail!(
            "refusing to send tokens to {url} over plain http: use https (http is for loopback only)"
        );
    }
    let http = http_client(args.ca_file.as_deref(), Duration::from_secs(30))?;
    // The non-interactive mode reads the authorization redirect itself.
    let no_redirect = client_builder(args.ca_file.as_deref(), Duration::from_secs(30))?
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let secret = match (
        &args.client_secret_file,
        std::env::var("MCPGATE_CLIENT_SECRET"),
    ) {
        (Some(path), _) => Some(ClientSecret::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the client secret from {}", path.display()))?
                .trim(),
        )),
        (None, Ok(s)) if !s.is_empty() => Some(ClientSecret::new(s)),
        _ => None,
    };
    let client_key = match &args.client_key_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the client key {}", path.display()))?;
            Some(mcpgate_client::assertion::ClientKey::from_pem(
                &pem,
                args.client_key_alg.as_deref(),
                args.client_key_id.clone(),
            )?)
        }
        None => None,
    };
    let sign_in = if args.client_credentials {
        SignIn::ClientCredentials
    } else if args.device_code {
        SignIn::DeviceCode
    } else if args.non_interactive {
        SignIn::NonInteractive
    } else {
        SignIn::Browser
    };
    Ok(Client::new(
        http,
        no_redirect,
        url,
        ClientOptions {
            credentials: Credentials {
                client_id: args.client_id.clone(),
                secret,
                key: client_key,
                issuer: args.issuer.clone(),
                metadata_url: args.client_metadata_url.clone(),
            },
            sign_in,
            scopes: args.scopes.clone(),
            store: store(args),
            notify,
            protocol_version: args.protocol_version.clone(),
            browser: Arc::new(SystemBrowser),
        },
    ))
}

/// A client whose prompts go through `prompter` (spinning while a sign-in
/// waits): the interactive commands'.
fn prompting_client(args: &ClientArgs, prompter: &Arc<Prompter>) -> anyhow::Result<Client> {
    let prompter = prompter.clone();
    client(args, Arc::new(move |m: &str| prompter.line(m)))
}

/// Signs in first if the server asks (the spinner's wait), so that the
/// request after it is not shown as one.
async fn signed_in(c: &Client, prompter: &Prompter) -> anyhow::Result<()> {
    let done = c.ensure_initialized().await;
    prompter.stop();
    done.map_err(with_body)
}

/// An authorization server's refusal, with the body it sent on stderr:
/// Entra's trace and correlation ids are there and nowhere else.
fn with_body(e: ClientError) -> anyhow::Error {
    let body = match &e {
        ClientError::Flow(FlowError::Refused(o)) if o.status.is_some() => Some(o.body.as_str()),
        ClientError::Flow(FlowError::Malformed { body, .. }) => body.as_deref(),
        _ => None,
    };
    if let Some(body) = body.filter(|b| !b.is_empty()) {
        say(&format!("the authorization server answered: {body}"));
    }
    e.into()
}

/// `mcpgate login URL`.
pub async fn login(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let prompter = Arc::new(Prompter::new());
    let c = prompting_client(&args, &prompter)?;
    signed_in(&c, &prompter).await?;
    say(&format!("signed in to {}", c.url()));
    Ok(ExitCode::SUCCESS)
}

/// `mcpgate logout URL`.
pub async fn logout(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let url = server_url(&args)?;
    let n = store(&args).remove_tokens(url.as_str());
    say(&format!("forgot {n} cached token set(s) for {url}"));
    Ok(ExitCode::SUCCESS)
}

/// `mcpgate token URL`: the one command that prints a token.
pub async fn token(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let prompter = Arc::new(Prompter::new());
    let c = prompting_client(&args, &prompter)?;
    let token = c.token().await;
    prompter.stop();
    println!("{}", token.map_err(with_body)?);
    Ok(ExitCode::SUCCESS)
}

/// `mcpgate tools URL`: one tool a line, name and description; with
/// `--json`, `{"tools": [...]}` with the server's tool definitions as it
/// sent them (and `next_cursor` when it has more).
pub async fn tools(args: ClientArgs, output: Output) -> anyhow::Result<ExitCode> {
    let prompter = Arc::new(Prompter::new());
    let c = prompting_client(&args, &prompter)?;
    signed_in(&c, &prompter).await?;
    let result = c.list_tools().await;
    prompter.stop();
    let result = result.map_err(with_body)?;
    if output.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&tools_document(&result))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for t in result["tools"].as_array().into_iter().flatten() {
        println!(
            "{}\t{}",
            t["name"].as_str().unwrap_or_default(),
            t["description"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `{"tools": [...], "next_cursor": ...}` from a `tools/list` result.
fn tools_document(result: &Value) -> Value {
    let mut doc = serde_json::json!({
        "tools": result.get("tools").cloned().unwrap_or_else(|| Value::Array(Vec::new())),
    });
    if let Some(cursor) = result.get("nextCursor").filter(|c| !c.is_null()) {
        doc["next_cursor"] = cursor.clone();
    }
    doc
}

/// `mcpgate call URL TOOL --args JSON`: the tool's result as the server
/// sent it; with `--json`, `{"tool", "is_error", "result"}`. Exit 1 when
/// the tool says it failed.
pub async fn call(
    args: ClientArgs,
    tool: String,
    arguments: Option<String>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let arguments: Value = match arguments {
        Some(text) => serde_json::from_str(&text).context("--args is not JSON")?,
        None => Value::Object(Default::default()),
    };
    let prompter = Arc::new(Prompter::new());
    let c = prompting_client(&args, &prompter)?;
    signed_in(&c, &prompter).await?;
    let result = c.call_tool(&tool, arguments).await;
    prompter.stop();
    let result = result.map_err(with_body)?;
    let is_error = result["isError"] == true;
    if output.json {
        let doc = serde_json::json!({ "tool": tool, "is_error": is_error, "result": result });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(if is_error {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `mcpgate bridge URL`: newline-delimited JSON-RPC on stdin/stdout.
pub async fn bridge(args: ClientArgs) -> anyhow::Result<ExitCode> {
    // Plain lines, no spinner: a host may read this stderr.
    let c = client(&args, Arc::new(|m: &str| say(m)))?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let err = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("parse error: {e}")}});
                stdout.write_all(format!("{err}\n").as_bytes()).await?;
                stdout.flush().await?;
                continue;
            }
        };
        let id = message.get("id").cloned();
        let reply = match c.forward(&message).await {
            Ok(v) => v,
            Err(e) => {
                say(&format!("mcpgate bridge: {e}"));
                serde_json::json!({"jsonrpc": "2.0", "id": id.clone().unwrap_or(Value::Null), "error": {"code": -32603, "message": e.to_string()}})
            }
        };
        if id.is_some() && !reply.is_null() {
            stdout.write_all(format!("{reply}\n").as_bytes()).await?;
            stdout.flush().await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
