"""Reasoning-trace teachers behind one interface, cached in JSONL so interrupted runs resume.

- ``TemplateTeacher``: deterministic; writes a rationale in each SFT format from the labels and, in the
  phantom world, from what was actually rendered in the image (``phantom_findings.jsonl``).
- ``HTTPTeacher``: any OpenAI-compatible chat-completions endpoint (the paper used Gemini 2.5). The image is
  sent base64 and the ground-truth labels are in the prompt, as in the paper ("reason as if independently").
  The key is read from an environment variable and never written anywhere; retries with exponential
  backoff on 429 / 5xx / timeouts / malformed replies; a thread pool bounds concurrency.

``generate_traces`` keys each trace by what shapes it (``TraceRequest.key``: the image's id and bytes, the format,
the teacher prompt, the rendered findings, and the teacher's ``identity``: kind, model, endpoint and sampling, the
template teacher by its code); a rerun makes no second request for an item already in the cache, and a change of
teacher or prompt makes new traces instead of reusing old ones.
"""
from __future__ import annotations

import base64
import inspect
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from .. import jsonl_store
from ..cache_keys import digest, file_digest
from ..labels import format_label_list

TEACHER_PROMPT = (
    "You are an expert thoracic radiologist writing teaching rationales. The confirmed findings for this chest "
    "radiograph are: {labels}. Write the reasoning a radiologist would follow to reach exactly these findings "
    "from the image, as if reasoning independently: do not mention that the findings were given to you. "
    "Style: {style}. Return only the reasoning text, without tags or a final label list.")
STYLES = {
    "free_reasoning": "a concise analysis of two to four sentences",
    "reasoning_narrative": "a free-form expert narrative of one paragraph",
    "reasoning_a": "a 12-step checklist, one short line per step: image quality, devices, airway, mediastinum, "
                   "heart size, hila, right lung, left lung, pleura, diaphragm, bones, summary",
}


@dataclass(frozen=True)
class TraceRequest:
    image_id: str
    image_path: str
    labels: tuple[str, ...]
    fmt: str
    findings: tuple[tuple[str, str], ...] = ()   # (label, what was drawn), phantom world only

    def prompt(self) -> str:
        return TEACHER_PROMPT.format(labels=format_label_list(self.labels) or "No Finding",
                                     style=STYLES.get(self.fmt, STYLES["free_reasoning"]))

    def key(self, teacher: "Teacher") -> str:
        return digest({"image_id": self.image_id, "image": file_digest(self.image_path), "fmt": self.fmt,
                       "prompt": self.prompt(), "findings": self.findings, "teacher": teacher.identity}, 24)


class Teacher(Protocol):
    name: str
    identity: dict      # what of the teacher shapes its traces (part of every trace key)

    def trace(self, request: TraceRequest) -> str: ...


class TemplateTeacher:
    """Deterministic rationales built from labels and rendered findings."""

    name = "template"

    @property
    def identity(self) -> dict:
        return {"teacher": self.name, "code": _TEMPLATE_CODE}

    def trace(self, r: TraceRequest) -> str:
        seen = dict(r.findings)
        abnormal = [lbl for lbl in r.labels if lbl not in ("No Finding",)]
        clauses = [seen.get(lbl, f"appearance consistent with {lbl.lower()}") for lbl in abnormal]
        if r.fmt == "reasoning_a":
            return self._checklist(abnormal, seen)
        if not clauses:
            clauses = ["clear lungs, normal cardiac size and mediastinal contours, no pleural abnormality"]
        if r.fmt == "reasoning_narrative":
            return ("On review of this frontal radiograph I look first at the overall picture and then region by "
                    "region. " + " ".join(f"I note {c}." for c in clauses) +
                    " Taken together these observations define the findings below.")
        return "Analysis: " + "; ".join(clauses) + "."

    @staticmethod
    def _checklist(abnormal: list[str], seen: dict[str, str]) -> str:
        def note(*labels: str, normal: str) -> str:
            hits = [seen.get(lbl, lbl.lower()) for lbl in labels if lbl in abnormal]
            return "; ".join(hits) if hits else normal

        steps = [
            ("image quality", "adequate frontal projection"),
            ("devices", note("Support Devices", normal="no lines or tubes")),
            ("airway", "trachea midline"),
            ("mediastinum", note("Enlarged Cardiomediastinum", normal="normal mediastinal width")),
            ("heart size", note("Cardiomegaly", normal="normal cardiac size")),
            ("hila", note("Edema", normal="normal hila")),
            ("right lung", note("Consolidation", "Pneumonia", "Lung Opacity", "Lung Lesion", "Atelectasis", normal="clear")),
            ("left lung", "see above" if any(l in abnormal for l in ("Consolidation", "Pneumonia", "Lung Opacity", "Lung Lesion", "Atelectasis")) else "clear"),
            ("pleura", note("Pleural Effusion", "Pleural Other", "Pneumothorax", normal="no effusion or pneumothorax")),
            ("diaphragm", "domes visible"),
            ("bones", note("Fracture", normal="no acute bony abnormality")),
            ("summary", ", ".join(abnormal).lower() or "no acute abnormality"),
        ]
        return " ".join(f"{i}. {name}: {text}." for i, (name, text) in enumerate(steps, start=1))


