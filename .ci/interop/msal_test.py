"""MSAL for Python against mcpgate's development identity provider.

Run by .ci/interop/msal (which prepares the venv and builds the binary):

    python msal_test.py --bin target/debug/mcpgate --work DIR

Each case asserts and says why it failed; the last line is
"N passed, M failed", and the exit code is 1 if anything failed. Tokens and
secrets are never printed, only the claims a case checks.
"""

import argparse
import ctypes
import hashlib
import html.parser
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from base64 import urlsafe_b64decode
from pathlib import Path

import msal
import requests

API_ID = "3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21"
DESKTOP_ID = "b5a2e8d4-1c3f-4a6b-8e9d-0f7c2a4b6d13"
DAEMON_ID = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6"
GRAPH_ID = "00000003-0000-0000-c000-000000000000"
SCOPE = f"api://{API_ID}/mcp:tools"
ALICE = "alice@mcpgate.test"
BOB = "bob@mcpgate.test"
MCP_VERSION = "2026-07-28"


# Conditional Access, as Entra answers it: a policy requiring MFA for the
# MCP API for alice, and one requiring it for Graph for bob.
MFA_API_POLICY = "c0a1b2c3-d4e5-4f60-8a7b-9c0d1e2f3a4b"
MFA_GRAPH_POLICY = "c0a1b2c3-d4e5-4f60-8a7b-9c0d1e2f3a4c"
CA_DIRECTORY = f"""
[[tenants]]
id = "7c3e9f2a-0d1b-4e5a-9c8b-2f6a1d4e8b30"
name = "Conditional Access test tenant"

[[apps]]
client_id = "{API_ID}"
name = "mcpgate MCP server"
scopes = ["mcp:tools"]
pre_authorized = ["{DESKTOP_ID}"]
granted = {{ graph = ["User.Read"] }}

[[apps]]
client_id = "{DESKTOP_ID}"
name = "mcpgate desktop"
public_client = true
redirect_uris = ["http://localhost", "http://localhost/callback"]
granted = {{ graph = ["User.Read"] }}

[[users]]
username = "{ALICE}"
display_name = "Alice Adams"
password = "dev-only"

[[users]]
username = "{BOB}"
display_name = "Bob Baker"
password = "dev-only"

[[conditional_access]]
name = "Require MFA for the MCP API"
id = "{MFA_API_POLICY}"
users = ["{ALICE}"]
resources = ["{API_ID}"]
require = "mfa"

[[conditional_access]]
name = "Require MFA for Graph"
id = "{MFA_GRAPH_POLICY}"
users = ["{BOB}"]
resources = ["graph"]
require = "mfa"
"""


def capolids_claims(policy):
    return json.dumps({"access_token": {"capolids": {"essential": True, "values": [policy]}}},
                      separators=(",", ":"))


