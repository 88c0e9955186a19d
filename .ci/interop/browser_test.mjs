// Chromium through the development IdP's pages: sign-in, consent, a
// refused redirect URI, and `mcpgate login` itself. Run by
// .ci/interop/browser, which starts the IdPs and the server and passes, in
// the environment:
//   PLAYWRIGHT_DIR  playwright-core's package directory
//   CHROMIUM        the browser binary (Debian's)
//   BUILTIN_READY   ready file of an IdP with the built-in directory
//   CONSENT_READY   ready file of an IdP whose client needs consent
//   SERVE_READY     ready file of `mcpgate serve` with its embedded IdP
//   MCPGATE_BIN     the mcpgate binary the server runs
//   WORK_DIR        where screenshots and logs go (kept by the wrapper on
//                   failure)
// and NODE_EXTRA_CA_CERTS with the IdPs' CAs, for fetch.
//
// The last line is "N passed, M failed"; the exit code is 1 on any failure.
// Tokens are never printed: only the claims a case checks.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const { chromium } = createRequire(join(process.env.PLAYWRIGHT_DIR, 'package.json'))('playwright-core');

const API_ID = '3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21';
const DESKTOP_ID = 'b5a2e8d4-1c3f-4a6b-8e9d-0f7c2a4b6d13';
const ALICE = 'alice@mcpgate.test';
const WORK = process.env.WORK_DIR;

const builtin = JSON.parse(readFileSync(process.env.BUILTIN_READY, 'utf8'));
const consentIdp = JSON.parse(readFileSync(process.env.CONSENT_READY, 'utf8'));
const serve = JSON.parse(readFileSync(process.env.SERVE_READY, 'utf8'));
const MCPGATE_BIN = process.env.MCPGATE_BIN;

class CaseFailed extends Error {}
function check(cond, message) {
  if (!cond) throw new CaseFailed(message);
}

// Tokens, and codes or verifiers in URLs (Playwright's errors quote URLs),
// and any secret a case has read (a refresh token need not look like a JWT).
const JWT = /eyJ[\w-]+\.[\w-]+\.[\w-]*/g;
const CREDENTIAL_PARAM = /([?&#](?:code|code_verifier|refresh_token|access_token|id_token|client_secret)=)[^&\s"']+/g;
const secrets = new Set();
const redact = (s) => {
  let text = String(s);
  for (const secret of secrets) text = text.split(secret).join('<secret redacted>');
  return text.replace(JWT, '<token redacted>').replace(CREDENTIAL_PARAM, '$1<redacted>');
};

function claims(jwt) {
  check(typeof jwt === 'string' && jwt.split('.').length === 3, 'not a JWT');
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function pkce() {
  const verifier = b64url(randomBytes(32)); // 43 characters, RFC 7636's minimum
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

// The redirect target: a loopback listener, as a desktop MCP client runs
// one. Each call to next() resolves with the query of the next /callback hit.
async function callbackListener() {
  const waiting = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname !== '/callback') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html' }).end('<p id="done">You can close this window.</p>');
    const w = waiting.shift();
    if (w) w(Object.fromEntries(url.searchParams));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    redirectUri: `http://127.0.0.1:${port}/callback`,
    next: () => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new CaseFailed('the redirect to /callback never came')), 15000);
      waiting.push((q) => { clearTimeout(timer); resolve(q); });
    }),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

function authorizeUrl(idp, { clientId, redirectUri, scope, state, nonce, challenge }) {
  const u = new URL(`${idp.authority}/oauth2/v2.0/authorize`);
  u.search = new URLSearchParams({
    client_id: clientId,
    response_type: 'code',
    redirect_uri: redirectUri,
    scope,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  }).toString();
  return u.toString();
}

