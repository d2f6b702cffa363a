"""The GPU check's step runner and report, without running a step: timing, guarding, verdicts, the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.gpu_kit import report
from scripts.gpu_kit.steps import FAILED, NOT_APPLICABLE, OK, NotApplicable, Step, run_step, within


class Lines(list[str]):
    """What a step said on its way (instead of printing it)."""

    def __call__(self, line: str) -> None:
        self.append(line)


def test_a_step_that_raises_is_failed_with_its_message_and_the_run_goes_on() -> None:
    def body(step: Step) -> None:
        step.figures["before"] = 1
        raise ValueError("no such device")

    said = Lines()
    step = run_step("2", "boom", body, log=said)
    assert step.status == FAILED and step.error is not None and step.error.startswith("ValueError: no such device")
    assert said[0] == "step 2: boom ..." and "failed" in said[-1] and "no such device" in said[-1]
    assert step.figures == {"before": 1} and step.seconds >= 0


def test_not_applicable_is_not_a_failure() -> None:
    def body(step: Step) -> None:
        raise NotApplicable("no NVML here")

    step = run_step("1", "nvml", body, log=Lines())
    assert (step.status, step.error) == (NOT_APPLICABLE, "no NVML here")


def test_a_failed_check_fails_the_step_and_keeps_the_first_reason() -> None:
    def body(step: Step) -> None:
        assert step.check("fast enough", True)
        assert not step.check("within 15 %", False, "30 % off")
        step.check("another", False)

    step = run_step("4b", "checks", body, log=Lines())
    assert step.status == FAILED and step.error == "check failed: within 15 % (30 % off)"
    assert [c["passed"] for c in step.checks] == [True, False, False]


def test_within() -> None:
    assert within(100, 115, 0.15) and within(100, 85, 0.15)
    assert not within(100, 116, 0.15) and not within(100, 84, 0.15)
    assert not within(0, 0, 0.15), "nothing measured is never a match"


def test_the_report_says_passed_only_when_complete_and_nothing_failed(tmp_path: Path) -> None:
    ok = Step("1", "one", OK, 1.0, {"series": list(range(100)), "x": 3}, [{"check": "c", "passed": True, "detail": ""}])
    about = {"mode": "gpu", "versions": {"gpu": "NVIDIA H100"}, "models": {"minilm": "packaged"}, "seconds": 5.0}
    md_path, json_path = report.write(tmp_path, [ok], {**about, "complete": False})
    assert md_path.read_text().startswith("# GPU check: INCOMPLETE")
    assert json.loads(json_path.read_text())["passed"] is False
    report.write(tmp_path, [ok], {**about, "complete": True})
    data = json.loads(json_path.read_text())
    assert data["passed"] is True
    assert len(data["steps"][0]["figures"]["series"]) <= report.MAX_SERIES
    text = md_path.read_text()
    assert text.startswith("# GPU check: passed (gpu)") and "- gpu: NVIDIA H100" in text and "- [x] c" in text
    assert '"series"' not in text, "series stay in the JSON"
    bad = Step("2", "two", FAILED, 2.0, error="check failed: x")
    report.write(tmp_path, [ok, bad], {**about, "complete": True})
    assert md_path.read_text().startswith("# GPU check: FAILED") and "| 2 two | failed | 2.0 |" in md_path.read_text()


def test_only_some_steps_for_a_second_try() -> None:
    from scripts.gpu_check import parse

    assert parse(["--bundle", "b", "--out", "o"]).only == {"1", "2", "3", "4"}
    assert parse(["--bundle", "b", "--out", "o", "--only", "4, 2"]).only == {"2", "4"}
    with pytest.raises(SystemExit):
        parse(["--bundle", "b", "--out", "o", "--only", "5"])


def test_engine_memory_falls_back_to_the_devices_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts.gpu_kit import host

    monkeypatch.setattr(host, "gpu_bytes", lambda pids: 700 if pids == [1] else 0)
    monkeypatch.setattr(host, "gpu_used", lambda: 5000)
    assert host.engine_gpu([1], baseline=1000) == (700, "NVML per-process memory of the engine's processes")
    assert host.engine_gpu([2], baseline=1000)[0] == 4000, "where NVML lists no such process: the device's growth"
    assert host.engine_gpu([2], baseline=9000)[0] == 0


def test_the_host_samplers_gpu_series_as_rest_serves_them(tmp_path: Path) -> None:
    from scripts.gpu_kit.embedding_step import sampler_series
    from scripts.gpu_kit.host import Host

    gpu_host = Host(cpu=False, bundle=tmp_path, out=tmp_path, work=tmp_path)
    served = {"gpu_available": True, "gpus": [{"index": 0, "name": "NVIDIA H100", "t": [1.0, 1.5, 2.0], "series": {
        "utilization_percent": [0, 35, 80], "memory_used_bytes": [1 << 30, 2 << 30, 2 << 30],
        "temperature_celsius": [40, 41, 43], "power_watts": [None, 120.5, 300.0]}}]}
    step = Step("2", "emb")
    sampler_series(served, gpu_host, step)
    assert step.status == OK, step.checks
    assert step.figures["host_sampler_gpus"]["gpus"][0] == {
        "index": 0, "name": "NVIDIA H100", "samples": 3, "utilization_percent_max": 80, "power_watts_max": 300.0,
        "temperature_celsius_max": 43, "memory_used_mib": [1024, 2048]}
    no_power = {"gpu_available": True, "gpus": [{**served["gpus"][0], "series": {
        **served["gpus"][0]["series"], "power_watts": [None, None, None]}}]}
    step = Step("2", "emb")
    sampler_series(no_power, gpu_host, step)
    assert step.status == FAILED
    step = Step("2", "emb")
    sampler_series({"gpu_available": False, "gpus": []}, Host(cpu=True, bundle=tmp_path, out=tmp_path, work=tmp_path), step)
    assert step.status == OK and step.checks[0]["passed"]