# The template teacher's code, digested once, at import: inspect.getsource parses this module's syntax tree, and
# doing so for every trace key raised "AST constructor recursion depth mismatch" on CPython 3.11.7.
_TEMPLATE_CODE = digest(inspect.getsource(TemplateTeacher))


class TeacherError(RuntimeError):
    pass


class HTTPTeacher:
    """OpenAI-compatible chat-completions teacher."""

    name = "http"

    def __init__(self, base_url: str, model: str, api_key_env: str = "TEACHER_API_KEY", timeout: float = 60.0,
                 max_retries: int = 5, backoff: float = 1.0, temperature: float = 0.2):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.timeout = model, api_key_env, timeout
        self.max_retries, self.backoff, self.temperature = max_retries, backoff, temperature

    @property
    def identity(self) -> dict:
        return {"teacher": self.name, "url": self.url, "model": self.model, "temperature": self.temperature}

    def _key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise TeacherError(f"the HTTP teacher needs an API key in the environment variable {self.api_key_env}")
        return key

    def _body(self, r: TraceRequest) -> bytes:
        image = base64.b64encode(Path(r.image_path).read_bytes()).decode()
        mime = "image/png" if r.image_path.lower().endswith(".png") else "image/jpeg"
        return json.dumps({"model": self.model, "temperature": self.temperature, "messages": [{
            "role": "user", "content": [{"type": "text", "text": r.prompt()},
                                        {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{image}"}}]}]}).encode()

    def trace(self, r: TraceRequest) -> str:
        body, key = self._body(r), self._key()
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url, data=body, method="POST", headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    reply = json.loads(resp.read())
                text = reply["choices"][0]["message"]["content"]
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("empty content")
                return text.strip()
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    raise TeacherError(f"{self.url}: {last} (not retried)") from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                last = f"network: {exc}"
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                last = f"malformed reply: {exc}"
        raise TeacherError(f"{self.url}: gave up after {self.max_retries + 1} attempts ({last})")


def make_teacher(kind: str, **http_options) -> Teacher:
    if kind == "template":
        return TemplateTeacher()
    if kind == "http":
        return HTTPTeacher(**http_options)
    raise ValueError(f"unknown teacher {kind!r}; choose template or http")


def generate_traces(teacher: Teacher, requests: list[TraceRequest], cache: Path, concurrency: int = 4,
                    progress: bool = True) -> list[str]:
    """The trace of every request, in order, reusing the cache and appending each new one as it arrives.

    Items whose teacher call fails are counted and reported, not written; a rerun retries only those.
    """
    cache = Path(cache)
    broken = jsonl_store.repair(cache)
    if broken:
        print(f"{cache.name}: dropped {broken} incomplete line(s) from an interrupted run; they will be redone")
    done = {row["key"]: row["trace"] for row in jsonl_store.read_rows(cache)[0]}
    keys = [r.key(teacher) for r in requests]
    todo = [(k, r) for k, r in dict(zip(keys, requests)).items() if k not in done]
    failures: list[str] = []
    bar = tqdm(total=len(todo), desc=f"traces ({teacher.name})", disable=not progress or not todo)

    def record(key: str, r: TraceRequest, text: str) -> None:
        jsonl_store.append_rows(cache, [{"key": key, "image_id": r.image_id, "fmt": r.fmt,
                                         "teacher": teacher.name, "trace": text}])
        done[key] = text
        bar.update()

    if concurrency <= 1 or isinstance(teacher, TemplateTeacher):
        for key, r in todo:
            record(key, r, teacher.trace(r))
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = {pool.submit(teacher.trace, r): (key, r) for key, r in todo}
            for fut in as_completed(futures):
                try:
                    record(*futures[fut], fut.result())
                except TeacherError as exc:
                    failures.append(f"{futures[fut][1].image_id}: {exc}")
                    bar.update()
    bar.close()
    if failures:
        raise TeacherError(f"{len(failures)} of {len(todo)} trace requests failed (done ones are cached; rerun to "
                           f"retry the rest). First: {failures[0]}")
    return [done[k] for k in keys]