async function redeem(idp, form) {
  // fetch trusts the IdP through NODE_EXTRA_CA_CERTS, set by the wrapper.
  const resp = await fetch(`${idp.authority}/oauth2/v2.0/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form),
  });
  const body = await resp.json();
  return { status: resp.status, body };
}

function tokenError(body) {
  return redact(JSON.stringify({ error: body.error, error_codes: body.error_codes, error_description: body.error_description }));
}

async function shot(page, name) {
  const path = join(WORK, `${name}.png`);
  try {
    await page.screenshot({ path, fullPage: true });
  } catch {
    // A failed screenshot must not hide the failure being reported.
  }
  return path;
}

// mcpgate as a child process, its output kept in memory (never printed as
// is: through redact() only). Children still running when a case ends, or
// when the suite is interrupted, are killed.
const children = new Set();
function mcpgate(name, args, env) {
  const child = spawn(MCPGATE_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const run = { name, child, stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (d) => { run.stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { run.stderr += d; });
  run.exited = new Promise((resolve) => {
    child.once('error', (error) => { children.delete(child); resolve({ code: null, signal: null, error }); });
    child.once('close', (code, signal) => { children.delete(child); resolve({ code, signal }); });
  });
  return run;
}
function killChildren() {
  for (const child of children) child.kill('SIGTERM');
}
const how = ({ code, signal, error }) => (error ? error.message : code ?? signal);
function saveLog(run) {
  writeFileSync(join(WORK, `${run.name}.log`), redact(`--- stdout\n${run.stdout}--- stderr\n${run.stderr}`));
}

// Rejects with `message` if `promise` has not settled within `ms`.
function within(ms, promise, message) {
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new CaseFailed(message)), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// The first match of `re` in the run's stderr, as it comes.
function fromStderr(run, re) {
  return new Promise((resolve, reject) => {
    const look = () => {
      const m = run.stderr.match(re);
      if (m) {
        run.child.stderr.off('data', look);
        resolve(m);
      }
    };
    run.child.stderr.on('data', look);
    look();
    run.exited.then((e) => reject(new CaseFailed(`mcpgate ${run.name} exited (${how(e)}) before that: ${run.stderr.trim()}`)));
  });
}

// --- the cases -----------------------------------------------------------------

async function signInWithPkce(browser) {
  const { page } = await browser.open();
  const cb = await callbackListener();
  try {
    const { verifier, challenge } = pkce();
    const state = b64url(randomBytes(16));
    const nonce = b64url(randomBytes(16));
    const scope = `api://${API_ID}/mcp:tools openid profile offline_access`;
    const url = authorizeUrl(builtin, { clientId: DESKTOP_ID, redirectUri: cb.redirectUri, scope, state, nonce, challenge });

    const resp = await page.goto(url);
    check(resp.status() === 200, `the sign-in page answered ${resp.status()}`);
    const headers = resp.headers();
    check(headers['x-frame-options'] === 'DENY', `x-frame-options: ${headers['x-frame-options']}`);
    check(/frame-ancestors 'none'/.test(headers['content-security-policy'] ?? ''), 'CSP lacks frame-ancestors \'none\'');
    await shot(page, 'sign-in');
    const users = await page.locator('button.user').evaluateAll((bs) => bs.map((b) => b.dataset.user));
    check(users.includes(ALICE), `the sign-in page offers ${users.join(', ')}`);

    const arrived = cb.next();
    await page.click(`button.user[data-user="${ALICE}"]`);
    const q = await arrived;
    await page.waitForURL((u) => u.toString().startsWith(cb.redirectUri));
    check(q.state === state, 'the redirect carries another state');
    check(q.code, `the redirect has no code: ${Object.keys(q).join(', ')}${q.error ? ` (${q.error}: ${q.error_description})` : ''}`);

    const base = { client_id: DESKTOP_ID, grant_type: 'authorization_code', code: q.code, redirect_uri: cb.redirectUri };
    const wrong = await redeem(builtin, { ...base, code_verifier: pkce().verifier });
    check(wrong.status === 400 && wrong.body.error === 'invalid_grant',
      `a wrong code_verifier: ${wrong.status} ${tokenError(wrong.body)}`);
    // The IdP spends a code on any redemption attempt, so sign in again for
    // a fresh one: the session cookie now skips the page.
    const again = cb.next();
    await page.goto(url);
    const q2 = await again;
    check(q2.code && q2.state === state, 'a signed-in session did not come straight back with a code');

    const { status, body } = await redeem(builtin, { ...base, code: q2.code, code_verifier: verifier, scope });
    check(status === 200 && body.access_token, `code exchange: ${status} ${tokenError(body)}`);
    const at = claims(body.access_token);
    check(at.preferred_username === ALICE, `preferred_username ${at.preferred_username}`);
    check(at.aud === API_ID && at.scp === 'mcp:tools', `aud ${at.aud} scp ${at.scp}`);
    check(at.azp === DESKTOP_ID && at.azpacr === '0', `azp ${at.azp} azpacr ${at.azpacr}`);
    const idt = claims(body.id_token);
    check(idt.nonce === nonce, 'the ID token does not carry the nonce');
    check(idt.aud === DESKTOP_ID, `ID token aud ${idt.aud}`);
    check(body.refresh_token, 'no refresh token for offline_access');
    const replay = await redeem(builtin, { ...base, code: q2.code, code_verifier: verifier });
    check(replay.status === 400 && replay.body.error_codes?.includes(54005),
      `a redeemed code again: ${replay.status} ${tokenError(replay.body)}`);
    console.log(`   token: preferred_username=${at.preferred_username} scp=${at.scp} roles=${JSON.stringify(at.roles ?? [])}`);
  } finally {
    await cb.close();
  }
}

