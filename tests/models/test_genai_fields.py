"""What models report for the GenAI conventions: who serves them (`provider_name`) and
the provider's id of each answer (`ModelResponse.id`), from documented answers replayed
by a loopback server."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow import UserMessage
from agentflow._genai import model_attributes
from agentflow.models.anthropic import AnthropicModel
from agentflow.models.base import ModelRequest, ModelResponse
from agentflow.models.openai import OpenAIModel
from tests.loopback import fixture, loopback


@pytest.mark.parametrize(
    ("base_url", "provider", "address"),
    [
        ("https://api.openai.com/v1", "openai", "api.openai.com"),
        ("https://api.deepseek.com/v1", "deepseek", "api.deepseek.com"),
        ("https://api.z.ai/api/paas/v4", "z_ai", "api.z.ai"),
        ("https://open.bigmodel.cn/api/paas/v4", "z_ai", "open.bigmodel.cn"),
        ("https://openrouter.ai/api/v1", "openrouter", "openrouter.ai"),
        ("https://api.moonshot.ai/v1", "moonshot_ai", "api.moonshot.ai"),
        ("https://dashscope-intl.aliyuncs.com/compatible-mode/v1", "dashscope", None),
        ("https://api.groq.com/openai/v1", "groq", "api.groq.com"),
        ("http://vllm.internal:8000/v1", "openai", "vllm.internal"),
    ],
)
def test_openai_compatible_providers_report_who_serves_them(
    base_url: str, provider: str, address: str | None
) -> None:
    model = OpenAIModel("some-model", base_url=base_url, api_key="test")
    attributes = model_attributes(model)
    assert attributes["gen_ai.provider.name"] == provider
    assert model.provider == "openai"  # the wire format, which the PII boundary reads
    if address is not None:
        assert attributes["server.address"] == address
    assert attributes["server.port"] == (443 if base_url.startswith("https") else 8000)


@pytest.mark.parametrize(
    ("backend", "name", "expected"),
    [
        ("openai", "text", "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"),
        ("openai", "stream_text", "chatcmpl-123"),
        ("anthropic", "text", "msg_01XFDUDYJgAACzvnptvVoYEL"),
        ("anthropic", "stream_text", "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"),
    ],
)
async def test_backends_report_the_providers_response_id(
    backend: str, name: str, expected: str
) -> None:
    """`gen_ai.response.id` comes from `ModelResponse.id`, which each backend fills from
    the documented answer, whole or streamed."""
    documented = fixture(f"{backend}/{name}")
    with loopback() as server:
        if "events" in documented:
            server.reply(
                sse=[*documented["events"], *(["data: [DONE]"] if backend == "openai" else [])]
            )
        else:
            server.reply(documented["response"])
        model: Any
        if backend == "openai":
            model = OpenAIModel(documented["request"]["model"], base_url=server.url, api_key="k")
        else:
            model = AnthropicModel(documented["request"]["model"], base_url=server.url, api_key="k")
        async with model:
            req = ModelRequest(messages=[UserMessage(content="Hello")])
            if "events" in documented:
                *_, final = [event async for event in model.stream(req)]
            else:
                final = await model.request(req)
    assert isinstance(final, ModelResponse)
    assert final.id == expected
