"""`kubenas run` of examples/digits-oneshot.yaml with the real trainer: supernet, search, retraining, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from run_helpers import records, run_kubenas

EXAMPLE = Path(__file__).parents[3] / "examples" / "digits-oneshot.yaml"


@pytest.mark.slow
def test_the_one_shot_example_runs_to_an_exported_retrained_subnet(tmp_path: Path, write_manifest) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    # Smaller than the example, same stages: 12 subnets (2 search trials), the best 2 retrained.
    doc["spec"]["budget"]["maxTrials"] = 12
    doc["spec"]["oneShot"] |= {"supernet": {"epochs": 3}, "retrain": {"epochs": 2}}
    path = write_manifest(doc)
    result = run_kubenas("run", str(path), "--output", "runs", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "runs" / "digits-oneshot"
    lines = records(run_dir)
    by_mode: dict[str, list[dict]] = {}
    for line in sorted(lines, key=lambda r: r["index"]):
        by_mode.setdefault(line["parameters"]["mode"], []).append(line)
    assert [len(by_mode.get(m, [])) for m in ("supernet-train", "supernet-eval", "train")] == [1, 2, 2]
    assert all(r["phase"] == "Succeeded" for r in lines), [(r["name"], r["phase"], r["message"]) for r in lines]

    # The search trials read the supernet trial's checkpoint and evaluated 12 distinct subnets.
    supernet_dir = Path(by_mode["supernet-eval"][0]["parameters"]["supernet"])
    assert (supernet_dir / "supernet.pt").is_file()
    assert supernet_dir.parent.name == by_mode["supernet-train"][0]["name"]
    inherited = {}
    for r in by_mode["supernet-eval"]:
        for i, subnet in enumerate(json.loads(r["parameters"]["subnets"])):
            inherited[json.dumps(subnet, sort_keys=True)] = r["metrics"][f"{i}.accuracy"]
    assert len(inherited) == 12

    # The retrained subnets are the two best by inherited accuracy, and the export is one of them.
    names = ("stages", "blocks", "width", "kernel_size")
    retrained = [json.dumps({n: r["parameters"][n] for n in names}, sort_keys=True) for r in by_mode["train"]]
    assert sorted(inherited[k] for k in retrained) == sorted(inherited.values())[-2:]
    assert all(r["parameters"]["epochs"] == 2 for r in by_mode["train"])
    best = json.loads((run_dir / "best.json").read_text())
    assert best["trial"] in {r["name"] for r in by_mode["train"]}
    assert best["parameters"]["mode"] == "train"
    architecture = json.loads((run_dir / "best" / "architecture.json").read_text())
    assert architecture["architecture"]["kind"] == "cnn"
    assert {n: architecture["parameters"][n] for n in names} == {n: best["parameters"][n] for n in names}
    assert "BudgetSpent" in result.stdout
