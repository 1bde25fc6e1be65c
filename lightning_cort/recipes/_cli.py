"""The recipes' command line: ``--config file.yaml`` and dotted overrides into a config tree, and the run directory
that keeps the resolved config."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")


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
        from lightning_cort.recipes.config import CheckedConfig

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
    ``config.json``, without the sections the run does not use (:meth:`CheckedConfig.unused_sections`)."""
    import yaml

    from lightning_cort.recipes.config import CheckedConfig

    values = dataclasses.asdict(config)
    for name in config.unused_sections() if isinstance(config, CheckedConfig) else {}:
        *parents, last = name.split(".")
        section = values
        for part in parents:
            section = section[part]
        section.pop(last, None)
    (run_dir / "config.json").write_text(json.dumps(values, indent=2) + "\n")
    (run_dir / "config.yaml").write_text(
        "# The resolved config of this run; rerun it with --config <this file>.\n"
        + yaml.safe_dump(values, sort_keys=False)
    )
