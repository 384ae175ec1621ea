"""Teachers over real HTTP (fake OpenAI and Anthropic servers on 127.0.0.1) and the real sandbox."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dualdistill.agent.loop import AgentConfig
from dualdistill.backends import BackendConfig, BackendError, RefusalError
from dualdistill.backends.anthropic import AnthropicBackend, AnthropicConfig
from dualdistill.backends.openai_api import OpenAIBackend
from dualdistill.core.config import ConfigError
from dualdistill.format import trajectory as tj
from dualdistill.format.problems import Problem
from dualdistill.teachers.kinds import AgenticTeacher, DatasetTeacher, TextTeacher, r1_to_trajectory
from dualdistill.teachers.protocol import TeacherError
from fake_openai_server import FakeOpenAIServer, Outcome

PROBLEM = Problem("p1", "What is 6 times 7?", "42", source="unit")
R1_OUT = "<think>\nSix sevens: 42.\n</think>\n\nThe answer is \\boxed{42}."


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def pool():
    from dualdistill.sandbox import SandboxConfig, SandboxPool

    return SandboxPool(SandboxConfig(timeout_s=5.0, output_limit=100_000), max_concurrency=2)


async def _closing(pool, coro):
    async with pool:
        return await coro


# ----------------------------------------------------------------------------- R1 conversion
def test_r1_conversion_wraps_text_after_think():
    out = r1_to_trajectory(R1_OUT)
    assert out == "<think>\nSix sevens: 42.\n</think>\n<answer>\nThe answer is \\boxed{42}.\n</answer>"
    assert tj.check_format(out).valid and tj.extract_answer(out) == "42"
    # the chat template often holds the opening <think>: it is restored
    assert r1_to_trajectory("Six sevens.\n</think>\n\\boxed{42}").startswith("<think>Six sevens.\n</think>")
    wrapped = "<think>x</think>\n<answer>\\boxed{1}</answer>"
    assert r1_to_trajectory(wrapped) == "<think>x</think>\n<answer>\\boxed{1}</answer>"  # not wrapped twice
    with pytest.raises(TeacherError) as e:
        r1_to_trajectory("<think>never finished")
    assert e.value.reason == "format"
    with pytest.raises(TeacherError, match="nothing after"):
        r1_to_trajectory("<think>done</think>  \n")


# ----------------------------------------------------------------------------- OpenAI-compatible server
def test_text_teacher_over_openai_server_survives_429_and_timeout():
    script = [Outcome(status=429), Outcome(delay_s=1.5, text="late"), Outcome(text=R1_OUT, stop_reason=None)]
    with FakeOpenAIServer(script) as srv:
        backend = OpenAIBackend(srv.url, "r1", max_retries=3, backoff_s=0.01, request_timeout=0.5)
        teacher = TextTeacher(backend, AgentConfig(tools=False, budget=777, temperature=0.3), name="r1")
        out = run(teacher.solve(PROBLEM, previous="<think>y1</think>\n<answer>\\boxed{41}</answer>"))
    assert out.startswith("<think>\nSix sevens") and tj.extract_answer(out) == "42"
    assert len(srv.requests) == 3  # the 429 and the timeout were retried
    body = srv.requests[-1].body
    assert body["max_tokens"] == 777 and body["temperature"] == 0.3 and "stop" not in body
    assert "What is 6 times 7?" in body["prompt"] and "\\boxed{41}" in body["prompt"]  # conditioned on y1
    assert "<code>" not in body["prompt"].split("User:")[0]  # text teacher: no tool instruction


def test_text_teacher_gives_up_cleanly_when_server_stays_down():
    with FakeOpenAIServer([Outcome(status=429)] * 2) as srv:
        backend = OpenAIBackend(srv.url, "r1", max_retries=1, backoff_s=0.01)
        with pytest.raises(BackendError, match="gave up after 2 attempts"):
            run(TextTeacher(backend).solve(PROBLEM))


def test_agentic_teacher_over_openai_server_runs_code_in_sandbox(pool):
    script = [
        Outcome(text="<code>\nprint(6 * 7)\n", stop_reason="</code>"),
        Outcome(text="\n<answer>\n\\boxed{42}\n", stop_reason="</answer>"),
    ]
    with FakeOpenAIServer(script) as srv:
        backend = OpenAIBackend(srv.url, "agent", max_retries=0)
        teacher = AgenticTeacher(backend, pool, AgentConfig(template="plain", budget=2000))
        out = run(
            _closing(
                pool, teacher.solve(PROBLEM, previous="<think>guess</think>\n<answer>\\boxed{40}</answer>")
            )
        )
    assert "<executor>\n42\n</executor>" in out and out.endswith("</answer>")
    assert tj.check_format(out).valid and tj.extract_answer(out) == "42"
    first, second = (r.body["prompt"] for r in srv.requests)
    assert "\\boxed{40}" in first and "<code>" in first  # y1 in the prompt, tool instruction on
    assert second.endswith("</executor>\n")  # the executor output went back to the model


SECRET = "sk-planted-7f3c9e1d-do-not-leak"
SNOOP = """import os, glob
print("ENV-ENTRIES", len(os.environ))
for k, v in sorted(os.environ.items()):
    print(k, "=", v)
