"""Loading phases: the engines' log patterns and the bookkeeping of phases, percentages and downloads."""

from __future__ import annotations

from jupyter_modeldeploy.engines import progress as p
from jupyter_modeldeploy.supervisor.progress import LoadProgress


def test_phases_move_forward_only_and_keep_their_times() -> None:
    prog = LoadProgress(started_at=100.0)
    assert prog.phase == p.PREPARING
    assert prog.downloaded(50, 200, 102.0) and prog.percent == 25.0 and prog.rate_bytes_per_s is None
    assert prog.downloaded(200, 200, 104.0) and prog.percent == 100.0 and prog.rate_bytes_per_s == 100.0
    assert prog.enter(p.STARTING, 105.0)
    assert not prog.enter(p.DOWNLOADING, 106.0)  # never back
    assert prog.enter(p.LOADING_WEIGHTS, 107.0, 50.0) and prog.enter(p.LOADING_WEIGHTS, 108.0, 100.0)
    assert not prog.enter(p.LOADING_WEIGHTS, 108.5, 100.0)
    phases = prog.finish(110.0)
    assert [(x["phase"], x["elapsed_s"]) for x in phases] == [
        (p.PREPARING, 2.0), (p.DOWNLOADING, 3.0), (p.STARTING, 2.0), (p.LOADING_WEIGHTS, 3.0)]
    assert phases[1]["bytes"] == 200 and prog.phase == p.READY and prog.bytes_done is None
    shown = prog.to_json(111.0)
    assert shown["elapsed_s"] == 11.0 and shown["phase_elapsed_s"] == 1.0


def test_engine_log_lines_mark_the_phases() -> None:
    prog = LoadProgress(started_at=0.0)
    prog.enter(p.STARTING, 1.0)
    assert prog.line(p.VLLM, "INFO Loading safetensors checkpoint shards:  50% Completed | 1/2 [00:01<00:01]", 2.0)
    assert (prog.phase, prog.percent) == (p.LOADING_WEIGHTS, 50.0)
    assert not prog.line(p.VLLM, "INFO some other line", 3.0)
    assert prog.line(p.VLLM, "INFO Model loading took 0.25 GiB and 1.2 seconds", 4.0) and prog.phase == p.WARMING_UP
    llama = LoadProgress(started_at=0.0)
    assert llama.line(p.LLAMA_SERVER, "0.00.018 I srv    load_model: loading model '/m.gguf'", 1.0)
    assert llama.phase == p.LOADING_WEIGHTS
    assert llama.line(p.LLAMA_SERVER, "0.00.86 I srv  llama_server: model loaded", 2.0) and llama.phase == p.WARMING_UP


def test_a_pattern_with_counts_gives_a_percentage() -> None:
    shards = p.ProgressPattern(r"shard (?P<done>\d+) of (?P<total>\d+)", p.LOADING_WEIGHTS, "done", "total")
    assert shards.match("loaded shard 3 of 4") == (p.LOADING_WEIGHTS, 75.0)
    assert shards.match("nothing here") is None
