"""Frame-wise structured extraction: one record per frame, whatever produced it.

Every backend turns one frame into a :class:`FrameRecord`: for every visible
instance its category, appearance attributes, box (pixels of the source
frame) and a 3x3 region cue. Three backends share that interface:

* :class:`GroundTruthBackend` converts annotations (SynthCampus, datasets with
  boxes or masks) into the record, with the annotated track id kept;
* :class:`OpenAICompatibleBackend` asks any OpenAI-compatible chat endpoint
  that accepts images (vLLM, llama.cpp server, Ollama, hosted APIs), with
  timeouts, retries with exponential backoff (honouring ``Retry-After``),
  rate limiting and bounded concurrency;
* :class:`LocalVLMBackend` runs a transformers vision-language model from a
  local directory.

The corpus builder may run videos in worker processes (``--workers``, ``--ray``): a backend travels there pickled.
The two model backends pickle as their settings and become, in a worker, that process's one backend of those
settings (:func:`shared_backend`), so a worker loads its model (or opens its connection pool) once, not per video.

Answers of model backends go through :func:`parse_extraction`, which repairs
simple faults (code fences, trailing commas, single quotes, Python literals)
and otherwise rejects the frame with a recorded reason.
"""

from __future__ import annotations

import abc
import ast
import base64
import email.utils
import http.client
import json
import logging
import math
import os
import random
import re
import socket
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tvad_chat.dtypes import parse_dtype
from tvad_chat.errors import ConfigError, DataError
from tvad_chat.motion import region_cue

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

# Canonical attribute keys; every backend maps what it has onto these.
ATTRIBUTE_KEYS = ("upper_color", "lower_color", "color", "size", "carrying", "hat", "action")


# --------------------------------------------------------------------------- records


@dataclass
class Instance:
    """One target seen in one frame."""

    category: str
    box: Box  # x1, y1, x2, y2 in pixels of the source frame
    attributes: dict[str, str] = field(default_factory=dict)
    region: str = "centre"
    confidence: float = 1.0
    anomalous: bool | None = None  # None: the backend does not say
    track_id: str | None = None  # ground truth only; model backends leave it None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = [round(float(v), 2) for v in self.box]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instance:
        return cls(category=d["category"], box=tuple(float(v) for v in d["box"]),  # type: ignore[arg-type]
                   attributes=dict(d.get("attributes") or {}), region=d.get("region", "centre"),
                   confidence=float(d.get("confidence", 1.0)), anomalous=d.get("anomalous"),
                   track_id=d.get("track_id"))


@dataclass
class FrameRecord:
    """The structured extraction of one frame."""

    video_id: str
    frame_index: int
    timestamp: float
    width: int
    height: int
    instances: list[Instance]
    backend: str
    ok: bool = True
    error: str | None = None  # why the frame was rejected (ok=False)
    repairs: list[str] = field(default_factory=list)  # what parse_extraction had to fix
    dropped: list[str] = field(default_factory=list)  # objects dropped from an accepted answer, and why

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["instances"] = [i.to_dict() for i in self.instances]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrameRecord:
        d = dict(d)
        d["instances"] = [Instance.from_dict(i) for i in d.get("instances", [])]
        return cls(**d)


@dataclass
class GTObject:
    """An annotated object in one frame (what readers give the ground-truth backend)."""

    track_id: str | None  # None: the annotation has no identities (masks only)
    category: str
    box: Box
    attributes: dict[str, str] = field(default_factory=dict)
    anomalous: bool = False


@dataclass
class FrameTask:
    """What a backend needs to extract one frame."""

    video_id: str
    frame_index: int
    timestamp: float
    width: int
    height: int
    image: np.ndarray | None = None  # uint8 RGB (H, W, 3); model backends need it
    annotations: list[GTObject] | None = None  # ground-truth backend needs it


# --------------------------------------------------------------------------- geometry helpers


