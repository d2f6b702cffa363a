"""The placement section, the replica choice and the autoscaling policy: plain functions over data."""

from __future__ import annotations

import pytest

from jupyter_modeldeploy.config import ConfigError, export_config, parse_config
from jupyter_modeldeploy.config.placement import Autoscaling, ReplicaCounts
from jupyter_modeldeploy.engines import EngineAddress
from jupyter_modeldeploy.supervisor.autoscale import ScaleState, decide, wanted
from jupyter_modeldeploy.supervisor.replicas import Replica, ReplicaState, pick, set_down, set_serving

BASE = {"kind": "llamacpp", "name": "p", "model": "m.gguf"}


def ray(**placement: object) -> dict[str, object]:
    return {**BASE, "placement": {"target": "ray", **placement}}


def test_local_is_the_default_and_an_old_top_level_target_moves_into_placement() -> None:
    assert parse_config(BASE).placement.target == "local"
    old = parse_config({**BASE, "target": "local"})
    assert export_config(old)["placement"]["target"] == "local"
    assert "target" not in export_config(old)


def test_export_and_import_carry_the_whole_section() -> None:
    data = ray(replicas={"min": 0, "max": 3, "initial": 2}, resources={"cpus": 2, "custom": {"pool_a": 1},
               "node_labels": {"zone": "a"}}, autoscaling={"target_in_flight": 4, "upscale_delay_s": 1})
    config = parse_config(data)
    again = parse_config(export_config(config))
    assert again.placement == config.placement
    assert again.placement.replicas.at_launch == 2


@pytest.mark.parametrize(("placement", "field", "words"), [
    ({"target": "local", "replicas": {"max": 2}}, "placement", "target 'local' runs one replica"),
    ({"target": "ray", "replicas": {"min": 3, "max": 2}}, "placement.replicas", "min (3) is above max (2)"),
    ({"target": "ray", "replicas": {"min": 1, "max": 2, "initial": 5}}, "placement.replicas", "initial (5)"),
    ({"target": "ray", "resources": {"custom": {"GPU": 1}}}, "placement.resources.custom", "own field"),
    ({"target": "ray", "resources": {"custom": {"bad name": 1}}}, "placement.resources.custom", "not a resource name"),
    ({"target": "ray", "resources": {"custom": {"pool": 0}}}, "placement.resources.custom", "above 0"),
    ({"target": "ray", "resources": {"node_labels": {"zone": "a b"}}}, "placement.resources.node_labels", "label"),
    ({"target": "ray", "ray_address": "http://x; rm -rf"}, "placement.ray_address", "not a Ray address"),
    ({"target": "kubernetes"}, "placement.target", "local"),
])
def test_a_wrong_placement_names_its_field(placement: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, "placement": placement})
    fields = {e["field"]: e for e in caught.value.errors}
    assert field in fields, caught.value.errors
    assert words in fields[field]["message"] or words in str(fields[field].get("allowed")), fields[field]


def _replica(name: str, in_flight: int, *, serving: bool = True, since: float = 0.0) -> Replica:
    replica = Replica(id=name, address=EngineAddress(port=1), in_flight=in_flight)
    if serving:
        set_serving(replica)
        replica.serving_since = since
    return replica


def test_pick_takes_the_serving_replica_with_fewest_in_flight() -> None:
    a, b, c = _replica("a", 3), _replica("b", 1), _replica("c", 0, serving=False)
    assert pick([a, b, c]) is b
    assert pick([a, b, c], exclude={"b"}) is a
    assert set_down(b, "gone") and b.state is ReplicaState.DOWN
    assert not set_down(b, "again")
    assert pick([a, b, c]) is a
    assert pick([c]) is None


def test_pick_breaks_ties_by_fewest_sent_then_the_longest_serving() -> None:
    old, new = _replica("old", 1, since=10.0), _replica("new", 1, since=20.0)
    assert pick([new, old]) is old
    old.requests = 5
    assert pick([new, old]) is new
    new.requests = 5
    assert pick([new, old]) is old


COUNTS = ReplicaCounts(min=0, max=3)
POLICY = Autoscaling(target_in_flight=2, upscale_delay_s=5, downscale_delay_s=30)


def test_wanted_is_in_flight_over_target_clamped() -> None:
    assert wanted(0, target_in_flight=2, counts=COUNTS) == 0
    assert wanted(1, target_in_flight=2, counts=COUNTS) == 1
    assert wanted(5, target_in_flight=2, counts=COUNTS) == 3
    assert wanted(50, target_in_flight=2, counts=COUNTS) == 3
    assert wanted(0, target_in_flight=2, counts=ReplicaCounts(min=1, max=3)) == 1


def test_scale_up_waits_for_the_upscale_delay_but_zero_starts_at_once() -> None:
    state = ScaleState()
    assert decide(0, 1, 100.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 1
    state = ScaleState()
    assert decide(1, 6, 100.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 1
    assert decide(1, 6, 104.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 1
    assert decide(1, 6, 105.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 3


def test_a_burst_shorter_than_the_delay_starts_nothing() -> None:
    state = ScaleState()
    assert decide(1, 6, 100.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 1
    assert decide(1, 1, 102.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 1
    assert decide(1, 6, 104.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 1  # the clock started again
    assert decide(1, 6, 108.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 1
    assert decide(1, 6, 109.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 3


def test_scale_down_one_at_a_time_after_the_downscale_delay_and_to_zero_only_when_idle() -> None:
    state = ScaleState()
    assert decide(3, 1, 0.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 3
    assert decide(3, 1, 30.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 2
    assert decide(2, 1, 31.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 2
    assert decide(2, 1, 60.0, state, counts=COUNTS, policy=POLICY, idle_for_s=0) == 1
    # Nothing in flight, but a request ended 10 s ago: one replica stays.
    assert decide(1, 0, 200.0, state, counts=COUNTS, policy=POLICY, idle_for_s=10) == 1
    assert decide(1, 0, 230.0, state, counts=COUNTS, policy=POLICY, idle_for_s=40) == 0


def test_min_holds_whatever_the_load() -> None:
    counts = ReplicaCounts(min=2, max=2)
    state = ScaleState()
    for t in range(0, 1000, 50):
        assert decide(2, 0, float(t), state, counts=counts, policy=POLICY, idle_for_s=float(t)) == 2


def test_a_local_ray_node_gets_distinct_agent_ports() -> None:
    """Four ports chosen together are four: Ray refuses a node whose components share one (seen in CI)."""
    from jupyter_modeldeploy.ray_local import free_ports

    for _ in range(300):
        ports = free_ports(4)
        assert len(set(ports)) == 4 and all(0 < p < 65536 for p in ports)
