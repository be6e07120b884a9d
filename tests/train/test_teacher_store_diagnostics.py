"""Teachers (template and HTTP against a local server), the JSONL store, diagnostics on constructed data."""
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexreason_utils.evaluation import claims, diagnostics
from chexreason_utils import jsonl_store
from chexreason_utils.train.teacher import HTTPTeacher, TeacherError, TemplateTeacher, TraceRequest, generate_traces


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)
    return str(path)


def test_template_teacher_uses_rendered_findings(image):
    r = TraceRequest("x", image, ("Cardiomegaly",), "free_reasoning", (("Cardiomegaly", "cardiothoracic ratio about 0.64"),))
    text = TemplateTeacher().trace(r)
    assert "cardiothoracic ratio about 0.64" in text and text == TemplateTeacher().trace(r)
    steps = TemplateTeacher().trace(TraceRequest("x", image, ("Fracture",), "reasoning_a"))
    assert steps.startswith("1. image quality") and "12. summary: fracture" in steps


class Server:
    """An OpenAI-compatible chat-completions stub on 127.0.0.1 that replays scripted replies."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.headers.get("Authorization"), body))
                status, payload = outer.script.pop(0) if outer.script else (200, "default")
                if status == "sleep":
                    import time
                    time.sleep(payload)
                    status, payload = 200, "late"
                data = (json.dumps({"choices": [{"message": {"content": payload}}]}) if status == 200 and payload != "BROKEN"
                        else "{not json" if payload == "BROKEN" else "{}").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_http_teacher_success_retries_malformed_and_timeout(image, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test")
    server = Server([(429, None), (500, None), (200, "BROKEN"), (200, "The heart is enlarged."), ("sleep", 1.5)])
    try:
        teacher = HTTPTeacher(server.url, "gemini-2.5-pro", "TEST_TEACHER_KEY", timeout=0.5, max_retries=3, backoff=0.01)
        r = TraceRequest("x", image, ("Cardiomegaly",), "free_reasoning")
        assert teacher.trace(r) == "The heart is enlarged."
        assert len(server.requests) == 4                      # 429, 500, malformed, success
        auth, body = server.requests[-1]
        assert auth == "Bearer sk-test" and body["model"] == "gemini-2.5-pro"
        parts = body["messages"][0]["content"]
        assert "Cardiomegaly" in parts[0]["text"] and parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
        slow = HTTPTeacher(server.url, "m", "TEST_TEACHER_KEY", timeout=0.3, max_retries=0)
        with pytest.raises(TeacherError, match="gave up after 1 attempts.*network"):
            slow.trace(r)
        server.script = [(400, None)]
        with pytest.raises(TeacherError, match="HTTP 400 .not retried"):
            teacher.trace(r)
    finally:
        server.close()
    monkeypatch.delenv("TEST_TEACHER_KEY")
    with pytest.raises(TeacherError, match="environment variable TEST_TEACHER_KEY"):
        HTTPTeacher("http://127.0.0.1:9", "m", "TEST_TEACHER_KEY").trace(r)


def test_interrupted_trace_generation_resumes_without_duplicates(image, tmp_path, monkeypatch):
    monkeypatch.setenv("K", "k")
    server = Server([(200, f"trace {i}") for i in range(10)])
    try:
        teacher = HTTPTeacher(server.url, "m", "K", max_retries=0)
        reqs = [TraceRequest(f"img{i}", image, ("Edema",), "free_reasoning") for i in range(5)]
        cache = tmp_path / "traces.jsonl"
        generate_traces(teacher, reqs[:3], cache, concurrency=2, progress=False)
        with cache.open("a") as fh:
            fh.write('{"key": "half-writ')                     # a crash mid-line
        done = generate_traces(teacher, reqs, cache, concurrency=2, progress=False)
        assert len(server.requests) == 5                      # 3 + only the 2 missing ones
        rows, broken = jsonl_store.read_rows(cache)
        assert broken == 0 and len(rows) == 5 and len({r["key"] for r in rows}) == 5
        assert sorted(done) == sorted(f"trace {i}" for i in range(5))
    finally:
        server.close()


def test_traces_are_regenerated_when_the_teacher_or_its_prompt_changes(image, tmp_path, monkeypatch):
    """The trace key covers the teacher (kind, model, endpoint, sampling) and the prompt: on main a switch from the
    template teacher to the HTTP one reused every template trace and made no request."""
    import dataclasses

    from chexreason_utils.train import teacher as teacher_module

    monkeypatch.setenv("K", "k")
    cache = tmp_path / "traces.jsonl"
    reqs = [TraceRequest(f"img{i}", image, ("Edema",), "free_reasoning") for i in range(3)]
    template = generate_traces(TemplateTeacher(), reqs, cache, progress=False)
    assert generate_traces(TemplateTeacher(), reqs, cache, progress=False) == template    # reused
    server = Server([(200, f"trace {i}") for i in range(20)])
    try:
        first = generate_traces(HTTPTeacher(server.url, "model-a", "K", max_retries=0), reqs, cache, 1, False)
        assert len(server.requests) == 3 and first == ["trace 0", "trace 1", "trace 2"]
        generate_traces(HTTPTeacher(server.url, "model-a", "K", max_retries=0), reqs, cache, 1, False)
        assert len(server.requests) == 3                                             # same teacher: reused
        generate_traces(HTTPTeacher(server.url, "model-b", "K", max_retries=0), reqs, cache, 1, False)
        assert len(server.requests) == 6                                             # another model: redone
        generate_traces(HTTPTeacher(server.url, "model-b", "K", max_retries=0, temperature=0.7), reqs[:1], cache, 1,
                        False)
        assert len(server.requests) == 7                                             # other sampling: redone
        monkeypatch.setattr(teacher_module, "TEACHER_PROMPT", teacher_module.TEACHER_PROMPT + " Be brief.")
        generate_traces(HTTPTeacher(server.url, "model-b", "K", max_retries=0), reqs, cache, 1, False)
        assert len(server.requests) == 10                                            # another prompt: redone
    finally:
        server.close()
    other = [dataclasses.replace(r, findings=(("Edema", "hazy hila"),)) for r in reqs]
    assert generate_traces(TemplateTeacher(), other, cache, progress=False) != template  # what was drawn shapes it


def test_jsonl_store_truncated_last_line_is_never_a_row(tmp_path):
    path = tmp_path / "p.jsonl"
    jsonl_store.append_rows(path, [{"a": 1}, {"a": 2}])
    path.write_text(path.read_text() + '{"a": 3')
    assert jsonl_store.read_rows(path) == ([{"a": 1}, {"a": 2}], 1)
    path.write_text(path.read_text() + "}")                  # complete object but no newline: still suspect
    assert jsonl_store.read_rows(path)[1] == 1
    assert jsonl_store.repair(path) == 1 and jsonl_store.read_rows(path) == ([{"a": 1}, {"a": 2}], 0)


def _completions(groups):
    rows = []
    for step, group_list in groups.items():
        for group in group_list:
            rows += [{"step": step, "completion": [{"role": "assistant", "content": c}]} for c in group]
    return pd.DataFrame(rows)


def sol(*labels):
    return "<think>x</think><solution>" + ", ".join(labels) + "</solution>"


def test_diagnostics_on_constructed_completions():
    comps = _completions({
        1: [[sol("Edema"), sol("Edema") + " ", sol("Cardiomegaly"), sol("No Finding")]],
        2: [[sol("No Finding")] * 4],
        3: [[sol("No Finding")] * 4],
        4: [[sol("No Finding")] * 4],
    })
    div = diagnostics.group_diversity(comps, num_generations=4)
    assert div["distinct_completions"].tolist() == [4, 1, 1, 1]
    assert div["distinct_label_sets"].tolist() == [3, 1, 1, 1]
    assert div["label_set_entropy"].iloc[0] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    dom = diagnostics.dominance_curve(comps, window=8)
    assert dom["dominance"].tolist() == [0.5, 5 / 8, 1.0, 1.0] and dom["dominant_label"].iloc[-1] == "No Finding"
    assert dom["set_dominance"].tolist() == [0.5, 5 / 8, 1.0, 1.0] and dom["dominant_set"].iloc[-1] == "No Finding"
    empty = diagnostics.dominance_curve(_completions({1: [["<think>x</think><solution></solution>"] * 4]}), window=8)
    assert empty["dominance"].iloc[0] == 0.0 and empty["set_dominance"].iloc[0] == 1.0
    assert empty["dominant_set"].iloc[0] == "(empty)"
    log = pd.DataFrame({"step": [1, 2, 3, 4], "loss": [0.0] * 4, "reward": [0.1, 0.2, 0.2, 0.2], "entropy": [1.0, 0.5, 0.1, 0.05],
                        "kl": [0, 0.1, 0.2, 0.3], "frac_reward_zero_std": [0, 1, 1, 1]})
    rule = diagnostics.CollapseRule(entropy_fraction=0.5, set_margin=0.3, zero_std_min=0.5, start_steps=1, min_steps=2)
    per_step, episodes = diagnostics.run_diagnostics(log, comps, 4, {"No Finding": 0.3}, rule, window=8)
    assert per_step["entropy"].tolist() == [1.0, 0.5, 0.1, 0.05] and per_step["clip_ratio"].isna().all()
    assert episodes.to_dict("records") == [{"start": 2, "end": 4, "steps": 3}]
    assert diagnostics.entropy_of_counts(__import__("collections").Counter({"a": 1, "b": 1})) == pytest.approx(math.log(2))


TRUTHS = [["No Finding"]] * 30 + [["Edema"]] * 20 + [["Cardiomegaly"]] * 20 + [["Edema", "Pleural Effusion"]] * 15 \
    + [["Atelectasis"]] * 15
RULE = diagnostics.CollapseRule(entropy_fraction=0.5, set_margin=0.3, zero_std_min=0.5, start_steps=5, min_steps=3)


def _grpo_run(collapse_at=None, steps=60, seed=0):
    """A synthetic GRPO log and its completions (2 prompts x 4 generations a step): answers drawn from the
    RL prompts' label distribution, entropy about 1, a third of the groups without reward spread; from
    ``collapse_at`` on, entropy decays to 0.1, every group answers "No Finding" and has zero spread."""
    rng = np.random.default_rng(seed)
    log, groups = [], {}
    for step in range(1, steps + 1):
        collapsed = collapse_at is not None and step >= collapse_at
        entropy = 0.1 + 0.9 * 0.8 ** (step - collapse_at) if collapsed else 1.0 + rng.normal(0, 0.05)
        log.append({"step": step, "loss": 0.0, "reward": 0.5, "entropy": entropy,
                    "frac_reward_zero_std": 1.0 if collapsed else rng.choice([0.0, 0.5], p=[0.6, 0.4])})
        groups[step] = [[sol("No Finding")] * 4 if collapsed else
                        [sol(*TRUTHS[i]) for i in rng.integers(0, len(TRUTHS), 4)] for _ in range(2)]
    return pd.DataFrame(log), _completions(groups)


def test_collapse_detector_fires_on_a_known_collapse_and_not_on_healthy_runs():
    shares = diagnostics.truth_set_shares(TRUTHS)
    assert shares["No Finding"] == 0.3 and shares["Edema, Pleural Effusion"] == 0.15
    for seed in range(3):
        _, healthy = diagnostics.run_diagnostics(*_grpo_run(seed=seed), 4, shares, RULE, window=100)
        assert healthy.empty, (seed, healthy)
    per_step, found = diagnostics.run_diagnostics(*_grpo_run(collapse_at=30), 4, shares, RULE, window=100)
    assert len(found) == 1 and 30 <= found["start"].item() <= 34 and found["end"].item() == 60
    assert claims.collapse_share(per_step, found) >= 0.45
    # without zero-spread groups the answers still differ: not a collapse, whatever the entropy does
    log, comps = _grpo_run(collapse_at=30)
    assert diagnostics.run_diagnostics(log.assign(frac_reward_zero_std=0.0), comps, 4, shares, RULE)[1].empty
