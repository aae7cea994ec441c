"""Hostile input, one table per entry point: ``kubenas validate``, ``kubenas run`` (up to the point it refuses),
the result parser (``results.parse_termination_message``), the metrics exposition parser, and what the views
print. Nothing shows a traceback (KUBENAS_DEBUG=1 lets any exception through, so a bug fails the test instead
of hiding behind the last-resort message), nothing outlives its deadline (the timeout marks), and every
refusal names the field and the rule. Cases where trials actually run are in
tests/integration/local/test_hostile_run.py.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubenas import api, cli, metrics, results, validation
from kubenas.local import live
from rich.console import Console


@pytest.fixture(autouse=True)
def bugs_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.DEBUG_ENV, "1")


def experiment() -> dict[str, Any]:
    """A valid Experiment ``kubenas run`` could run (its trial is ``true``)."""
    return {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "hostile"},
        "spec": {
            "objective": {"metric": "accuracy", "goal": "maximize"},
            "parameters": [
                {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
                {"name": "mode", "type": "categorical", "values": ["a", "b"]},
            ],
            "algorithm": {"name": "RandomSearch", "seed": 1},
            "budget": {"maxTrials": 2, "parallelTrials": 1},
            "trialTemplate": {
                "spec": {
                    "containers": [{"name": "trial", "image": "x", "command": ["true"], "args": ["${parameters.x}"]}]
                }
            },
        },
    }


def patched(edit: Callable[[dict[str, Any]], object]) -> bytes:
    document = copy.deepcopy(experiment())
    edit(document)
    return yaml.safe_dump(document, sort_keys=False).encode()


def valid_text() -> str:
    return yaml.safe_dump(experiment(), sort_keys=False)


ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
)


@dataclass(frozen=True)
class Manifest:
    """A hostile manifest, and the words its refusal must hold (the field or line, and the rule).

    ``run_words``: when ``kubenas run`` words it differently (None: it prints validate's message).
    ``validate_words`` None: ``kubenas validate`` finds nothing wrong (only running it can fail).
    """

    id: str
    content: bytes | None
    validate_words: tuple[str, ...] | None
    run_words: tuple[str, ...] | None = None
    path: str | None = None


MANIFESTS = [
    Manifest("yaml-alias-bomb", (valid_text() + ALIAS_BOMB).encode(), ("more than 200000 values", "YAML anchors")),
    Manifest("over-1-MiB", (valid_text() + "#" * validation.MAX_FILE_BYTES).encode(), ("larger than 1024 KiB",)),
    Manifest("dev-zero", None, ("larger than 1024 KiB",), path="/dev/zero"),
    Manifest("nul-byte", valid_text().replace("name: hostile", "name: host\0ile").encode(), ("#x0000", "line 4")),
    Manifest("not-utf-8", valid_text().encode().replace(b"hostile", b"host\xffile"), ("not UTF-8 text", "byte")),
    Manifest("nested-5000-deep-flow", b"spec: " + b"[" * 5000 + b"]" * 5000, ("not valid YAML", "nested too deeply")),
    Manifest("nested-5000-deep-block", b"- " * 5000 + b"x\n", ("not valid YAML", "nested too deeply")),
    Manifest(
        "nested-100-deep",
        (valid_text() + "extra: " + "[" * 100 + "]" * 100 + "\n").encode(),
        ("nested more than 64 levels deep",),
    ),
    Manifest(
        "duplicate-key",
        valid_text().replace("  budget:\n", "  budget:\n    maxTrials: 1000\n").encode(),
        ("duplicate key 'maxTrials'", "each key may appear once", "line"),
    ),
    Manifest(
        "duplicate-top-level-key",
        (valid_text() + "kind: Trial\n").encode(),
        ("duplicate key 'kind'", "line"),
    ),
    Manifest(
        "integer-of-5000-digits",
        valid_text().replace("maxTrials: 2", "maxTrials: " + "1" * 5000).encode(),
        ("cannot read the value", "4300 digits", "line"),
    ),
    Manifest(
        "thirteenth-month",
        valid_text().replace("name: hostile", "name: hostile\n  created: 2001-13-01").encode(),
        ("cannot read the value '2001-13-01'", "month must be in 1..12", "line"),
    ),
    Manifest(
        "lone-surrogate",
        valid_text().replace("- a\n", '- "\\ud800"\n').encode(),
        ("'\\ud800'", "lone surrogate", "line"),
    ),
    Manifest(
        "python-object-tag",
        (valid_text() + "x: !!python/object/apply:os.system ['echo pwned']\n").encode(),
        ("python/object/apply:os.system", "line"),
    ),
    Manifest(
        "bounds-of-1e308",
        patched(lambda d: d["spec"]["parameters"][0].update({"min": -1e308, "max": 1e308})),
        ("spec.parameters[0].max",),
    ),
    Manifest(
        "max-trials-1e30",
        patched(lambda d: d["spec"]["budget"].update({"maxTrials": 10**30})),
        ("spec.budget.maxTrials", "less than or equal to"),
    ),
    Manifest(
        "dot-dot-experiment-name",
        patched(lambda d: d["metadata"].update({"name": "../../etc"})),
        ("metadata.name", "DNS-1123"),
    ),
    Manifest(
        "dot-dot-parameter-name",
        patched(lambda d: d["spec"]["parameters"][0].update({"name": "../x"})),
        ("spec.parameters[0].name", "pattern"),
    ),
    Manifest(
        "too-many-categories",
        patched(lambda d: d["spec"]["parameters"][1].update({"values": list(range(300))})),
        ("spec.parameters[1].values", "at most 256"),
    ),
    Manifest(
        "not-a-mapping", b"- 1\n- 2\n", ("expected a Kubernetes object",), ("holds no document of kind Experiment",)
    ),
    Manifest("empty", b"", ("no documents",)),
    Manifest(
        "nothing-to-run",
        patched(lambda d: d["spec"]["trialTemplate"]["spec"]["containers"][0].update({"command": [], "args": []})),
        None,
        ("spec.trialTemplate.spec.containers[0]", "neither command nor args"),
    ),
]


def manifest_path(case: Manifest, tmp_path: Path) -> str:
    if case.path is not None:
        return case.path
    path = tmp_path / f"{case.id}.yaml"
    path.write_bytes(case.content or b"")
    return str(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", MANIFESTS, ids=lambda c: c.id)
def test_hostile_manifests_are_refused_by_validate_and_run_alike(
    case: Manifest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = manifest_path(case, tmp_path)
    code = cli.main(["validate", name])
    lines = capsys.readouterr().out.splitlines()
    problems = [line.removeprefix(f"{name}: ") for line in lines]
    if case.validate_words is None:
        assert (code, lines) == (0, [f"{name}: valid"])
    else:
        assert code == 1 and lines and all(line.startswith(f"{name}: ") for line in lines), lines
        assert all(word in " ".join(problems) for word in case.validate_words), problems

    runs = tmp_path / "runs"
    assert cli.main(["run", name, "--output", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kubenas run: ") and "Traceback" not in err
    if case.run_words is None:
        assert all(problem in err for problem in problems), err  # the same message as validate's
    else:
        assert all(word in err for word in case.run_words), err
    assert not runs.exists()  # refused before anything was written


# --------------------------------------------------------------------------- the last resort


def test_an_unforeseen_error_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """E.g. an OverflowError from the sampler on bounds no check caught: exit 1, one line naming it."""
    from kubenas.local import runner

    def overflow(args: object) -> int:
        raise OverflowError("cannot convert float infinity\nto integer")

    monkeypatch.setattr(runner, "main", overflow)
    monkeypatch.delenv(cli.DEBUG_ENV)
    assert cli.main(["run", "x.yaml"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "kubenas: error: OverflowError: cannot convert float infinity to integer "
        "(set KUBENAS_DEBUG=1 for the traceback)\n"
    )
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(OverflowError):  # in tests and when asked, the bug shows itself
        cli.main(["run", "x.yaml"])


# --------------------------------------------------------------------------- results


RESULTS = [
    ("lone-surrogate-name", '{"\\ud800": 2}', ("metric name '\\ud800'", "lone surrogate")),
    ("lone-surrogate-inside-a-name", '{"acc\\udfffuracy": 2}', ("'acc\\udfffuracy'", "lone surrogate")),
    ("number-beyond-float", '{"acc": 1e999}', ("'acc'", "not finite")),
    ("integer-of-400-digits", '{"acc": 1' + "0" * 400 + "}", ("'acc'", "too large")),
    ("nan", '{"acc": NaN}', ("NaN", "finite numbers")),
    ("infinity", '{"acc": -Infinity}', ("-Infinity", "finite numbers")),
    ("nested-object", '{"acc": {"top1": 0.9}}', ("'acc'", "JSON object")),
    ("nested-1000-deep", "[" * 1000 + "]" * 1000, ("nested too deeply",)),
    ("over-4-KiB", '{"acc": 1, "pad": "' + "x" * 5000 + '"}', ("larger than 4096 bytes",)),
    ("not-utf-8", b'{"acc": 1, "\xff": 2}', ("not UTF-8", "byte 12")),
    ("duplicate-key", '{"acc": 1, "acc": 2}', ("'acc'", "appears twice")),
    ("boolean", '{"acc": true}', ("'acc'", "boolean")),
    ("string", '{"acc": "0.9"}', ("'acc'", "string")),
    ("null", '{"acc": null}', ("'acc'", "null")),
    ("a-list", "[0.9, 0.8]", ("JSON object", "array")),
    ("empty-name", '{"": 1}', ("''", "1 to 128 characters")),
    ("long-name", '{"' + "n" * 200 + '": 1}', ("1 to 128 characters",)),
    ("byte-order-mark", '\ufeff{"acc": 1}', ("not valid JSON",)),
    ("nul-bytes", b"\0\0\0", ("not valid JSON",)),
    ("control-characters", '{"acc": 1}\x1b[2J', ("not valid JSON", "Extra data")),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("text", "words"), [(t, w) for _, t, w in RESULTS], ids=[i for i, _, _ in RESULTS])
def test_hostile_results_are_invalid_results_naming_the_key_and_rule(
    text: str | bytes, words: tuple[str, ...]
) -> None:
    parsed = results.parse_termination_message(text)
    assert parsed.metrics == {} and parsed.error is not None
    assert all(word in parsed.error for word in words), parsed.error


def test_a_hostile_result_fails_its_trial_with_that_message() -> None:
    objective = api.Objective.model_validate({"metric": "acc", "goal": "maximize"})
    outcome = results.classify_finished_trial(objective, exit_code=0, result_text='{"\\ud800": 2, "acc": 0.9}')
    assert (outcome.phase, outcome.reason) == (api.TrialPhase.FAILED, api.TrialReason.INVALID_RESULT)
    assert "'\\ud800'" in outcome.message
    outcome.message.encode("utf-8")  # printable, storable: the report no longer breaks on it


# --------------------------------------------------------------------------- the metrics a trial serves


EXPOSITIONS = [
    ("garbage", "this is { not metrics\n", None),
    ("nul-bytes", "\0\0\0\n", None),
    ("every-byte", bytes(range(256)).decode("latin-1"), None),
    ("unterminated-label", 'kubenas_trial_metric{name="acc} 1\n', None),
    ("not-a-number", "kubenas_trial_step abc\n", None),
    ("hex-number", "kubenas_trial_step 0x10\n", None),
    ("byte-order-mark", "\ufeffkubenas_trial_step 5\n", None),
    ("step-1e300", "kubenas_trial_step 1e300\n", metrics.TrialValues()),
    ("step-nan", "kubenas_trial_step NaN\n", metrics.TrialValues()),
    ("step-negative", "kubenas_trial_step -3\n", metrics.TrialValues()),
    ("final-step-1e300", "kubenas_trial_final_step 1e300\n", metrics.TrialValues()),
    ("metric-infinite", 'kubenas_trial_metric{name="acc"} +Inf\n', metrics.TrialValues()),
    ("metric-name-of-100k-chars", 'kubenas_trial_metric{name="' + "x" * 100_000 + '"} 1\n', metrics.TrialValues()),
    ("metric-name-empty", 'kubenas_trial_metric{name=""} 1\n', metrics.TrialValues()),
    (
        "ten-thousand-series",
        "".join(f'kubenas_trial_metric{{name="m{i}"}} {i}\n' for i in range(10_000)),
        metrics.MAX_SERIES,
    ),
    (
        "ten-thousand-labels",
        "kubenas_trial_metric{" + ",".join(f'l{i}="v"' for i in range(10_000)) + ',name="acc"} 1\n',
        metrics.TrialValues(metrics={"acc": 1.0}),
    ),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in EXPOSITIONS], ids=[i for i, _, _ in EXPOSITIONS])
def test_hostile_expositions_are_refused_or_bounded(text: str, expected: metrics.TrialValues | int | None) -> None:
    if expected is None:
        with pytest.raises(metrics.MetricsError, match="not Prometheus text format"):
            metrics.parse_exposition(text)
        return
    values = metrics.trial_values(metrics.parse_exposition(text))
    if isinstance(expected, int):
        assert len(values.metrics) == expected
    else:
        assert values == expected


# --------------------------------------------------------------------------- what the views print


HOSTILE_TEXT = "[/]\x1b[2J\x1b]0;pwned\x07 [bold]"  # a trial's last log line can say anything


def failed_trial(message: str) -> api.Trial:
    return api.Trial.model_validate(
        {
            "metadata": {"name": "hostile-0"},
            "spec": {"experiment": "hostile", "index": 0, "parameters": {"mode": HOSTILE_TEXT}},
            "status": {"phase": "Failed", "reason": "ExitCode", "message": message},
        }
    )


def snapshot() -> live.Snapshot:
    running = [live.RunningTrial(name="hostile-1", parameters={"mode": HOSTILE_TEXT}, started=0.0)]
    return live.Snapshot("hostile", "acc", "acc", 1, 2, running, None, 0, 1)


@pytest.mark.parametrize("kind", ["plain", "terminal"])
def test_the_views_print_hostile_text_as_inert_text(kind: str) -> None:
    """Markup in a value is not markup, escapes do not reach the terminal, a lone surrogate does not crash."""
    out = io.StringIO()
    view = live.PlainView(out) if kind == "plain" else live.RichView(Console(file=out, force_terminal=True, width=200))
    view.start("hostile", 2, 0)
    view.trial_started("hostile-0", {"mode": HOSTILE_TEXT})
    view.update(snapshot())  # the table of running trials shows the same value
    view.trial_finished(failed_trial(f"exit code 1: {HOSTILE_TEXT}"), None, snapshot())
    view.message(HOSTILE_TEXT + " \ud800")  # no stream can encode a lone surrogate
    view.stop()
    text = out.getvalue()
    assert "\x07" not in text and "\x1b]0;" not in text and "\x1b[2J" not in text
    assert "[/]" in text and "[bold]" in text and "\\ud800" in text and "\\x1b[2J" in text
