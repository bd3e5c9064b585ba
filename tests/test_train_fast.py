"""The fast CPU training path: bf16 where native, the loss over the training vocabulary, threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from giellm.allocator import JEMALLOC_CONF, find_jemalloc, jemalloc_environment
from giellm.models.bases import load_base, resolve_base
from giellm.models.sequences import IGNORE
from giellm.threads import usable_cpus
from giellm.training import run as training
from giellm.training.config import DataSource, LoraSettings, TrainConfig
from giellm.training.data import read_pools, training_sets
from giellm.training.head import VocabularyHead, output_index
from giellm.training.loop import target_loss
from giellm.training.precision import load_dtype, mixed_precision
from giellm.training.run import iter_log, run

GIELLM = str(Path(sys.executable).parent / "giellm")


def _gemma_config(out: Path, base: Path, **kw: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "output_dir": str(out),
        "base_model": str(base),
        "data": [DataSource("stockmark", "NER"), DataSource("jrte", "SA")],
        "lora": LoraSettings(r=8, alpha=16, dropout=0.0),
        "total": 160,
        "max_steps": 20,
        "batch_size": 8,
        "lr": 2e-2,
        "log_every": 5,
        "eval_every": 0,
        "eval_records": 8,
        "max_new_tokens": 48,
    }
    settings.update(kw)
    return TrainConfig(**settings)


def test_lora_trains_under_the_fast_path_and_leaves_the_base_bit_identical(
    tiny_gemma: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[Any] = []
    save = training.save_model

    def keep(model: Any, *args: Any, **kw: Any) -> None:
        trained.append(model)
        save(model, *args, **kw)

    monkeypatch.setattr(training, "save_model", keep)
    config = _gemma_config(tmp_path / "out", tiny_gemma)
    run(config)
    log = list(iter_log(tmp_path / "out" / "train_log.jsonl"))
    setup = next(e for e in log if "output_index" in e)
    assert setup["output_index"] > 0  # the loss ran over the training vocabulary
    assert setup["loss_vocab"] == "targets"
    card = (tmp_path / "out" / "final" / "README.md").read_text(encoding="utf-8")
    assert "More Information Needed" not in card  # giellm's card, not peft's template
    assert "| stockmark | NER | 1 | CC BY-SA 3.0 |" in card
    assert "| jrte | SA | 1 | CC BY-NC-SA 4.0 (non-commercial research) |" in card
    assert "research-only" in card
    assert "lora:" in card and "max_steps: 20" in card  # the settings that rebuild it
    assert setup["mixed_precision"] == mixed_precision(config)
    assert setup["attention"] == "sdpa"  # transformers' default, logged
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses[-1] < 0.9 * losses[0]

    model = trained[-1]
    dtype = getattr(torch, load_dtype(config))
    fresh = load_base(resolve_base(str(tiny_gemma)), dtype=dtype).state_dict()
    base_weights = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in model.state_dict().items()
        if "lora_" not in k
    }
    assert set(base_weights) == set(fresh)
    assert all(torch.equal(base_weights[k], fresh[k]) for k in fresh)  # frozen, never cast back
    assert all(v.dtype == dtype for v in base_weights.values() if v.is_floating_point())
    lora = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert lora and all(v.dtype == torch.float32 for v in lora.values())  # masters in float32
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # B starts at 0


def test_a_run_starts_from_a_saved_adapter_and_refuses_another_rank(
    tiny_gemma: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from giellm.errors import GiellmError

    first = run(_gemma_config(tmp_path / "first", tiny_gemma, max_steps=3))
    saved = load_file(first / "adapter_model.safetensors")
    config = _gemma_config(tmp_path / "next", tiny_gemma, init_adapter=str(first))
    model, _, _ = training.prepare_base(config, tmp_path / "next", lambda entry: None)
    state = training.with_lora(model, config).state_dict()
    started = {k.replace(".default", ""): v for k, v in state.items() if "lora_" in k}
    assert saved and set(saved) == set(started)
    assert all(torch.equal(saved[k], started[k]) for k in saved)  # the adapter's own weights

    wider = _gemma_config(
        tmp_path / "wider", tiny_gemma, init_adapter=str(first), lora=LoraSettings(16, 32, 0.0)
    )
    model, _, _ = training.prepare_base(wider, tmp_path / "wider", lambda entry: None)
    with pytest.raises(GiellmError, match="has r=8, this config 16"):
        training.with_lora(model, wider)
    with pytest.raises(GiellmError, match="holds no LoRA adapter"):
        training.adapter_dir(str(tmp_path))


def _rows(tiny_gemma: Path, tmp_path: Path) -> tuple[Any, Any, Any]:
    config = _gemma_config(tmp_path, tiny_gemma, load_dtype="float32")
    source = resolve_base(str(tiny_gemma))
    model, tokenizer, _ = training.prepare_base(config, tmp_path, lambda entry: None)
    sets = training_sets(
        config, tokenizer, read_pools(config.data, "train"), read_pools(config.data, "dev")
    )
    assert source.kind == "gguf"
    return model, tokenizer, sets


def test_the_output_index_covers_every_target_and_ranks_like_the_full_head(
    tiny_gemma: Path, tmp_path: Path
) -> None:
    from giellm.training.data import length_batches, loader

    model, tokenizer, sets = _rows(tiny_gemma, tmp_path)
    index = output_index(sets.train.labels)
    targets = {t for row in sets.train.labels for t in row if t != IGNORE}
    assert targets == set(index) and tokenizer.eos_token_id in index
    assert len(index) < model.get_output_embeddings().weight.shape[0]

    batch = next(iter(loader(sets.train.ids, sets.train.labels, length_batches(
        [len(x) for x in sets.train.ids], 8, 0), tokenizer.pad_token_id)))  # fmt: skip
    model.eval()
    with torch.no_grad():
        full = float(target_loss(model, batch))
        everything = VocabularyHead(model, range(model.get_output_embeddings().weight.shape[0]))
        assert float(everything.loss(model, batch)) == pytest.approx(full, rel=1e-4)
        whole = VocabularyHead(model, None)  # loss_vocab: whole, the head's rows uncopied
        assert float(whole.loss(model, batch)) == pytest.approx(full, rel=1e-4)
        restricted = float(VocabularyHead(model, index).loss(model, batch))
    assert restricted < full  # fewer rows in each softmax: never a larger loss

    short = VocabularyHead(model, index[1:])
    labels = batch["labels"]
    if bool((labels == index[0]).any()):
        with pytest.raises(ValueError, match="not in the output index"):
            short.loss(model, batch)
    assert torch.isfinite(short.loss(model, batch | {"labels": labels}, strict=False))


def _tiny_train(tmp_path: Path, base: Path, *flags: str, env: dict[str, str] | None = None) -> Any:
    out = tmp_path / "out"
    command = [GIELLM, *flags, "train", "--base-model", str(base), "--output-dir", str(out)]
    command += ["--data", "jrte:SA", "--max-steps", "1", "--batch-size", "2", "--total", "4"]
    command += ["--eval-records", "2"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    subprocess.run(command, check=True, capture_output=True, env=environment | (env or {}))
    return next(e for e in iter_log(out / "train_log.jsonl") if "threads" in e)


def test_threads_and_the_wait_policy_reach_torch(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    base = base_models["llama"]
    chosen = _tiny_train(tmp_path / "a", base, "--threads", "1")
    assert chosen["threads"] == 1 and chosen["omp_wait_policy"] == "PASSIVE"
    default = _tiny_train(tmp_path / "b", base)
    assert default["threads"] == usable_cpus()
    kept = _tiny_train(tmp_path / "c", base, env={"OMP_WAIT_POLICY": "ACTIVE"})
    assert kept["omp_wait_policy"] == "ACTIVE"  # the user's choice stands


def test_predict_in_a_pipe_prints_plain_progress_lines(tmp_path: Path, data_dir: Path) -> None:
    records = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": str(i), "task": "SA", "text": f"とても良いホテルでした{i}。"})
             for i in range(40)]  # fmt: skip
    records.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [GIELLM, "predict", str(records), "-o", str(tmp_path / "out.jsonl"), "--model", "tiny"],
        check=True,
        capture_output=True,
        text=True,
    )
    shown = [line for line in done.stderr.splitlines() if line.startswith("predicting in.jsonl")]
    assert len(shown) >= 5 and shown[-1].startswith("predicting in.jsonl: 40/40 (100%)")


def test_checkpoints_are_scored_by_generation_and_the_best_is_kept(
    tiny_gemma: Path, tmp_path: Path
) -> None:
    config = _gemma_config(tmp_path / "out", tiny_gemma, max_steps=8, save_every=4)
    config.eval_generate = 4
    run(config)
    evals = [e for e in iter_log(tmp_path / "out" / "train_log.jsonl") if e["stage"] == "eval"]
    assert [e["step"] for e in evals] == [4, 8]
    for entry in evals:
        assert set(entry["dev"]) == {"stockmark:NER", "jrte:SA"}
        assert all(0.0 <= v <= 1.0 for v in entry["dev"].values())
    best = json.loads((tmp_path / "out" / "best" / "dev_figures.json").read_text())
    assert best["mean"] == max(e["mean"] for e in evals)
    assert best["step"] == next(e["step"] for e in evals if e["mean"] == best["mean"])
    assert (tmp_path / "out" / "best" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "out" / "best" / "state").exists()


def test_jemalloc_is_preloaded_once_and_only_where_it_applies(tmp_path: Path) -> None:
    library = tmp_path / "libjemalloc.so.2"
    assert find_jemalloc((tmp_path / "none.so", library)) is None
    library.write_bytes(b"")
    assert find_jemalloc((tmp_path / "none.so", library)) == library
    chosen = jemalloc_environment({"PATH": "/bin"}, library)
    assert chosen is not None
    assert chosen["LD_PRELOAD"] == str(library) and chosen["MALLOC_CONF"] == JEMALLOC_CONF
    assert chosen["PATH"] == "/bin"
    # the re-executed process, a user's own allocator or choice, or no jemalloc: run as is
    assert jemalloc_environment(chosen, library) is None
    assert jemalloc_environment({"LD_PRELOAD": "/opt/libtcmalloc.so"}, library) is None
    assert jemalloc_environment({"GIELLM_ALLOCATOR": "system"}, library) is None
    assert jemalloc_environment({}, None) is None
    kept = jemalloc_environment({"LD_PRELOAD": "/x/libfoo.so", "MALLOC_CONF": "narenas:1"}, library)
    assert kept == {"LD_PRELOAD": f"{library} /x/libfoo.so", "MALLOC_CONF": "narenas:1"}
    # inference: jemalloc's own defaults, unless the user set MALLOC_CONF
    assert jemalloc_environment({}, library, None) == {"LD_PRELOAD": str(library)}
    mine = jemalloc_environment({"MALLOC_CONF": "narenas:1"}, library, None)
    assert mine == {"LD_PRELOAD": str(library), "MALLOC_CONF": "narenas:1"}


@pytest.mark.parametrize("told", [None, "system"])
def test_predict_runs_on_jemalloc_where_installed(tmp_path: Path, told: str | None) -> None:
    records = tmp_path / "in.jsonl"
    line = json.dumps({"id": "0", "task": "SA", "text": "良いホテルでした。"}, ensure_ascii=False)
    records.write_text(line + "\n", encoding="utf-8")
    command = [GIELLM, "-v", "predict", str(records), "-o", str(tmp_path / "out.jsonl")]
    environment = dict(os.environ, **({"GIELLM_ALLOCATOR": told} if told else {}))
    done = subprocess.run(
        [*command, "--model", "tiny"], capture_output=True, text=True, env=environment, check=True
    )
    expected = "jemalloc" if find_jemalloc() and told is None else "system"
    assert f"malloc: {expected}" in done.stderr
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()) == 1


def test_train_runs_on_jemalloc_where_installed_and_on_malloc_when_told(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    base = base_models["llama"]
    expected = "jemalloc" if find_jemalloc() else "system"
    assert _tiny_train(tmp_path / "a", base)["allocator"] == expected
    told = _tiny_train(tmp_path / "b", base, env={"GIELLM_ALLOCATOR": "system"})
    assert told["allocator"] == "system"


def test_float32_training_on_a_cpu_without_bfloat16_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from giellm.models.loading import bf16_native
    from giellm.training import precision

    precision._warn_float32_training.cache_clear()
    config = _gemma_config(tmp_path / "out", tmp_path / "base")
    with caplog.at_level("WARNING", logger="giellm"):
        chosen = [mixed_precision(config), mixed_precision(config)]
    warnings = [r for r in caplog.records if "no native bfloat16" in r.getMessage()]
    if bf16_native("cpu") or torch.cuda.is_available():  # this machine's own answer, not a mock
        assert chosen == ["bf16", "bf16"] and not warnings
    else:
        assert chosen == ["no", "no"] and load_dtype(config) == "float32"
        assert len(warnings) == 1  # once per process, however often the run asks
