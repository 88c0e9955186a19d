r"""The Python MCP SDK's stdio client (a host nobody here wrote) starts
`mcpgate stdio` against the development IdP and calls its tools.

Run by .ci/interop/stdio (which installs the packages and builds mcpgate):

    python stdio_test.py --bin target/debug/mcpgate --work DIR

Cases, in order, sharing one token cache:
 1. first start: `initialize` and `tools/list` need no sign-in; two
    `get_user_details` calls made at once lead to one device-code prompt
    (on stderr), which the test answers at the IdP's /devicelogin as alice
    would; both calls return her Graph profile;
 2. second start: the cache serves, silently: no prompt, same profile;
    and the same configured by a file's `[stdio]` section instead of flags;
 3. the cached access token expired: refreshed silently, no prompt, a new
    access token in the cache;
 4. `whoami` shows the token's claims and not the token;
 5. a revoked grant (the cache's refresh token replaced by garbage and the
    access token expired): a fresh sign-in, not a broken server;
 6. with `--sign-in-timeout 1` and nobody signing in, the call fails after
    a second saying what to do; the sign-in goes on, and once approved the
    next call succeeds, with one prompt in all;
 7. a host that takes URL elicitations gets the sign-in link (and code)
    as one, and can complete the sign-in alone;
 8. with no configuration, the development IdP running on this machine is
    found (and said so); with none running, one line says what to set;
 9. a Conditional Access rule that comes into force after a password
    sign-in: the refresh is refused with a claims challenge (AADSTS50076),
    and one new sign-in with the second factor serves the call;
10. `--logout` empties the cache.
Every line any server wrote on stdout must be a JSON-RPC message.

The last line is "N passed, M failed"; the exit code is 1 if anything
failed.
"""

import argparse
import ctypes
import html.parser
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import http.cookiejar
import ssl
import urllib.parse
import urllib.request

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

ALICE = "alice@mcpgate.test"
CODE = re.compile(r"enter the code ([A-Z0-9-]+)")


class CaseFailed(AssertionError):
    pass


def jwt_claims(token):
    """A JWT's payload, unverified (the server verifies)."""
    import base64
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def check(cond, message):
    if not cond:
        raise CaseFailed(message)


def _die_with_parent():
    # PR_SET_PDEATHSIG: the IdP dies with this test, however it ends.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class Forms(html.parser.HTMLParser):
    """The first form of a page: its inputs by name."""

    def __init__(self, text):
        super().__init__()
        self.inputs = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.inputs is None:
            self.inputs = {}
        elif tag == "input" and self.inputs is not None and "name" in a:
            self.inputs[a["name"]] = a.get("value") or ""