for path in glob.glob("/proc/*/environ") + ["/proc/1/environ", "/proc/self/environ"]:
    try:
        data = open(path, "rb").read().decode(errors="replace")
        print(path, data.replace("\\0", " "))
    except Exception as e:
        print(path, "unreadable", type(e).__name__)
"""


def test_planted_secret_is_not_visible_to_agentic_teacher_code(monkeypatch, pool):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET + "-openai")
    script = [
        Outcome(text=f"<code>\n{SNOOP}", stop_reason="</code>"),
        Outcome(text="<answer>\\boxed{0}", stop_reason="</answer>"),
    ]
    with FakeOpenAIServer(script) as srv:
        backend = OpenAIBackend(srv.url, "agent", max_retries=0)
        out = run(
            _closing(
                pool,
                AgenticTeacher(backend, pool, AgentConfig(template="plain", budget=100_000)).solve(PROBLEM),
            )
        )
    executor = [s.body for s in tj.parse(out) if s.kind == "executor"]
    assert len(executor) == 1 and "ENV-ENTRIES" in executor[0]  # the snooping code did run
    assert "/proc/self/environ" in executor[0]
    assert SECRET not in out
    # the parent really had it (so the check above could have failed)
    assert srv.requests[0].headers.get("authorization") == f"Bearer {SECRET}-openai"


# ----------------------------------------------------------------------------- Anthropic messages API
class FakeAnthropic:
    """A real HTTP server answering POST /v1/messages from a script of (status, body, delay)."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        owner = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, payload, delay = owner.script.pop(0)
                if delay:
                    threading.Event().wait(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("retry-after-ms", "10")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def message(text, stop_reason="end_turn", stop_sequence=None, out_tokens=7):
    return (200, {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
                  "content": [{"type": "text", "text": text}], "stop_reason": stop_reason,
                  "stop_sequence": stop_sequence, "usage": {"input_tokens": 3, "output_tokens": out_tokens}}, 0)  # fmt: skip


RATE_LIMITED = (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}, 0)


