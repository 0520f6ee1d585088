"""Names and locations at the PII boundary through Presidio (the presidio extra).

No trained spaCy pipeline is installable without the model hub, so these tests give
Presidio a real spaCy pipeline whose entity ruler tags a few names and places: they prove
the wiring (config, Presidio, spans, keys and values of tool data, block mode, errors),
not how many names a trained pipeline finds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import pytest
import spacy
from spacy.pipeline import EntityRuler

from agentflow.config import load_config
from agentflow.exceptions import ConfigError, PolicyViolation
from agentflow.messages import AssistantMessage, Message, ToolCall, ToolResultMessage, UserMessage
from agentflow.presidio import PresidioDetector
from agentflow.routing import Router

CONFIG = """\
[tiers.tools]
model = "sglang:http://gpu-glm:30000"
self_hosted = true

[tiers.frontier]
model = "anthropic:claude-sonnet-4-5"

[routing]
respond = "tools"
high_stakes = "frontier"

[policy]
pii = "{mode}"
{detectors}
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spaCy pipeline on disk that tags Ada Lovelace, streets and Portland."""
    nlp = spacy.blank("en")
    ruler = cast(EntityRuler, nlp.add_pipe("entity_ruler"))
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": [{"TEXT": "Ada"}, {"TEXT": "Lovelace"}]},
            {"label": "GPE", "pattern": "Portland"},
            {
                "label": "FAC",
                "pattern": [{"IS_TITLE": True}, {"LOWER": {"IN": ["road", "street"]}}],
            },
        ]
    )
    path = tmp_path_factory.mktemp("pipeline")
    nlp.to_disk(path)
    return path


def router(tmp_path: Path, pipeline: Path, *, mode: str = "redact", on: bool = True) -> Router:
    detectors = f'pii_detectors = ["presidio"]\npresidio = {{ model = "{pipeline}" }}'
    path = tmp_path / "agentflow.toml"
    path.write_text(CONFIG.format(mode=mode, detectors=detectors if on else ""))
    return Router.from_config(load_config(path, env={}))


def test_names_and_places_are_redacted_before_a_hosted_tier(tmp_path: Path, pipeline: Path) -> None:
    gate = router(tmp_path, pipeline)
    text = "I am Ada Lovelace of 12 Crescent Road, Portland; order 1042"
    sent, counts = gate.boundary(gate.tiers["frontier"], [UserMessage(content=text)])
    assert sent[0].content == "I am [NAME] of 12 [LOCATION], [LOCATION]; order 1042"
    assert counts == {"name": 1, "location": 2}
    kept, none = gate.boundary(gate.tiers["tools"], [UserMessage(content=text)])
    assert kept[0].content == text
    assert none == {}


def test_names_in_tool_argument_keys_and_results_are_redacted(
    tmp_path: Path, pipeline: Path
) -> None:
    gate = router(tmp_path, pipeline)
    call = ToolCall(
        id="c1",
        name="ship",
        arguments={"to": {"Ada Lovelace": "Crescent Road"}, "email": "ada@example.com"},
    )
    result = ToolResultMessage(
        tool_call_id="c1", name="ship", content=json.dumps({"recipient": "Ada Lovelace"})
    )
    messages: list[Message] = [AssistantMessage(tool_calls=[call]), result]
    sent, counts = gate.boundary(gate.tiers["frontier"], messages)
    first = sent[0]
    assert isinstance(first, AssistantMessage)
    assert first.tool_calls[0].arguments == {"to": {"[NAME]": "[LOCATION]"}, "email": "[EMAIL]"}
    assert sent[1].content == '{"recipient": "[NAME]"}'
    assert counts == {"name": 2, "location": 1, "email": 1}


def test_block_mode_refuses_a_name(tmp_path: Path, pipeline: Path) -> None:
    gate = router(tmp_path, pipeline, mode="block")
    with pytest.raises(PolicyViolation, match="name x1"):
        gate.boundary(gate.tiers["frontier"], [UserMessage(content="This is Ada Lovelace")])


def test_names_pass_when_the_detector_is_not_configured(tmp_path: Path, pipeline: Path) -> None:
    gate = router(tmp_path, pipeline, on=False)
    text = "I am Ada Lovelace of Crescent Road"
    sent, counts = gate.boundary(gate.tiers["frontier"], [UserMessage(content=text)])
    assert sent[0].content == text
    assert counts == {}


def test_a_pipeline_that_is_not_installed_is_a_config_error_naming_file_and_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agentflow.toml"
    detectors = 'pii_detectors = ["presidio"]\npresidio = { model = "en_core_web_nonesuch" }'
    path.write_text(CONFIG.format(mode="redact", detectors=detectors))
    with pytest.raises(ConfigError) as info:
        Router.from_config(load_config(path, env={}))
    assert (info.value.file, info.value.key) == (str(path), "policy.presidio.model")
    assert "python -m spacy download en_core_web_nonesuch" in info.value.reason


def test_the_detector_finds_nothing_in_text_without_entities(pipeline: Path) -> None:
    detector = PresidioDetector(str(pipeline))
    assert detector("Your order 1042 ships on 2026-12-04 to the depot") == []
    assert detector("   ") == []
