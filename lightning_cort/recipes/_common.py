"""Building blocks shared by the recipes: config parsing, run directories, policies and the warm start."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from lightning_cort.models.tiny import TinyConfig, tiny_from_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.tasks.calculator import CalculatorTask

C = TypeVar("C")


class CheckedConfig:
    """A recipe config with checks across its sections, which :func:`parse_config` runs before returning it (so
    they fail at start, as one line, before anything loads)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option and the fix when sections do not fit together."""


@dataclass
class TaskConfig:
    """The built-in calculator task.

    Attributes:
        kinds: Problem generators to mix.
        digits: Operand size.
        seed: Seed of the problem streams.
        eval_size: Held-out problems for ``accuracy_before`` / ``accuracy_after`` (greedy).
        eval_before: Also evaluate before training (``accuracy_before``); off saves a held-out pass.
        train_offset: Position in the training stream of the first problem RL and RFT use (default: right after the
            warm start's ``warmup.examples`` traces, so they see new problems).
    """

    kinds: list[str] = field(default_factory=lambda: ["multiply", "modpow", "series_sum", "gcd", "lcm", "prime_count"])
    digits: int = 3
    seed: int = 0
    eval_size: int = 200
    eval_before: bool = True
    train_offset: int | None = None


@dataclass
class WarmupConfig:
    """Supervised warm start on built-in code-integrated traces (cached on disk, keyed by every setting that shapes it).

    Attributes:
        examples: Training traces.
        epochs: Passes over them.
        lr: Peak learning rate (linear warm-up, then cosine decay).
        batch_size: Traces per step.
        style: The traces: ``code`` (the prompt hint, one program, its output, the answer) or ``hint`` (CoRT's
            Hint-Engineering shape: a step in words, Hint-1, the program, Hint-2, the answer).
        cache: Reuse a warm-started policy trained earlier with the same settings.
    """

    examples: int = 4000
    epochs: int = 6
    lr: float = 1.5e-3
    batch_size: int = 32
    style: Literal["code", "hint"] = "code"
    cache: bool = True


def parse_config(config_cls: type[C], args: list[str] | None, prog: str, description: str) -> C:
    """Parse ``--config file.yaml`` and dotted overrides (``--grpo.steps 10``) into ``config_cls``.

    Later arguments win (``--config a.yaml --grpo.lr 1e-5`` overrides the file). Unknown or mistyped options are an
    error that suggests the nearest valid option; ``--help`` lists every field with its docstring; ``--dry-run`` is
    accepted for ``--dry_run true``, ``--verbose`` for ``--verbose true``. A list option takes its values as they come
    (``--data a.jsonl b.jsonl``) as well as one YAML list (``--data '[a.jsonl, b.jsonl]'``). Unless the config says
    ``verbose``, library noise is hidden from here on (:func:`lightning_cort._console.quiet_libraries`).
    """
    import sys

    from jsonargparse import ActionConfigFile, ArgumentParser

    argv = list(sys.argv[1:] if args is None else args)
    flags = {"--dry-run": ("--dry_run", "true"), "--verbose": ("--verbose", "true")}
    argv = [a for i, x in enumerate(argv) for a in (flags[x] if x in flags and not _has_value(argv, i) else (x,))]
    argv = _gather_list_values(argv, list_option_names(config_cls))
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=True, default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_class_arguments(config_cls, fail_untyped=True, sub_configs=True)
    _suggest_unknown(parser, config_cls, argv)
    ns = parser.parse_args(argv)
    ns.pop("config", None)
    try:
        init = parser.instantiate_classes(ns)
        config = _to_dataclass(config_cls, init.as_dict() if hasattr(init, "as_dict") else dict(init))
        if isinstance(config, CheckedConfig):
            config.validate()
    except ValueError as exc:  # a section's own checks (__post_init__): one line naming the option
        parser.error(str(exc))
    from lightning_cort._console import quiet_libraries

    quiet_libraries(bool(getattr(config, "verbose", False)))
    return config


def _gather_list_values(argv: list[str], list_options: set[str]) -> list[str]:
    """Turn ``--opt a b`` (and ``--opt=a``) for a list option into ``--opt ["a", "b"]``; a YAML list passes as is."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, inline = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key not in list_options:
            out.append(arg)
            i += 1
            continue
        if eq:
            values, i = [inline], i + 1
        else:
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            values, i = argv[i + 1 : j], j
        if len(values) == 1 and values[0].lstrip().startswith("["):
            out += ["--" + key, values[0]]
        elif values:
            out += ["--" + key, json.dumps(values)]
        else:
            out.append("--" + key)  # no value: jsonargparse names the option in its error
    return out


def list_option_names(cls: type, prefix: str = "") -> set[str]:
    """The dotted options of a config dataclass tree whose type is a list (``data``, ``task.kinds``, ...)."""
    import typing

    names = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if typing.get_origin(t) is list:
            names.add(prefix + f.name)
        for sub in (t, *typing.get_args(t)):
            if isinstance(sub, type) and dataclasses.is_dataclass(sub):
                names |= list_option_names(sub, prefix + f.name + ".")
    return names


def _has_value(argv: list[str], i: int) -> bool:
    """Whether the flag at ``argv[i]`` is followed by a value (``--verbose false``) rather than another option."""
    return i + 1 < len(argv) and argv[i + 1].lower() in ("true", "false")


def option_names(cls: type, prefix: str = "") -> set[str]:
    """Every dotted option of a config dataclass tree (``grpo.lr``, ``model.lora.r``, ...), groups included."""
    import typing

    names = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        names.add(name)
        for t in (hints[f.name], *typing.get_args(hints[f.name])):
            if isinstance(t, type) and dataclasses.is_dataclass(t):
                names |= option_names(t, name + ".")
    return names


def _suggest_unknown(parser: Any, cls: type, argv: list[str]) -> None:
    """Fail on an unknown ``--option`` with the closest valid names (jsonargparse alone only lists them all)."""
    import difflib

    valid = option_names(cls) | {"config", "help", "print_config"}
    for arg in argv:
        if not arg.startswith("--"):
            continue
        key = arg[2:].split("=", 1)[0]
        if key in valid or key.endswith(".help"):
            continue
        close = difflib.get_close_matches(key, sorted(valid), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join('--' + c for c in close)}?" if close else ""
        parser.error(f"unknown option --{key}{hint} (see --help for all options)")


def _to_dataclass(cls: type[C], values: Any) -> C:
    if dataclasses.is_dataclass(values):
        return values  # type: ignore[return-value]
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in values:
            continue
        v = values[f.name]
        sub = _resolve_dataclass(cls, f.name)
        try:
            kwargs[f.name] = _to_dataclass(sub, v) if sub is not None and isinstance(v, dict) else v
        except ValueError as exc:
            raise ValueError(f"{f.name}: {exc}") from None
    return cls(**kwargs)


def _resolve_dataclass(cls: type, name: str) -> type | None:
    import typing

    hints = typing.get_type_hints(cls)
    t = hints.get(name)
    return t if isinstance(t, type) and dataclasses.is_dataclass(t) else None


def make_run_dir(run_dir: str | None, recipe: str) -> Path:
    """``run_dir`` or ``runs/<recipe>-<timestamp>``, created."""
    path = Path(run_dir) if run_dir else Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def save_config(config: Any, run_dir: Path) -> None:
    """Write the resolved config into the run directory: ``config.yaml`` (rerun it with ``--config``) and
    ``config.json``."""
    import yaml

    values = dataclasses.asdict(config)
    (run_dir / "config.json").write_text(json.dumps(values, indent=2) + "\n")
    (run_dir / "config.yaml").write_text(
        "# The resolved config of this run; rerun it with --config <this file>.\n"
        + yaml.safe_dump(values, sort_keys=False)
    )


def task_rows(task: CalculatorTask, split: Literal["train", "test"], n: int, start: int = 0) -> list[dict[str, Any]]:
    """Problems ``start .. start+n`` of a split as rows with the CoRT prompt."""
    from lightning_cort.tasks.calculator import build_prompt

    rows = []
    for p in task.problems(split, start + n)[start:]:
        row: dict[str, Any] = p.to_row()
        row["prompt"] = build_prompt(p.question)
        rows.append(row)
    return rows


def task_traces(
    task: CalculatorTask,
    tokenizer: PreTrainedTokenizerBase,
    code_format: CodeFormat,
    n: int,
    style: Literal["code", "hint", "text"] = "code",
    start: int = 0,
) -> list[Any]:
    """Training examples from ``n`` problems of the task's training stream, as traces in ``style``."""
    from lightning_cort.data import trajectory_from_text
    from lightning_cort.tasks.calculator import build_prompt, trace_for

    return [
        trajectory_from_text(
            tokenizer, build_prompt(p.question), trace_for(p, style, code_format), code_format, row=p.to_row()
        )
        for p in task.problems("train", start + n)[start:]
    ]


def warm_start(
    tokenizer: PreTrainedTokenizerBase,
    model_cfg: TinyConfig,
    warmup: WarmupConfig,
    task: CalculatorTask,
    code_format: CodeFormat,
    seed: int,
    progress: bool = True,
) -> tuple[PreTrainedModel, bool]:
    """A tiny policy supervised on code-integrated traces of the task (CoRT's SFT before RL), cached on disk.

    Returns:
        ``(model, from_cache)``.
    """
    from transformers import Qwen2ForCausalLM

    from lightning_cort.models.tiny import default_cache_dir

    key_src = json.dumps(
        {
            "v": 1,
            "model": dataclasses.asdict(model_cfg),
            # style joined the settings later: leaving the default out keeps earlier caches valid.
            "warmup": {
                **{k: v for k, v in dataclasses.asdict(warmup).items() if (k, v) != ("style", "code")},
                "cache": None,
            },
            "task": [task.kinds, task.digits, task.seed],
            "format": code_format.name,
            "seed": seed,
            "vocab": len(tokenizer),
            # The ids themselves: a retrained tokenizer of the same size must not reuse a policy trained on others.
            "tokenizer": _tokenizer_fingerprint(tokenizer),
        },
        sort_keys=True,
    )
    path = default_cache_dir() / f"warmstart-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}"
    if warmup.cache and (path / "config.json").exists():
        model = Qwen2ForCausalLM.from_pretrained(str(path))
        return model.train(), True
    model = tiny_from_config(tokenizer, model_cfg)
    if warmup.examples > 0 and warmup.epochs > 0:
        sft(model, tokenizer, task, code_format, warmup, seed, progress)
    if warmup.cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".warmstart-"))
        model.save_pretrained(str(tmp))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    return model.train(), False


