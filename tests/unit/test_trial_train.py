"""The training loop: schedules, augmentation, distillation loss, bf16 autocast on CPU."""

from __future__ import annotations

import pytest
import torch
from kubenas_trial.config import parse
from kubenas_trial.data import load
from kubenas_trial.models import build_model
from kubenas_trial.train import Batches, Trainer, distillation_loss, lr_factor, random_flip, random_translate
from torch import nn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def test_warmup_then_cosine() -> None:
    factor = lr_factor(parse({"warmup_epochs": 2, "schedule": "cosine"}), epochs=10)
    assert factor(0.0) < 0.01 and factor(1.0) == pytest.approx(0.5, abs=1e-3)
    assert factor(2.0) == pytest.approx(1.0)
    assert factor(6.0) == pytest.approx(0.5)
    assert factor(10.0) == pytest.approx(0.0, abs=1e-9)


def test_step_schedule() -> None:
    factor = lr_factor(parse({"schedule": "step", "step_size": 3, "gamma": 0.5}), epochs=9)
    assert [factor(e) for e in (0, 2.9, 3, 6.5)] == [1.0, 1.0, 0.5, 0.25]


def test_random_translate_shifts_within_padding() -> None:
    x = torch.zeros(64, 1, 5, 5)
    x[:, :, 2, 2] = 1.0
    out = random_translate(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    positions = {tuple(torch.nonzero(img[0])[0].tolist()) for img in out}
    assert positions <= {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)} and len(positions) > 3


def test_random_flip_flips_some() -> None:
    x = torch.arange(4.0).view(1, 1, 1, 4).repeat(32, 1, 1, 1)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 3).sum().item()
    assert 0 < flipped < 32 and ((out[:, 0, 0, 0] == 0) | (out[:, 0, 0, 0] == 3)).all()


def test_distillation_loss_zero_iff_student_matches_teacher() -> None:
    logits = torch.randn(8, 5)
    assert distillation_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(torch.randn(8, 5), logits, 4.0).item() > 0


def test_batches_cover_every_sample_once_and_drop_a_lone_last_one() -> None:
    x = torch.arange(9.0).view(9, 1)
    batches = Batches(x, torch.arange(9), 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    seen = torch.cat([xb for xb, _ in batches]).flatten().tolist()
    assert len(batches) == 2 and len(seen) == 8 and len(set(seen)) == 8  # 4 + 4; a batch of 1 breaks BatchNorm


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_trainer_learns_digits_on_cpu(amp: str) -> None:
    config = parse({"epochs": 3, "amp": amp, "device": "cpu", "seed": 1,
                    "max_train_samples": 600, "batch_size": 32})
    torch.manual_seed(1)
    data = load(config)
    model = build_model(config, data.input_shape, data.num_classes)
    trainer = Trainer(model, data, config, torch.device("cpu"))
    seen: list[tuple[int, dict[str, float]]] = []
    result = trainer.fit(3, lambda epoch, metrics: seen.append((epoch, metrics)))
    assert [epoch for epoch, _ in seen] == [1, 2, 3]
    assert seen[-1][1]["accuracy"] > 0.8
    assert seen[-1][1]["train_loss"] < seen[0][1]["train_loss"]
    assert result.samples == 3 * 600 and result.samples_per_second > 0


def test_bf16_autocast_runs_the_forward_in_bfloat16() -> None:
    config = parse({"amp": "bf16", "width": 4})
    data = load(config)
    model = build_model(config, data.input_shape, data.num_classes)
    dtypes: list[torch.dtype] = []
    model.head.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    Trainer(model, data, config, torch.device("cpu")).fit(1)
    assert dtypes and set(dtypes) == {torch.bfloat16}


def test_distillation_pulls_student_towards_teacher() -> None:
    config = parse({"epochs": 2, "width": 4, "distill_alpha": 1.0, "lr": 0.01})
    data = load(config)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    torch.manual_seed(0)
    model = build_model(config, data.input_shape, data.num_classes)

    def agreement() -> float:
        with torch.no_grad():
            model.eval()
            return (model(data.x_val).argmax(1) == teacher(data.x_val).argmax(1)).float().mean().item()

    before = agreement()
    Trainer(model, data, config, torch.device("cpu"), teacher=teacher).fit(2)
    assert agreement() > before + 0.3  # alpha 1: the labels are ignored, the teacher is followed


def test_compile_without_a_cxx_compiler_trains_eagerly(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from kubenas_trial import runtime

    monkeypatch.setattr(runtime, "has_cxx_compiler", lambda: False)
    config = parse({"compile": True, "width": 4})
    data = load(config)
    trainer = Trainer(build_model(config, data.input_shape, data.num_classes), data, config, torch.device("cpu"))
    assert not trainer.compiled and trainer.forward is trainer.model
    assert "no C++ compiler" in capsys.readouterr().err


def test_fp16_with_grad_scaler_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CUDA fp16 path, exercised on CPU (which supports fp16 autocast) by forcing the dtype.
    from kubenas_trial import runtime

    monkeypatch.setattr(runtime, "amp_dtype", lambda _mode, _device: torch.float16)
    config = parse({"width": 4, "grad_clip": 1.0})
    data = load(config)
    model = build_model(config, data.input_shape, data.num_classes)
    dtypes: list[torch.dtype] = []
    model.head.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    trainer = Trainer(model, data, config, torch.device("cpu"))
    assert trainer.scaler is not None
    history = trainer.fit(2).history
    assert torch.float16 in dtypes
    assert history[-1]["train_loss"] < history[0]["train_loss"]