@pytest.fixture
def anthropic_server():
    servers = []

    def make(script):
        servers.append(FakeAnthropic(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_anthropic_backend_request_construction(monkeypatch, anthropic_server, caplog):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    srv = anthropic_server([RATE_LIMITED, message("\nprint(1)\n", "stop_sequence", "</code>"),
                            message("more", "max_tokens", out_tokens=5)])  # fmt: skip
    caplog.set_level(logging.DEBUG)
    backend = AnthropicBackend(AnthropicConfig(model="claude-test", base_url=srv.url, max_retries=2))
    prompt = "System text\n\nUser: What is 1?\nAssistant: <think>plan</think>\n<code>"

    async def both():  # one event loop: the client's connection pool belongs to it
        first = await backend.complete(
            prompt, max_new_tokens=99, stop=["</code>", "</answer>"], temperature=0.6, seed=5
        )
        n_requests = len(srv.requests)
        second = await backend.complete("U\nAssistant: ", max_new_tokens=5, stop=[], temperature=0.0)
        return first, n_requests, second

    c, n_requests, c2 = run(both())
    assert (c.text, c.stop, c.finish_reason, c.n_tokens) == ("\nprint(1)\n</code>", "</code>", "stop", 7)
    path, headers, body = srv.requests[1]
    assert n_requests == 2 and path == "/v1/messages"  # the 429 was retried by the client
    # the key travels only in the auth header (x-api-key, or Bearer in newer clients)
    assert SECRET in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
    assert body["model"] == "claude-test" and body["max_tokens"] == 99 and body["temperature"] == 0.6
    assert body["stop_sequences"] == ["</code>", "</answer>"] and "seed" not in body
    assert body["messages"] == [
        {"role": "user", "content": "System text\n\nUser: What is 1?"},
        {"role": "assistant", "content": "<think>plan</think>\n<code>"},  # the prefill to continue
    ]
    assert (c2.finish_reason, c2.stop) == ("length", None)
    assert srv.requests[-1][2]["messages"] == [{"role": "user", "content": "U"}]  # no empty prefill
    assert SECRET not in repr(backend) and SECRET not in caplog.text


def test_anthropic_backend_timeout_refusal_and_missing_key(monkeypatch, anthropic_server):
    monkeypatch.setenv("MY_KEY", "k")
    srv = anthropic_server([(*message("late")[:2], 2.0), message("", "refusal")])
    backend = AnthropicBackend(
        AnthropicConfig(api_key_env="MY_KEY", base_url=srv.url, timeout_s=0.5, max_retries=0)
    )

    async def both():
        errors = []
        for _ in range(2):
            try:
                await backend.complete("q\nAssistant: ", max_new_tokens=5, stop=[], temperature=0.6)
            except Exception as e:
                errors.append(e)
        return errors

    timeout, refusal = run(both())
    assert isinstance(timeout, BackendError) and "timeout" in str(timeout)
    assert isinstance(refusal, RefusalError)  # teach records it as "refusal" (tests/test_compose.py)
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(ConfigError, match="MY_KEY is not set"):
        AnthropicBackend(AnthropicConfig(api_key_env="MY_KEY"))


def test_agentic_teacher_over_anthropic_continues_after_executor(monkeypatch, anthropic_server, pool):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    srv = anthropic_server([message("<code>\nprint(6 * 7)\n", "stop_sequence", "</code>"),
                            message("\n<answer>\n\\boxed{42}\n", "stop_sequence", "</answer>")])  # fmt: skip
    backend = AnthropicBackend(AnthropicConfig(base_url=srv.url, max_retries=0))
    out = run(
        _closing(
            pool, AgenticTeacher(backend, pool, AgentConfig(template="plain", budget=4000)).solve(PROBLEM)
        )
    )
    assert tj.check_format(out).valid and tj.extract_answer(out) == "42"
    assert "<executor>\n42\n</executor>" in out
    first, second = (body["messages"] for _, _, body in srv.requests)
    assert len(first) == 1 and first[0]["content"].endswith("What is 6 times 7?")
    assert second[1]["role"] == "assistant" and second[1]["content"].endswith("</executor>")  # the prefill
    assert SECRET not in out


# ----------------------------------------------------------------------------- dataset teacher
def test_dataset_teacher_by_id_then_question(tmp_path):
    rows = [
        {"id": "a", "question": "Q one?", "final_answer": 1, "r1_solution_1": "<think>t</think> \\boxed{1}"},
        {"id": "b", "question": "Q   two?", "final_answer": 2, "r1_solution_1": "<think>u</think> \\boxed{2}",
         "r1_solution_2": "<think>v</think> \\boxed{2}"},
    ]  # fmt: skip
    path = tmp_path / "deepmath.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = DatasetTeacher(path)
    assert t.strategy == "text" and len(t) == 2
    assert run(t.solve(Problem("a", "ignored", "1"))) == "<think>t</think>\n<answer>\n\\boxed{1}\n</answer>"
    assert "\\boxed{2}" in run(t.solve(Problem("other-id", "Q two?", "2"))), "falls back to the question text"
    with pytest.raises(TeacherError) as e:
        run(t.solve(Problem("zzz", "unknown", "0")))
    assert e.value.reason == "missing"
    assert len(DatasetTeacher(path, "r1_solution_2")) == 1
    with pytest.raises(Exception, match="no record has the field 'r1_solution_9'"):
        DatasetTeacher(path, "r1_solution_9")


# ----------------------------------------------------------------------------- chat completions
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])  # DeepSeek and vLLM; OpenRouter
def test_text_teacher_over_chat_puts_the_reasoning_field_in_think(field, monkeypatch):
    from dualdistill.teachers.spec import TeacherSpec
    from dualdistill.teachers.teach import build_teacher

    monkeypatch.setenv("DD_CHAT_KEY", "sk-chat-secret")
    answer = Outcome(text="The answer is \\boxed{42}.", reasoning="6 * 7 = 42", reasoning_field=field,
                     completion_tokens=57)  # fmt: skip
    with FakeOpenAIServer([answer]) as srv:
        spec = TeacherSpec(
            kind="openai",
            backend=BackendConfig(
                api="chat", model=srv.url, served_model_name="deepseek-reasoner", api_key_env="DD_CHAT_KEY"
            ),
        )
        teacher = build_teacher(spec, "text", pool=None)
        text = asyncio.run(teacher.solve(Problem("p", "What is 6 * 7?", "42")))
    assert text == "<think>\n6 * 7 = 42\n</think>\n<answer>\nThe answer is \\boxed{42}.\n</answer>"
    req = srv.requests[-1]
    assert req.path == "/v1/chat/completions" and req.headers["authorization"] == "Bearer sk-chat-secret"
    assert [m["role"] for m in req.body["messages"]] == ["user"] and "What is 6 * 7?" in req.body["messages"][
        0
    ]["content"]
    assert req.body["max_tokens"] == 16384 and req.body["model"] == "deepseek-reasoner"