async function consentOnce(browser) {
  const api = consentIdp.clients.find((c) => c.name === 'Orders API');
  const client = consentIdp.clients.find((c) => c.name === 'Orders desktop');
  check(api && client, 'the consent directory was not loaded');
  const scope = `${api.scopes[0]} openid profile`;
  const { context, page } = await browser.open();
  const cb = await callbackListener();
  try {
    const start = async () => {
      const { verifier, challenge } = pkce();
      const state = b64url(randomBytes(16));
      const url = authorizeUrl(consentIdp, { clientId: client.client_id, redirectUri: cb.redirectUri, scope, state, nonce: 'n', challenge });
      return { url, state, verifier };
    };

    // Erin declines: the client hears access_denied, with its state.
    let req = await start();
    await page.goto(req.url);
    await page.click('button.user[data-user="erin@orders.test"]');
    await page.waitForSelector('#decline');
    let arrived = cb.next();
    await page.click('#decline');
    let q = await arrived;
    check(q.error === 'access_denied' && q.state === req.state && !q.code,
      `declining consent: error=${q.error} state matches=${q.state === req.state} code=${Boolean(q.code)}`);
    console.log(`   declined: error=${q.error} (${(q.error_description ?? '').split(' ')[0]})`);

    // Dana signs in (cookies cleared: no session) and is asked to consent.
    await context.clearCookies();
    req = await start();
    await page.goto(req.url);
    await page.click('button.user[data-user="dana@orders.test"]');
    const accept = page.locator('#accept');
    await accept.waitFor();
    const text = await page.locator('body').innerText();
    check(text.includes('orders:read'), 'the consent page does not name orders:read');
    check(text.includes('Orders desktop'), 'the consent page does not name the client');
    await shot(page, 'consent');
    arrived = cb.next();
    await accept.click();
    q = await arrived;
    check(q.code && q.state === req.state, `after consent: ${Object.keys(q).join(', ')} ${q.error ?? ''}`);
    let { status, body } = await redeem(consentIdp, {
      client_id: client.client_id, grant_type: 'authorization_code', code: q.code,
      redirect_uri: cb.redirectUri, code_verifier: req.verifier,
    });
    check(status === 200 && body.access_token, `code exchange: ${status} ${tokenError(body)}`);
    const at = claims(body.access_token);
    check(at.preferred_username === 'dana@orders.test', `preferred_username ${at.preferred_username}`);
    check(at.aud === api.client_id && at.scp === 'orders:read', `aud ${at.aud} scp ${at.scp}`);
    check(at.tid === consentIdp.tenant_id, `tid ${at.tid}`);
    check(JSON.stringify(at.roles) === '["Orders.Admin"]', `roles ${JSON.stringify(at.roles)}`);
    console.log(`   consented: preferred_username=${at.preferred_username} scp=${at.scp} roles=${JSON.stringify(at.roles)}`);

    // Consent is asked once per user and app: the next sign-in (same
    // session) goes straight back with a code.
    req = await start();
    arrived = cb.next();
    await page.goto(req.url);
    q = await arrived;
    check(q.code && q.state === req.state, 'the second sign-in asked again');
  } finally {
    await cb.close();
  }
}

