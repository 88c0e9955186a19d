// MSAL Node against mcpgate's development identity provider.
//
// Run by .ci/interop/msal-node, which installs @azure/msal-node, starts the
// IdPs and hands their ready files and CAs over:
//
//   NODE_EXTRA_CA_CERTS=… MSAL_NODE_DIR=… AUTO_READY=… MANUAL_READY=… \
//     node msal_node_test.mjs
//
// Each case asserts and says why it failed; the last line is
// "N passed, M failed", and the exit code is 1 if anything failed. Tokens
// and secrets are never printed, only the claims a case checks.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const msal = createRequire(join(process.env.MSAL_NODE_DIR, 'package.json'))('@azure/msal-node');

const API_ID = '3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21';
const DESKTOP_ID = 'b5a2e8d4-1c3f-4a6b-8e9d-0f7c2a4b6d13';
const DAEMON_ID = 'd1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6';
const GRAPH_ID = '00000003-0000-0000-c000-000000000000';
const SCOPE = `api://${API_ID}/mcp:tools`;
const ALICE = 'alice@mcpgate.test';
const BOB = 'bob@mcpgate.test';
const REDIRECT = 'http://localhost:8400/callback'; // loopback: any port

const auto = JSON.parse(readFileSync(process.env.AUTO_READY, 'utf8'));
const manual = JSON.parse(readFileSync(process.env.MANUAL_READY, 'utf8'));

class CaseFailed extends Error {}
function check(cond, message) {
  if (!cond) throw new CaseFailed(message);
}

// Anything that looks like a JWT, and every secret this run has read, is
// masked before a diagnostic is printed.
const secrets = [];
function redact(text) {
  let out = String(text).replace(/eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g, '<token redacted>');
  for (const s of secrets) out = out.split(s).join('<secret redacted>');
  return out;
}

/** The payload of a JWT, unverified: the IdP and mcpgate verify. */
function claims(token) {
  check(typeof token === 'string' && token.split('.').length === 3, 'not a JWT');
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

function secretOf(idp, clientId) {
  const client = idp.clients.find((c) => c.client_id === clientId);
  const secret = readFileSync(client.secret_file, 'utf8').trim();
  secrets.push(secret);
  return secret;
}

// MSAL checks an authority against Microsoft's instance discovery unless it
// is known; there is no login.microsoftonline.com here to ask.
function authOf(idp) {
  return { authority: idp.authority, knownAuthorities: [new URL(idp.base_url).host] };
}

const logger = {
  loggerCallback: () => {},
  piiLoggingEnabled: false,
};

function publicApp(idp) {
  return new msal.PublicClientApplication({
    auth: { clientId: DESKTOP_ID, ...authOf(idp) },
    system: { loggerOptions: logger },
  });
}

function confidentialApp(idp, clientId, clientSecret) {
  return new msal.ConfidentialClientApplication({
    auth: { clientId, clientSecret, ...authOf(idp) },
    system: { loggerOptions: logger },
  });
}

function msalError(e) {
  if (!e || typeof e !== 'object') return redact(e);
  return redact(JSON.stringify({ errorCode: e.errorCode, subError: e.subError, message: e.errorMessage ?? e.message }));
}

// --- the device-code page, as a person uses it -------------------------------

/** Every input of the page's one form, by name. */
function formInputs(html) {
  const inputs = {};
  for (const m of html.matchAll(/<input\b[^>]*>/g)) {
    const name = /\bname="([^"]*)"/.exec(m[0]);
    const value = /\bvalue="([^"]*)"/.exec(m[0]);
    if (name) inputs[name[1]] = value ? value[1].replace(/&amp;/g, '&') : '';
  }
  return inputs;
}

/** Opens /devicelogin (which sets the flow's CSRF cookie), fills the form
 * in and submits it; returns the result page's text. */
async function answerDeviceCode(idp, userCode, username, action) {
  const page = await fetch(idp.device_login_url);
  check(page.status === 200, `GET /devicelogin: ${page.status}`);
  const cookie = page.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  check(cookie.startsWith('mcpgate_idp_csrf'), 'no CSRF cookie on /devicelogin');
  const html = await page.text();
  check(html.includes(`value="${username}"`), `/devicelogin does not offer ${username}`);
  const form = { ...formInputs(html), user_code: userCode, username, password: '', action };
  const done = await fetch(idp.device_login_url, {
    method: 'POST',
    headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form),
  });
  check(done.status === 200, `POST /devicelogin: ${done.status}`);
  return done.text();
}

// --- the cases ----------------------------------------------------------------

const state = {};

