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
    extended = load_prompts("bicycle,  fight , Bicycle,running")
    assert extended.events[-2:] == ("bicycle", "fight")
    assert len(extended.events) == len(base.events) + 2
    assert "an anomalous event: fight" in extended.abnormal_texts


def test_bad_categories_raise() -> None:
    with pytest.raises(ConfigError):
        clean_events(["x" * 200])
    with pytest.raises(ConfigError):
        clean_events(["{event}"])
    assert clean_events(["", "  "]) == []