def test_chat_backend_counts_the_servers_tokens_and_continues_a_partial_response(monkeypatch):
    from dualdistill.backends import BackendError

    partial = "<think>\nlet me run it\n<code>\nx=1\n</code>\n<executor>\n1\n</executor>\n"
    script = [Outcome(text="hello", completion_tokens=33), Outcome(text="so \\boxed{1}", reasoning="x is 1"),
              Outcome(status=422)]  # fmt: skip
    with FakeOpenAIServer(script) as srv:
        backend = OpenAIBackend(srv.url, "m", api="chat", backoff_s=0.01)
        c = asyncio.run(backend.complete("Q?\nAssistant: ", max_new_tokens=50, stop=[], temperature=0.0))
        assert (c.text, c.n_tokens) == ("hello", 33)
        assert srv.requests[0].body["messages"] == [{"role": "user", "content": "Q?"}]
        assert (
            "extra_body" not in srv.requests[0].body and "continue_final_message" not in srv.requests[0].body
        )
        # After an executor block the response so far is the last assistant message, continued (vLLM).
        c = asyncio.run(
            backend.complete("Q?\nAssistant: " + partial, max_new_tokens=5, stop=[], temperature=0.0)
        )
        body = srv.requests[1].body
        assert body["messages"] == [
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": partial},
        ]
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
        # The reasoning field goes on the open <think> of the partial response: it is closed, not reopened.
        assert c.text == "x is 1\n</think>\nso \\boxed{1}"
        with pytest.raises(BackendError, match=r"continue_final_message.*refused it: use api completions"):
            asyncio.run(
                backend.complete("Q?\nAssistant: " + partial, max_new_tokens=5, stop=[], temperature=0.0)
            )