class CaseFailed(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise CaseFailed(message)


# Anything that looks like a JWT, and every secret this run has read, is
# masked before a diagnostic is printed.
_SECRETS = []
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact(text):
    text = _JWT.sub("<token redacted>", str(text))
    for s in _SECRETS:
        text = text.replace(s, "<secret redacted>")
    return text


def claims(token):
    """The payload of a JWT, unverified: the IdP and mcpgate verify; the
    test only reads what it asserts."""
    check(isinstance(token, str) and token.count(".") == 2, "not a JWT")
    payload = token.split(".")[1]
    return json.loads(urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def msal_error(result):
    """An MSAL error result, safe to print."""
    if not isinstance(result, dict):
        return repr(result)
    keys = ("error", "error_description", "error_codes", "suberror")
    return redact({k: result.get(k) for k in keys if k in result})


def require_token(result, what):
    check(isinstance(result, dict), f"{what}: MSAL returned {result!r}")
    check("access_token" in result, f"{what}: no access token: {msal_error(result)}")
    return result["access_token"]


# --- servers ---------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    # Should this test be killed outright, its servers go with it.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Server:
    """One `mcpgate idp` or `mcpgate serve`, on a free loopback port, with its
    own data directory (so its own CA) under the work directory."""

    running = []

    def __init__(self, bin_path, work, name, command, auto_approve=None, extra_args=()):
        self.name = name
        self.dir = Path(work) / name
        self.dir.mkdir(parents=True)
        self.ready_file = self.dir / "ready.json"
        self.log_path = self.dir / "log.txt"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGATE_")}
        if auto_approve:
            env["MCPGATE_IDP_AUTO_APPROVE"] = auto_approve
        args = [str(bin_path), command, "--bind", "127.0.0.1:0",
                "--data-dir", str(self.dir / "data"),
                "--ready-file", str(self.ready_file), *extra_args]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        Server.running.append(self)
        self.ready = None

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CaseFailed(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.ready = json.loads(self.ready_file.read_text())
                return self.ready
            except (OSError, ValueError):
                time.sleep(0.05)
        raise CaseFailed(f"{self.name} was not ready after {timeout} s:\n{self.log_tail()}")

    @property
    def idp(self):
        """The IdP part of the ready file (`serve` nests it under `idp`)."""
        return self.ready.get("idp", self.ready)

    def secret(self, client_id):
        client = next(c for c in self.idp["clients"] if c["client_id"] == client_id)
        secret = Path(client["secret_file"]).read_text().strip()
        _SECRETS.append(secret)
        return secret

    def log_tail(self, lines=30):
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return redact("\n".join(text.splitlines()[-lines:]))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    @classmethod
    def stop_all(cls):
        for s in cls.running:
            s.stop()
        cls.running = []


def public_app(authority):
    # instance_discovery=False: there is no login.microsoftonline.com to ask
    # whether this authority is known, and no internet to reach it with.
    return msal.PublicClientApplication(
        DESKTOP_ID, authority=authority, instance_discovery=False, timeout=30)


def confidential_app(client_id, secret, authority):
    return msal.ConfidentialClientApplication(
        client_id, client_credential=secret, authority=authority,
        instance_discovery=False, timeout=30)


# --- the device-code page, as a person uses it -------------------------------

class Forms(html.parser.HTMLParser):
    """The forms of a page: for each, its hidden and text inputs by name,
    the options of its selects, and its buttons' ids and data-user."""

    def __init__(self, text):
        super().__init__()
        self.forms = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "inputs": {}, "options": [], "buttons": []})
        elif not self.forms:
            return
        elif tag == "input" and "name" in a:
            self.forms[-1]["inputs"][a["name"]] = a.get("value") or ""
        elif tag == "option":
            self.forms[-1]["options"].append(a.get("value"))
        elif tag == "button":
            self.forms[-1]["buttons"].append(a)


def answer_device_code(idp, user_code, username, action):
    """Opens /devicelogin in a fresh browser-like session (so it gets the
    CSRF cookie), fills in the form and submits it. Returns the result page."""
    with requests.Session() as s:
        page = s.get(idp["device_login_url"], timeout=30)
        check(page.status_code == 200, f"GET /devicelogin: {page.status_code}")
        check(page.headers.get("x-frame-options", "").upper() == "DENY",
              "/devicelogin must not be framable (X-Frame-Options: DENY)")
        forms = Forms(page.text).forms
        check(len(forms) == 1, f"/devicelogin has {len(forms)} forms, want 1")
        form = forms[0]
        check(form["inputs"].get("csrf"), "/devicelogin has no csrf field")
        check(username in form["options"], f"/devicelogin does not offer {username}")
        ids = {b.get("id") for b in form["buttons"]}
        check({"approve", "deny"} <= ids, "/devicelogin lacks #approve/#deny")
        # Every field of the form as the page gave it (the CSRF value and
        # the flow it belongs to), then what a person fills in.
        data = dict(form["inputs"])
        data.update({"user_code": user_code, "username": username,
                     "password": "", "action": action})
        return s.post(idp["device_login_url"], timeout=30, data=data)


def sign_in_by_form(auth_uri, redirect_uri, username, mfa_codes=()):
    """Follows an authorize URL the way a browser would, picks `username` on
    the sign-in page, and returns the redirect (not followed: nothing listens
    on the loopback redirect URI) as a dict of its query parameters."""
    with requests.Session() as s:
        page = s.get(auth_uri, timeout=30, allow_redirects=False)
        check(page.status_code == 200, f"GET authorize: {page.status_code} {redact(page.text[:300])}")
        picks = [f for f in Forms(page.text).forms
                 if any(b.get("data-user") == username for b in f["buttons"])]
        check(len(picks) == 1, f"the sign-in page has no one-click button for {username}")
        done = s.post(auth_uri, data=picks[0]["inputs"], timeout=30, allow_redirects=False)
        # The second-factor step, when Conditional Access asks for it: each
        # code in turn, as a person would type them.
        for code in mfa_codes:
            check(done.status_code == 200, f"second-factor step: {done.status_code}")
            check("Enter the code from your authenticator app" in done.text,
                  f"no second-factor step: {redact(done.text[:300])}")
            steps = [f for f in Forms(done.text).forms if "otp" in f["inputs"]]
            check(len(steps) == 1, "the second-factor page has no code field")
            data = dict(steps[0]["inputs"])
            data["otp"] = code
            done = s.post(auth_uri, data=data, timeout=30, allow_redirects=False)
        if done.status_code == 302:
            query = urllib.parse.urlsplit(done.headers["location"]).query
            return dict(urllib.parse.parse_qsl(query))
        # response_mode=form_post: a page whose one form posts the response
        # to the redirect URI; its fields are what the client would receive.
        forms = Forms(done.text).forms if done.status_code == 200 else []
        check(len(forms) == 1, f"sign-in POST: {done.status_code} {redact(done.text[:300])}")
        check(forms[0]["action"] == redirect_uri,
              f"the form_post page posts to {forms[0]['action']!r}, not the redirect URI")
        return forms[0]["inputs"]


# --- the cases ----------------------------------------------------------------

class Suite:
    def __init__(self, args):
        self.bin = Path(args.bin)
        self.work = Path(args.work)
        self.state = {}

    def start(self):
        # Started together: their key and certificate generation overlaps.
        self.auto = Server(self.bin, self.work, "idp-auto", "idp", auto_approve=ALICE)
        self.manual = Server(self.bin, self.work, "idp-manual", "idp")
        self.serve = Server(self.bin, self.work, "serve", "serve", auto_approve=ALICE)
        # A directory with Conditional Access: MFA for the MCP API for
        # alice, and MFA for Graph for bob (for On-Behalf-Of).
        directory = self.work / "ca-directory.toml"
        directory.write_text(CA_DIRECTORY)
        self.ca = Server(self.bin, self.work, "idp-ca", "idp",
                         extra_args=("--idp-directory", str(directory)))
        for s in (self.auto, self.manual, self.serve, self.ca):
            s.wait_ready()
        # One bundle of the three development CAs, so that requests (and so
        # MSAL) trusts all three IdPs, and nothing else.
        bundle = self.work / "ca-bundle.pem"
        bundle.write_text("".join(
            Path(s.idp["ca_file"]).read_text() for s in (self.auto, self.manual, self.serve, self.ca)))
        os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
        for var in ("CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
            os.environ.pop(var, None)
        for s in (self.auto, self.manual, self.serve, self.ca):
            print(f"   {s.name}: {s.idp['authority']}")

    def case_a_device_flow_auto_approved(self):
        idp = self.auto.idp
        app = public_app(idp["authority"])
        flow = app.initiate_device_flow(scopes=[SCOPE])
        check("user_code" in flow, f"initiate_device_flow failed: {msal_error(flow)}")
        check(flow.get("verification_uri") == idp["device_login_url"],
              f"verification_uri {flow.get('verification_uri')!r} is not {idp['device_login_url']!r}")
        result = app.acquire_token_by_device_flow(flow)
        token = require_token(result, "device flow")
        c = claims(token)
        check(c.get("aud") == API_ID, f"aud {c.get('aud')!r}, want {API_ID}")
        check(c.get("iss") == idp["issuer"], f"iss {c.get('iss')!r}, want {idp['issuer']}")
        check(c.get("ver") == "2.0", f"ver {c.get('ver')!r}")
        check(c.get("scp") == "mcp:tools", f"scp {c.get('scp')!r}")
        check(c.get("preferred_username") == ALICE, f"preferred_username {c.get('preferred_username')!r}")
        check(c.get("azp") == DESKTOP_ID, f"azp {c.get('azp')!r}")
        check(c.get("tid") == idp["tenant_id"], f"tid {c.get('tid')!r}")
        check("MCP.Tools.All" in c.get("roles", []), f"roles {c.get('roles')!r}")
        idc = result.get("id_token_claims") or {}
        check(idc.get("preferred_username") == ALICE,
              f"id_token_claims.preferred_username {idc.get('preferred_username')!r}")
        check(idc.get("aud") == DESKTOP_ID, f"id token aud {idc.get('aud')!r}")
        check(result.get("refresh_token"), "no refresh token (MSAL asks offline_access)")
        print(f"   token: preferred_username={c['preferred_username']} scp={c['scp']} roles={c.get('roles')}")

        accounts = app.get_accounts()
        check([a.get("username") for a in accounts] == [ALICE],
              f"get_accounts() gave {[a.get('username') for a in accounts]}")
        # The account's home id comes from client_info: uid.utid.
        check(accounts[0].get("home_account_id") == f"{c['oid']}.{c['tid']}",
              "home_account_id is not <oid>.<tid> (client_info)")

        cached = app.acquire_token_silent([SCOPE], account=accounts[0])
        check(require_token(cached, "silent (cache)") == token, "silent without force_refresh did not use the cache")

        # Twice: the IdP rotates refresh tokens, so the second refresh only
        # works if MSAL stored the rotated one the first returned.
        seen = {token}
        for i in (1, 2):
            refreshed = app.acquire_token_silent([SCOPE], account=accounts[0], force_refresh=True)
            new = require_token(refreshed, f"refresh #{i}")
            check(new not in seen, f"refresh #{i} returned a token already seen")
            check(refreshed.get("token_source", "identity_provider") == "identity_provider",
                  f"refresh #{i} token_source {refreshed.get('token_source')!r}")
            rc = claims(new)
            check(rc.get("preferred_username") == ALICE and rc.get("scp") == "mcp:tools",
                  f"refresh #{i} claims: {rc.get('preferred_username')!r} {rc.get('scp')!r}")
            seen.add(new)
        # One refresh token, another resource: MSAL's silent call for Graph
        # rides on the API's refresh token, as Entra allows for any resource
        # the client has consent for (the desktop client has User.Read).
        graph = app.acquire_token_silent(["User.Read"], account=accounts[0])
        gc = claims(require_token(graph, "silent Graph token from the API's refresh token"))
        check(gc.get("aud") == GRAPH_ID and "User.Read" in gc.get("scp", "").split(),
              f"Graph token by refresh: aud {gc.get('aud')!r} scp {gc.get('scp')!r}")
        self.state["alice_token"] = token

    def case_b_device_flow_person(self):
        idp = self.manual.idp
        app = public_app(idp["authority"])
        flow = app.initiate_device_flow(scopes=[SCOPE])
        check("user_code" in flow, f"initiate_device_flow failed: {msal_error(flow)}")
        interval = int(flow.get("interval", 5))
        # Bob approves a moment after MSAL starts polling: its first poll sees
        # authorization_pending, it waits `interval`, and the next one succeeds.
        outcome = {}

        def person():
            time.sleep(1)
            try:
                outcome["page"] = answer_device_code(idp, flow["user_code"], BOB, "approve")
            except Exception as e:  # reported by the main thread
                outcome["error"] = e

        t = threading.Thread(target=person, daemon=True)
        begun = time.monotonic()
        t.start()
        result = app.acquire_token_by_device_flow(flow)
        took = time.monotonic() - begun
        t.join()
        if "error" in outcome:
            raise outcome["error"]
        page = outcome["page"]
        check(page.status_code == 200 and "signed in" in page.text,
              f"approving on /devicelogin: {page.status_code} {redact(page.text[:300])}")
        token = require_token(result, "device flow approved by bob")
        c = claims(token)
        check(c.get("preferred_username") == BOB, f"preferred_username {c.get('preferred_username')!r}")
        check(c.get("scp") == "mcp:tools", f"scp {c.get('scp')!r}")
        check("roles" not in c, f"bob has no app role, token has {c.get('roles')!r}")
        check(took >= interval - 0.5,
              f"got a token after {took:.1f} s: MSAL never saw authorization_pending")
        print(f"   approved after a pending poll ({took:.1f} s): preferred_username={c['preferred_username']}")

        # A denied code: MSAL stops polling and hands back the IdP's error.
        flow = app.initiate_device_flow(scopes=[SCOPE])
        check("user_code" in flow, f"initiate_device_flow failed: {msal_error(flow)}")
        page = answer_device_code(idp, flow["user_code"], BOB, "deny")
        check(page.status_code == 200 and "denied" in page.text.lower(),
              f"denying on /devicelogin: {page.status_code} {redact(page.text[:300])}")
        result = app.acquire_token_by_device_flow(flow)
        check("access_token" not in result, "a denied device code produced a token")
        print(f"   denied: error={result.get('error')} error_codes={result.get('error_codes')}")
        check(result.get("error") == "access_denied",
              f"denied device code: {msal_error(result)} (RFC 8628 says access_denied)")

        # The form refuses a post that did not come from the page.
        flow = app.initiate_device_flow(scopes=[SCOPE])
        r = requests.post(idp["device_login_url"], timeout=30, data={
            "csrf": "forged", "user_code": flow["user_code"], "username": BOB, "action": "approve"})
        check(r.status_code == 403, f"a POST without the CSRF cookie got {r.status_code}")

    def case_c_client_credentials(self):
        idp = self.auto.idp
        app = confidential_app(DAEMON_ID, self.auto.secret(DAEMON_ID), idp["authority"])
        result = app.acquire_token_for_client(scopes=[f"api://{API_ID}/.default"])
        token = require_token(result, "client credentials")
        c = claims(token)
        check(c.get("idtyp") == "app", f"idtyp {c.get('idtyp')!r}")
        check(c.get("roles") == ["MCP.Tools.All"], f"roles {c.get('roles')!r}")
        check(c.get("aud") == API_ID, f"aud {c.get('aud')!r}")
        check(c.get("azp") == DAEMON_ID and c.get("azpacr") == "1", f"azp {c.get('azp')!r} azpacr {c.get('azpacr')!r}")
        check("scp" not in c, "an app-only token carries scp")
        check(c.get("oid") and c.get("oid") == c.get("sub"), "oid/sub of the service principal")
        print(f"   token: idtyp={c['idtyp']} roles={c['roles']}")
        again = app.acquire_token_for_client(scopes=[f"api://{API_ID}/.default"])
        check(require_token(again, "client credentials (cache)") == token,
              "a second acquire_token_for_client did not come from MSAL's cache")
        self.state["app_token"] = token

    def case_d_on_behalf_of(self):
        idp = self.auto.idp
        check("alice_token" in self.state, "needs case a's token")
        app = confidential_app(API_ID, self.auto.secret(API_ID), idp["authority"])
        result = app.acquire_token_on_behalf_of(
            user_assertion=self.state["alice_token"], scopes=["User.Read"])
        token = require_token(result, "on-behalf-of")
        c = claims(token)
        check(c.get("aud") == GRAPH_ID, f"aud {c.get('aud')!r}, want Graph")
        check(c.get("ver") == "1.0", f"Graph tokens are v1, ver {c.get('ver')!r}")
        check("User.Read" in c.get("scp", "").split(), f"scp {c.get('scp')!r}")
        check(c.get("upn") == ALICE, f"upn {c.get('upn')!r}")
        check(c.get("appid") == API_ID, f"appid {c.get('appid')!r}")
        me = requests.get(f"{idp['base_url']}/v1.0/me", timeout=30,
                          headers={"Authorization": f"Bearer {token}"})
        check(me.status_code == 200, f"/v1.0/me: {me.status_code} {redact(me.text[:300])}")
        upn = me.json().get("userPrincipalName")
        check(upn == ALICE, f"/v1.0/me userPrincipalName {upn!r}")
        print(f"   Graph token: upn={c['upn']} scp={c['scp']}; /v1.0/me userPrincipalName={upn}")
        # The API's own token is not a Graph token.
        me = requests.get(f"{idp['base_url']}/v1.0/me", timeout=30,
                          headers={"Authorization": f"Bearer {self.state['alice_token']}"})
        check(me.status_code == 401, f"/v1.0/me with the API's token: {me.status_code}")
        self.state["graph_token"] = token

    def case_e_wrong_secret(self):
        idp = self.auto.idp
        app = confidential_app(DAEMON_ID, "not-the-secret", idp["authority"])
        result = app.acquire_token_for_client(scopes=[f"api://{API_ID}/.default"])
        check("access_token" not in result, "a wrong secret produced a token")
        check(result.get("error") == "invalid_client", f"error: {msal_error(result)}")
        check(7000215 in (result.get("error_codes") or []), f"error_codes: {msal_error(result)}")
        print(f"   error={result['error']} error_codes={result['error_codes']}")

    def explain(self, token):
        idp = self.auto.idp
        out = subprocess.run(
            [str(self.bin), "explain", "--issuer", idp["issuer"],
             "--audience", f"api://{API_ID}", "--audience", API_ID,
             "--required-scope", SCOPE, "--ca-file", idp["ca_file"], "-"],
            input=token, capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("MCPGATE_")})
        return out.returncode, out.stdout + out.stderr

    def case_f_mcpgate_explain(self):
        for key in ("alice_token", "graph_token", "app_token"):
            check(key in self.state, f"needs the {key} of the cases before")
        rc, out = self.explain(self.state["alice_token"])
        check(rc == 0, f"alice's token was refused (exit {rc}):\n{redact(out)}")
        check("ACCEPTED" in out, f"no ACCEPTED verdict:\n{redact(out)}")
        rc, out = self.explain(self.state["graph_token"])
        check(rc != 0, "the Graph token was accepted")
        check("Microsoft Graph" in out, f"the refusal does not name Microsoft Graph:\n{redact(out)}")
        print(f"   delegated: accepted; Graph: refused ({next((l.strip() for l in out.splitlines() if 'verdict' in l), '?')})")
        # App-only tokens stay out unless the server allows them.
        rc, out = self.explain(self.state["app_token"])
        check(rc != 0, "the app-only token was accepted by a delegated-only policy")

    def case_g_serve_end_to_end(self):
        ready = self.serve.ready
        idp = self.serve.idp
        # serve runs its broker on defaults (the metadata names mcpgate);
        # it still takes the IdP's own tokens, as it would Entra's: MSAL
        # asks the IdP for the API's scope and calls /mcp with the token.
        check(idp["issuer"] in (ready.get("issuers") or []), "serve does not trust its embedded IdP")
        scopes = [s for c in idp["clients"] for s in c.get("scopes", [])][:1]
        check(scopes, "the embedded IdP exposes no API scope")
        app = public_app(idp["authority"])
        flow = app.initiate_device_flow(scopes=scopes)
        check("user_code" in flow, f"initiate_device_flow failed: {msal_error(flow)}")
        token = require_token(app.acquire_token_by_device_flow(flow), "device flow (serve)")

        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "whoami", "arguments": {}, "_meta": {
                "io.modelcontextprotocol/protocolVersion": MCP_VERSION,
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}}}}
        headers = {"accept": "application/json, text/event-stream",
                   "mcp-protocol-version": MCP_VERSION,
                   "mcp-method": "tools/call", "mcp-name": "whoami"}
        url = ready["mcp_url"]
        r = requests.post(url, json=body, headers=headers, timeout=30)
        check(r.status_code == 401, f"no token: {r.status_code}, want 401")
        challenge = r.headers.get("www-authenticate", "")
        check(challenge.startswith("Bearer") and "resource_metadata=" in challenge,
              f"401 challenge: {challenge!r}")
        r = requests.post(url, json=body, timeout=30,
                          headers={**headers, "Authorization": f"Bearer {token}"})
        check(r.status_code == 200, f"with alice's token: {r.status_code} {redact(r.text[:300])}")
        reply = parse_mcp_reply(r)
        check("result" in reply, f"no result: {redact(json.dumps(reply)[:300])}")
        who = reply["result"].get("structuredContent") or {}
        if not who:
            text = "".join(c.get("text", "") for c in reply["result"].get("content", []))
            who = json.loads(text) if text.startswith("{") else {}
        check(who.get("preferred_username") == ALICE,
              f"whoami names {who.get('preferred_username')!r}, want {ALICE}")
        check(who.get("token_kind") == "delegated", f"token_kind {who.get('token_kind')!r}")
        print(f"   whoami: preferred_username={who['preferred_username']} kind={who['token_kind']} scopes={who.get('scopes')}")


    def case_h_auth_code_flow(self):
        # MSAL's own PKCE, state and nonce, with the person's part (the
        # sign-in page) played by requests; the browser suite does it in
        # Chromium without MSAL.
        idp = self.manual.idp
        app = public_app(idp["authority"])
        redirect_uri = "http://localhost:8400/callback"  # loopback: any port
        flow = app.initiate_auth_code_flow(
            scopes=[SCOPE], redirect_uri=redirect_uri, response_mode="form_post")
        check("auth_uri" in flow, f"initiate_auth_code_flow: {msal_error(flow)}")
        response = sign_in_by_form(flow["auth_uri"], redirect_uri, BOB)
        check(response.get("state") == flow["state"], "the redirect's state is not MSAL's")
        check("code" in response, f"the redirect has no code: {sorted(response)}")
        result = app.acquire_token_by_auth_code_flow(flow, response)
        c = claims(require_token(result, "auth code flow"))
        check(c.get("preferred_username") == BOB and c.get("scp") == "mcp:tools",
              f"claims {c.get('preferred_username')!r} {c.get('scp')!r}")
        idc = result.get("id_token_claims") or {}
        # MSAL sends the SHA-256 of its nonce and has already compared the
        # ID token's against it; this only makes sure there was one.
        check(idc.get("nonce") == hashlib.sha256(flow["nonce"].encode()).hexdigest(),
              "the ID token does not echo MSAL's nonce")
        check(c.get("azpacr") == "0", f"a public client's azpacr is 0, got {c.get('azpacr')!r}")
        print(f"   token: preferred_username={c['preferred_username']}; id token nonce matches")
        # A code is single-use: MSAL's second redemption must fail.
        again = app.acquire_token_by_auth_code_flow(flow, response)
        check("access_token" not in again, "an authorization code was redeemed twice")

    def case_i_claims_challenge(self):
        # The claims challenge as MSAL meets it: a silent token for the
        # covered API from a sign-in without MFA is refused with 50076 and a
        # `claims` value; an interactive sign-in with that claims_challenge
        # asks the second factor, and the token then says so.
        idp = self.ca.idp
        app = public_app(idp["authority"])
        redirect_uri = "http://localhost:8401/callback"
        flow = app.initiate_auth_code_flow(scopes=["User.Read"], redirect_uri=redirect_uri,
                                           response_mode="form_post")
        response = sign_in_by_form(flow["auth_uri"], redirect_uri, ALICE)
        graph = require_token(app.acquire_token_by_auth_code_flow(flow, response),
                              "Graph token for alice (no rule: no MFA)")
        check(claims(graph).get("amr") == ["pwd"], f"amr {claims(graph).get('amr')!r}, want ['pwd']")
        accounts = app.get_accounts()
        check(len(accounts) == 1, f"get_accounts() gave {len(accounts)} accounts")

        refused = app.acquire_token_silent_with_error([SCOPE], account=accounts[0])
        check(isinstance(refused, dict) and "access_token" not in (refused or {}),
              f"a silent token for the covered API without MFA: {msal_error(refused)}")
        check(refused.get("error") == "invalid_grant", f"silent refresh: {msal_error(refused)}")
        check(50076 in (refused.get("error_codes") or []), f"error_codes: {msal_error(refused)}")
        check(refused.get("suberror") == "basic_action", f"suberror: {msal_error(refused)}")
        challenge = refused.get("claims")
        check(challenge == capolids_claims(MFA_API_POLICY),
              f"claims {challenge!r}, want the API policy's capolids")
        print(f"   silent: error={refused['error']} error_codes={refused['error_codes']} claims={challenge}")
        # The refresh token was not spent: Graph still comes silently.
        again = app.acquire_token_silent_with_error(["User.Read"], account=accounts[0], force_refresh=True)
        require_token(again, "Graph by refresh after the refusal")

        # Step up: MSAL's own claims_challenge; a wrong code first.
        flow = app.initiate_auth_code_flow(scopes=[SCOPE], redirect_uri=redirect_uri,
                                           claims_challenge=challenge, login_hint=ALICE,
                                           response_mode="form_post")
        check("claims=" in flow["auth_uri"], "MSAL did not put claims in the authorize URL")
        response = sign_in_by_form(flow["auth_uri"], redirect_uri, ALICE, mfa_codes=("123456", "000000"))
        # MSAL keeps the claims in the flow and sends them with the code too.
        result = app.acquire_token_by_auth_code_flow(flow, response)
        token = require_token(result, "auth code flow with claims_challenge")
        c = claims(token)
        check(c.get("aud") == API_ID and c.get("scp") == "mcp:tools", f"aud {c.get('aud')!r} scp {c.get('scp')!r}")
        check("mfa" in (c.get("amr") or []), f"amr {c.get('amr')!r}, want mfa")
        idc = result.get("id_token_claims") or {}
        check("mfa" in (idc.get("amr") or []), f"id token amr {idc.get('amr')!r}")
        print(f"   stepped up: amr={c['amr']}")
        # The new refresh token remembers the second factor.
        accounts = app.get_accounts()
        silent = app.acquire_token_silent_with_error([SCOPE], account=accounts[0], force_refresh=True)
        check("mfa" in (claims(require_token(silent, "silent refresh after MFA")).get("amr") or []),
              "the refreshed token lost amr mfa")

    def case_j_obo_claims_challenge(self):
        # On-Behalf-Of with an assertion whose amr lacks mfa, for a
        # downstream resource a rule covers: interaction_required + claims.
        idp = self.ca.idp
        app = public_app(idp["authority"])
        redirect_uri = "http://localhost:8402/callback"
        flow = app.initiate_auth_code_flow(scopes=[SCOPE], redirect_uri=redirect_uri,
                                           response_mode="form_post")
        response = sign_in_by_form(flow["auth_uri"], redirect_uri, BOB)
        bob = require_token(app.acquire_token_by_auth_code_flow(flow, response), "API token for bob")
        check(claims(bob).get("amr") == ["pwd"], f"amr {claims(bob).get('amr')!r}")
        api = confidential_app(API_ID, self.ca.secret(API_ID), idp["authority"])
        result = api.acquire_token_on_behalf_of(user_assertion=bob, scopes=["User.Read"])
        check("access_token" not in result, "OBO without MFA for a covered resource gave a token")
        check(result.get("error") == "interaction_required", f"OBO: {msal_error(result)}")
        check(50076 in (result.get("error_codes") or []), f"OBO error_codes: {msal_error(result)}")
        check(result.get("claims") == capolids_claims(MFA_GRAPH_POLICY),
              f"OBO claims {result.get('claims')!r}")
        print(f"   OBO: error={result['error']} error_codes={result['error_codes']} claims={result['claims']}")


