"""A training run SIGKILLed mid-epoch resumes from its last checkpoint and finishes with no batch skipped or
repeated, ending with the same weights as an uninterrupted run (``tests/scripts/sft_resume.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from lightning_cort.data import EpochSampler, ResumableDataLoader

SCRIPT = Path(__file__).parent / "scripts" / "sft_resume.py"


def _run(run_dir: Path, cache: Path, *flags: str, script: Path = SCRIPT) -> int:
    """Run ``script`` on ``run_dir``; its exit code (0, or -SIGKILL when it killed itself)."""
    run_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(run_dir), str(cache), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
    return proc.returncode


def _batches(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "batches.jsonl").read_text().splitlines()]


def test_killed_mid_epoch_resumes_without_skipping_or_repeating(tmp_path, _cache_dir):
    assert _run(tmp_path / "ref", _cache_dir) == 0
    assert _run(tmp_path / "run", _cache_dir, "--kill-after", "7") == -signal.SIGKILL
    first = _batches(tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "ckpt" / "last.ckpt", weights_only=False)
    saved_step = ckpt["global_step"]
    assert ckpt["epoch"] == 1 and 0 < saved_step < len(first)  # killed mid-epoch, after the last checkpoint
    assert _run(tmp_path / "run", _cache_dir, "--resume") == 0
    resumed = _batches(tmp_path / "run")[len(first) :]
    reference = _batches(tmp_path / "ref")
    # What counts: the batches up to the checkpoint, then the resumed run; work after the checkpoint is redone.
    assert first[:saved_step] + resumed == reference
    ref_final = json.loads((tmp_path / "ref" / "final.json").read_text())
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final == ref_final


def test_epoch_sampler_order_is_reproducible():
    a, b = EpochSampler(10, seed=3), EpochSampler(10, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(EpochSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_resumable_loader_skips_the_saved_batches_of_the_saved_epoch_only():
    loader = ResumableDataLoader(list(range(10)), batch_size=2, shuffle=True, seed=0)
    full = [b.tolist() for b in loader]
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches": 2}
    again = ResumableDataLoader(list(range(10)), batch_size=2, shuffle=True, seed=0)
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == full[2:]
    assert [b.tolist() for b in again] == full  # the skip applies once
    later = ResumableDataLoader(list(range(10)), batch_size=2, shuffle=True, seed=0)
    later.load_state_dict({"epoch": 0, "batches": 5})
    later.sampler.set_epoch(1)  # a checkpoint from an earlier epoch does not skip anything in this one
    assert len([b for b in later]) == 5


def test_length_grouped_sampler_pads_less_and_is_reproducible():
    from lightning_cort.data import LengthGroupedSampler

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 200, (240,), generator=g).tolist()

    def padding(order: list[int]) -> int:
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = LengthGroupedSampler(lengths, 8, window=10, seed=1)
    order = list(grouped)
    assert sorted(order) == list(range(240))
    assert padding(order) < 0.3 * padding(list(EpochSampler(240, seed=1)))
    assert list(LengthGroupedSampler(lengths, 8, window=10, seed=1)) == order
    grouped.set_epoch(1)
    assert list(grouped) != order
    loader = ResumableDataLoader(list(range(240)), batch_size=8, sampler=LengthGroupedSampler(lengths, 8, seed=2))
    assert sorted(int(i) for b in loader for i in b) == list(range(240))


GRPO_SCRIPT = Path(__file__).parent / "scripts" / "grpo_resume.py"


def _grpo(run_dir: Path, cache: Path, *flags: str) -> int:
    return _run(run_dir, cache, *flags, script=GRPO_SCRIPT)


def _steps(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def test_a_killed_grpo_run_resumes_exactly(tmp_path, _cache_dir):
    """The RL recipe SIGKILLed after a checkpoint and resumed with ``--trainer.resume last`` continues with the same
    prompts, samples the same completions (restored random streams), and its rewards, losses and final weights equal
    an uninterrupted run's."""
    assert _grpo(tmp_path / "ref", _cache_dir) == 0
    # Killed after RL step 3 (optimizer step 6), before that step's checkpoint: the last one is after step 2.
    assert _grpo(tmp_path / "run", _cache_dir, "--kill-after", "6") == -signal.SIGKILL
    first = _steps(tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4 and len(first) == 3  # step 3 ran, and is redone after the restart
    assert _grpo(tmp_path / "run", _cache_dir, "--resume") == 0
    resumed = _steps(tmp_path / "run")[len(first) :]
    reference = _steps(tmp_path / "ref")
    assert len(reference) == 4 and [s["step"] for s in resumed] == [6, 8]
    for ours, theirs in zip(first[:2] + resumed, reference):
        assert ours["prompts"] == theirs["prompts"]  # the next prompts, not the epoch's first ones again
        assert ours["completions"] == theirs["completions"]  # the same samples: random streams restored
        assert ours["rewards"] == theirs["rewards"]
        assert abs(ours["loss"] - theirs["loss"]) < 1e-5
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    ref_final = json.loads((tmp_path / "ref" / "final.json").read_text())
    assert final.keys() == ref_final.keys()
    for name, value in ref_final.items():
        assert abs(final[name] - value) <= 1e-4 * max(1.0, abs(value)), name