def clip_box(box: Sequence[float], width: int, height: int) -> Box | None:
    """Clip to the frame; None when nothing of the box is left."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    x1, x2 = max(0.0, x1), min(float(width), x2)
    y1, y2 = max(0.0, y1), min(float(height), y2)
    if x2 - x1 < 1.0 or y2 - y1 < 1.0:
        return None
    return (x1, y1, x2, y2)


# --------------------------------------------------------------------------- prompt


def extraction_prompt(width: int, height: int) -> str:
    """The frame-extraction prompt (prompts/frame_extraction.txt) for an image of this size."""
    text = resources.files("prompts").joinpath("frame_extraction.txt").read_text(encoding="utf-8")
    return string.Template(text).substitute(width=int(width), height=int(height))


# --------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_MAX_ANSWER_CHARS = 200_000  # ast.literal_eval on huge inputs can exhaust the stack


class ExtractionParseError(ValueError):
    """A model answer that could not be turned into a record; the message is the recorded reason."""


def _pieces(text: str) -> list[tuple[str, bool]]:
    """``text`` cut into runs of (piece, inside a string literal). Quotes are ' and "; a backslash escapes
    inside a string; an apostrophe inside a bare word ("don't") is not a quote."""
    out: list[tuple[str, bool]] = []
    start = 0
    quote: str | None = None
    escape = False
    for i, ch in enumerate(text):
        if quote:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == quote:
                out.append((text[start : i + 1], True))
                start, quote = i + 1, None
        elif ch in "\"'" and not (ch == "'" and i > 0 and text[i - 1].isalnum()):
            if i > start:
                out.append((text[start:i], False))
            start, quote = i, ch
    if start < len(text):
        out.append((text[start:], quote is not None))
    return out


def _outermost_json(text: str) -> str | None:
    """The span from the first '{' or '[' to its balanced closing bracket (strings respected)."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    depth = 0
    pos = start
    for piece, in_string in _pieces(text[start:]):
        if not in_string:
            for k, ch in enumerate(piece):
                if ch in "{[":
                    depth += 1
                elif ch in "}]":
                    depth -= 1
                    if depth == 0:
                        return text[start : pos + k + 1]
        pos += len(piece)
    return None  # unbalanced: truncated answer


def _json_literals_to_python(text: str) -> str:
    """Replace bare true/false/null (outside strings) with Python's names for ast.literal_eval."""
    mapping = {"true": "True", "false": "False", "null": "None"}
    return "".join(piece if in_string else re.sub(r"[A-Za-z_]+", lambda m: mapping.get(m.group(0), m.group(0)), piece)
                   for piece, in_string in _pieces(text))


def loads_lenient(text: str) -> tuple[Any, list[str]]:
    """Parse a model's JSON answer, repairing simple faults. Returns (value, repairs made).

    Raises ExtractionParseError with the reason when the answer is not repairable.
    """
    repairs: list[str] = []
    if not isinstance(text, str) or not text.strip():
        raise ExtractionParseError("empty answer")
    if len(text) > _MAX_ANSWER_CHARS:
        raise ExtractionParseError(f"answer too long ({len(text)} characters)")
    body = text.strip()
    fence = _FENCE.search(body)
    if fence:
        body = fence.group(1).strip()
        repairs.append("code_fence")
    try:
        return json.loads(body), repairs
    except json.JSONDecodeError:
        pass
    span = _outermost_json(body)
    if span is None:
        raise ExtractionParseError("no complete JSON object in the answer (truncated or prose only)")
    if span != body:
        repairs.append("surrounding_text")
    try:
        return json.loads(span), repairs
    except json.JSONDecodeError:
        pass
    no_commas = _TRAILING_COMMA.sub(r"\1", span)
    if no_commas != span:
        try:
            value = json.loads(no_commas)
            return value, repairs + ["trailing_comma"]
        except json.JSONDecodeError:
            pass
    # Python-style dicts: single quotes, True/None, trailing commas. literal_eval only builds literals.
    try:
        value = ast.literal_eval(_json_literals_to_python(span))
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        raise ExtractionParseError(f"malformed JSON that could not be repaired ({type(err).__name__})") from None
    fixes = []
    if "'" in span:
        fixes.append("single_quotes")
    if no_commas != span:
        fixes.append("trailing_comma")
    if re.search(r"\b(True|False|None)\b", span):
        fixes.append("python_literals")
    return value, repairs + (fixes or ["python_literal_syntax"])


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _parse_box(raw: Any) -> list[float] | None:
    if isinstance(raw, dict):
        keys = [("x1", "y1", "x2", "y2"), ("xmin", "ymin", "xmax", "ymax"), ("left", "top", "right", "bottom")]
        for ks in keys:
            if all(k in raw for k in ks):
                raw = [raw[k] for k in ks]
                break
        else:
            return None
    if not isinstance(raw, list | tuple) or len(raw) != 4:
        return None
    vals = [_as_float(v) for v in raw]
    if any(v is None for v in vals):
        return None
    return vals  # type: ignore[return-value]


