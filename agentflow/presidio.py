"""Names and locations for the PII boundary, found by Microsoft Presidio over a spaCy
pipeline: the `presidio` extra, off by default.

```toml
[policy]
pii_detectors = ["presidio"]

[policy.presidio]
model = "en_core_web_lg"          # an installed spaCy pipeline, or the path of one
entities = ["PERSON", "LOCATION"]
```

Presidio reads the pipeline's named entities: `PERSON` is redacted as `[NAME]`, and
`LOCATION` (spaCy's `GPE`, `LOC` and `FAC`: cities, countries, streets, buildings) as
`[LOCATION]`. A street address is caught as far as the pipeline tags its parts, so the
house number may stay. What it finds is only as good as the pipeline: `en_core_web_lg`
or `en_core_web_trf` (`python -m spacy download en_core_web_lg`), not `_sm`. Presidio's
own regular-expression recognizers are not used: the built-in kinds cover emails,
phones, cards and IBANs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentflow.exceptions import ConfigError
from agentflow.pii import PiiFinding

__all__ = ["DEFAULT_ENTITIES", "DEFAULT_MODEL", "PresidioDetector"]

DEFAULT_MODEL = "en_core_web_lg"
DEFAULT_ENTITIES = ("PERSON", "LOCATION")
_KINDS = {"PERSON": "name", "LOCATION": "location"}
"""Presidio entity -> agentflow PII kind; other entities are named in lower case."""
_SPACY_LABELS = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",  # streets and buildings, which Presidio's own mapping leaves out
}


class PresidioDetector:
    """A PII detector (see `agentflow.pii.PiiScanner`) for names and locations.

    The pipeline loads on first use; its presence is checked here, so a missing extra or
    model is a `ConfigError` when the router is built, not in the middle of a run.

    Args:
        model: An installed spaCy pipeline's package name, or a pipeline's directory.
        entities: The Presidio entities to find (`PERSON`, `LOCATION`, `NRP`, ...).
        language: The language code of the pipeline.
        key: The config key errors name.

    Raises:
        ConfigError: `presidio-analyzer` is not installed, or the pipeline is not.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        entities: Sequence[str] = DEFAULT_ENTITIES,
        language: str = "en",
        key: str = "policy.presidio",
    ) -> None:
        try:
            import spacy.util
        except ImportError as exc:
            raise ConfigError(
                "the presidio detector needs the presidio extra: pip install 'agentflow[presidio]'",
                key=key,
            ) from exc
        if not (spacy.util.is_package(model) or Path(model).is_dir()):
            # Presidio would download it; agentflow never reaches the network by itself.
            raise ConfigError(
                f"spaCy pipeline {model!r} is not installed and is no directory: "
                f"python -m spacy download {model}, or give a pipeline's path",
                key=f"{key}.model",
            )
        self.model = model
        self.entities = list(entities)
        self.language = language
        self._analyzer: Any = None
        self._loading = threading.Lock()

    def __repr__(self) -> str:
        return f"PresidioDetector({self.model!r}, entities={self.entities!r})"

    def __call__(self, text: str) -> list[PiiFinding]:
        if not text.strip():
            return []
        results = self._engine().analyze(text, language=self.language, entities=self.entities)
        findings = []
        for result in results:
            entity = str(result.entity_type)
            if result.end > result.start:
                kind = _KINDS.get(entity, entity.lower())
                findings.append(PiiFinding(kind=kind, start=result.start, end=result.end))
        return findings

    def _engine(self) -> Any:
        with self._loading:
            if self._analyzer is None:
                self._analyzer = _analyzer(self.model, self.language, self.entities)
        return self._analyzer


def _analyzer(model: str, language: str, entities: list[str]) -> Any:
    """An AnalyzerEngine with only the recognizers for `entities`."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    ner = NerModelConfiguration(
        model_to_presidio_entity_mapping=_SPACY_LABELS | {"NORP": "NRP", "ORG": "ORGANIZATION"}
    )
    engine = SpacyNlpEngine(
        models=[{"lang_code": language, "model_name": model}], ner_model_configuration=ner
    )
    engine.load()
    registry = RecognizerRegistry(supported_languages=[language])
    registry.load_predefined_recognizers(languages=[language], nlp_engine=engine)
    keep = set(entities)
    registry.recognizers = [
        recognizer
        for recognizer in registry.recognizers
        if keep.intersection(recognizer.supported_entities)
    ]
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=[language])