def test_a_chat_code_teacher_needs_native_tool_calls():
    from dualdistill.core.config import ConfigError
    from dualdistill.teachers.spec import TeacherSpec
    from dualdistill.teachers.teach import build_teacher

    with pytest.raises(ConfigError, match=r"code_teacher\.backend\.api: chat"):
        build_teacher(
            TeacherSpec(kind="openai", backend=BackendConfig(api="chat", model="http://127.0.0.1:9/v1")),
            "code",
            pool=None,
        )


# ----------------------------------------------------------------------------- native tool calls
def test_native_tool_teacher_runs_each_call_in_one_session_and_renders_the_trajectory(monkeypatch, pool):
    """OpenAI tools API (scripted server): two calls in one message run in order in one sandbox session
    (state kept); a malformed, an unknown and an empty call come back as executor errors; the result
    is the trajectory format compose and SFT consume."""
    from dualdistill.format.trajectory import check_format
    from dualdistill.teachers.spec import TeacherSpec
    from dualdistill.teachers.teach import build_teacher

    monkeypatch.setenv("DD_TOOLS_KEY", "sk-tools-secret")
    script = [
        Outcome(text="Let me compute.", tool_calls=[{"name": "python", "arguments": '{"code": "x = 6 * 7\\nprint(x)"}'},
                                                    {"name": "python", "arguments": '{"code": "print(x + 1)"}'}]),
        Outcome(text="", tool_calls=[{"name": "python", "arguments": "{not json"}, {"name": "bash", "arguments": "{}"},
                                     {"name": "python", "arguments": '{"code": "  "}'}]),
        Outcome(text="So the product is \\boxed{42}."),
    ]  # fmt: skip
    with FakeOpenAIServer(script) as srv:
        spec = TeacherSpec(kind="openai", tool_calls="native", backend=BackendConfig(
            api="chat", model=srv.url, served_model_name="gpt-x", api_key_env="DD_TOOLS_KEY"))  # fmt: skip
        teacher = build_teacher(spec, "code", pool)
        text = asyncio.run(_closing(pool, teacher.solve(Problem("p", "What is 6 * 7?", "42"))))
    assert text.startswith(
        "<think>\nLet me compute.\n</think>\n<code>\nx = 6 * 7\nprint(x)\n</code>\n<executor>\n42\n</executor>"
    )
    assert "<code>\nprint(x + 1)\n</code>\n<executor>\n43\n</executor>" in text  # the session kept x
    assert (
        "the tool arguments are not JSON" in text and "unknown tool 'bash'" in text and "empty call" in text
    )
    assert text.endswith("<answer>\nSo the product is \\boxed{42}.\n</answer>")
    assert check_format(text).valid, check_format(text).reason
    second = srv.requests[-2].body  # the model saw both results, in order, as tool messages
    assert [m["content"].strip() for m in second["messages"] if m["role"] == "tool"] == ["42", "43"]
    assert second["tools"][0]["function"]["name"] == "python"
    assert all(
        r.headers.get("authorization") == "Bearer sk-tools-secret"
        for r in srv.requests
        if r.path != "/v1/models"
    )
    assert "sk-tools-secret" not in text


def test_native_tool_teacher_stops_offering_the_tool_at_the_call_limit(pool):
    from dualdistill.agent.loop import AgentConfig
    from dualdistill.backends.openai_api import OpenAIBackend
    from dualdistill.teachers.tool import NativeToolTeacher

    call = {"name": "python", "arguments": '{"code": "print(1)"}'}
    script = [Outcome(tool_calls=[call, call]), Outcome(text="\\boxed{1}")]
    with FakeOpenAIServer(script) as srv:
        teacher = NativeToolTeacher(
            OpenAIBackend(srv.url, "m", api="chat"), pool, AgentConfig(max_tool_calls=1)
        )
        text = asyncio.run(_closing(pool, teacher.solve(Problem("p", "1?", "1"))))
    assert text.count("<executor>\n1\n</executor>") == 1 and "over the limit" in text
    assert "tools" not in srv.requests[-1].body  # at the limit the tool is no longer offered


