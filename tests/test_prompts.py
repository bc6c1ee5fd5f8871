import pytest

from prompts.loader import clean_events, load_prompts
from tvad_chat.errors import ConfigError


def test_templates_times_events() -> None:
    prompts = load_prompts()
    assert len(prompts.normal_texts) == 3 * len(prompts.events)
    assert "a surveillance clip where a person running occurs" in prompts.abnormal_texts
    assert all("{" not in text for text in prompts.normal_texts + prompts.abnormal_texts)
    assert prompts.anomaly_tokens == ("<|anomaly_start|>", "<|anomaly_pad|>", "<|anomaly_end|>")
    assert "anomaly" in prompts.system_prompt


def test_user_categories_extend_events_once() -> None:
    base = load_prompts()
    extended = load_prompts("bicycle,  fight , Bicycle,A person  running")
    assert extended.events[-2:] == ("bicycle", "fight")
    assert len(extended.events) == len(base.events) + 2
    assert "an anomalous event: fight" in extended.abnormal_texts


def test_bad_categories_raise() -> None:
    with pytest.raises(ConfigError):
        clean_events(["x" * 200])
    with pytest.raises(ConfigError):
        clean_events(["{event}"])
    assert clean_events(["", "  "]) == []


def test_every_event_fills_every_template_in_both_classes() -> None:
    prompts = load_prompts(["bicycle"])
    for event in prompts.events:
        assert sum(event in t for t in prompts.abnormal_texts) >= 3
        assert sum(event in t for t in prompts.normal_texts) >= 3
    # normal and abnormal texts differ for the same event (negations), and no text repeats
    assert not set(prompts.normal_texts) & set(prompts.abnormal_texts)
    assert len(set(prompts.abnormal_texts)) == len(prompts.abnormal_texts)
    assert "a surveillance clip where bicycle does not occur" in prompts.normal_texts


def test_malformed_template_file_raises_config_error(monkeypatch) -> None:
    import prompts.loader as loader

    monkeypatch.setattr(loader, "read_prompt_file", lambda name: "abnormal_templates: [x]\n")
    with pytest.raises(ConfigError, match="malformed"):
        loader.load_prompts()
    monkeypatch.setattr(loader, "read_prompt_file", lambda name: (
        "abnormal_templates: [no slot]\nnormal_templates: ['{event}']\nanomaly_tokens: {start: a, pad: b, end: c}\n"
        "events: [x]\nsystem_prompt: s\n"))
    with pytest.raises(ConfigError, match="event"):
        loader.load_prompts()
