"""One `field=value` reader and one duration format for the CLI, `%deploy`, the widgets and the Lab panel."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jupyter_modeldeploy import cli, formats, magics
from jupyter_modeldeploy.client import ModelDeployError


def test_assignments_nest_and_read_json() -> None:
    assert formats.parse_assignments(["a=1", "b=x", "c.d=2", "e=[0,1]", "f="]) == {
        "a": 1, "b": "x", "c": {"d": 2}, "e": [0, 1], "f": ""}
    for bad in (["novalue"], ["=1"], ["a..b=1"], ["a=1", "a.b=2"]):
        with pytest.raises(formats.AssignmentError):
            formats.parse_assignments(bad)


def test_cli_and_magic_read_assignments_alike() -> None:
    tokens = ["parallel=4", "gpus=[0,1]", "env.A=1", "name=x"]
    assert cli.parse_assignments(tokens) == magics.parse_assignments(tokens) == formats.parse_assignments(tokens)
    with pytest.raises(ModelDeployError):
        cli.parse_assignments(["oops"])
    with pytest.raises(magics.DeployMagicError):
        magics.parse_assignments(["oops"])


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (12.4, "12 s"), (184, "3 min 4 s"), (7500, "2 h 5 min"), (97200, "1 d 3 h"), (None, "—"),
])
def test_durations(seconds: float | None, text: str) -> None:
    assert formats.format_duration(seconds) == text


def test_the_lab_panel_writes_durations_the_same_way() -> None:
    """format.ts follows the same thresholds and units (checked on its source)."""
    source = (Path(__file__).resolve().parents[2] / "labextension" / "src" / "format.ts").read_text()
    body = source[source.index("export function formatDuration"):source.index("/** The last part")]
    assert re.findall(r"< (\d+)\) \{", body) == ["0", "60", "3600", "86400"]
    for unit in ("} s`", "} min ${", "} h ${", "} d ${"):
        assert unit in body, unit


def test_replica_summary_and_lines() -> None:
    from jupyter_modeldeploy.formats import replica_lines, replica_summary

    local = {"placement": "local", "replicas": [{"id": "local", "state": "serving"}]}
    assert replica_summary(local) == "local" and replica_lines(local) == []
    ray = {"placement": "ray", "replicas": [
        {"id": "md-1-a", "state": "serving", "node_ip": "10.0.0.1", "node": "abcdef0123456789", "in_flight": 2,
         "requests": 9, "restarts": 0, "reason": None},
        {"id": "md-1-b", "state": "down", "node_ip": None, "node": None, "in_flight": 0, "requests": 1, "restarts": 1,
         "reason": "node lost"},
    ]}
    assert replica_summary(ray) == "ray 1/2"
    first, second = replica_lines(ray)
    assert first == "replica md-1-a: serving on 10.0.0.1 node abcdef012345, 2 in flight, 9 sent"
    assert second.endswith("1 restart(s) (node lost)") and "on ?" in second


def test_queue_summary_says_what_waits_and_what_was_served_or_refused() -> None:
    from jupyter_modeldeploy.formats import queue_summary

    assert queue_summary({}) == "0 waiting"
    assert queue_summary({"depth": 2, "served": 5, "rejected": 1, "mean_wait_s": 0.1234}) == (
        "2 waiting; 5 served after a mean wait of 0.12 s; 1 refused (queue full or waited too long)")