class Suite:
    def __init__(self, args):
        self.bin = args.bin
        self.work = Path(args.work)
        self.cache = self.work / "cache"
        self.stdout_log = self.work / "stdout.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGATE_")}
        self.idps = []
        self.idp = self.start_idp(self.work / "idp")
        self.client_id = next(c["client_id"] for c in self.idp["clients"] if c["public"])
        self.alice = next(u["display_name"] for u in self.idp["users"] if u["username"] == ALICE)
        self.runs = 0

    def start_idp(self, d, *extra, bind="127.0.0.1:0"):
        """`mcpgate idp` with its data in `d`; returns its ready file."""
        d.mkdir(parents=True, exist_ok=True)
        ready = d / "ready.json"
        if ready.exists():
            ready.unlink()
        log = open(d / "log.txt", "ab")  # noqa: SIM115 (closed in stop)
        proc = subprocess.Popen(
            [self.bin, "idp", "--bind", bind, "--data-dir", str(d / "data"),
             "--ready-file", str(ready), *extra],
            env=self.env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.idps.append((proc, log))
        deadline = time.monotonic() + 60
        while True:
            check(proc.poll() is None, "the IdP exited before it was ready")
            try:
                return json.loads(ready.read_text())
            except (OSError, ValueError):
                check(time.monotonic() < deadline, "the IdP was not ready after 60 s")
                time.sleep(0.05)

    def stop(self):
        for proc, log in self.idps:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
            log.close()

    def params(self, *extra, cache=None, configured=True, env=None, idp=None):
        # Through `tee`, so that every byte the server writes on stdout is
        # kept and checked; stdin goes straight to the server.
        script = '"$0" stdio "$@" | tee -a "$MCPGATE_TEST_STDOUT"'
        args = ["-c", script, self.bin]
        idp = idp or self.idp
        if configured:
            args += ["--authority", idp["authority"], "--client-id", self.client_id,
                     "--ca-file", idp["ca_file"]]
        args += ["--cache-dir", str(cache or self.cache), "--device-code", *extra]
        return StdioServerParameters(command="/bin/sh", args=args, env={
            **self.env, "MCPGATE_TEST_STDOUT": str(self.stdout_log), **(env or {})})

    def session(self, body, params=None, **callbacks):
        """Runs `body(session, stderr_path)` in one start of the server."""
        self.runs += 1
        errpath = self.work / f"stderr-{self.runs}.log"

        async def run():
            with anyio.fail_after(90), open(errpath, "w") as errlog:
                async with stdio_client(params or self.params(), errlog=errlog) as (r, w):
                    async with ClientSession(r, w, **callbacks) as s:
                        await s.initialize()
                        return await body(s, errpath)

        return anyio.run(run)

    async def approve_when_asked(self, errpath, skip=0, idp=None, second_factor=None):
        """Waits for a device-code prompt on the server's stderr (past the
        first `skip`) and approves it at /devicelogin, as alice."""
        for _ in range(600):
            found = CODE.findall(errpath.read_text(errors="replace"))[skip:]
            if found:
                break
            await anyio.sleep(0.05)
        else:
            raise CaseFailed(f"no device code on stderr: {errpath.read_text()}")
        await anyio.to_thread.run_sync(self.answer_device_code, found[0], idp, second_factor)

    def answer_device_code(self, user_code, idp=None, second_factor=None):
        """/devicelogin as a browser uses it: the page (and its CSRF cookie),
        then the form filled in and approved; with `second_factor`, the
        verification step it asks next is answered with that code."""
        idp = idp or self.idp
        tls = ssl.create_default_context(cafile=idp["ca_file"])
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=tls),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        url = idp["device_login_url"]
        with opener.open(url, timeout=30) as page:
            check(page.status == 200, f"GET /devicelogin: {page.status}")
            data = dict(Forms(page.read().decode()).inputs or {})
        data.update({"user_code": user_code, "username": ALICE, "password": "",
                     "action": "approve"})
        body = urllib.parse.urlencode(data).encode()
        with opener.open(url, data=body, timeout=30) as done:
            check(done.status == 200, f"POST /devicelogin: {done.status}")
            text = done.read().decode()
        if second_factor is None:
            return
        check("Verify your identity" in text, "the device page asked for no second factor")
        data = dict(Forms(text).inputs or {})
        data.update({"otp": second_factor, "action": "approve"})
        body = urllib.parse.urlencode(data).encode()
        with opener.open(url, data=body, timeout=30) as done:
            check(done.status == 200, f"POST /devicelogin (second factor): {done.status}")
            text = done.read().decode()
        check("Verify your identity" not in text, "the second factor was not taken")

    def profile_of(self, result):
        check(not result.is_error, f"get_user_details failed: {result.content}")
        profile = result.structured_content
        check(profile and profile.get("displayName") == self.alice,
              f"not alice's profile: {profile}")
        check(profile.get("userPrincipalName") == ALICE, f"upn: {profile}")
        return profile

    def token_file(self):
        files = list((self.cache / "mcpgate" / "tokens").glob("*.json"))
        check(len(files) == 1, f"{len(files)} token files in the cache")
        return files[0]

    # --- the cases -----------------------------------------------------------

    def case_first_start_signs_in_once_for_two_calls(self):
        async def body(s, errpath):
            tools = await s.list_tools()
            names = sorted(t.name for t in tools.tools)
            check(names == ["get_user_details", "whoami"], f"tools: {names}")
            check(not CODE.search(errpath.read_text()),
                  "a sign-in started before any tool was called")
            results = {}

            async def call(i):
                results[i] = await s.call_tool("get_user_details", {})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, 1)
                tg.start_soon(call, 2)
                tg.start_soon(self.approve_when_asked, errpath)
            for r in results.values():
                self.profile_of(r)
            prompts = CODE.findall(errpath.read_text())
            check(len(prompts) == 1, f"{len(prompts)} device codes for two calls: {prompts}")
        self.session(body)

    def case_second_start_is_silent(self):
        async def body(s, errpath):
            self.profile_of(await s.call_tool("get_user_details", {}))
            text = errpath.read_text()
            check("code" not in text and "Sign in" not in text,
                  f"a prompt on the second start: {text}")
        self.session(body)

    def case_a_config_file_configures_it_as_the_flags_do(self):
        config = self.work / "mcpgate.toml"
        config.write_text(f'ca_file = {json.dumps(self.idp["ca_file"])}\n\n[stdio]\n'
                          f'authority = {json.dumps(self.idp["authority"])}\n'
                          f'client_id = {json.dumps(self.client_id)}\n'
                          'scopes = ["User.Read"]\n')

        async def body(s, errpath):
            self.profile_of(await s.call_tool("get_user_details", {}))
            check(not CODE.search(errpath.read_text()), "a prompt despite the shared cache")
        self.session(body, self.params("--config", str(config), configured=False))

    def case_an_expired_access_token_is_refreshed_silently(self):
        path = self.token_file()
        cached = json.loads(path.read_text())
        before = cached["tokens"]["access_token"]
        cached["tokens"]["expires_at"] = int(time.time()) - 100
        path.write_text(json.dumps(cached))

        async def body(s, errpath):
            self.profile_of(await s.call_tool("get_user_details", {}))
            check(not CODE.search(errpath.read_text()), "a prompt instead of a refresh")
        self.session(body)
        after = json.loads(self.token_file().read_text())["tokens"]
        check(after["access_token"] != before, "the access token was not refreshed")
        check(after["expires_at"] > time.time(), "the new token is not current")

    def case_whoami_shows_claims_never_the_token(self):
        token = json.loads(self.token_file().read_text())["tokens"]["access_token"]

        async def body(s, errpath):
            r = await s.call_tool("whoami", {})
            check(not r.is_error, f"whoami: {r.content}")
            claims = r.structured_content
            check(claims.get("preferred_username") == ALICE or claims.get("upn") == ALICE,
                  f"claims: {claims}")
            check("User.Read" in str(claims.get("scp", "")), f"scp: {claims}")
            text = json.dumps(claims) + "".join(getattr(c, "text", "") for c in r.content)
            check(token not in text and token.split(".")[2] not in text, "whoami showed the token")
        self.session(body)

    def case_a_revoked_grant_leads_to_a_fresh_sign_in(self):
        path = self.token_file()
        cached = json.loads(path.read_text())
        cached["tokens"]["expires_at"] = int(time.time()) - 100
        cached["tokens"]["refresh_token"] = "revoked-" + "x" * 40
        path.write_text(json.dumps(cached))

        async def body(s, errpath):
            results = {}

            async def call():
                results[0] = await s.call_tool("get_user_details", {})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                tg.start_soon(self.approve_when_asked, errpath)
            self.profile_of(results[0])
            text = errpath.read_text()
            check("refused" in text, f"the refused refresh token is not reported: {text}")
        self.session(body)

    def case_a_call_waits_for_a_pending_sign_in_only_up_to_its_limit(self):
        async def body(s, errpath):
            first = await s.call_tool("get_user_details", {})
            check(first.is_error, f"a call returned before anyone signed in: {first.content}")
            text = "".join(getattr(c, "text", "") for c in first.content)
            check("still waiting" in text and "call the tool again" in text,
                  f"the timeout does not say what to do: {text}")
            # The sign-in went on without the call; once done, the next
            # call gets its token, and nobody is asked twice.
            await self.approve_when_asked(errpath)
            for _ in range(100):
                again = await s.call_tool("get_user_details", {})
                if not again.is_error:
                    break
                await anyio.sleep(0.2)
            self.profile_of(again)
            prompts = CODE.findall(errpath.read_text())
            check(len(prompts) == 1, f"{len(prompts)} device codes: {prompts}")
        self.session(body, self.params("--sign-in-timeout", "1", cache=self.work / "cache-2"))

    def case_a_host_with_url_elicitation_is_shown_the_sign_in_link(self):
        asked = []

        async def on_elicitation(context, params):
            asked.append(params.model_dump(mode="json", by_alias=True, exclude_none=True))
            # The host alone completes the sign-in: the code is in the
            # message it was given.
            code = CODE.search(params.message)
            check(code, f"no code in the elicitation: {params.message}")
            await anyio.to_thread.run_sync(self.answer_device_code, code.group(1))
            return types.ElicitResult(action="accept")

        async def body(s, errpath):
            self.profile_of(await s.call_tool("get_user_details", {}))
            check(len(asked) == 1, f"{len(asked)} elicitations")
            check(asked[0].get("mode") == "url", f"not a URL elicitation: {asked[0]}")
            check(asked[0].get("url") == self.idp["device_login_url"],
                  f"the link is not the IdP's device page: {asked[0]}")
            check(CODE.search(errpath.read_text()), "the prompt is not on stderr as well")
        self.session(body, self.params(cache=self.work / "cache-3"),
                     elicitation_callback=on_elicitation)

    def case_with_no_configuration_the_local_idp_is_found(self):
        data_dir = str(self.work / "idp" / "data")

        async def body(s, errpath):
            # The same authority and client as before: the shared cache
            # serves silently.
            self.profile_of(await s.call_tool("get_user_details", {}))
            text = errpath.read_text()
            check("DEVELOPMENT identity provider" in text,
                  f"using the local IdP is not said: {text}")
        self.session(body, self.params(configured=False, env={"MCPGATE_DATA_DIR": data_dir}))
        out = subprocess.run([self.bin, "stdio"], env={**self.env,
                             "MCPGATE_DATA_DIR": str(self.work / "nothing-here")},
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        check(out.returncode != 0, "started with nothing to sign in at")
        check(out.stdout == "", f"wrote on stdout: {out.stdout!r}")
        lines = out.stderr.strip().splitlines()
        check(len(lines) == 1 and "--authority" in lines[0],
              f"not one line saying what to set: {out.stderr!r}")

    def case_conditional_access_leads_to_one_sign_in_with_the_second_factor(self):
        """A rule "MFA for Graph for alice" comes into force after she
        signed in with her password alone: the silent refresh is refused
        (AADSTS50076 and a claims challenge), and the server signs her in
        again at once, the IdP asks for the second factor, and the call
        returns her profile; the new token carries amr mfa."""
        d = self.work / "idp-ca"
        directory = d / "directory.toml"
        d.mkdir(parents=True)
        base = (f'[[tenants]]\nid = "{self.idp["tenant_id"]}"\nname = "Contoso"\n\n'
                f'[[apps]]\nclient_id = "{self.client_id}"\nname = "mcpgate stdio"\n'
                'public_client = true\nredirect_uris = ["http://localhost", "http://127.0.0.1"]\n'
                'granted = { graph = ["User.Read"] }\n\n'
                f'[[users]]\nusername = "{ALICE}"\ndisplay_name = "{self.alice}"\n'
                'password = "stdio-suite-dev"\n')
        directory.write_text(base)
        idp = self.start_idp(d, "--idp-directory", str(directory))
        cache = self.work / "cache-ca"
        params = self.params(cache=cache, idp=idp)

        async def first(s, errpath):
            results = {}

            async def call():
                results[0] = await s.call_tool("get_user_details", {})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                tg.start_soon(self.approve_when_asked, errpath, 0, idp)
            self.profile_of(results[0])
        self.session(first, params)
        tokens = list((cache / "mcpgate" / "tokens").glob("*.json"))
        check(len(tokens) == 1, f"{len(tokens)} token files")
        cached = json.loads(tokens[0].read_text())
        check(jwt_claims(cached["tokens"]["access_token"]).get("amr") == ["pwd"],
              "the first sign-in was not by password alone")

        # The policy arrives: the same IdP (same port, keys and grants),
        # now with the rule; the cached access token has expired.
        port = urllib.parse.urlparse(idp["authority"]).port
        proc, _ = self.idps[-1]
        proc.terminate()
        proc.wait(10)
        directory.write_text(base + '\n[[conditional_access]]\nname = "MFA for Graph"\n'
                             f'users = ["{ALICE}"]\nresources = ["graph"]\nrequire = "mfa"\n')
        idp = self.start_idp(d, "--idp-directory", str(directory), bind=f"127.0.0.1:{port}")
        cached["tokens"]["expires_at"] = int(time.time()) - 100
        tokens[0].write_text(json.dumps(cached))

        async def second(s, errpath):
            results = {}

            async def call():
                results[0] = await s.call_tool("get_user_details", {})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                tg.start_soon(self.approve_when_asked, errpath, 0, idp, "000000")
            self.profile_of(results[0])
            text = errpath.read_text()
            prompts = CODE.findall(text)
            check(len(prompts) == 1, f"{len(prompts)} sign-ins for one challenge: {prompts}")
            check("AADSTS50076" in text and "signing in again with claims" in text
                  and "capolids" in text, f"the sign-in did not carry the challenge's claims: {text}")
        self.session(second, params)
        after = json.loads(tokens[0].read_text())["tokens"]["access_token"]
        amr = jwt_claims(after).get("amr")
        check(amr == ["pwd", "mfa"], f"the new token's amr is {amr}")
        log = (d / "log.txt").read_text(errors="replace")
        check("second factor is required" in log, "the IdP did not log the challenge it sent")

    def case_logout_empties_the_cache(self):
        self.token_file()
        out = subprocess.run([self.bin, "stdio", "--authority", self.idp["authority"],
                              "--client-id", self.client_id, "--ca-file", self.idp["ca_file"],
                              "--cache-dir", str(self.cache), "--logout"],
                             env=self.env, capture_output=True, text=True, timeout=30)
        check(out.returncode == 0, f"--logout: {out.returncode} {out.stderr}")
        check(out.stdout == "", f"--logout wrote on stdout: {out.stdout!r}")
        left = list((self.cache / "mcpgate" / "tokens").glob("*.json"))
        check(not left, f"token files left: {left}")

    def check_stdout(self):
        check(self.stdout_log.exists(), "no stdout was recorded")
        lines = self.stdout_log.read_text().splitlines()
        check(lines, "no stdout was recorded")
        for n, line in enumerate(lines, 1):
            try:
                message = json.loads(line)
            except ValueError:
                raise CaseFailed(f"stdout line {n} is not JSON: {line[:200]!r}") from None
            check(isinstance(message, dict) and message.get("jsonrpc") == "2.0",
                  f"stdout line {n} is not JSON-RPC: {line[:200]!r}")
        return len(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    suite = Suite(args)
    cases = [suite.case_first_start_signs_in_once_for_two_calls,
             suite.case_second_start_is_silent,
             suite.case_a_config_file_configures_it_as_the_flags_do,
             suite.case_an_expired_access_token_is_refreshed_silently,
             suite.case_whoami_shows_claims_never_the_token,
             suite.case_a_revoked_grant_leads_to_a_fresh_sign_in,
             suite.case_a_call_waits_for_a_pending_sign_in_only_up_to_its_limit,
             suite.case_a_host_with_url_elicitation_is_shown_the_sign_in_link,
             suite.case_with_no_configuration_the_local_idp_is_found,
             suite.case_conditional_access_leads_to_one_sign_in_with_the_second_factor,
             suite.case_logout_empties_the_cache]
    passed = failed = 0
    try:
        for case in cases:
            name = case.__name__[len("case_"):]
            t = time.monotonic()
            try:
                case()
            except Exception as e:
                failed += 1
                detail = str(e) if isinstance(e, CaseFailed) else traceback.format_exc()
                print(f"FAIL {name} ({time.monotonic() - t:.1f} s): {detail}")
            else:
                passed += 1
                print(f"ok   {name} ({time.monotonic() - t:.1f} s)")
        try:
            n = suite.check_stdout()
        except CaseFailed as e:
            failed += 1
            print(f"FAIL stdout_is_json_rpc_only: {e}")
        else:
            passed += 1
            print(f"ok   stdout_is_json_rpc_only ({n} lines)")
    finally:
        suite.stop()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
