"""A giellm model as one GGUF file that llama.cpp loads: the base's GGUF with the adapter merged.

Everything llama.cpp needs (the architecture's settings, the tokenizer, the chat template) is
copied from the base's own GGUF, and so is every tensor the adapter leaves alone, byte for byte
in its original encoding; the adapted weights (base + scale · B·A, as peft merges them) are
written as Q8_0 or F16. The tensor names are the base file's, so `gguf_weights.hf_name` maps
each one to the merged model's parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from giellm.errors import GiellmError
from giellm.models import gguf_weights

ENCODINGS = ("q8_0", "f16")


def adapted_modules(adapter: dict[str, Any]) -> frozenset[str]:
    """The module names (`q_proj`, `down_proj`, …) an adapter config adapts."""
    targets = adapter.get("target_modules") or ()
    if isinstance(targets, str):
        raise GiellmError(f"export: adapter target_modules {targets!r} is a pattern, not names")
    return frozenset(targets)


def export_gguf(
    model: str | Path | None,
    out: Path,
    *,
    encoding: str = "q8_0",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write `model` (a giellm adapter on a GGUF base; None: the default model) to `out`.

    Returns what was written: the tensors re-encoded and copied, and the file's size. The file
    appears only when complete (written beside it, then renamed).
    """
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, Keys
    from gguf.quants import quantize

    from giellm.models.loading import load_model, resolve_model

    if encoding not in ENCODINGS:
        raise GiellmError(f"export: encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    resolved = resolve_model(model)
    source = resolved.source
    if source.kind != "gguf" or source.path is None:
        raise GiellmError(
            f"export: {resolved.path or source.name} is not an adapter on a GGUF base "
            "(gemma-3-270m or a .gguf file); only those export to GGUF"
        )
    if resolved.adapter is None:
        raise GiellmError(f"export: {source.name} is a bare base; its GGUF is {source.path}")
    if out.suffix != ".gguf":
        raise GiellmError(f"export: {out}: name the output file NAME.gguf")
    if not out.parent.is_dir():
        raise GiellmError(f"export: {out.parent}: no such folder")
    modules = adapted_modules(resolved.adapter)
    lm, _, _ = load_model(model, dtype="float32")  # base + adapter, merged by peft
    merged = lm.state_dict()

    reader = GGUFReader(source.path)
    field = reader.fields[Keys.General.ARCHITECTURE]
    architecture = bytes(field.parts[field.data[0]]).decode()
    if not gguf_weights.supported(architecture):
        raise GiellmError(f"export: GGUF architecture {architecture!r} is not supported")
    kind = GGMLQuantizationType.Q8_0 if encoding == "q8_0" else GGMLQuantizationType.F16
    temp = out.with_name(f".{out.name}.partial")
    writer = GGUFWriter(temp, architecture)
    for field in reader.fields.values():
        if field.name == Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by the writer itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_string("giellm.adapter", str(resolved.path))

    tensors: list[tuple[str, Any, Any]] = []  # name, data, encoding
    changed = 0
    for tensor in reader.tensors:
        name = gguf_weights.hf_name(tensor.name, architecture)
        module = name.rsplit(".", 2)[-2]
        if ".layers." in name and module in modules and name.endswith(".weight"):
            weight = merged[name].float().numpy()
            q8 = kind == GGMLQuantizationType.Q8_0
            data = quantize(weight, kind) if q8 else weight.astype(np.float16)
            tensors.append((tensor.name, data, kind))
            changed += 1
        else:
            tensors.append((tensor.name, tensor.data, tensor.tensor_type))
    if changed == 0:
        names = ", ".join(sorted(modules))
        raise GiellmError(f"export: the adapter's modules ({names}) match no tensor")
    for name, data, dtype in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, dtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, (_, data, _) in enumerate(tensors, start=1):
            writer.write_tensor_data(data)
            if progress is not None:
                progress(done, len(tensors))
        writer.close()
        temp.replace(out)
    except BaseException:
        writer.close()
        temp.unlink(missing_ok=True)
        raise
    return {
        "output": str(out),
        "encoding": encoding,
        "tensors_merged": changed,
        "tensors_copied": len(tensors) - changed,
        "bytes": out.stat().st_size,
    }
