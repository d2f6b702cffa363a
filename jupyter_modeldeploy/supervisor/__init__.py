"""Supervisor: runs engine processes, tracks their status and idle time, stores deployments."""

from __future__ import annotations

from .state import Status
from .supervisor import Deployment, DeploymentError, Supervisor

__all__ = ["Deployment", "DeploymentError", "Status", "Supervisor"]