async function deviceCodeAutoApproved() {
  const app = publicApp(auto);
  let shown;
  const result = await app.acquireTokenByDeviceCode({
    scopes: [SCOPE],
    deviceCodeCallback: (r) => { shown = r; },
  });
  check(shown && shown.userCode && shown.verificationUri === auto.device_login_url,
    `device code callback: ${JSON.stringify(shown && { verificationUri: shown.verificationUri })}`);
  const c = claims(result.accessToken);
  check(c.aud === API_ID, `aud ${c.aud}`);
  check(c.iss === auto.issuer, `iss ${c.iss}, want ${auto.issuer}`);
  check(c.scp === 'mcp:tools', `scp ${c.scp}`);
  check(c.preferred_username === ALICE, `preferred_username ${c.preferred_username}`);
  check(c.azp === DESKTOP_ID && c.azpacr === '0', `azp ${c.azp} azpacr ${c.azpacr}`);
  check((c.roles ?? []).includes('MCP.Tools.All'), `roles ${JSON.stringify(c.roles)}`);
  check(result.account?.username === ALICE, `account ${result.account?.username}`);
  check(result.account?.homeAccountId === `${c.oid}.${c.tid}`, 'homeAccountId is not <oid>.<tid> (client_info)');
  check(result.idTokenClaims?.aud === DESKTOP_ID, `id token aud ${result.idTokenClaims?.aud}`);
  console.log(`   token: preferred_username=${c.preferred_username} scp=${c.scp} roles=${JSON.stringify(c.roles)}`);
}

async function deviceCodeApprovedByAPerson() {
  const app = publicApp(manual);
  let approval;
  const started = Date.now();
  const result = await app.acquireTokenByDeviceCode({
    scopes: [SCOPE],
    // Bob approves while MSAL polls: its first polls see
    // authorization_pending, then one succeeds.
    deviceCodeCallback: (r) => {
      approval = new Promise((resolve) => setTimeout(resolve, 1000))
        .then(() => answerDeviceCode(manual, r.userCode, BOB, 'approve'));
    },
  });
  const page = await approval;
  check(page.includes('signed in'), `approving on /devicelogin: ${redact(page.slice(0, 300))}`);
  const c = claims(result.accessToken);
  check(c.preferred_username === BOB && c.scp === 'mcp:tools', `claims ${c.preferred_username} ${c.scp}`);
  check(!('roles' in c), `bob has no app role, token has ${JSON.stringify(c.roles)}`);
  console.log(`   approved on the page after ${((Date.now() - started) / 1000).toFixed(1)} s: preferred_username=${c.preferred_username}`);

  // Denied: MSAL stops polling with the IdP's error.
  let denied;
  try {
    await app.acquireTokenByDeviceCode({
      scopes: [SCOPE],
      deviceCodeCallback: (r) => {
        answerDeviceCode(manual, r.userCode, BOB, 'deny').catch(() => {});
      },
    });
  } catch (e) {
    denied = e;
  }
  check(denied, 'a denied device code produced a token');
  // MSAL Node wraps any error but authorization_pending as
  // post_request_failed, with the server's error in the message.
  check(/access_denied/.test(`${denied.errorCode} ${denied.errorMessage}`), `denied: ${msalError(denied)}`);
  console.log(`   denied: ${denied.errorCode} (${denied.errorMessage})`);
}

async function authCodeWithPkce() {
  const app = publicApp(auto);
  const crypto = new msal.CryptoProvider();
  const { verifier, challenge } = await crypto.generatePkceCodes();
  const st = crypto.createNewGuid();
  const url = await app.getAuthCodeUrl({
    scopes: [SCOPE],
    redirectUri: REDIRECT,
    codeChallenge: challenge,
    codeChallengeMethod: 'S256',
    state: st,
    responseMode: 'query',
  });
  // The auto-approving IdP answers at once with the redirect; nothing
  // listens on the redirect URI, so it is read, not followed.
  const resp = await fetch(url, { redirect: 'manual' });
  check(resp.status === 302, `authorize: ${resp.status} ${redact((await resp.text()).slice(0, 300))}`);
  const back = new URL(resp.headers.get('location'));
  check(back.searchParams.get('state') === st, 'the redirect does not carry MSAL\'s state');
  const code = back.searchParams.get('code');
  check(code, `no code in the redirect: ${[...back.searchParams.keys()]}`);
  const result = await app.acquireTokenByCode({ code, scopes: [SCOPE], redirectUri: REDIRECT, codeVerifier: verifier });
  const c = claims(result.accessToken);
  check(c.preferred_username === ALICE && c.scp === 'mcp:tools', `claims ${c.preferred_username} ${c.scp}`);
  console.log(`   token: preferred_username=${c.preferred_username}; PKCE S256 verified by the IdP`);
  state.app = app;
  state.token = result.accessToken;
  state.code = { code, verifier };
}

