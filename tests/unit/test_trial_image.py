"""The trial image's Dockerfile: what can be checked without a container engine."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = ROOT / "trial_image"
DOCKERFILE = (CONTEXT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.upper().startswith(name + " ")]


def test_entrypoint_runs_the_trainer_without_a_shell() -> None:
    (entrypoint,) = _instructions("ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "-m", "kubenas_trial"]
    assert not _instructions("CMD")


def test_final_stage_runs_as_non_root() -> None:
    final_stage = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    users = re.findall(r"^USER (\S+)", final_stage, re.MULTILINE)
    assert users, "the final stage must set USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0 and (not group or int(group) != 0)  # numeric: runAsNonRoot can verify


def test_cpu_and_cuda_variants_via_build_arg() -> None:
    assert "ARG TORCH_VARIANT=cpu" in DOCKERFILE
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in DOCKERFILE


def test_every_copied_file_exists_in_the_build_context() -> None:
    for copy in _instructions("COPY"):
        if copy.startswith("--from="):
            continue
        *sources, _dest = copy.split()
        for source in sources:
            assert (CONTEXT / source).exists(), f"COPY source {source} missing from {CONTEXT}"
    assert (CONTEXT / "kubenas_trial" / "__main__.py").exists()


def test_image_requirements_match_the_trial_extra() -> None:
    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[ ]", r.strip(), maxsplit=1)[0].lower() for r in requirements if r.strip()}

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["trial"]
    image = [line for line in (CONTEXT / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert names(image) | {"torch"} == names(extra)


def test_trial_package_never_imports_the_operator() -> None:
    for source in (CONTEXT / "kubenas_trial").glob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+kubenas(\.|\s|$)", source.read_text(), re.MULTILINE), source