// Conditional Access in the consent directory: frank must give a second
// factor. A wrong code is refused on the same page; 000000 (the development
// code the page shows) is accepted; the token says amr mfa.
async function mfaStep(browser) {
  const api = consentIdp.clients.find((c) => c.name === 'Orders API');
  const client = consentIdp.clients.find((c) => c.name === 'Orders desktop');
  check(api && client, 'the consent directory was not loaded');
  const { page } = await browser.open();
  const cb = await callbackListener();
  try {
    const { verifier, challenge } = pkce();
    const state = b64url(randomBytes(16));
    const url = authorizeUrl(consentIdp, {
      clientId: client.client_id, redirectUri: cb.redirectUri, scope: `${api.scopes[0]} openid`,
      state, nonce: 'n', challenge,
    });
    await page.goto(url);
    await page.click('button.user[data-user="frank@orders.test"]');
    const otp = page.locator('#otp');
    await otp.waitFor();
    let text = await page.locator('body').innerText();
    check(text.includes('Enter the code from your authenticator app'), 'the second-factor step has no prompt');
    check(text.includes('000000'), 'the development code is not shown on loopback');
    await shot(page, 'mfa');

    await otp.fill('123456');
    await page.click('#verify');
    await page.locator('.err').waitFor();
    text = await page.locator('body').innerText();
    check(text.includes('AADSTS500121'), `a wrong code: ${text.slice(0, 200)}`);
    check(new URL(page.url()).origin === new URL(consentIdp.base_url).origin, `a wrong code left the IdP: ${page.url()}`);
    await shot(page, 'mfa-wrong-code');

    await page.locator('#otp').fill('000000');
    await page.click('#verify');
    // Consent is next (the client is not pre-authorized), then the code.
    const accept = page.locator('#accept');
    await accept.waitFor();
    const arrived = cb.next();
    await accept.click();
    const q = await arrived;
    check(q.code && q.state === state, `after the second factor: ${Object.keys(q).join(', ')} ${q.error ?? ''}`);
    const { status, body } = await redeem(consentIdp, {
      client_id: client.client_id, grant_type: 'authorization_code', code: q.code,
      redirect_uri: cb.redirectUri, code_verifier: verifier,
    });
    check(status === 200 && body.access_token, `code exchange: ${status} ${tokenError(body)}`);
    const at = claims(body.access_token);
    check(at.preferred_username === 'frank@orders.test', `preferred_username ${at.preferred_username}`);
    check(JSON.stringify(at.amr) === '["pwd","mfa"]', `amr ${JSON.stringify(at.amr)}`);
    check(JSON.stringify(claims(body.id_token).amr) === '["pwd","mfa"]', 'the ID token lacks amr mfa');
    console.log(`   wrong code refused, 000000 accepted: amr=${JSON.stringify(at.amr)}`);
  } finally {
    await cb.close();
  }
}

async function badRedirectUri(browser) {
  const { context, page } = await browser.open();
  // Should the IdP redirect anyway, the navigation is caught here and never
  // leaves the machine.
  const escaped = [];
  await context.route((u) => u.hostname === 'evil.example', (route) => {
    escaped.push(route.request().url());
    return route.abort();
  });
  const { challenge } = pkce();
  const url = authorizeUrl(builtin, {
    clientId: DESKTOP_ID, redirectUri: 'http://evil.example/cb', scope: `api://${API_ID}/mcp:tools`,
    state: 's', nonce: 'n', challenge,
  });
  const resp = await page.goto(url);
  const text = await page.locator('body').innerText();
  check(text.includes('AADSTS50011'), `the error page does not say AADSTS50011: ${text.slice(0, 200)}`);
  check(escaped.length === 0, `the browser was sent to ${escaped.join(', ')}`);
  check(new URL(page.url()).origin === new URL(builtin.base_url).origin, `the page moved to ${page.url()}`);
  check(resp.status() === 400, `the error page answered ${resp.status()}`);
  console.log(`   refused with ${resp.status()}: ${text.match(/AADSTS\d+/)[0]}, stayed on the IdP`);
}

