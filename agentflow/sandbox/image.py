"""Build the sandbox image: from the Dockerfile where a registry answers, else with debootstrap.

The build files (`sandbox/Dockerfile`, `sandbox/build-base.sh`) live in the source
repository next to the package; `agentflow sandbox build` runs them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Literal

from agentflow.exceptions import SandboxUnavailable
from agentflow.sandbox.docker import image_tag

__all__ = ["build_image"]

BUILD_FILES = Path(__file__).resolve().parents[2] / "sandbox"
BASE_IMAGE = "python:3.12-slim"


def _docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker") is None:
        raise SandboxUnavailable("the docker command is not installed")
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def build_image(
    tag: str | None = None, *, method: Literal["auto", "dockerfile", "debootstrap"] = "auto"
) -> tuple[str, str]:
    """Build the sandbox image unless it exists; return its tag and how it was obtained.

    `auto` uses the Dockerfile when the base image can be pulled (or is already here),
    else debootstrap (`sandbox/build-base.sh`), which needs no registry.

    Raises:
        SandboxUnavailable: No Docker, no build files, or the build failed.
    """
    tag = tag or image_tag()
    if _docker("image", "inspect", tag).returncode == 0:
        return tag, "present"
    if not BUILD_FILES.is_dir():
        raise SandboxUnavailable(
            f"the sandbox build files are not here ({BUILD_FILES}); build from a checkout "
            "of the agentflow repository"
        )
    if method == "auto":
        have_base = _docker("image", "inspect", BASE_IMAGE).returncode == 0
        pulled = have_base or _docker("pull", BASE_IMAGE, timeout=300).returncode == 0
        method = "dockerfile" if pulled else "debootstrap"
    if method == "dockerfile":
        repo = str(BUILD_FILES.parent)
        done = _docker("build", "-f", str(BUILD_FILES / "Dockerfile"), "-t", tag, repo)
    else:
        done = subprocess.run(
            ["sh", str(BUILD_FILES / "build-base.sh"), tag],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise SandboxUnavailable(f"building {tag} with {method} failed: {last[0]}")
    return tag, method
