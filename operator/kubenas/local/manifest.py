"""Reading the Experiment manifest ``kubenas run`` is given, with the checks ``kubenas validate`` makes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubenas import api, validation
from kubenas.local.results import RunDirectory


class ManifestError(ValueError):
    """The manifest cannot be run (unreadable, not an Experiment, invalid)."""


def load_experiment(path: Path) -> tuple[api.Experiment, str]:
    """The Experiment in a manifest file (the first document of kind Experiment) and the file's text.

    Read and parsed by ``kubenas validate``'s own code: the same size limit, encoding, YAML
    rules (no duplicate keys) and messages.

    Raises:
        ManifestError: with a message for the user.
    """
    text, problem = validation.read_source(str(path))
    if text is None:
        raise ManifestError(validation.Problem("", problem or "cannot read").render(str(path)))
    documents, problem = validation.parse_documents(text)
    if problem:
        raise ManifestError(validation.Problem("", problem).render(str(path)))
    document = next((d for d in documents if isinstance(d, dict) and d.get("kind") == "Experiment"), None)
    if document is None:
        raise ManifestError(f"{path} holds no document of kind Experiment")
    errors = _validation_errors(document)
    if errors:
        raise ManifestError(f"{path} is not a valid Experiment:\n" + "\n".join(f"  - {e}" for e in errors))
    return api.Experiment.model_validate(document), text


def _validation_errors(document: dict[str, Any]) -> list[str]:
    # No trial pod policy: a local run starts processes, never a pod (the operator checks it in the cluster).
    problems = validation.check_document(document, policies=None)
    return [f"{p.path}: {p.message}" if p.path else p.message for p in problems]


def same_search(run_dir: RunDirectory, experiment: api.Experiment) -> bool:
    """Whether the run in ``run_dir`` (if any) searched what ``experiment`` searches (the budget may change)."""
    text = run_dir.manifest_text()
    if text is None:
        return True
    try:
        earlier, _ = load_experiment(run_dir.root / "experiment.yaml")
    except ManifestError:
        return True
    keys = ("objective", "parameters", "algorithm")
    return all(getattr(earlier.spec, k) == getattr(experiment.spec, k) for k in keys)