async function mcpgateLogin(browser) {
  check(serve.login && serve.idp, 'the server started no IdP: its ready file has no login line');
  check(!serve.idp.auto_approve, `the server's IdP approves ${serve.idp.auto_approve} without a page`);
  // The command line the server prints, as a person would paste it.
  const [program, ...loginArgs] = serve.login.split(' ');
  check(program === 'mcpgate' && loginArgs[0] === 'login', `the login line: ${serve.login}`);
  const ca = serve.idp.ca_file;
  check(loginArgs.join(' ').endsWith(`--ca-file ${ca}`), `the login line does not trust the IdP's CA: ${serve.login}`);
  const cache = join(WORK, 'client-cache');

  // No browser but Chromium here: the desktop's xdg-open (Debian has one in
  // /usr/bin) is hidden; PATH holds only one that records its argument and
  // succeeds, and a DISPLAY says there is a desktop, so that mcpgate takes
  // the browser path; this script then plays the browser with Chromium.
  // (Where no browser can be opened, mcpgate does not wait: it falls back
  // to the device code, which crates/mcpgate/tests/client.rs checks.)
  const noBrowser = join(WORK, 'no-browser');
  mkdirSync(noBrowser, { recursive: true });
  writeFileSync(join(noBrowser, 'xdg-open'), '#!/bin/sh\nprintf \'%s\\n\' "$*" >>"$0.calls"\nexit 0\n', { mode: 0o755 });
  const opened = () => { try { return readFileSync(join(noBrowser, 'xdg-open.calls'), 'utf8').split('\n').filter(Boolean); } catch { return []; } };
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MCPGATE_')));
  env.PATH = noBrowser;
  env.DISPLAY = env.DISPLAY || ':0';

  const runs = [];
  try {
    const login = mcpgate('login', [...loginArgs, '--cache-dir', cache], env);
    runs.push(login);
    const [, signInAt] = await within(15000, fromStderr(login, /^Sign in at: (\S+)\n/m),
      'mcpgate login printed no "Sign in at:" line within 15 s');
    // Broker mode: the sign-in starts at mcpgate's own authorization
    // server, with the client id mcpgate login registered there.
    const authorize = new URL(signInAt);
    const broker = new URL(serve.mcp_url).origin;
    check(authorize.origin === broker && authorize.pathname === '/authorize',
      `the sign-in URL is ${authorize.origin}${authorize.pathname}, not the broker's`);
    const q = authorize.searchParams;
    const clientId = q.get('client_id') ?? '';
    check(clientId && clientId !== DESKTOP_ID, `client_id ${clientId}: not a registration of its own`);
    check(q.get('code_challenge_method') === 'S256' && q.get('code_challenge'), 'the sign-in URL carries no S256 code challenge');
    const redirectUri = q.get('redirect_uri') ?? '';
    check(/^http:\/\/127\.0\.0\.1:\d+\/callback$/.test(redirectUri), `redirect_uri ${redirectUri}`);

    // The broker sends the browser to the IdP's sign-in page.
    const { page } = await browser.open();
    const resp = await page.goto(signInAt);
    check(resp.status() === 200, `the sign-in page answered ${resp.status()}`);
    const authority = new URL(serve.idp.authority);
    check(new URL(page.url()).origin === authority.origin, `the broker sent the browser to ${redact(page.url())}, not the IdP`);
    const users = await page.locator('button.user').evaluateAll((bs) => bs.map((b) => b.dataset.user));
    check(users.includes(ALICE), `the sign-in page offers ${users.join(', ')}`);
    await shot(page, 'login-sign-in');
    await page.click(`button.user[data-user="${ALICE}"]`);

    // Back at the broker: its consent page names the client, where the
    // browser goes next, and what it may do.
    await page.waitForURL((u) => u.origin === broker);
    const consent = await page.locator('body').innerText();
    check(consent.includes('mcpgate'), `the broker's consent page does not name the client: ${consent.slice(0, 200)}`);
    check(consent.includes('127.0.0.1'), 'the consent page does not say where the browser goes next');
    check(consent.includes('mcp:tools'), 'the consent page does not name the scope');
    await shot(page, 'login-broker-consent');
    await page.click('#approve');
    // The browser lands on the client's own listener, which answers once.
    await page.waitForURL((u) => u.toString().startsWith(`${redirectUri}?`));
    const landed = await page.locator('body').innerText();
    check(landed.includes('Signed in'), `the loopback page says: ${landed.slice(0, 200)}`);

    const exit = await within(30000, login.exited, 'mcpgate login did not exit within 30 s of the redirect');
    check(exit.code === 0, `mcpgate login exited ${how(exit)}: ${login.stderr.trim()}`);
    check(login.stderr.includes(`signed in to ${serve.mcp_url}`), `mcpgate login said: ${login.stderr.trim()}`);
    check(JSON.stringify(opened()) === JSON.stringify([signInAt]),
      `xdg-open was asked to open ${opened().length} URL(s), not the one printed`);

    // The cache: one token file, the owner's only.
    const tokensDir = join(cache, 'mcpgate', 'tokens');
    const files = readdirSync(tokensDir).filter((f) => f.endsWith('.json'));
    check(files.length === 1, `${files.length} token files in ${tokensDir}`);
    const file = join(tokensDir, files[0]);
    const mode = statSync(file).mode & 0o777;
    check(mode === 0o600, `the token file's mode is ${mode.toString(8)}`);
    const dirMode = statSync(tokensDir).mode & 0o777;
    check(dirMode === 0o700, `the tokens directory's mode is ${dirMode.toString(8)}`);
    const cached = JSON.parse(readFileSync(file, 'utf8'));
    const accessToken = cached.tokens?.access_token;
    check(typeof accessToken === 'string' && accessToken.length > 0, 'the token file holds no tokens.access_token');
    secrets.add(accessToken);
    if (cached.tokens.refresh_token) secrets.add(cached.tokens.refresh_token);
    const at = claims(accessToken);
    check(at.preferred_username === ALICE && at.azp === clientId && at.iss === broker,
      `cached token: preferred_username ${at.preferred_username} azp ${at.azp} iss ${at.iss}`);
    const leaks = (run) => [run.stdout, run.stderr].some((o) => [...secrets].some((x) => o.includes(x)));
    check(!leaks(login), 'mcpgate login printed a token');

    // From the cache: no sign-in again (xdg-open would be asked again).
    const common = ['--ca-file', ca, '--cache-dir', cache];
    const finish = async (run) => {
      runs.push(run);
      const e = await within(30000, run.exited, `mcpgate ${run.name} did not exit within 30 s`);
      check(e.code === 0, `mcpgate ${run.name} exited ${how(e)}: ${run.stderr.trim()}`);
      check(!leaks(run), `mcpgate ${run.name} printed a token`);
      return run;
    };
    const tools = await finish(mcpgate('tools', ['tools', serve.mcp_url, ...common], env));
    check(/^whoami(\t|$)/m.test(tools.stdout) && /^get_user_details(\t|$)/m.test(tools.stdout),
      `mcpgate tools listed: ${tools.stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0]).join(', ')}`);
    const call = await finish(mcpgate('call', ['call', serve.mcp_url, 'whoami', ...common], env));
    let result;
    try {
      result = JSON.parse(call.stdout);
    } catch {
      throw new CaseFailed(`mcpgate call printed no JSON: ${call.stdout.slice(0, 200)}`);
    }
    const who = result.structuredContent ?? {};
    check(who.preferred_username === ALICE, `whoami: preferred_username ${who.preferred_username}`);
    check(opened().length === 1, 'tools or call signed in again instead of using the cache');
    console.log(`   whoami from the cache: preferred_username=${who.preferred_username} token_kind=${who.token_kind} scopes=${JSON.stringify(who.scopes)}`);
    const details = await finish(mcpgate('call', ['call', serve.mcp_url, 'get_user_details', ...common], env));
    const me = JSON.parse(details.stdout).structuredContent ?? {};
    check(me.userPrincipalName === ALICE, `get_user_details: userPrincipalName ${me.userPrincipalName}`);
    console.log(`   get_user_details (Graph /me on behalf of alice, through the broker): ${me.displayName}`);
  } finally {
    killChildren();
    await Promise.all(runs.map((r) => r.exited));
    runs.forEach(saveLog);
  }
}