def parse_mcp_reply(resp):
    """A JSON-RPC reply sent as JSON or as one SSE event."""
    ctype = resp.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        data = [line[5:].strip() for line in resp.text.splitlines() if line.startswith("data:")]
        for d in data:
            if d:
                msg = json.loads(d)
                if "result" in msg or "error" in msg:
                    return msg
        raise CaseFailed(f"no JSON-RPC reply in the event stream: {redact(resp.text[:300])}")
    return resp.json()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    # A TERM (from the wrapper's trap or its time limit) unwinds through the
    # finally below, which stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    suite = Suite(args)
    cases = [getattr(suite, n) for n in sorted(dir(suite)) if n.startswith("case_")]
    passed = failed = 0
    try:
        t0 = time.monotonic()
        try:
            suite.start()
        except Exception as e:
            print(f"FAIL starting the servers: {redact(e)}")
            print(f"0 passed, {len(cases)} failed")
            return 1
        print(f"   servers ready in {time.monotonic() - t0:.1f} s (msal {msal.__version__})")
        for case in cases:
            name = case.__name__[len("case_"):]
            t = time.monotonic()
            try:
                case()
            except Exception as e:
                failed += 1
                detail = str(e) if isinstance(e, CaseFailed) else traceback.format_exc()
                print(f"FAIL {name} ({time.monotonic() - t:.1f} s): {redact(detail)}")
                for s in Server.running:
                    if s.proc.poll() is not None:
                        print(f"   {s.name} has exited ({s.proc.returncode}):\n{s.log_tail()}")
            else:
                passed += 1
                print(f"ok   {name} ({time.monotonic() - t:.1f} s)")
    finally:
        Server.stop_all()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
