// MCP hosts nobody here wrote against `mcpgate serve` on its defaults, in
// broker mode: the official TypeScript SDK's client (dynamic registration,
// then a Client ID Metadata Document) and mcp-remote (the stdio proxy
// desktop assistants use), each signing alice in through mcpgate's
// authorization server and the dev IdP, then calling `whoami` and
// `get_user_details`.
//
// Run by .ci/interop/mcp-hosts, which installs the packages, starts the
// server with MCPGATE_IDP_AUTO_APPROVE (no page anywhere) and hands over:
//
//   NODE_EXTRA_CA_CERTS=… NODE_MODULES_DIR=… SERVE_READY=… SERVE_LOG=… \
//   WORK_DIR=… CIMD_CERT=… CIMD_KEY=… node mcp_hosts_test.mjs
//
// Each case prints "ok   name" or "FAIL name: why"; the last line is
// "N passed, M failed", and the exit code is 1 if anything failed. Tokens
// are never printed, only the claims a case checks.

import { spawn } from 'node:child_process';
import { appendFileSync, chmodSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const modules = process.env.NODE_MODULES_DIR;
const require = createRequire(join(modules, 'noop.js'));
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const { UnauthorizedError, auth } = require('@modelcontextprotocol/sdk/client/auth.js');
const SDK_VERSION = JSON.parse(readFileSync(join(modules, '@modelcontextprotocol/sdk/package.json'), 'utf8')).version;
const MCP_REMOTE = join(modules, 'mcp-remote');
const MCP_REMOTE_VERSION = JSON.parse(readFileSync(join(MCP_REMOTE, 'package.json'), 'utf8')).version;

const ALICE = 'alice@mcpgate.test';
const ALICE_NAME = 'Alice Adams';

const ready = JSON.parse(readFileSync(process.env.SERVE_READY, 'utf8'));
const MCP_URL = ready.mcp_url;
const ORIGIN = new URL(MCP_URL).origin;
// Every issuer the dev IdP signs as: none of its tokens may reach a client.
const IDP_ISSUERS = [ready.idp.issuer, ready.idp.issuer_v1];
const WORK = process.env.WORK_DIR;

// Every process this script starts that might outlive it (mcp-remote, the
// browser it opens) is listed here, for the driver's cleanup to end by PID.
function notePid(pid) {
  if (pid) appendFileSync(join(WORK, 'pids'), `${pid}\n`);
}

class CaseFailed extends Error {}
function check(cond, message) {
  if (!cond) throw new CaseFailed(message);
}

const JWT = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;
function redact(text) {
  return String(text)
    .replace(JWT, '<token redacted>')
    .replace(/([?&](code|state|code_verifier|refresh_token|access_token)=)[^&\s"]+/g, '$1<redacted>');
}

/** What a page says, without its markup, for a diagnostic. */
function pageText(body) {
  return String(body)
    .replace(/<(style|script)[^>]*>[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** The payload of a JWT, unverified: mcpgate verifies. */
function claims(token) {
  check(typeof token === 'string' && token.split('.').length === 3, 'not a JWT');
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

/** Every JWT in `text` whose issuer is the dev IdP (an Entra token). */
function idpTokensIn(text) {
  const found = [];
  for (const jwt of String(text).match(JWT) ?? []) {
    let iss;
    try {
      iss = claims(jwt).iss;
    } catch {
      continue;
    }
    if (IDP_ISSUERS.includes(iss)) found.push(iss);
  }
  return found;
}

/** The broker's access token as a client must get it. */
function checkBrokerToken(accessToken, what) {
  const c = claims(accessToken);
  check(c.iss === ORIGIN, `${what}: access token iss ${c.iss}, expected the server's origin ${ORIGIN}`);
  const aud = Array.isArray(c.aud) ? c.aud : [c.aud];
  check(aud.length === 1 && aud[0] === MCP_URL, `${what}: access token aud ${JSON.stringify(c.aud)}, expected ${MCP_URL}`);
  return c;
}

/** A tool's JSON answer (structured content, else its text). */
function jsonOf(tool, result) {
  const text = (result.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
  check(!result.isError, `${tool} answered an error: ${redact(text.slice(0, 300))}`);
  if (result.structuredContent) return result.structuredContent;
  try {
    return JSON.parse(text);
  } catch {
    throw new CaseFailed(`${tool} answered no JSON: ${redact(text.slice(0, 300))}`);
  }
}

/**
 * whoami and get_user_details, whatever the client: alice, signed in
 * through the broker by `clientId`, and her profile from the dev IdP's
 * Graph-like /me (fetched by the server with its own token for her).
 */
async function callTools(client, clientId) {
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  check(names.includes('whoami') && names.includes('get_user_details'), `tools/list: ${names.join(', ')}`);
  const who = jsonOf('whoami', await client.callTool({ name: 'whoami', arguments: {} }));
  check(who.authenticated === true && who.preferred_username === ALICE,
    `whoami: ${who.preferred_username}, expected ${ALICE}`);
  check(who.issuer === ORIGIN, `whoami: issuer ${who.issuer}, expected the broker (${ORIGIN})`);
  check(who.token_kind === 'delegated', `whoami: token_kind ${who.token_kind}`);
  if (clientId) check(who.client_app_id === clientId, `whoami: client_app_id ${who.client_app_id}, expected ${clientId}`);
  const me = jsonOf('get_user_details', await client.callTool({ name: 'get_user_details', arguments: {} }));
  check(me.displayName === ALICE_NAME && me.userPrincipalName === ALICE,
    `get_user_details: ${me.displayName} / ${me.userPrincipalName}, expected ${ALICE_NAME} / ${ALICE}`);
  return {
    said: `whoami ${who.preferred_username} via ${who.client_app_id} (${who.scopes?.join(' ')}); /me ${me.displayName}`,
    clientApp: who.client_app_id,
  };
}

// --- the browser, played by fetch ------------------------------------------

/**
 * Follows an authorization URL's redirects (the broker's /authorize, the dev
 * IdP's sign-in over https, the broker's /auth/callback) until one points at
 * `redirectUri`, and returns that URL with its code. Cookies are kept per
 * origin, as a browser would. Nothing is fetched at the redirect URI.
 */
async function followToRedirect(start, redirectUri) {
  const target = new URL(redirectUri);
  const jar = new Map();
  const hops = [];
  let url = new URL(start);
  for (let i = 0; i < 20; i += 1) {
    if (url.origin === target.origin && url.pathname === target.pathname) return { url, hops };
    const headers = {};
    if (jar.has(url.origin)) headers.cookie = [...jar.get(url.origin).entries()].map(([k, v]) => `${k}=${v}`).join('; ');
    const resp = await fetch(url, { redirect: 'manual', headers });
    hops.push(`${resp.status} ${url.origin}${url.pathname}`);
    for (const sc of resp.headers.getSetCookie()) {
      const [pair] = sc.split(';');
      const eq = pair.indexOf('=');
      if (!jar.has(url.origin)) jar.set(url.origin, new Map());
      jar.get(url.origin).set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    const location = resp.headers.get('location');
    if (resp.status < 300 || resp.status > 399 || !location) {
      const body = await resp.text();
      throw new CaseFailed(`sign-in stopped at ${url.origin}${url.pathname} with ${resp.status} (no redirect; a page?): ${redact(pageText(body).slice(0, 300))} [hops: ${hops.join(' → ')}]`);
    }
    await resp.arrayBuffer();
    url = new URL(location, url);
  }
  throw new CaseFailed(`more than 20 redirects: ${hops.join(' → ')}`);
}

// --- the TypeScript SDK's client --------------------------------------------

/**
 * An OAuthClientProvider kept in memory. `redirectToAuthorization` plays the
 * browser; the code it brings back is kept for `finishAuth`.
 */
class Provider {
  constructor({ redirectUri, clientMetadataUrl }) {
    this.redirectUri = redirectUri;
    if (clientMetadataUrl) this.clientMetadataUrl = clientMetadataUrl;
    this.client = undefined;
    this.saved = undefined;
    this.verifier = undefined;
    this.expectedState = undefined;
    this.code = undefined;
    this.hops = [];
  }

  get redirectUrl() {
    return this.redirectUri;
  }

  get clientMetadata() {
    return {
      client_name: 'mcpgate interop: TypeScript SDK',
      redirect_uris: [this.redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  state() {
    this.expectedState = `st-${Math.random().toString(36).slice(2)}`;
    return this.expectedState;
  }

  clientInformation() {
    return this.client;
  }

  saveClientInformation(info) {
    this.client = info;
  }

  tokens() {
    return this.saved;
  }

  saveTokens(tokens) {
    this.saved = tokens;
  }

  saveCodeVerifier(v) {
    this.verifier = v;
  }

  codeVerifier() {
    return this.verifier;
  }

  async redirectToAuthorization(authorizationUrl) {
    check(authorizationUrl.origin === ORIGIN,
      `the SDK was sent to ${authorizationUrl.origin} to sign in, not to mcpgate's broker (${ORIGIN})`);
    const { url, hops } = await followToRedirect(authorizationUrl, this.redirectUri);
    this.hops = hops;
    const err = url.searchParams.get('error');
    check(!err, `the redirect URI got error=${err}: ${url.searchParams.get('error_description')}`);
    check(url.searchParams.get('state') === this.expectedState, 'the redirect does not carry the SDK\'s state');
    check(url.searchParams.get('iss') === ORIGIN, `the redirect's iss is ${url.searchParams.get('iss')}, expected ${ORIGIN}`);
    this.code = url.searchParams.get('code');
    check(this.code, `no code at the redirect URI: ${[...url.searchParams.keys()]}`);
  }
}

/**
 * fetch for the SDK that also keeps every response body it hands over (the
 * whole of what the client receives: metadata, registration, tokens, MCP),
 * so a case can show no dev IdP token is among them.
 */
function recordingFetch() {
  const pending = [];
  const bodies = [];
  const requests = [];
  const fn = async (input, init) => {
    const method = (init?.method ?? input?.method ?? 'GET').toUpperCase();
    const url = new URL(input instanceof Request ? input.url : String(input));
    requests.push(`${method} ${url.origin}${url.pathname}`);
    const resp = await fetch(input, init);
    // A GET on /mcp may be an open-ended event stream; POST bodies end.
    if (method !== 'GET' || !String(resp.headers.get('content-type')).includes('text/event-stream')) {
      pending.push(resp.clone().text().then((t) => bodies.push(t), () => {}));
    }
    return resp;
  };
  fn.requests = requests;
  fn.bodies = async () => {
    await Promise.all(pending);
    return bodies;
  };
  return fn;
}

/** The SDK's own sign-in: connect, 401, auth, redirect, finishAuth, reconnect. */
async function sdkSignIn(provider) {
  const fetchFn = recordingFetch();
  const newClient = () => new Client({ name: 'mcpgate-interop-sdk', version: '1.0.0' }, { capabilities: {} });
  const first = new StreamableHTTPClientTransport(new URL(MCP_URL), { authProvider: provider, fetch: fetchFn });
  let refused;
  try {
    await newClient().connect(first);
  } catch (e) {
    refused = e;
  }
  check(refused instanceof UnauthorizedError,
    `the first connect should stop for sign-in (UnauthorizedError), got ${refused ? redact(refused.message ?? refused) : 'a connection'}`);
  check(provider.code, 'the SDK never sent the user to sign in');
  await first.finishAuth(provider.code);
  await first.close().catch(() => {});
  check(provider.saved?.access_token, 'finishAuth saved no tokens');

  const client = newClient();
  const transport = new StreamableHTTPClientTransport(new URL(MCP_URL), { authProvider: provider, fetch: fetchFn });
  await client.connect(transport);
  return { client, transport, fetchFn };
}

async function sdkCase(provider, expectClientId) {
  const { client, transport, fetchFn } = await sdkSignIn(provider);
  let again;
  try {
    const tokens = provider.saved;
    check(String(tokens.token_type).toLowerCase() === 'bearer', `token_type ${tokens.token_type}`);
    const c = checkBrokerToken(tokens.access_token, 'the SDK');
    const registered = fetchFn.requests.includes(`POST ${ORIGIN}/register`);
    expectClientId(c, provider.client, registered);
    check(!tokens.id_token || claims(tokens.id_token).iss === ORIGIN, 'the token response carries an id_token not issued by the broker');
    check(tokens.refresh_token, 'no refresh token from the broker');
    const { said } = await callTools(client, provider.client.client_id);

    // The SDK's own refresh (auth() with a refresh token in hand), then the
    // tools again on the new access token: the broker rotates the refresh
    // token and get_user_details still reaches /me.
    const before = provider.saved;
    const result = await auth(provider, { serverUrl: MCP_URL, fetchFn });
    check(result === 'AUTHORIZED', `refresh through the SDK: ${result}`);
    check(provider.saved.access_token !== before.access_token, 'the refresh returned the same access token');
    check(provider.saved.refresh_token && provider.saved.refresh_token !== before.refresh_token,
      'the broker did not rotate the refresh token');
    checkBrokerToken(provider.saved.access_token, 'the SDK after refresh');
    again = new StreamableHTTPClientTransport(new URL(MCP_URL), { authProvider: provider, fetch: fetchFn });
    const client2 = new Client({ name: 'mcpgate-interop-sdk', version: '1.0.0' }, { capabilities: {} });
    await client2.connect(again);
    await callTools(client2, provider.client.client_id);

    const bodies = await fetchFn.bodies();
    const leaked = bodies.flatMap(idpTokensIn);
    check(leaked.length === 0, `a dev IdP token reached the client (iss ${leaked[0]})`);
    const tokenResponses = bodies.filter((b) => b.includes('"access_token"')).length;
    check(tokenResponses === 2, `the recording saw ${tokenResponses} token responses, expected 2 (code, refresh)`);
    console.log(`   client ${registered ? 'registered (DCR)' : 'by metadata document'}: ${redact(provider.client.client_id)}; sign-in: ${provider.hops.join(' → ')}`);
    console.log(`   access token iss ${c.iss}, aud ${c.aud}; ${said}; refreshed (rotated) and called again; no dev IdP token in ${bodies.length} responses`);
  } finally {
    await transport.close().catch(() => {});
    await again?.close().catch(() => {});
  }
}

// The SDK cases' redirect URIs are never listened on: redirectToAuthorization stops
// at them and hands the code over (loopback redirect URIs match any port).
async function sdkDcr() {
  const provider = new Provider({ redirectUri: 'http://127.0.0.1:33418/callback' });
  await sdkCase(provider, (c, info, registered) => {
    check(registered, 'the SDK did not register (DCR)');
    check(info.client_id && !info.client_id.startsWith('http'), `registered client_id ${info.client_id}`);
    check(c.client_id === info.client_id || c.azp === info.client_id,
      `the access token names client ${c.client_id ?? c.azp}, not the registered ${info.client_id}`);
  });
}

/** A loopback https server for the metadata document (the SDK wants https). */
async function serveMetadataDocument(documentFor) {
  const server = createHttpsServer({
    cert: readFileSync(process.env.CIMD_CERT),
    key: readFileSync(process.env.CIMD_KEY),
  }, (req, res) => {
    const doc = documentFor(req.url);
    if (!doc) {
      res.writeHead(404).end();
      return;
    }
    server.fetches += 1;
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' });
    res.end(JSON.stringify(doc));
  });
  server.fetches = 0;
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

async function sdkCimd() {
  const redirectUri = 'http://127.0.0.1:33419/callback';
  let url;
  const server = await serveMetadataDocument((path) => (path === '/clients/sdk.json' ? {
    client_id: url,
    client_name: 'mcpgate interop: TypeScript SDK (metadata document)',
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  } : undefined));
  try {
    url = `https://127.0.0.1:${server.address().port}/clients/sdk.json`;
    const provider = new Provider({ redirectUri, clientMetadataUrl: url });
    await sdkCase(provider, (c, info, registered) => {
      check(!registered, 'the SDK registered (DCR) instead of using its metadata document');
      check(info.client_id === url, `client_id ${info.client_id}, expected the document's URL`);
      check(c.client_id === url || c.azp === url, `the access token names client ${c.client_id ?? c.azp}, not ${url}`);
      check(server.fetches >= 1, 'the broker never fetched the metadata document');
    });
    console.log(`   the broker fetched the document ${server.fetches} time(s)`);
  } finally {
    server.closeAllConnections?.();
    await new Promise((resolve) => server.close(resolve));
  }
}

// --- mcp-remote -------------------------------------------------------------

async function freePort() {
  const s = createNetServer();
  await new Promise((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address();
  await new Promise((resolve) => s.close(resolve));
  return port;
}

/**
 * The browser mcp-remote opens: follows the authorization URL's redirects
 * to mcp-remote's own callback listener and loads it. mcp-remote opens a
 * browser through `open`, which runs the copy of xdg-open bundled with it
 * (not the one in PATH); with no display and a generic desktop, xdg-open
 * runs $BROWSER: this script. mcp-remote's fallbacks after that are
 * /usr/bin/xdg-open by absolute path, gio, then x-www-browser and
 * sensible-browser, which PATH resolves to this script too.
 */
function writeFakeBrowser(dir, log) {
  mkdirSync(dir, { recursive: true });
  const script = `#!${process.execPath}
// Fake browser for mcp-remote (written by mcp_hosts_test.mjs).
const { appendFileSync } = require('node:fs');
const log = (line) => appendFileSync(${JSON.stringify(log)}, line + '\\n');
appendFileSync(${JSON.stringify(join(WORK, 'pids'))}, process.pid + '\\n');
(async () => {
  let url = new URL(process.argv[2]);
  log('open ' + url.origin + url.pathname);
  const jar = new Map();
  for (let i = 0; i < 20; i += 1) {
    const headers = jar.has(url.origin) ? { cookie: [...jar.get(url.origin)].map(([k, v]) => k + '=' + v).join('; ') } : {};
    const resp = await fetch(url, { redirect: 'manual', headers });
    log(resp.status + ' ' + url.origin + url.pathname);
    for (const sc of resp.headers.getSetCookie()) {
      const pair = sc.split(';')[0];
      const eq = pair.indexOf('=');
      if (!jar.has(url.origin)) jar.set(url.origin, new Map());
      jar.get(url.origin).set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    const location = resp.headers.get('location');
    if (resp.status >= 300 && resp.status < 400 && location) {
      await resp.arrayBuffer();
      url = new URL(location, url);
      continue;
    }
    const body = await resp.text();
    log('done ' + resp.status + ' ' + body.replace(/<(style|script)[^>]*>[\\s\\S]*?<\\/\\1>/gi, ' ').replace(/<[^>]+>/g, ' ').replace(/\\s+/g, ' ').replace(/eyJ[\\w.-]+/g, '<token>').slice(0, 200));
    process.exit(resp.ok ? 0 : 1);
  }
  log('too many redirects');
  process.exit(1);
})().catch((e) => { log('error ' + e.message); process.exit(1); });
`;
  const path = join(dir, 'fake-browser');
  writeFileSync(path, script);
  chmodSync(path, 0o755);
  for (const name of ['xdg-open', 'x-www-browser', 'sensible-browser', 'www-browser']) {
    writeFileSync(join(dir, name), `#!/bin/sh\nexec ${JSON.stringify(path)} "$@"\n`);
    chmodSync(join(dir, name), 0o755);
  }
  return path;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Ends a child for good: the SDK's close() ends stdin and signals on
 * timers of its own, which a failed connect has already started and which
 * an exiting test would never see fire.
 */
async function stopProcess(pid) {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  for (const signal of [null, 'SIGTERM', 'SIGKILL']) {
    if (signal && alive(pid)) process.kill(pid, signal);
    for (let i = 0; i < 30 && alive(pid); i += 1) await sleep(100);
    if (!alive(pid)) return;
  }
}

function filesUnder(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

function readOr(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Runs mcp-remote for `url` under a Client over stdio, with a fake browser
 * for its sign-in, and hands the connected client to `use`. Returns what
 * `use` returned, what the browser saw, mcp-remote's config directory and
 * its callback URL; mcp-remote is stopped before it returns.
 */
async function withMcpRemote(name, url, extraArgs, use) {
  const dir = join(WORK, name);
  const configDir = join(dir, 'config');
  const binDir = join(dir, 'bin');
  const browserLog = join(dir, 'browser.log');
  mkdirSync(configDir, { recursive: true });
  const browser = writeFakeBrowser(binDir, browserLog);
  const port = await freePort();
  const callback = `http://127.0.0.1:${port}/oauth/callback`;

  // StdioClientTransport passes only a few variables of its own (HOME,
  // PATH, …) plus these: no DISPLAY, no desktop, so xdg-open runs $BROWSER.
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [join(MCP_REMOTE, 'dist/proxy.js'), url, String(port), '--host', '127.0.0.1',
      '--transport', 'http-only', '--auth-timeout', '60', ...extraArgs],
    env: {
      PATH: `${binDir}:${process.env.PATH}`,
      HOME: dir,
      BROWSER: browser,
      XDG_CURRENT_DESKTOP: 'X-Generic',
      MCP_REMOTE_CONFIG_DIR: configDir,
      NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS,
    },
    stderr: 'pipe',
  });
  let stderr = '';
  transport.stderr?.on('data', (d) => {
    stderr += d;
  });
  const client = new Client({ name: 'mcpgate-interop-host', version: '1.0.0' }, { capabilities: {} });
  let pid;
  try {
    let result;
    try {
      const connecting = client.connect(transport, { timeout: 90_000 });
      (async () => {
        for (let i = 0; i < 500 && !transport.pid; i += 1) await new Promise((r) => setTimeout(r, 10));
        pid = transport.pid;
        notePid(pid);
      })();
      await connecting;
      result = await use(client);
    } catch (e) {
      const tail = redact(stderr.split('\n').slice(-15).join('\n   | '));
      const blog = readOr(browserLog).trim().split('\n').join('\n   | browser: ');
      throw new CaseFailed(`${e.message}\n   | browser: ${blog}\n   | mcp-remote stderr: ${tail}`);
    }
    return { result, browserSaw: readOr(browserLog), configDir, callback };
  } finally {
    await client.close().catch(() => {});
    if (pid) await stopProcess(pid);
  }
}

async function mcpRemote() {
  const { result: { said, clientApp }, browserSaw, configDir, callback } =
    await withMcpRemote('mcp-remote', MCP_URL, [], (client) => callTools(client));
  check(browserSaw.includes(`${ORIGIN}/authorize`), 'the browser was not sent to the broker\'s /authorize');
  check(browserSaw.includes(`${ready.idp.base_url}/`), 'the browser never reached the dev IdP');
  check(browserSaw.includes(`${ORIGIN}/auth/callback`), 'the browser never came back through the broker\'s /auth/callback');
  check(browserSaw.includes(`/oauth/callback`) && /done 200/.test(browserSaw), 'mcp-remote\'s callback page did not load');
  // What mcp-remote keeps: its registration and the broker's tokens only.
  const files = filesUnder(configDir);
  const tokenFile = files.find((f) => f.endsWith('_tokens.json'));
  check(tokenFile, `no tokens in mcp-remote's config dir: ${files.map((f) => f.slice(configDir.length)).join(', ')}`);
  const saved = JSON.parse(readFileSync(tokenFile, 'utf8'));
  const c = checkBrokerToken(saved.access_token, 'mcp-remote');
  const clientFile = files.find((f) => f.endsWith('_client_info.json'));
  check(clientFile, 'mcp-remote kept no client registration');
  const info = JSON.parse(readFileSync(clientFile, 'utf8'));
  check((info.redirect_uris ?? []).includes(callback), `mcp-remote registered ${JSON.stringify(info.redirect_uris)}, expected ${callback}`);
  check(clientApp === info.client_id, `whoami names client ${clientApp}, mcp-remote registered ${info.client_id}`);
  const leaked = files.flatMap((f) => idpTokensIn(readFileSync(f, 'utf8')));
  check(leaked.length === 0, `a dev IdP token is stored by mcp-remote (iss ${leaked[0]})`);
  console.log(`   callback ${callback}; browser: ${browserSaw.trim().split('\n').filter((l) => !l.startsWith('done')).join(' → ')}`);
  console.log(`   stored access token: iss ${c.iss}, aud ${c.aud}; ${said}`);
}

// --- direct mode, as Microsoft's guide for MCP servers sets Entra up ------
//
// A second `serve`, in direct mode: the metadata names the dev IdP itself,
// clients hold a pre-registered client id (Entra has no registration), and
// the API's Application ID URI is the server's own MCP URL. The SDK and
// mcp-remote send that URL as RFC 8707 `resource` as they always do, and
// the IdP, as Entra does, accepts it because it names the API the scopes are
// for (next to an api:// identifier it is AADSTS9010010). The port is picked
// first because the identifier must be known before the IdP starts. The IdP
// serves plain http on loopback here: Node read its extra CA at start.

const DIRECT_API = '6d0e2c4a-8b1f-4e3d-9a7c-2b5f8e1d4c60';
const DIRECT_HOST = '9a3c5e7b-1d2f-4b6a-8c0e-4f7a9b1c3d52';
let direct;

async function startDirect() {
  if (direct) return direct;
  const dir = join(WORK, 'direct');
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const mcpUrl = `http://127.0.0.1:${port}/mcp`;
  const directory = join(dir, 'directory.toml');
  writeFileSync(directory, `# Written by mcp_hosts_test.mjs: the MCP API registered as Microsoft's guide does.
[[tenants]]
id = "7c3e9f2a-0d1b-4e5a-9c8b-2f6a1d4e8b30"
name = "Contoso (direct mode)"

[[apps]]
client_id = "${DIRECT_API}"
name = "MCP server (Application ID URI = its MCP URL)"
identifier_uris = ["${mcpUrl}"]
scopes = ["mcp:tools"]
access_token_version = 2

[[apps]]
client_id = "${DIRECT_HOST}"
name = "MCP host (pre-registered public client)"
public_client = true
redirect_uris = ["http://127.0.0.1/callback", "http://127.0.0.1/oauth/callback", "http://localhost/oauth/callback"]
granted = { "${DIRECT_API}" = ["mcp:tools"] }

[[users]]
username = "${ALICE}"
display_name = "${ALICE_NAME}"
password = "direct-mode-dev"
`);
  const config = join(dir, 'mcpgate.toml');
  writeFileSync(config, `[broker]\nmode = "direct"\n\n[idp]\nbind = "127.0.0.1:0"\nplain_http = true\ndirectory = ${JSON.stringify(directory)}\n`);
  const readyFile = join(dir, 'ready.json');
  const log = join(dir, 'serve.log');
  const out = openSync(log, 'a');
  const proc = spawn(process.env.MCPGATE_BIN, ['serve', '--config', config, '--bind', `127.0.0.1:${port}`,
    '--data-dir', join(dir, 'data'), '--ready-file', readyFile, '--metrics-bind', 'off'], {
    env: { ...process.env, MCPGATE_IDP_AUTO_APPROVE: ALICE },
    stdio: ['ignore', out, out],
  });
  notePid(proc.pid);
  let exited = false;
  proc.on('exit', () => { exited = true; });
  for (let i = 0; i < 600; i += 1) {
    try {
      const ready = JSON.parse(readFileSync(readyFile, 'utf8'));
      direct = { mcpUrl: ready.mcp_url, ready, log, proc };
      check(direct.mcpUrl === mcpUrl, `direct serve's MCP URL ${direct.mcpUrl}, expected ${mcpUrl}`);
      return direct;
    } catch (e) {
      if (e instanceof CaseFailed) throw e;
    }
    if (exited) throw new CaseFailed(`direct serve exited: ${redact(readOr(log).slice(-800))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new CaseFailed('direct serve was not ready after 60 s');
}

/** The dev IdP's access token for the URL-named API, as Entra v2 issues it. */
function checkDirectToken(accessToken, what) {
  const c = claims(accessToken);
  check(c.iss === direct.ready.idp.issuer, `${what}: iss ${c.iss}, expected the IdP's ${direct.ready.idp.issuer}`);
  // Entra v2.0 tokens carry the API's app id as aud (v1.0 ones the
  // identifier URI); mcpgate accepts both for the configured API.
  check(c.aud === DIRECT_API, `${what}: aud ${JSON.stringify(c.aud)}, expected the API's app id ${DIRECT_API}`);
  check(c.azp === DIRECT_HOST, `${what}: azp ${c.azp}, expected the pre-registered ${DIRECT_HOST}`);
  check(String(c.scp).split(' ').includes('mcp:tools'), `${what}: scp ${c.scp}`);
  return c;
}

async function whoamiDirect(client) {
  const who = jsonOf('whoami', await client.callTool({ name: 'whoami', arguments: {} }));
  check(who.authenticated === true && who.preferred_username === ALICE, `whoami: ${who.preferred_username}, expected ${ALICE}`);
  check(who.issuer === direct.ready.idp.issuer, `whoami: issuer ${who.issuer}`);
  check(who.client_app_id === DIRECT_HOST, `whoami: client_app_id ${who.client_app_id}, expected ${DIRECT_HOST}`);
  return `whoami ${who.preferred_username} via ${who.client_app_id} (${who.scopes?.join(' ')})`;
}

/** The SDK with a pre-registered client id: no registration, resource sent. */
class DirectProvider extends Provider {
  constructor(opts) {
    super(opts);
    this.client = { client_id: DIRECT_HOST };
    this.authorizationUrl = undefined;
  }

  saveClientInformation() {
    throw new CaseFailed('the SDK tried to save a registration, but it holds a pre-registered client id');
  }

  async redirectToAuthorization(authorizationUrl) {
    this.authorizationUrl = authorizationUrl;
    const idp = new URL(direct.ready.idp.base_url).origin;
    check(authorizationUrl.origin === idp, `the SDK was sent to ${authorizationUrl.origin}, not to the IdP (${idp})`);
    const { url, hops } = await followToRedirect(authorizationUrl, this.redirectUri);
    this.hops = hops;
    const err = url.searchParams.get('error');
    check(!err, `the IdP refused: ${err}: ${redact(url.searchParams.get('error_description') ?? '')}`);
    check(url.searchParams.get('state') === this.expectedState, 'the redirect does not carry the SDK\'s state');
    this.code = url.searchParams.get('code');
    check(this.code, 'no code at the redirect URI');
  }
}

async function sdkDirect() {
  await startDirect();
  const provider = new DirectProvider({ redirectUri: 'http://127.0.0.1:33419/callback' });
  const fetchFn = recordingFetch();
  const newClient = () => new Client({ name: 'mcpgate-interop-sdk-direct', version: '1.0.0' }, { capabilities: {} });
  const first = new StreamableHTTPClientTransport(new URL(direct.mcpUrl), { authProvider: provider, fetch: fetchFn });
  let refused;
  try {
    await newClient().connect(first);
  } catch (e) {
    refused = e;
  }
  check(refused instanceof UnauthorizedError, `the first connect should stop for sign-in, got ${refused ? redact(refused.message ?? refused) : 'a connection'}`);
  const asked = provider.authorizationUrl?.searchParams;
  check(asked?.get('resource') === direct.mcpUrl, `the SDK sent resource ${asked?.get('resource')}, expected ${direct.mcpUrl}`);
  check(String(asked?.get('scope')).split(' ').includes(`${direct.mcpUrl}/mcp:tools`),
    `the SDK asked for scope ${asked?.get('scope')}, expected the API's ${direct.mcpUrl}/mcp:tools from the metadata`);
  await first.finishAuth(provider.code);
  await first.close().catch(() => {});
  check(provider.saved?.access_token, 'finishAuth saved no tokens');
  const c = checkDirectToken(provider.saved.access_token, 'the SDK');
  check(!fetchFn.requests.some((r) => r.endsWith('/register')), `the SDK tried to register: ${fetchFn.requests.join(', ')}`);
  const transport = new StreamableHTTPClientTransport(new URL(direct.mcpUrl), { authProvider: provider, fetch: fetchFn });
  const client = newClient();
  try {
    await client.connect(transport);
    const said = await whoamiDirect(client);
    console.log(`   authorize: resource=${direct.mcpUrl}, scope=${asked.get('scope')}; sign-in: ${provider.hops.join(' → ')}`);
    console.log(`   access token iss ${c.iss}, aud ${c.aud}, scp ${c.scp}; ${said}`);
  } finally {
    await transport.close().catch(() => {});
  }
}

async function mcpRemoteDirect() {
  await startDirect();
  const { result: said, browserSaw, configDir } = await withMcpRemote('mcp-remote-direct', direct.mcpUrl,
    ['--static-oauth-client-info', JSON.stringify({ client_id: DIRECT_HOST })], whoamiDirect);
  const idp = new URL(direct.ready.idp.base_url).origin;
  check(browserSaw.includes(`open ${idp}/`), `the browser was not sent to the IdP (${idp})`);
  check(/done 200/.test(browserSaw), 'mcp-remote\'s callback page did not load');
  const files = filesUnder(configDir);
  check(!files.some((f) => f.endsWith('_client_info.json') && JSON.parse(readFileSync(f, 'utf8')).client_id !== DIRECT_HOST),
    'mcp-remote registered a client of its own');
  const tokenFile = files.find((f) => f.endsWith('_tokens.json'));
  check(tokenFile, 'no tokens in mcp-remote\'s config dir');
  const c = checkDirectToken(JSON.parse(readFileSync(tokenFile, 'utf8')).access_token, 'mcp-remote');
  console.log(`   browser: ${browserSaw.trim().split('\n').filter((l) => !l.startsWith('done')).join(' → ')}`);
  console.log(`   stored access token: iss ${c.iss}, aud ${c.aud}; ${said}`);
}

/** After all the sign-ins above: mcpgate logged none of the tokens. */
async function serverLog() {
  const log = readFileSync(process.env.SERVE_LOG, 'utf8');
  const jwts = log.match(JWT) ?? [];
  check(jwts.length === 0, `mcpgate serve's log holds ${jwts.length} JWT(s)`);
  check(log.length > 0, 'the server log is empty (the check above proves nothing)');
  if (direct) {
    const directJwts = readFileSync(direct.log, 'utf8').match(JWT) ?? [];
    check(directJwts.length === 0, `the direct-mode serve's log holds ${directJwts.length} JWT(s)`);
  }
}

// --- the cases ----------------------------------------------------------------

const cases = [
  [`TypeScript SDK ${SDK_VERSION}: DCR, sign-in through the broker, whoami and get_user_details`, sdkDcr],
  [`TypeScript SDK ${SDK_VERSION}: Client ID Metadata Document (https on loopback), sign-in, tools`, sdkCimd],
  [`mcp-remote ${MCP_REMOTE_VERSION}: stdio proxy, browser sign-in to its callback port, tools over stdio`, mcpRemote],
  [`TypeScript SDK ${SDK_VERSION}: direct mode, pre-registered client, resource = the API's identifier URI = the MCP URL, whoami`, sdkDirect],
  [`mcp-remote ${MCP_REMOTE_VERSION}: direct mode with --static-oauth-client-info, resource = identifier URI, whoami`, mcpRemoteDirect],
  ['mcpgate serve logged no token through all of the above', serverLog],
];

let passed = 0;
let failed = 0;
for (const [name, run] of cases) {
  try {
    await run();
    console.log(`ok   ${name}`);
    passed += 1;
  } catch (e) {
    const why = e instanceof CaseFailed ? e.message : (e?.stack ?? String(e));
    console.log(`FAIL ${name}: ${redact(why)}`);
    failed += 1;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