// --- runner ---------------------------------------------------------------------

const cases = [
  ['sign_in_pkce', signInWithPkce],
  ['consent', consentOnce],
  ['mfa_step', mfaStep],
  ['bad_redirect_uri', badRedirectUri],
  ['mcpgate_login', mcpgateLogin],
];

const chromiumBrowser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  // --no-sandbox: CI runs as root. The resolver rule keeps every host but
  // loopback from resolving: nothing else is reachable.
  args: ['--no-sandbox', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1'],
});
// Interrupted (the wrapper's trap or time limit): close the browser, stop.
process.once('SIGTERM', () => {
  console.log('interrupted');
  killChildren();
  chromiumBrowser.close().finally(() => process.exit(143));
});

// Each case gets fresh contexts (no cookies from another case) through
// open(); the runner screenshots their pages if the case fails.
let contexts = [];
const browser = {
  async open() {
    const context = await chromiumBrowser.newContext({ ignoreHTTPSErrors: true });
    context.setDefaultTimeout(15000);
    contexts.push(context);
    return { context, page: await context.newPage() };
  },
};

let passed = 0;
let failed = 0;
try {
  for (const [name, run] of cases) {
    const t = Date.now();
    try {
      await run(browser);
      passed++;
      console.log(`ok   ${name} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
    } catch (e) {
      failed++;
      const detail = e instanceof CaseFailed ? e.message : e.stack;
      console.log(`FAIL ${name} (${((Date.now() - t) / 1000).toFixed(1)} s): ${redact(detail)}`);
      let i = 0;
      for (const c of contexts) {
        for (const p of c.pages()) {
          console.log(`   page at ${redact(p.url())}: screenshot ${await shot(p, `${name}-failed-${i++}`)}`);
        }
      }
    }
    for (const c of contexts) await c.close();
    contexts = [];
  }
} finally {
  await chromiumBrowser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