async function silentRefresh() {
  check(state.app, 'needs the auth code case');
  const app = state.app;
  const accounts = await app.getTokenCache().getAllAccounts();
  check(accounts.length === 1 && accounts[0].username === ALICE,
    `accounts: ${JSON.stringify(accounts.map((a) => a.username))}`);
  const cached = await app.acquireTokenSilent({ account: accounts[0], scopes: [SCOPE] });
  check(cached.accessToken === state.token, 'a silent call without forceRefresh did not use the cache');
  // Twice: the IdP rotates refresh tokens, so the second refresh works only
  // if MSAL kept the rotated one the first returned.
  const seen = new Set([state.token]);
  for (const i of [1, 2]) {
    const r = await app.acquireTokenSilent({ account: accounts[0], scopes: [SCOPE], forceRefresh: true });
    check(!seen.has(r.accessToken), `refresh #${i} returned a token already seen`);
    check(!r.fromCache, `refresh #${i} came from the cache`);
    const c = claims(r.accessToken);
    check(c.preferred_username === ALICE && c.scp === 'mcp:tools', `refresh #${i}: ${c.preferred_username} ${c.scp}`);
    seen.add(r.accessToken);
  }
  // Another resource on the same refresh token (the desktop client has
  // consent for Graph's User.Read).
  const graph = await app.acquireTokenSilent({ account: accounts[0], scopes: ['User.Read'] });
  const g = claims(graph.accessToken);
  check(g.aud === GRAPH_ID && g.scp.split(' ').includes('User.Read'), `Graph token: aud ${g.aud} scp ${g.scp}`);
  // A refresh refused for a scope nobody consented to leaves the refresh
  // token alone: the next refresh still works.
  let refused;
  try {
    await app.acquireTokenSilent({ account: accounts[0], scopes: ['Mail.Read'], forceRefresh: true });
  } catch (e) {
    refused = e;
  }
  check(refused, 'an unconsented scope was granted silently');
  const after = await app.acquireTokenSilent({ account: accounts[0], scopes: [SCOPE], forceRefresh: true });
  check(claims(after.accessToken).preferred_username === ALICE, 'the refresh token did not survive a refused refresh');
  console.log(`   two rotations, a Graph token by refresh, and a refused refresh that spent nothing (${refused.errorCode})`);
}

async function replayedCodeRevokesWhatItBought() {
  check(state.app && state.code, 'needs the auth code case');
  const { code, verifier } = state.code;
  let again;
  try {
    await state.app.acquireTokenByCode({ code, scopes: [SCOPE], redirectUri: REDIRECT, codeVerifier: verifier });
  } catch (e) {
    again = e;
  }
  check(again && /AADSTS54005/.test(again.errorMessage ?? ''), `a second redemption: ${again ? msalError(again) : 'succeeded'}`);
  // RFC 6749 §4.1.2: the replay revokes the tokens the code bought.
  const [account] = await state.app.getTokenCache().getAllAccounts();
  let revoked;
  try {
    await state.app.acquireTokenSilent({ account, scopes: [SCOPE], forceRefresh: true });
  } catch (e) {
    revoked = e;
  }
  check(revoked && revoked.errorCode === 'invalid_grant', `refresh after the replay: ${revoked ? msalError(revoked) : 'succeeded'}`);
  console.log(`   replay: ${again.errorCode}; the code's refresh token: ${revoked.errorCode}`);
}

async function clientCredentials() {
  const app = confidentialApp(auto, DAEMON_ID, secretOf(auto, DAEMON_ID));
  const result = await app.acquireTokenByClientCredential({ scopes: [`api://${API_ID}/.default`] });
  const c = claims(result.accessToken);
  check(c.idtyp === 'app', `idtyp ${c.idtyp}`);
  check(JSON.stringify(c.roles) === JSON.stringify(['MCP.Tools.All']), `roles ${JSON.stringify(c.roles)}`);
  check(c.aud === API_ID && c.azp === DAEMON_ID && c.azpacr === '1', `aud ${c.aud} azp ${c.azp} azpacr ${c.azpacr}`);
  check(!('scp' in c), 'an app-only token carries scp');
  const again = await app.acquireTokenByClientCredential({ scopes: [`api://${API_ID}/.default`] });
  check(again.fromCache && again.accessToken === result.accessToken, 'a second call did not come from MSAL\'s cache');
  console.log(`   token: idtyp=${c.idtyp} roles=${JSON.stringify(c.roles)}`);
}

async function wrongSecret() {
  const app = confidentialApp(auto, DAEMON_ID, 'not-the-secret');
  let err;
  try {
    await app.acquireTokenByClientCredential({ scopes: [`api://${API_ID}/.default`] });
  } catch (e) {
    err = e;
  }
  check(err, 'a wrong secret produced a token');
  check(err.errorCode === 'invalid_client' && /AADSTS7000215/.test(err.errorMessage ?? ''), `error: ${msalError(err)}`);
  console.log(`   error=${err.errorCode}`);
}

const cases = [
  ['device_code_auto_approved', deviceCodeAutoApproved],
  ['device_code_approved_by_a_person', deviceCodeApprovedByAPerson],
  ['auth_code_with_pkce', authCodeWithPkce],
  ['silent_refresh', silentRefresh],
  ['replayed_code_revokes_what_it_bought', replayedCodeRevokesWhatItBought],
  ['client_credentials', clientCredentials],
  ['wrong_secret', wrongSecret],
];

console.log(`   auto:   ${auto.authority}\n   manual: ${manual.authority}`);
let passed = 0;
let failed = 0;
for (const [name, run] of cases) {
  const t = Date.now();
  try {
    await run();
    passed += 1;
    console.log(`ok   ${name} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed += 1;
    const detail = e instanceof CaseFailed ? e.message : `${msalError(e)}\n${redact(e.stack ?? '')}`;
    console.log(`FAIL ${name} (${((Date.now() - t) / 1000).toFixed(1)} s): ${redact(detail)}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
