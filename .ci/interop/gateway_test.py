r"""The Python MCP SDK's client through mcpgate's gateway, against the
reference server @modelcontextprotocol/server-everything.

Run by .ci/interop/gateway (which installs the packages and builds mcpgate):

    python gateway_test.py --bin target/debug/mcpgate --node node \
        --server .../server-everything/dist/index.js --work DIR

For each upstream shape (stdio: the gateway starts the server; Streamable
HTTP; the legacy 2024-11-05 HTTP+SSE transport) the same client session
runs twice, once straight to the server and once through `mcpgate serve
--no-auth`, and records what it saw: the server's identity, the tools,
prompts, resources and resource templates, and the results of echo, a sum,
two prompts, a resource read, a tool that reports progress (the progress
callbacks; and four such calls at once), a tool that asks the client for
sampling (answered by this client's sampling callback, whose request is
recorded too), one that asks for elicitation (likewise), the roots the
server got from the client's callback, structured, annotated and image
content, a call with bad arguments and one of an unknown tool, two
completions, subscribe and unsubscribe, and whether log messages that
belong to no request arrive. The two records must be equal once normalised
(see `normalise`): any other difference is a failure. A fourth case puts
the client itself on the legacy transport (the gateway's GET /sse) in
front of the stdio server. A fifth puts two servers behind one gateway
(stdio as "everything", Streamable HTTP as "remote"): the session with
"remote" through it, its prefixes taken off, must equal the direct one
(see `unprefixed`).

The last line is "N passed, M failed"; the exit code is 1 if anything
failed.
"""

import argparse
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.parse
import warnings
from pathlib import Path

import anyio
from mcp import Client, types
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

ECHO = "hello through the gateway"
SAMPLING_PROMPT = "say something"
PROGRESS_STEPS = 4
CONCURRENT_CALLS = 4
ROOT = "file:///tmp/mcpgate-gateway-test"
ELICITED = {"name": "Alice", "check": True, "integer": 7}
# server-everything's simulated logging sends one message at once, then one
# every 5 s.
LOG_WAIT_S = 7
LOG_LEVELS = {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}


