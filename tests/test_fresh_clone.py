"""A fresh clone works as the README says: `make demo` on a clone of this repository's
HEAD installs a new virtualenv from the committed lock and tells the support story on
the embedded model, with grounded replies.

What it checks is what a support lead would look at: each turn's tool calls with their
arguments and results, replies that say dates and amounts exactly as the tools returned
them and nothing more (no prompt echoed, no raw record, no personal data the customer did
not give), the refund written after the approval, and a person announced on handoff.
It clones HEAD: uncommitted changes are not in it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from tools.seed import ada_order_eta

ROOT = Path(__file__).resolve().parents[1]
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
"""The interpreter our virtualenv was made from: the clone makes its own from it."""


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("fresh") / "agentflow"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    return target


@pytest.fixture(scope="module")
def demo(clone: Path) -> str:
    """What `make demo` printed in the clone, stdout and stderr (it exited 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTFLOW_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    done = subprocess.run(
        ["make", "demo", f"PYTHON={BASE_PYTHON}"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:]
    return done.stdout


def calls(output: str, tool: str) -> list[dict[str, object]]:
    """The arguments of each call of `tool` the output shows (`-> tool({...})`)."""
    return [json.loads(found) for found in re.findall(rf"-> {tool}\((\{{.*\}})\)$", output, re.M)]


def agent_lines(output: str) -> list[str]:
    return [
        line.removeprefix("agent: ") for line in output.splitlines() if line.startswith("agent:")
    ]


def test_the_clone_installs_exactly_the_lock(clone: Path, demo: str) -> None:
    locked = dict(
        re.findall(
            r"^([A-Za-z0-9_.-]+)==([^\s;]+)", (clone / "requirements.lock").read_text(), re.M
        )
    )
    listed = subprocess.run(
        [str(clone / ".venv/bin/pip"), "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {
        p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed.stdout)
    }
    wrong = {
        name: (version, installed.get(name.lower().replace("_", "-")))
        for name, version in locked.items()
        if installed.get(name.lower().replace("_", "-")) != version
    }
    assert wrong == {}
    assert "agentflow is installed in .venv" in demo


def test_the_demo_shows_each_tool_call_and_a_grounded_answer(demo: str) -> None:
    assert calls(demo, "lookup_order")[0] == {"order_id": 1042}
    assert '<- {"order_id":1042,"status":"shipped"' in demo
    where = agent_lines(demo)[0]
    eta = ada_order_eta(date.today())
    assert "Order 1042 has shipped." in where
    assert f"should arrive on {eta}" in where and "1Z999AA10123456784" in where


def test_the_refund_waits_is_approved_and_is_written(demo: str) -> None:
    story = demo[demo.index("2. A refund") : demo.index("3. A customer")]
    [refund] = calls(story, "issue_refund")
    assert (refund["order_id"], refund["amount_usd"]) == (1043, 1249.0)
    assert "waiting for a person (approval" in story
    confirmed = next(line for line in agent_lines(story) if "refunded" in line)
    found = re.search(r"I've refunded 1249\.00 USD for order 1043 .*\(refund #(\d+)\)", confirmed)
    assert found, confirmed
    [row] = [line for line in story.splitlines() if "1249.00 USD" in line and "│" in line]
    assert row.split("│")[1].strip() == found.group(1)  # the refunds table: id, order, amount
    assert row.split("│")[2].strip() == "1043"


def test_a_handoff_announces_a_person_who_then_answers(demo: str) -> None:
    story = demo[demo.index("3. A customer") :]
    assert "A person will be with you shortly" in story
    assert "waiting for a person (handoff" in story
    assert "agent: Hi Ada, Sam here. I'll sort this out with you." in story


def test_replies_say_nothing_but_the_facts(demo: str) -> None:
    replies = agent_lines(demo)
    assert len(replies) >= 4
    for reply in replies:
        assert "{" not in reply and "Customer:" not in reply and "Facts" not in reply
        for personal in ("Analytical Way", "ada@example.com", "Lovelace", "503 555"):
            assert personal not in reply


def test_the_demo_is_quiet_and_says_how_long_it_took(demo: str) -> None:
    assert "Loading weights" not in demo and "Traceback" not in demo
    assert re.search(r"The demo took \d+m\d\ds \(target: at most 5 minutes", demo)
