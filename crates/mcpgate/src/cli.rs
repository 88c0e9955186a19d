//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::RawConfig;

/// Secure MCP servers with OAuth 2.1 and Microsoft Entra ID.
#[derive(Debug, Parser)]
#[command(name = "mcpgate", version, about, long_about = None)]
pub struct Cli {
    /// Log lines as text (for people) or JSON (for collectors), on stderr.
    #[arg(
        long,
        global = true,
        env = "MCPGATE_LOG_FORMAT",
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    pub log_format: crate::telemetry::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the protected MCP server.
    Serve(Box<ServeArgs>),
    /// Decode a token and say whether this server would accept it, and why.
    Explain(ExplainArgs),
    /// Validate the configuration and probe the issuers' discovery and keys.
    Check(CheckArgs),
    /// Run the development identity provider alone (Entra ID v2 shapes).
    Idp(IdpArgs),
    /// Sign in to a protected MCP server and keep the tokens.
    Login(ClientArgs),
    /// Forget the tokens kept for a server.
    Logout(ClientArgs),
    /// Print an access token for a server (for scripts).
    Token(ClientArgs),
    /// List a server's tools.
    Tools {
        /// Server and sign-in.
        #[command(flatten)]
        client: ClientArgs,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Call a tool.
    Call {
        /// Server and sign-in.
        #[command(flatten)]
        client: ClientArgs,
        /// The tool.
        #[arg(value_name = "TOOL")]
        tool: String,
        /// Arguments, as a JSON object.
        #[arg(long = "args", value_name = "JSON")]
        arguments: Option<String>,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Bridge a stdio MCP host to a protected Streamable HTTP server.
    Bridge(ClientArgs),
    /// An MCP server over stdio whose tools act for you (Microsoft Graph
    /// `/me`), signed in as a public client on first use.
    Stdio(StdioArgs),
    /// Query the audit trail: tool calls, sign-ins, tokens issued and refused.
    Audit(crate::cmd::audit::AuditArgs),
    /// List the upstream tool definitions the gateway pinned, or accept a
    /// changed one.
    Pins(crate::cmd::pins::PinsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) on standard output.
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on standard output: `mcpgate man | man -l -`.
    Man {
        /// A subcommand's page instead of the top one: `serve` for
        /// mcpgate-serve(1), `idp rotate-keys` for mcpgate-idp-rotate-keys(1).
        #[arg(value_name = "COMMAND")]
        command: Vec<String>,
    },
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print one JSON document on standard output instead of text
    /// (snake_case fields; never a token or a secret).
    #[arg(long)]
    pub json: bool,
}

/// The desktop client's settings.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The MCP server URL.
    #[arg(value_name = "URL")]
    pub url: String,
    /// A pre-registered client id (Entra ID has no dynamic registration).
    #[arg(long, env = "MCPGATE_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,
    /// A file holding the client secret (or `MCPGATE_CLIENT_SECRET`).
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// A PEM private key for `private_key_jwt` client authentication.
    #[arg(long, value_name = "FILE")]
    pub client_key_file: Option<PathBuf>,
    /// The key's algorithm (default: ES256 for EC keys, RS256 for RSA).
    #[arg(long, value_name = "ALG", requires = "client_key_file")]
    pub client_key_alg: Option<String>,
    /// The key's id (`kid`), as registered.
    #[arg(long, value_name = "KID", requires = "client_key_file")]
    pub client_key_id: Option<String>,
    /// A Client ID Metadata Document URL, used where the server supports it.
    #[arg(long, value_name = "URL")]
    pub client_metadata_url: Option<String>,
    /// The authorization server (issuer) the client id, secret and key
    /// belong to: they are sent to no other. Without it, a secret or key
    /// is bound to the first authorization server it is used at.
    #[arg(long, env = "MCPGATE_CLIENT_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// Sign in with a device code (machines without a browser).
    #[arg(long)]
    pub device_code: bool,
    /// Sign in without a browser: follow the authorization redirect with an
    /// HTTP client (servers that approve without a page; scripts).
    #[arg(long)]
    pub non_interactive: bool,
    /// Client credentials (no user): needs a confidential client.
    #[arg(long)]
    pub client_credentials: bool,
    /// An extra scope to ask for; repeat for several.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Extra CA certificates (PEM) to trust.
    #[arg(long, env = "MCPGATE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// MCP protocol version to speak (2026-07-28: the stateless wire).
    #[arg(long, env = "MCPGATE_PROTOCOL_VERSION", value_name = "VERSION")]
    pub protocol_version: Option<String>,
    /// Where registrations and tokens are kept (default ~/.cache/mcpgate).
    #[arg(long, env = "MCPGATE_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `mcpgate stdio`'s settings.
#[derive(Debug, Clone, Args)]
pub struct StdioArgs {
    /// The tenant, as MSAL takes it (`https://login.microsoftonline.com/<tenant-id>`).
    #[arg(long, env = "MCPGATE_AUTHORITY", value_name = "URL")]
    pub authority: Option<String>,
    /// The public client's id (an app registration with no secret).
    #[arg(long, env = "MCPGATE_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,
    /// A scope to ask for; repeat for several. Default: `User.Read`.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Extra CA certificates (PEM) to trust.
    #[arg(long, env = "MCPGATE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Where tokens are kept (default: the user's cache directory, shared
    /// with `mcpgate login`).
    #[arg(long, env = "MCPGATE_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Microsoft Graph's base URL (default `https://graph.microsoft.com/v1.0`;
    /// the development IdP's `/v1.0` when the authority is on loopback).
    #[arg(long, env = "MCPGATE_GRAPH_URL", value_name = "URL")]
    pub graph_url: Option<url::Url>,
    /// Sign in with a device code instead of the browser.
    #[arg(long)]
    pub device_code: bool,
    /// Forget the cached tokens and exit.
    #[arg(long)]
    pub logout: bool,
    /// How long a tool call waits for a pending sign-in before it fails
    /// (the sign-in goes on; call again once done). Default 120.
    #[arg(long = "sign-in-timeout", value_name = "SECS")]
    pub sign_in_timeout_secs: Option<u64>,
    /// Configuration file (TOML): its `[stdio]` section, `ca_file` and
    /// `data_dir`.
    #[arg(long, env = "MCPGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where a local `mcpgate serve` or `mcpgate idp` keeps its state: with
    /// no `--authority`, its development IdP is used if it runs.
    #[arg(long, env = "MCPGATE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl StdioArgs {
    /// Fills what the flags (and their variables) left unset from the
    /// configuration file's `[stdio]`, `ca_file` and `data_dir`.
    pub fn with_config(mut self) -> Result<Self, crate::config::ConfigError> {
        let raw = RawConfig::load(self.config.as_deref())?;
        let stdio = raw.stdio;
        self.authority = self.authority.or(stdio.authority);
        self.client_id = self.client_id.or(stdio.client_id);
        if self.scopes.is_empty() {
            self.scopes = stdio.scopes;
        }
        self.graph_url = self.graph_url.or(stdio.graph_url);
        self.cache_dir = self.cache_dir.or(stdio.cache_dir);
        self.sign_in_timeout_secs = self.sign_in_timeout_secs.or(stdio.sign_in_timeout_secs);
        self.ca_file = self.ca_file.or(raw.ca_file);
        self.data_dir = self.data_dir.or(raw.data_dir);
        Ok(self)
    }

    /// The data directory `serve` and `idp` use by default.
    pub fn data_dir(&self) -> PathBuf {
        let place = IdpPlace {
            data_dir: self.data_dir.clone(),
            idp_bind: None,
            idp_directory: None,
        };
        crate::devidp::data_dir(&place, &RawConfig::default())
    }
}

/// Where the embedded development IdP keeps its state, where it listens
/// and which directory it serves: what `serve` starts with no issuer
/// configured, and what `explain` and `check` then expect.
#[derive(Debug, Clone, Args)]
pub struct IdpPlace {
    /// State directory (signing keys, TLS certificates, generated secrets).
    #[arg(long, env = "MCPGATE_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The development IdP's listen address.
    #[arg(long, value_name = "ADDR")]
    pub idp_bind: Option<SocketAddr>,
    /// The development IdP's directory (tenants, apps, users) as TOML.
    #[arg(long, value_name = "FILE")]
    pub idp_directory: Option<PathBuf>,
}

/// How the embedded development IdP runs.
#[derive(Debug, Clone, Args)]
pub struct IdpFlags {
    /// State, listen address and directory.
    #[command(flatten)]
    pub place: IdpPlace,
    /// Sign this user in, and consent, without a page (loopback only).
    #[arg(long, env = "MCPGATE_IDP_AUTO_APPROVE", value_name = "USERNAME")]
    pub idp_auto_approve: Option<String>,
}

impl IdpFlags {
    /// The user signed in, and consenting, without a page (flag or
    /// `MCPGATE_IDP_AUTO_APPROVE`, else config): development, loopback
    /// only; the IdP and the broker each refuse it elsewhere.
    pub fn auto_approve(&self, raw: &crate::config::RawIdp) -> Option<String> {
        self.idp_auto_approve
            .clone()
            .or_else(|| raw.auto_approve.clone())
            .filter(|s| !s.is_empty())
    }
}

/// `mcpgate check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Configuration.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// With no issuer configured: the development IdP `serve` would embed.
    #[command(flatten)]
    pub idp: IdpPlace,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// `mcpgate idp`.
#[derive(Debug, Clone, Args)]
pub struct IdpArgs {
    /// What to do; default: run the IdP.
    #[command(subcommand)]
    pub action: Option<IdpAction>,
    /// Configuration file (TOML; the `[idp]` section).
    #[arg(long, env = "MCPGATE_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// IdP settings.
    #[command(flatten)]
    pub idp: IdpFlags,
    /// Write one JSON object here once listening (authority, issuer, CA
    /// file, clients, users; never secrets).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Listen address (same as --idp-bind).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
}

/// `mcpgate idp …` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum IdpAction {
    /// Generate a new signing key; the old one stays published for a grace
    /// period. A running IdP picks the change up by itself.
    RotateKeys {
        /// Seconds the old key stays published.
        #[arg(long, default_value_t = 86_400)]
        grace_secs: u64,
    },
}

/// Settings shared by every command that reads the configuration. Flags
/// override the file and the environment.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "MCPGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Trusted token issuer; repeat for several.
    #[arg(long = "issuer", value_name = "URL")]
    pub issuers: Vec<String>,
    /// Accepted token audience; repeat for several.
    #[arg(long = "audience", value_name = "ID")]
    pub audiences: Vec<String>,
    /// Scope every token must carry; repeat for several.
    #[arg(long = "required-scope", value_name = "SCOPE")]
    pub required_scopes: Vec<String>,
    /// Fetch signing keys from this JWKS URL instead of OpenID discovery.
    #[arg(long, value_name = "URL")]
    pub jwks_uri: Option<url::Url>,
    /// Extra CA certificates (PEM) to trust for outbound HTTPS.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// `mcpgate serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Listen address; port 0 picks a free one.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// The URL clients reach this server at, if not http://<bind>.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<url::Url>,
    /// Write one JSON object here once listening (URLs, issuers; no secrets).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Where Prometheus scrapes `/metrics` (with `/healthz` and `/readyz`):
    /// its own listener, loopback by default so that it is never public by
    /// accident. Default `127.0.0.1:9090` (port 0 when `--bind` uses port
    /// 0); `off` for none.
    #[arg(long, env = "MCPGATE_METRICS_BIND", value_name = "ADDR|off")]
    pub metrics_bind: Option<String>,
    /// On SIGTERM or Ctrl-C, how long calls in flight may take to finish
    /// before the server exits anyway; new requests are refused meanwhile.
    #[arg(long = "shutdown-timeout", value_name = "SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Turn authentication off. Loopback only; for benchmarks and
    /// conformance runs.
    #[arg(long)]
    pub no_auth: bool,
    /// Allow plain http on a non-loopback address (development only).
    #[arg(long)]
    pub dangerous_allow_http: bool,
    /// Where durable state lives: `sqlite:PATH` (default: in the data
    /// directory) or `redis://HOST:PORT/DB` for several replicas.
    #[arg(long, env = "MCPGATE_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Gateway mode: run this stdio MCP server (one child per session) and
    /// serve it at /mcp. The line is split as a shell would, never run by one.
    #[arg(
        long,
        env = "MCPGATE_UPSTREAM_CMD",
        value_name = "COMMAND",
        conflicts_with = "upstream_url"
    )]
    pub upstream_cmd: Option<String>,
    /// Gateway mode: serve this Streamable HTTP MCP server at /mcp.
    #[arg(long, env = "MCPGATE_UPSTREAM_URL", value_name = "URL")]
    pub upstream_url: Option<url::Url>,
    /// The embedded development IdP (used when no issuer is configured).
    #[command(flatten)]
    pub idp: IdpFlags,
}

/// `mcpgate explain`.
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// Configuration.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// With no issuer configured: the development IdP `serve` would embed.
    #[command(flatten)]
    pub idp: IdpPlace,
    /// The access token, or `-` to read it from standard input. An Entra
    /// error text (`AADSTS50076: …`) or code instead is explained too.
    #[arg(value_name = "TOKEN|AADSTS…")]
    pub token: String,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

impl ConfigArgs {
    /// Loads the file and environment, then applies the flags.
    pub fn load(&self) -> Result<RawConfig, crate::config::ConfigError> {
        let mut raw = RawConfig::load(self.config.as_deref())?;
        if !self.issuers.is_empty() {
            raw.auth.issuers = self.issuers.clone();
        }
        if !self.audiences.is_empty() {
            raw.auth.audiences = self.audiences.clone();
        }
        if !self.required_scopes.is_empty() {
            raw.auth.required_scopes = self.required_scopes.clone();
        }
        if self.jwks_uri.is_some() {
            raw.auth.jwks_uri = self.jwks_uri.clone();
        }
        if self.ca_file.is_some() {
            raw.ca_file = self.ca_file.clone();
        }
        Ok(raw)
    }
}
