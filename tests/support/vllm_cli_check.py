"""Parse command lines with vLLM's own server argument parser; run in the vLLM environment.

Reads `{"cases": [{"id": ..., "argv": [...]}, ...]}` on stdin (argv: what follows
`python -m vllm.entrypoints.openai.api_server`) and prints one JSON object: per case whether
vLLM's parser and its serve-argument validation accepted it, the parsed values, and what
vLLM allows for the options our config enumerates, so a test can compare both sides.
Needs only vLLM; it imports nothing of the project.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
import typing
from typing import Any


def _parser() -> Any:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(description="modeldeploy check"))


def _choices(parser: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for action in parser._actions:
        if action.choices is not None and action.option_strings:
            found[action.option_strings[0]] = [c for c in action.choices]
    return found


def _literals() -> dict[str, list[Any]]:
    """Values vLLM validates only when the engine starts (the parser takes any string)."""
    from vllm.config.model import TokenizerMode
    from vllm.model_executor.model_loader import LoadFormats

    return {
        "--tokenizer-mode": list(typing.get_args(TokenizerMode)),
        "--load-format": list(typing.get_args(LoadFormats)),
    }


def _lora_ranks() -> list[int] | None:
    from vllm.config import lora as lora_config

    ranks = getattr(lora_config, "MaxLoRARanks", None)
    return sorted(typing.get_args(ranks)) if ranks is not None else None


def _quantizations() -> list[str]:
    from vllm.model_executor.layers.quantization import DEPRECATED_QUANTIZATION_METHODS, QUANTIZATION_METHODS

    return [m for m in QUANTIZATION_METHODS if m not in DEPRECATED_QUANTIZATION_METHODS]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def main() -> int:
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args

    request = json.load(sys.stdin)
    parser = _parser()
    results = []
    for case in request["cases"]:
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                args = parser.parse_args(case["argv"])
            validate_parsed_serve_args(args)
        except SystemExit as exc:
            results.append(
                {"id": case["id"], "ok": False, "error": f"parser exit {exc.code}: {errors.getvalue()}"}
            )
            continue
        except Exception as exc:  # report every refusal, whatever its type
            results.append({"id": case["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        values = {k: _jsonable(v) for k, v in sorted(vars(args).items())}
        results.append({"id": case["id"], "ok": True, "values": values})
    import vllm

    out = {
        "vllm_version": vllm.__version__,
        "results": results,
        "choices": {**_choices(parser), **_literals()},
        "lora_ranks": _lora_ranks(),
        "quantizations": _quantizations(),
    }
    print("@@RESULT@@" + json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