def test_teach_cli_with_a_native_tool_teacher_and_a_chat_reasoning_teacher(tmp_path, monkeypatch):
    """`dualdistill teach --config C` with the issue's two specs, against servers shaped like the hosted
    APIs: the tool call's code really ran, its output stands in <executor>, the reasoning in <think>."""
    import json

    from typer.testing import CliRunner

    from dualdistill.cli import app
    from dualdistill.format.problems import write_problems

    monkeypatch.setenv("DD_CODE_KEY", "sk-code-1")
    problems = tmp_path / "p.jsonl"
    write_problems(problems, [Problem("q1", "What is 12 * 34?", "408")])
    code_script = [Outcome(text="Multiply.", tool_calls=[{"name": "python", "arguments": '{"code": "print(12 * 34)"}'}]),
                   Outcome(text="\\boxed{408}")]  # fmt: skip
    text_script = [Outcome(text="It is \\boxed{408}.", reasoning="12 * 34 = 408")]
    with FakeOpenAIServer(code_script) as code_srv, FakeOpenAIServer(text_script) as text_srv:
        cfg = tmp_path / "teach.yaml"
        cfg.write_text(
            f"code_teacher: {{kind: openai, tool_calls: native, backend: {{api: chat, model: '{code_srv.url}', "
            "served_model_name: gpt-x, api_key_env: DD_CODE_KEY}}\n"
            f"text_teacher: {{kind: openai, backend: {{api: chat, model: '{text_srv.url}', served_model_name: deepseek-reasoner}}}}\n"
            "first_teacher_seed: 0\n"
        )
        r = CliRunner().invoke(app, ["teach", "--problems", str(problems), "--config", str(cfg), "--out",
                                     str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    pair = json.loads((tmp_path / "out" / "pairs.jsonl").read_text())
    by_strategy = {a["strategy"]: a["response"] for a in (pair["first"], pair["second"])}
    assert "<code>\nprint(12 * 34)\n</code>\n<executor>\n408\n</executor>" in by_strategy["code"]
    assert by_strategy["text"].startswith("<think>\n12 * 34 = 408\n</think>")
    records = (tmp_path / "out" / "records.jsonl").read_text()
    assert "sk-code-1" not in records
    # the servers' usage is recorded per attempt: 2 chat turns for the code teacher, 1 for the text one
    tokens = {r["strategy"]: r["tokens"] for r in map(json.loads, records.splitlines())}
    assert tokens["code"]["requests"] == 2 and tokens["text"]["requests"] == 1
    assert tokens["code"]["completion_tokens"] == 2 and tokens["code"]["prompt_tokens"] > 0
    spent = json.loads((tmp_path / "out" / "teach.json").read_text())["spent"]
    assert spent["completion_tokens"] == sum(t["completion_tokens"] for t in tokens.values())


def test_teach_estimate_prints_upper_bounds_and_sends_nothing(tmp_path):
    from typer.testing import CliRunner

    from dualdistill.cli import app
    from dualdistill.format.problems import write_problems
    from dualdistill.teachers.cost import estimate
    from dualdistill.teachers.spec import TeacherSpec
    from dualdistill.teachers.teach import TeachConfig

    problems = [Problem(f"q{i}", "What is 12 * 34?", "408") for i in range(10)]
    with FakeOpenAIServer([]) as srv:  # no scripted answer: any request would fail loudly
        gen = {"budget": 1000, "max_tool_calls": 3}
        cfg = TeachConfig(
            code_teacher=TeacherSpec(kind="openai", backend=BackendConfig(model=srv.url, served_model_name="c"), price_in_per_mtok=3.0, price_out_per_mtok=15.0,
                                     generation=AgentConfig(**gen)),
            text_teacher=TeacherSpec(kind="openai", backend=BackendConfig(model=srv.url, served_model_name="r1"), price_in_per_mtok=0.55,
                                     price_out_per_mtok=2.19, generation=AgentConfig(budget=8000)),
        )  # fmt: skip
        rows = {r.teacher.split()[0]: r for r in estimate(problems, cfg)}
        assert (rows["code_teacher"].requests, rows["text_teacher"].requests) == (40, 10)
        assert (
            rows["code_teacher"].completion_tokens == 10 * 1000
            and rows["text_teacher"].completion_tokens == 80_000
        )
        # each request after a code block resends up to the budget: 4 requests, 3 of them with +1000
        assert rows["code_teacher"].prompt_tokens >= 10 * (4 * 8000 + 3 * 1000)
        expected = (rows["text_teacher"].prompt_tokens * 0.55 + 80_000 * 2.19) / 1e6
        assert rows["text_teacher"].usd == pytest.approx(expected)
        from dualdistill.core.config import save_config

        save_config(cfg, tmp_path / "teach.yaml")
        write_problems(tmp_path / "p.jsonl", problems)
        r = CliRunner().invoke(app, ["teach", "--problems", str(tmp_path / "p.jsonl"), "--config",
                                     str(tmp_path / "teach.yaml"), "--out", str(tmp_path / "out"), "--estimate"])  # fmt: skip
        assert r.exit_code == 0, r.output
        assert "nothing sent" in r.output and "code_teacher (c)" in r.output
    assert srv.requests == [] and not (tmp_path / "out" / "records.jsonl").exists()


def tool_use_message(text, calls):
    blocks = ([{"type": "text", "text": text}] if text else []) + [
        {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": args}
        for i, (name, args) in enumerate(calls)
    ]
    return (200, {"id": "msg_t", "type": "message", "role": "assistant", "model": "claude-test", "content": blocks,
                  "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 9}}, 0)  # fmt: skip


def test_native_tool_teacher_over_anthropic_tool_use(monkeypatch, anthropic_server, pool):
    from dualdistill.teachers.spec import TeacherSpec
    from dualdistill.teachers.teach import build_teacher

    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    srv = anthropic_server([
        tool_use_message("I will compute.", [("python", {"code": "y = 2 ** 10\nprint(y)"}), ("python", {"code": "print(y - 24)"})]),
        message("The answer is \\boxed{1000}."),
    ])  # fmt: skip
    spec = TeacherSpec(
        kind="anthropic",
        tool_calls="native",
        backend=BackendConfig(model=srv.url, served_model_name="claude-test"),
    )
    teacher = build_teacher(spec, "code", pool)
    text = run(_closing(pool, teacher.solve(Problem("p", "What is 2^10 - 24?", "1000"))))
    assert "<code>\ny = 2 ** 10\nprint(y)\n</code>\n<executor>\n1024\n</executor>" in text
    assert "<code>\nprint(y - 24)\n</code>\n<executor>\n1000\n</executor>" in text
    assert text.startswith("<think>\nI will compute.\n</think>") and text.endswith(
        "\\boxed{1000}.\n</answer>"
    )
    body = srv.requests[-1][2]
    assert body["tools"][0]["name"] == "python" and body["tools"][0]["input_schema"]["required"] == ["code"]
    assert body["messages"][1]["content"][1] == {"type": "tool_use", "id": "toolu_0", "name": "python",
                                                 "input": {"code": "y = 2 ** 10\nprint(y)"}}  # fmt: skip
    results = body["messages"][2]["content"]  # both results in one user turn, in order
    assert [(r["type"], r["tool_use_id"], r["content"].strip()) for r in results] == [
        ("tool_result", "toolu_0", "1024"), ("tool_result", "toolu_1", "1000")]  # fmt: skip