def _clean_attributes(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    out: dict[str, str] = {}
    for k, v in raw.items():
        key = str(k).strip().lower().replace(" ", "_")
        if isinstance(v, list):
            v = " and ".join(str(x) for x in v if x is not None)
        if v is None or isinstance(v, dict):
            continue
        val = str(v).strip().lower()
        if val and val not in ("none", "unknown", "n/a", "null"):
            out[key] = val
    return out


def parse_extraction(
    text: str, width: int, height: int, sent_size: tuple[int, int] | None = None
) -> tuple[list[Instance], list[str], list[str]]:
    """Turn a model answer into instances for a frame of (width, height).

    ``sent_size`` is the (width, height) of the image the model saw; boxes are
    scaled from it to the frame. Boxes whose four values all lie in [0, 1] are
    read as normalised. Returns (instances, repairs, dropped-object reasons);
    raises ExtractionParseError when the answer as a whole is unusable.
    """
    value, repairs = loads_lenient(text)
    if isinstance(value, list):
        objects = value
        repairs.append("bare_list")
    elif isinstance(value, dict):
        objects = None
        for key in ("objects", "instances", "targets", "detections"):
            if key in value:
                objects = value[key]
                break
        if objects is None:
            raise ExtractionParseError(f"JSON object without an 'objects' list (keys: {sorted(value)[:6]})")
    else:
        raise ExtractionParseError(f"expected a JSON object, got {type(value).__name__}")
    if not isinstance(objects, list):
        raise ExtractionParseError(f"'objects' is a {type(objects).__name__}, not a list")
    sw, sh = sent_size or (width, height)
    instances: list[Instance] = []
    dropped: list[str] = []
    for n, obj in enumerate(objects):
        if not isinstance(obj, dict):
            dropped.append(f"object {n}: not a JSON object")
            continue
        cat = obj.get("category") or obj.get("class") or obj.get("label")
        if not isinstance(cat, str) or not cat.strip():
            dropped.append(f"object {n}: no category")
            continue
        box = _parse_box(obj.get("box", obj.get("bbox")))
        if box is None:
            dropped.append(f"object {n}: box is not four numbers")
            continue
        if all(0.0 <= v <= 1.0 for v in box) and max(box) > 0:
            box = [box[0] * sw, box[1] * sh, box[2] * sw, box[3] * sh]
        box = [box[0] * width / sw, box[1] * height / sh, box[2] * width / sw, box[3] * height / sh]
        clipped = clip_box(box, width, height)
        if clipped is None:
            dropped.append(f"object {n}: box outside the image or empty")
            continue
        conf = _as_float(obj.get("confidence", 1.0))
        conf = 1.0 if conf is None else min(1.0, max(0.0, conf))
        anom = obj.get("anomalous")
        if isinstance(anom, str):
            anom = {"true": True, "yes": True, "false": False, "no": False}.get(anom.strip().lower())
        if not isinstance(anom, bool):
            anom = None
        region = region_cue(clipped, width, height)  # recomputed from the box: the box is the evidence
        instances.append(Instance(category=cat.strip().lower(), box=clipped,
                                  attributes=_clean_attributes(obj.get("attributes")), region=region,
                                  confidence=conf, anomalous=anom))
    return instances, repairs, dropped


# --------------------------------------------------------------------------- backends


_SHARED: dict[tuple[type, tuple[Any, ...]], ExtractionBackend] = {}


def shared_backend(cls: type[ExtractionBackend], settings: tuple[Any, ...]) -> ExtractionBackend:
    """This process's backend ``cls(*settings)``, made on first use: what a model backend unpickles to in a worker
    process, so that every video the worker extracts uses the one loaded model."""
    key = (cls, settings)
    if key not in _SHARED:
        _SHARED[key] = cls(*settings)
    return _SHARED[key]


class ExtractionBackend(abc.ABC):
    """Interface of every backend: ``extract(task)`` and ``extract_many(tasks)`` (same order)."""

    name = "base"
    needs_images = True  # the corpus runner decodes frames only for backends that look at them

    @abc.abstractmethod
    def extract(self, task: FrameTask) -> FrameRecord:
        """One frame's structured record."""

    def extract_many(self, tasks: Sequence[FrameTask]) -> list[FrameRecord]:
        return [self.extract(t) for t in tasks]

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources (threads, models)."""


class GroundTruthBackend(ExtractionBackend):
    """Annotations -> records: exact boxes, categories, attributes and track ids."""

    name = "gt"
    needs_images = False

    def extract(self, task: FrameTask) -> FrameRecord:
        if task.annotations is None:
            raise DataError(
                f"{task.video_id} frame {task.frame_index}: the ground-truth backend needs annotations; "
                "use a source with boxes (synth, ped2, avenue) or a model backend (openai, local)"
            )
        instances = []
        for obj in task.annotations:
            box = clip_box(obj.box, task.width, task.height)
            if box is None:
                continue
            attrs = {k: str(v) for k, v in obj.attributes.items() if v not in (None, "")}
            instances.append(Instance(category=obj.category, box=box, attributes=attrs,
                                      region=region_cue(box, task.width, task.height), confidence=1.0,
                                      anomalous=bool(obj.anomalous),
                                      track_id=None if obj.track_id is None else str(obj.track_id)))
        return FrameRecord(video_id=task.video_id, frame_index=task.frame_index, timestamp=task.timestamp,
                           width=task.width, height=task.height, instances=instances, backend=self.name)


def _encode_image(image: np.ndarray, max_side: int, quality: int) -> tuple[str, tuple[int, int]]:
    """JPEG data URL of an RGB image, downscaled so its longer side is <= max_side."""
    import cv2

    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise DataError("frame image must be an RGB array (H, W, 3) for a model backend")
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DataError("could not JPEG-encode a frame")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii"), (
        image.shape[1], image.shape[0])


class RateLimiter:
    """At most ``rate`` acquisitions per second across threads (evenly spaced slots)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self.interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@dataclass(frozen=True)
class OpenAIConfig:
    """Settings of an OpenAI-compatible chat endpoint. The key itself is never stored here."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"  # name of the variable holding the key; None: no auth
    timeout_s: float = 60.0
    retries: int = 4  # extra attempts after the first, for 408/429/5xx, timeouts and refused connections
    backoff_s: float = 1.0  # first wait; doubles each retry (with +-20% jitter)
    max_backoff_s: float = 60.0
    max_retry_after_s: float = 300.0
    rate_per_s: float | None = None  # request starts per second across all workers
    concurrency: int = 4
    parse_retries: int = 1  # re-ask when an answer cannot be parsed
    max_tokens: int = 1024
    temperature: float = 0.0
    image_max_side: int = 768
    jpeg_quality: int = 90
    json_mode: bool = False  # send response_format={"type": "json_object"} (not every server knows it)

    def validate(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"--base-url must start with http:// or https:// (got {self.base_url!r})")
        if not self.model:
            raise ConfigError("--model is required for the openai backend")
        for name in ("timeout_s", "backoff_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.retries < 0 or self.parse_retries < 0:
            raise ConfigError("retries must be >= 0")
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be >= 1")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ConfigError("--rate must be > 0 requests per second")


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Fatal(Exception):
    pass


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class BackendStats:
    requests: int = 0
    retries: int = 0
    ok: int = 0
    rejected: int = 0
    repaired: int = 0
    waited_s: float = 0.0


class OpenAICompatibleBackend(ExtractionBackend):
    """Frame extraction through ``POST {base_url}/chat/completions`` with an image data URL."""

    name = "openai"

    def __init__(self, config: OpenAIConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        config.validate()
        self.config = config
        self._key: str | None = None
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(
                    f"environment variable {config.api_key_env} is empty or unset; export the API key there "
                    "(or pass --api-key-env NONE for a server without authentication)"
                )
            self._key = key
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.limiter = RateLimiter(config.rate_per_s)
        self.stats = BackendStats()
        self._stats_lock = threading.Lock()
        self._sleep = sleep
        self._pool: ThreadPoolExecutor | None = None

    def __reduce__(self) -> tuple[Any, ...]:  # a worker gets its own (see shared_backend); the key stays out
        return shared_backend, (OpenAICompatibleBackend, (self.config,))

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatibleBackend(url={self.url!r}, model={self.config.model!r})"

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _count(self, **inc: float) -> None:
        with self._stats_lock:
            for k, v in inc.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def _post(self, payload: dict[str, Any]) -> str:
        """One HTTP attempt; returns the message content or raises _Retryable / _Fatal."""
        data = json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(self.url, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        if self._key:
            req.add_header("Authorization", "Bearer " + self._key)
        self.limiter.acquire()
        self._count(requests=1)
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as err:
            status = err.code
            retry_after = _retry_after_seconds(err.headers.get("Retry-After") if err.headers else None)
            try:
                detail = err.read(300).decode("utf-8", "replace")
            except Exception:  # noqa: BLE001 - the body is only a hint
                detail = ""
            reason = self._scrub(f"HTTP {status}: {detail.strip()[:200]}")
            if status in (408, 409, 425, 429) or status >= 500:
                raise _Retryable(reason, retry_after) from None
            if status in (401, 403):
                reason += f" (check the key in ${self.config.api_key_env})"
            raise _Fatal(reason) from None
        except TimeoutError as err:
            raise _Retryable(f"timeout after {self.config.timeout_s:g} s") from err
        except urllib.error.URLError as err:
            r = err.reason
            if isinstance(r, TimeoutError | socket.timeout):
                raise _Retryable(f"timeout after {self.config.timeout_s:g} s") from None
            if isinstance(r, ConnectionRefusedError):
                raise _Retryable(f"connection refused by {self.config.base_url}") from None
            raise _Retryable(self._scrub(f"connection error: {r}")) from None
        except (ConnectionError, http.client.HTTPException) as err:
            raise _Retryable(self._scrub(f"connection error: {type(err).__name__}: {err}")) from None
        try:
            doc = json.loads(body)
            content = doc["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Fatal("response is not an OpenAI chat completion (no choices[0].message.content)") from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise _Fatal("message content is not text")
        return content

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.config.max_retry_after_s)
        base = self.config.backoff_s * (2**attempt)
        return min(self.config.max_backoff_s, base * random.uniform(0.8, 1.2))

    def complete(self, payload: dict[str, Any]) -> str:
        """POST with retries. Raises _Fatal with the reason when every attempt failed."""
        attempt = 0
        while True:
            try:
                return self._post(payload)
            except _Retryable as err:
                if attempt >= self.config.retries:
                    raise _Fatal(f"{err} (gave up after {attempt + 1} attempts)") from None
                wait = self._backoff(attempt, err.retry_after)
                log.info("request failed (%s); retry %d/%d in %.2f s", err, attempt + 1, self.config.retries, wait)
                self._count(retries=1, waited_s=wait)
                self._sleep(wait)
                attempt += 1

    def build_payload(self, task: FrameTask) -> tuple[dict[str, Any], tuple[int, int]]:
        url, sent = _encode_image(task.image, self.config.image_max_side, self.config.jpeg_quality)
        prompt = extraction_prompt(*sent)
        payload: dict[str, Any] = {
            "model": self.config.model,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": url}},
            ]}],
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
        }
        if self.config.json_mode:
            payload["response_format"] = {"type": "json_object"}
        return payload, sent

    def extract(self, task: FrameTask) -> FrameRecord:
        rec = FrameRecord(video_id=task.video_id, frame_index=task.frame_index, timestamp=task.timestamp,
                          width=task.width, height=task.height, instances=[], backend=self.name)
        try:
            payload, sent = self.build_payload(task)
        except DataError as err:
            rec.ok, rec.error = False, str(err)
            self._count(rejected=1)
            return rec
        last_parse_error = ""
        for attempt in range(self.config.parse_retries + 1):
            if attempt:  # at temperature 0 the same request tends to give the same broken answer
                payload = {**payload, "temperature": max(self.config.temperature, 0.3)}
            try:
                answer = self.complete(payload)
            except _Fatal as err:
                rec.ok, rec.error = False, f"request failed: {err}"
                log.warning("%s frame %d: %s", task.video_id, task.frame_index, rec.error)
                self._count(rejected=1)
                return rec
            try:
                rec.instances, rec.repairs, rec.dropped = parse_extraction(answer, task.width, task.height, sent)
            except ExtractionParseError as err:
                last_parse_error = str(err)
                log.info("%s frame %d: unusable answer (%s)", task.video_id, task.frame_index, err)
                continue
            self._count(ok=1, repaired=1 if rec.repairs else 0)
            return rec
        rec.ok, rec.error = False, f"unparseable answer: {last_parse_error}"
        self._count(rejected=1)
        return rec

    def extract_many(self, tasks: Sequence[FrameTask]) -> list[FrameRecord]:
        if self.config.concurrency == 1 or len(tasks) <= 1:
            return [self.extract(t) for t in tasks]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="tvad-extract")
        return list(self._pool.map(self.extract, tasks))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class LocalVLMBackend(ExtractionBackend):
    """A transformers image-text-to-text model from a local directory (e.g. Qwen2.5-VL), loaded on first use (a
    builder that runs its videos in worker processes never loads it itself).

    ``generate_fn(image, prompt) -> str`` replaces the model (tests, custom runtimes).
    """

    name = "local"

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", dtype: str | None = None,
                 max_new_tokens: int = 768, image_max_side: int = 768,
                 generate_fn: Callable[[np.ndarray, str], str] | None = None) -> None:
        self._settings = (model_dir, device, dtype, max_new_tokens, image_max_side, generate_fn)
        self.image_max_side = image_max_side
        self.max_new_tokens = max_new_tokens
        self.model_dir, self.device, self.dtype = model_dir, device, dtype
        self.model = self.processor = None
        if generate_fn is not None:
            self._generate = generate_fn
            return
        if model_dir is None or not Path(model_dir).is_dir():
            raise ConfigError(f"--model must be a local model directory for the local backend (got {model_dir!r})")
        self._generate = self._hf_generate

    def __reduce__(self) -> tuple[Any, ...]:  # a worker loads the model once (see shared_backend)
        return shared_backend, (LocalVLMBackend, self._settings)

    def _load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        torch_dtype = parse_dtype(self.dtype, self.device)
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_dir, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.model_dir, local_files_only=True, dtype=torch_dtype).to(self.device).eval()
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot load a vision-language model from {self.model_dir}: {err}") from err

    def _hf_generate(self, image: np.ndarray, prompt: str) -> str:
        import torch
        from PIL import Image

        if self.model is None:
            self._load()
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=[Image.fromarray(image)], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)[0]

    def extract(self, task: FrameTask) -> FrameRecord:
        import cv2

        rec = FrameRecord(video_id=task.video_id, frame_index=task.frame_index, timestamp=task.timestamp,
                          width=task.width, height=task.height, instances=[], backend=self.name)
        if task.image is None:
            rec.ok, rec.error = False, "no image for the frame"
            return rec
        image = task.image
        h, w = image.shape[:2]
        scale = min(1.0, self.image_max_side / max(h, w))
        if scale < 1.0:
            image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        sent = (image.shape[1], image.shape[0])
        answer = self._generate(image, extraction_prompt(*sent))
        try:
            rec.instances, rec.repairs, rec.dropped = parse_extraction(answer, task.width, task.height, sent)
        except ExtractionParseError as err:
            rec.ok, rec.error = False, f"unparseable answer: {err}"
        return rec