class CaseFailed(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise CaseFailed(message)


# Children die with this process even if it is killed (the wrapper's time
# limit), so no server outlives a run.
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Process:
    """A server this test started, its output in a log file."""

    running = []

    def __init__(self, name, argv, work, env=None):
        self.name = name
        self.log = work / f"{name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        Process.running.append(self)

    def log_tail(self, lines=30):
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("   | " + line for line in text[-lines:])

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in Process.running:
            Process.running.remove(self)

    @classmethod
    def stop_all(cls):
        for p in list(cls.running):
            p.stop()


def wait_port(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check(proc.alive(), f"{proc.name} exited before it listened:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise CaseFailed(f"{proc.name} did not listen on {port} within {timeout} s:\n{proc.log_tail()}")


def free_port():
    # server-everything takes a port number, not 0; the short window before
    # it binds is why start_everything retries.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Suite:
    def __init__(self, args):
        self.bin = args.bin
        self.node = args.node
        self.server = args.server
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        # The server's environment, the same whoever starts it.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGATE_")}

    def start_everything(self, mode):
        for attempt in range(3):
            port = free_port()
            proc = Process(f"everything-{mode}-{attempt}", [self.node, self.server, mode],
                           self.work, env={**self.env, "PORT": str(port)})
            try:
                wait_port(port, proc)
                return proc, port
            except CaseFailed:
                if attempt == 2:
                    raise
                proc.stop()
        raise AssertionError("unreachable")

    def start_gateway(self, name, upstream_args):
        d = self.work / name
        d.mkdir(exist_ok=True)
        ready = d / "ready.json"
        proc = Process(name, [self.bin, "serve", "--no-auth", "--bind", "127.0.0.1:0",
                              "--ready-file", str(ready), *upstream_args],
                       self.work, env={**self.env, "XDG_DATA_HOME": str(d / "xdg-data")})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            check(proc.alive(), f"{name} exited before it was ready:\n{proc.log_tail()}")
            try:
                return proc, json.loads(ready.read_text())["mcp_url"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        raise CaseFailed(f"{name} was not ready after 60 s:\n{proc.log_tail()}")

    # One case per upstream shape: (direct transport, gateway's upstream
    # arguments), and what runs behind them.
    def case_stdio(self):
        params = StdioServerParameters(command=self.node, args=[self.server, "stdio"],
                                       env=self.env)
        errlog = open(self.work / "everything-stdio.log", "w")  # noqa: SIM115 (closed below)
        cmd = " ".join(map(shlex.quote, [self.node, self.server, "stdio"]))
        gateway, url = self.start_gateway("gateway-stdio", ["--upstream-cmd", cmd])
        try:
            self.compare("stdio", lambda: stdio_client(params, errlog=errlog),
                         lambda: streamable_http_client(url), [gateway])
        finally:
            gateway.stop()
            errlog.close()

    def case_streamable_http(self):
        server, port = self.start_everything("streamableHttp")
        upstream = f"http://127.0.0.1:{port}/mcp"
        gateway, url = self.start_gateway("gateway-streamable-http", ["--upstream-url", upstream])
        try:
            self.compare("streamableHttp", lambda: streamable_http_client(upstream),
                         lambda: streamable_http_client(url), [server, gateway])
        finally:
            gateway.stop()
            server.stop()

    def case_sse(self):
        server, port = self.start_everything("sse")
        upstream = f"http://127.0.0.1:{port}/sse"
        gateway, url = self.start_gateway("gateway-sse", ["--upstream-url", upstream])
        try:
            self.compare("sse", lambda: sse_client(upstream),
                         lambda: streamable_http_client(url), [server, gateway])
        finally:
            gateway.stop()
            server.stop()

    def case_client_sse(self):
        # The client's side on the legacy transport too: GET /sse at the
        # gateway (in front of the stdio server), compared with stdio direct.
        params = StdioServerParameters(command=self.node, args=[self.server, "stdio"],
                                       env=self.env)
        errlog = open(self.work / "everything-stdio-2.log", "w")  # noqa: SIM115 (closed below)
        cmd = " ".join(map(shlex.quote, [self.node, self.server, "stdio"]))
        gateway, url = self.start_gateway("gateway-client-sse", ["--upstream-cmd", cmd])
        sse_url = urllib.parse.urljoin(url, "/sse")
        try:
            self.compare("client-sse", lambda: stdio_client(params, errlog=errlog),
                         lambda: sse_client(sse_url), [gateway])
        finally:
            gateway.stop()
            errlog.close()

    def case_several(self):
        # Two upstreams behind one gateway, each under its name: the stdio
        # server as "everything" and the Streamable HTTP one as "remote". The
        # client's session with "remote" through the gateway, prefixes taken
        # off, must be the one it has straight with the server.
        server, port = self.start_everything("streamableHttp")
        upstream = f"http://127.0.0.1:{port}/mcp"
        cmd = " ".join(map(shlex.quote, [self.node, self.server, "stdio"]))
        config = self.work / "several.toml"
        config.write_text(f'[[upstreams]]\nname = "everything"\ncommand = {json.dumps(cmd)}\n\n'
                          f'[[upstreams]]\nname = "remote"\nurl = "{upstream}"\n')
        gateway, url = self.start_gateway("gateway-several", ["--config", str(config)])
        try:
            self.compare("several", lambda: streamable_http_client(upstream),
                         lambda: streamable_http_client(url), [server, gateway], ns="remote")
        finally:
            gateway.stop()
            server.stop()

    def compare(self, shape, direct, through, procs, ns=None):
        seen = {}
        for label, connect in (("direct", direct), ("gateway", through)):
            try:
                seen[label] = anyio.run(record, connect, f"{shape}-{label}",
                                        ns if label == "gateway" else None)
            except Exception as e:
                dead = "".join(f"\n   {p.name} has exited ({p.proc.returncode}):\n{p.log_tail()}"
                               for p in procs if not p.alive())
                raise CaseFailed(f"the {label} session failed: {describe(e)}{dead}") from e
        (self.work / f"{shape}.json").write_text(json.dumps(seen, indent=2, sort_keys=True))
        if ns:
            direct = seen["direct"]
            direct.pop("server_info")
            direct.pop("capabilities")
            seen["gateway"] = unprefixed(seen["gateway"], ns, direct.pop("instructions"))
        a, b = normalise(seen["direct"]), normalise(seen["gateway"])
        check_callbacks(seen["direct"], "direct")
        check_callbacks(seen["gateway"], "gateway")
        diffs = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diffs:
            lines = []
            for k in diffs:
                lines.append(f"   {k}:\n      direct:  {short(a.get(k))}\n      gateway: {short(b.get(k))}")
            raise CaseFailed("the gateway's session differs from the direct one in "
                             f"{', '.join(diffs)} (records: {self.work}/{shape}.json):\n"
                             + "\n".join(lines))


def describe(e):
    # anyio wraps task failures in exception groups; name the leaves.
    if isinstance(getattr(e, "exceptions", None), tuple):
        return "; ".join(describe(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"


def short(v, limit=1500):
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "…"


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def paged(fetch, field):
    items, cursor = [], None
    for _ in range(100):
        page = await fetch(cursor)
        items.extend(dump(x) for x in getattr(page, field))
        cursor = page.next_cursor
        if not cursor:
            return items
    raise CaseFailed(f"{field}: more than 100 pages")


async def record(connect, label, ns=None):
    """What one client session sees, as plain JSON values. `ns`: the
    server's name behind a gateway of several, whose prefix its tools,
    prompts and resources carry there."""
    t = (lambda name: f"{ns}__{name}") if ns else (lambda name: name)
    progress, sampling_requests, elicitation_requests, logs = [], [], [], []
    got_log = anyio.Event()

    async def on_log(params):
        logs.append(dump(params))
        got_log.set()

    async def on_progress(value, total, message):
        progress.append({"progress": value, "total": total, "message": message})

    async def on_sampling(context, params):
        sampling_requests.append(dump(params))
        asked = params.messages[0].content
        return types.CreateMessageResult(
            role="assistant", model="gateway-test-model", stop_reason="endTurn",
            content=types.TextContent(type="text", text=f"sampled: {asked.text}"))

    async def on_elicitation(context, params):
        elicitation_requests.append(dump(params))
        return types.ElicitResult(action="accept", content=ELICITED)

    async def on_roots(context):
        return types.ListRootsResult(roots=[types.Root(uri=ROOT, name="workspace")])

    out = {}
    with anyio.fail_after(60):
        # mode="legacy": the initialize handshake, which both server-everything
        # and the gateway speak (the default would first probe server/discover).
        async with Client(connect(), mode="legacy", cache=None, sampling_callback=on_sampling,
                          logging_callback=on_log, elicitation_callback=on_elicitation,
                          list_roots_callback=on_roots,
                          client_info=types.Implementation(name="mcpgate-gateway-test",
                                                           version="1")) as c:
            out["protocol_version"] = c.protocol_version
            out["server_info"] = dump(c.server_info) if c.server_info else None
            out["capabilities"] = dump(c.server_capabilities)
            out["instructions"] = c.instructions
            out["tools"] = await paged(lambda cur: c.list_tools(cursor=cur), "tools")
            out["prompts"] = await paged(lambda cur: c.list_prompts(cursor=cur), "prompts")
            out["resources"] = await paged(lambda cur: c.list_resources(cursor=cur), "resources")
            out["resource_templates"] = await paged(
                lambda cur: c.list_resource_templates(cursor=cur), "resource_templates")
            out["call echo"] = dump(await c.call_tool(t("echo"), {"message": ECHO}))
            out["call get-sum"] = dump(await c.call_tool(t("get-sum"), {"a": 19, "b": 23}))
            out["get simple-prompt"] = dump(await c.get_prompt(t("simple-prompt")))
            out["get args-prompt"] = dump(await c.get_prompt(
                t("args-prompt"), {"city": "Lisbon", "state": "Lisboa"}))
            text_resources = [r["uri"] for r in out["resources"]
                              if r.get("mimeType", "").startswith("text/")
                              and (not ns or r["uri"].startswith(f"{ns}+"))]
            check(text_resources, f"{label}: no text resource listed")
            out["read resource"] = dump(await c.read_resource(text_resources[0]))
            out["call trigger-long-running-operation"] = dump(await c.call_tool(
                t("trigger-long-running-operation"),
                {"duration": 0.2 * PROGRESS_STEPS, "steps": PROGRESS_STEPS},
                progress_callback=on_progress))
            out["progress callbacks"] = progress
            out["concurrent progress"] = await concurrent_progress(c, t)
            out["call get-structured-content"] = dump(await c.call_tool(
                t("get-structured-content"), {"location": "Chicago"}))
            out["call get-annotated-message"] = dump(await c.call_tool(
                t("get-annotated-message"), {"messageType": "error", "includeImage": True}))
            out["call get-tiny-image"] = dump(await c.call_tool(t("get-tiny-image"), {}))
            out["call with bad arguments"] = dump(await c.call_tool(t("get-sum"), {"a": "x"}))
            out["call of an unknown tool"] = await outcome(c.call_tool(t("no-such-tool"), {}))
            out["complete department"] = dump(await c.complete(
                types.PromptReference(type="ref/prompt", name=t("completable-prompt")),
                {"name": "department", "value": "S"}))
            out["complete name"] = dump(await c.complete(
                types.PromptReference(type="ref/prompt", name=t("completable-prompt")),
                {"name": "name", "value": ""}, {"department": "Sales"}))
            out["subscribe"] = await outcome(c.subscribe_resource(text_resources[0]))
            out["unsubscribe"] = await outcome(c.unsubscribe_resource(text_resources[0]))
            out["call trigger-sampling-request"] = dump(await c.call_tool(
                t("trigger-sampling-request"), {"prompt": SAMPLING_PROMPT, "maxTokens": 50}))
            out["sampling requests"] = sampling_requests
            out["call trigger-elicitation-request"] = dump(await c.call_tool(
                t("trigger-elicitation-request"), {}))
            out["elicitation requests"] = elicitation_requests
            # The server asks for the roots as soon as the session is
            # initialized, a request that belongs to no request of the client.
            out["call get-roots-list"] = dump(await c.call_tool(t("get-roots-list"), {}))
            # Log messages that belong to no request: the server sends one
            # at once and one every 5 s, on its standalone stream (HTTP), so
            # the gateway must keep that stream open and pass it on. Their
            # text names the server's session id, which differs by design:
            # only the arrival and the levels are recorded.
            await c.set_logging_level("debug")
            await c.call_tool(t("toggle-simulated-logging"), {})
            with anyio.move_on_after(LOG_WAIT_S):
                await got_log.wait()
            await c.call_tool(t("toggle-simulated-logging"), {})
            out["simulated logging delivered"] = bool(logs)
            check(all(entry.get("level") in LOG_LEVELS for entry in logs),
                  f"{label}: log messages with unknown levels: {logs}")
    return out


async def concurrent_progress(c, t):
    """Several calls with progress at once in one session: each callback must
    get its own call's progress (the gateway routes it by token)."""
    seen = {}

    async def one(i):
        events = []

        async def on_progress(value, total, message):
            events.append([value, total])

        steps = 2 + i
        result = await c.call_tool(t("trigger-long-running-operation"),
                                   {"duration": 0.1 * steps, "steps": steps},
                                   progress_callback=on_progress)
        seen[str(i)] = {"progress": events, "result": dump(result)}

    async with anyio.create_task_group() as tg:
        for i in range(CONCURRENT_CALLS):
            tg.start_soon(one, i)
    return seen


async def outcome(call):
    """A result, or the JSON-RPC error it was refused with."""
    try:
        return {"result": dump(await call)}
    except MCPError as e:
        return {"error": dump(e.error)}


def check_callbacks(seen, label):
    """Each side on its own: the callbacks fired as the server says they should."""
    want = [{"progress": float(i), "total": float(PROGRESS_STEPS), "message": None}
            for i in range(1, PROGRESS_STEPS + 1)]
    got = [{**p, "progress": float(p["progress"]),
            "total": None if p["total"] is None else float(p["total"])}
           for p in seen["progress callbacks"]]
    check(got == want, f"{label}: progress callbacks {got}, expected {want}")
    for i, call in seen["concurrent progress"].items():
        steps = 2 + int(i)
        check(call["progress"] == [[float(n), float(steps)] for n in range(1, steps + 1)],
              f"{label}: concurrent call {i} of {steps} steps saw progress {call['progress']}")
    check(seen["simulated logging delivered"],
          f"{label}: no log message arrived within {LOG_WAIT_S} s of turning simulated logging on")
    check(len(seen["sampling requests"]) == 1,
          f"{label}: the sampling callback ran {len(seen['sampling requests'])} times, expected once")
    check(len(seen["elicitation requests"]) == 1,
          f"{label}: the elicitation callback ran {len(seen['elicitation requests'])} times, "
          "expected once")
    text = seen["call trigger-elicitation-request"]["content"][0]["text"]
    check(text.startswith("\u2705 User provided"),
          f"{label}: the tool did not take this client's elicitation answer: {text[:300]}")
    text = seen["call get-roots-list"]["content"][0]["text"]
    check(ROOT in text, f"{label}: the server does not know this client's root: {text[:300]}")
    text = seen["call trigger-sampling-request"]["content"][0]["text"]
    check(f"sampled: Resource trigger-sampling-request context: {SAMPLING_PROMPT}" in text,
          f"{label}: the tool did not return this client's sampling answer: {text[:300]}")


def normalise(seen):
    """What may legitimately differ between the direct and gateway sessions.

    - Key order: every value went through the SDK's models and is compared
      as parsed JSON, so neither side's serialisation matters.
    - List order of tools, prompts, resources and templates: the gateway
      re-serialises lists (policy may cut them), and order carries no
      meaning in MCP; they are compared sorted by name or URI.
    Nothing else is touched: server info, capabilities, instructions,
    protocol version and every result must be equal as they are.
    """
    out = dict(seen)
    for key, by in (("tools", "name"), ("prompts", "name"), ("resources", "uri"),
                    ("resource_templates", "uriTemplate")):
        out[key] = sorted(seen[key], key=lambda x: x.get(by, ""))
    return out


def unprefixed(seen, ns, direct_instructions):
    """A session through a gateway of several servers, as server `ns` alone
    would have shown it: its items without their prefix, the others' left
    out. The gateway's own identity, merged capabilities and instructions
    replace the server's by design; they are checked, then left out."""
    info = seen.pop("server_info")
    check(info and info.get("name") == "mcpgate", f"several: server info {info}")
    caps = seen.pop("capabilities")
    check(all(k in caps for k in ("tools", "prompts", "resources", "logging", "completions")),
          f"several: merged capabilities {caps}")
    instructions = seen.pop("instructions") or ""
    check(not direct_instructions or direct_instructions in instructions,
          f"several: the server's instructions are not among the gateway's: {instructions[:300]!r}")
    fields = {"tools": "name", "prompts": "name", "resources": "uri",
              "resource_templates": "uriTemplate"}
    names = {k: [x[by] for x in seen[k]] for k, by in fields.items()}
    for key, listed in names.items():
        strays = [n for n in listed if not n.startswith((f"{ns}__", f"{ns}+", "everything__",
                                                         "everything+"))]
        check(not strays, f"several: {key} without a server's prefix: {strays}")
    check("everything__echo" in names["tools"], "several: the other server's tools are missing")
    out = {}
    for key, value in seen.items():
        if key in fields:
            value = [x for x in value if x[fields[key]].startswith((f"{ns}__", f"{ns}+"))]
        text = json.dumps(value)
        text = text.replace(f'"{ns}__', '"').replace(f'"{ns}+', '"')
        out[key] = json.loads(text)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Logging is deprecated from 2026-07-28 on; these sessions are 2025-11-25.
    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

    suite = Suite(args)
    cases = [suite.case_stdio, suite.case_streamable_http, suite.case_sse, suite.case_client_sse,
             suite.case_several]
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
    finally:
        Process.stop_all()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
