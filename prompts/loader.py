"""Load the prompt data files of prompts/ into a PromptSet."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml

from tvad_chat.errors import ConfigError

MAX_EVENT_CHARS = 80


@dataclass(frozen=True)
class PromptSet:
    events: tuple[str, ...]
    normal_texts: list[str]  # normal templates x events
    abnormal_texts: list[str]  # abnormal templates x events
    system_prompt: str
    anomaly_tokens: tuple[str, str, str]  # (start, pad, end)


def read_prompt_file(name: str) -> str:
    """Text of a data file shipped in the prompts package."""
    try:
        return resources.files("prompts").joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"prompt file prompts/{name} is missing: reinstall the project") from err


def clean_events(events: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """Validate user-given anomaly categories ("bicycle, fight" or a list): trimmed, deduplicated."""
    if events is None:
        return []
    if isinstance(events, str):
        events = events.split(",")
    cleaned: list[str] = []
    for raw in events:
        if not isinstance(raw, str):
            raise ConfigError(f"anomaly categories must be text, got {raw!r}")
        event = " ".join(raw.split())
        if not event:
            continue
        if len(event) > MAX_EVENT_CHARS or "{" in event or "}" in event:
            raise ConfigError(f"anomaly category {event[:40]!r}... is not usable: keep it under "
                              f"{MAX_EVENT_CHARS} characters, without braces")
        if event.lower() not in {e.lower() for e in cleaned}:
            cleaned.append(event)
    return cleaned


def load_prompts(extra_events: list[str] | tuple[str, ...] | str | None = None) -> PromptSet:
    """The shipped templates and event classes, extended by user-given categories (e.g. ["bicycle", "fight"])."""
    try:
        data = yaml.safe_load(read_prompt_file("templates.yaml"))
        templates = {key: [str(t) for t in data[key]] for key in ("normal_templates", "abnormal_templates")}
        tokens = data["anomaly_tokens"]
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise ConfigError(f"prompts/templates.yaml is malformed ({err}): restore it from the repository") from err
    for key, texts in templates.items():
        if not texts or any("{event}" not in t for t in texts):
            raise ConfigError(f"prompts/templates.yaml: every {key} entry must contain {{event}}")
    events = clean_events(list(data["events"]))
    for event in clean_events(extra_events):
        if event.lower() not in {e.lower() for e in events}:
            events.append(event)
    if not events:
        raise ConfigError("prompts/templates.yaml lists no event classes and none were given")
    return PromptSet(
        events=tuple(events),
        normal_texts=[t.format(event=e) for t in templates["normal_templates"] for e in events],
        abnormal_texts=[t.format(event=e) for t in templates["abnormal_templates"] for e in events],
        system_prompt=" ".join(str(data["system_prompt"]).split()),
        anomaly_tokens=(tokens["start"], tokens["pad"], tokens["end"]),
    )