def _tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: CalculatorTask,
    code_format: CodeFormat,
    warmup: WarmupConfig,
    seed: int,
    progress: bool = True,
) -> None:
    """Supervised fine-tuning of ``model`` on code-integrated traces of ``task`` (in place)."""
    from functools import partial

    import lightning as L
    import torch

    from lightning_cort.data import ListDataset
    from lightning_cort.modules.sft import SFTModule
    from lightning_cort.trajectory import collate_trajectories

    examples = task_traces(task, tokenizer, code_format, warmup.examples, warmup.style)
    steps = warmup.epochs * -(-len(examples) // warmup.batch_size)
    module = SFTModule(model, tokenizer, lr=warmup.lr, warmup_steps=max(1, steps // 20), lr_schedule="cosine")
    loader = torch.utils.data.DataLoader(
        ListDataset(examples),
        batch_size=warmup.batch_size,
        shuffle=True,
        collate_fn=partial(collate_trajectories, pad_token_id=tokenizer.pad_token_id),
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = L.Trainer(
        max_epochs=warmup.epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=progress_callbacks(progress, "warm start (SFT)"),
    )
    trainer.fit(module, loader)


def progress_callbacks(progress: bool, phase: str = "train", unit: str = "epoch") -> list:
    """A rich progress bar named after the phase (``SFT epoch 2/6``, ``GRPO`` with its steps counted) when
    ``progress``, else nothing."""
    if not progress:
        return []
    from lightning.pytorch.callbacks import RichProgressBar

    class PhaseProgressBar(RichProgressBar):
        """Lightning's rich bar, described by the phase instead of ``Epoch 0/-2`` (a run bounded by ``max_steps``
        has no epoch count)."""

        def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
            # Short names (``reward`` for ``train/reward``) so they fit the bar's column; no logger version.
            metrics = super().get_metrics(trainer, pl_module)
            short = {"tokens_per_response": "tokens"}
            names = {k: k.rsplit("/", 1)[-1] for k in metrics if k != "v_num"}
            return {short.get(n, n): metrics[k] for k, n in names.items()}

        def _get_train_description(self, current_epoch: int) -> str:
            epochs = self.trainer.max_epochs
            if epochs is None or epochs < 1 or (epochs == 1 and self.trainer.max_steps > 0):
                return phase
            return f"{phase} {unit} {current_epoch + 1}/{epochs}"

    return [PhaseProgressBar(leave=True)]
