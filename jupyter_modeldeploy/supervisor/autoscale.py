"""How many replicas a deployment should have: a pure policy over what the gateway counts.

The gateway sees every request, so it knows the requests in flight per deployment; Ray
places and restarts the replicas. This is the policy of Ray Serve's request-based autoscaler
(desired = in flight / target per replica, clamped to min..max), applied to the gateway's
counts, with the same up- and down-scale delays: a need must last that long before the count
changes, so a burst does not start replicas and a lull does not stop them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config.placement import Autoscaling, ReplicaCounts


@dataclass
class ScaleState:
    """What the policy remembers between decisions: since when a change has been wanted."""

    want_up_since: float | None = None
    want_down_since: float | None = None


def wanted(in_flight: float, *, target_in_flight: float, counts: ReplicaCounts) -> int:
    """The replicas the load asks for right now, within min..max (0 only when min is 0 and nothing is in flight)."""
    need = math.ceil(in_flight / target_in_flight) if in_flight > 0 else 0
    return max(counts.min, min(counts.max, need))


def decide(
    current: int, in_flight: float, now: float, state: ScaleState, *, counts: ReplicaCounts, policy: Autoscaling,
    idle_for_s: float,
) -> int:
    """The replica count to run now, given `current` and the load.

    Up to `min` at once (a replica was lost); up by the need once it lasted `upscale_delay_s`
    (at once from zero: a request waits);
    down one at a time once the need was lower for `downscale_delay_s`; to zero only when
    nothing came for `downscale_delay_s`.
    """
    target = wanted(in_flight, target_in_flight=policy.target_in_flight, counts=counts)
    if current < counts.min:  # a replica was lost for good: back to the minimum at once
        state.want_up_since = None
        return max(target, counts.min)
    if current == 0 and in_flight > 0:
        state.want_up_since = state.want_down_since = None
        return max(target, 1)
    if target > current:
        state.want_down_since = None
        if state.want_up_since is None:
            state.want_up_since = now
        if now - state.want_up_since >= policy.upscale_delay_s:
            state.want_up_since = None
            return target
        return current
    if target < current:
        state.want_up_since = None
        if target == 0 and idle_for_s < policy.downscale_delay_s:
            return current
        if state.want_down_since is None:
            state.want_down_since = now
        if now - state.want_down_since >= policy.downscale_delay_s:
            state.want_down_since = now  # the next step down waits a full delay again
            return current - 1
        return current
    state.want_up_since = state.want_down_since = None
    return current
