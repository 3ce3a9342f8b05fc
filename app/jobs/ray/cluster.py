"""Reaching a Ray cluster: its address checked before ray.init (which retries for tens of seconds),
or a local instance started for this machine alone; and how the cluster's CPUs are shared."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading

from app.settings import ROOT, Settings

log = logging.getLogger(__name__)

NAMESPACE = "fooling-lab"


def _reachable(address: str, timeout: float = 5.0) -> None:
    """The cluster's GCS answers at host:port (ray:// client addresses: that the port is open).
    Checked before ray.init, which retries for tens of seconds before it gives up."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    if address.startswith("ray://"):
        return
    try:  # something listens there: is it a Ray GCS? (Ray's own CLI asks the same way)
        from ray._raylet import GcsClient
    except ImportError:
        return
    # In a daemon thread: against a port that never speaks gRPC it would wait 40 s (and hold the exit).
    answer: list = []

    def ask() -> None:
        try:
            GcsClient(address=f"{host or '127.0.0.1'}:{port}")
            answer.append(None)
        except Exception as exc:
            answer.append(exc)

    t = threading.Thread(target=ask, name="ray-probe", daemon=True)
    t.start()
    t.join(2 * timeout)
    if not answer:
        raise RuntimeError(f"{address} answers, but not as a Ray cluster's head (no answer in {2 * timeout:.0f} s)")
    if answer[0] is not None:
        raise RuntimeError(f"{address} answers, but not as a Ray cluster's head: {answer[0]}")


LOOPBACK = "127.0.0.1"


def local_instance_env(env) -> None:
    """Whoever reaches a Ray instance's ports can run code in it. The local instance the app starts
    is this machine's alone: it takes the loopback address as its node address, and since Ray's
    gRPC servers (2.60) listen on every interface whatever that address is, it also requires a
    token made at this start (Ray's token authentication), which only its own processes inherit.
    A token the operator set (RAY_AUTH_MODE) is kept."""
    if env.get("RAY_AUTH_MODE"):
        return
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def connect(settings: Settings) -> None:
    """Join the cluster at FOOLING_RAY_ADDRESS, or start a local Ray instance when it is unset.
    Raises RuntimeError with a plain message when the cluster cannot be reached."""
    if not settings.ray_address:
        if "ray" in sys.modules:  # Ray reads its auth settings once, when it is imported
            log.warning("Ray was imported before the local instance was started: it runs without a token")
        else:
            local_instance_env(os.environ)
    import ray

    if settings.ray_address and settings.ray_address not in ("auto", "local"):
        _reachable(settings.ray_address)  # ray.init would retry for 25-40 s before giving up
    if ray.is_initialized():
        return
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, namespace=NAMESPACE, log_to_driver=False)
        else:  # a local instance: its workers import this project from here
            ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False, _node_ip_address=LOOPBACK,
                     runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    except Exception as exc:  # ConnectionError, a version mismatch, ...
        raise RuntimeError(f"cannot reach the Ray cluster at {settings.ray_address or '(local)'}: {exc}") from exc


def cpu_share(settings: Settings, engines: int, gpus: int) -> int:
    """Torch threads for each process when a local Ray instance runs engines on this machine's CPUs:
    the engines and the web server (which scores there, see runner.scoring_place) share the cores
    rather than each taking them all (oversubscribed threads thrash). 0: leave the settings as they are."""

    if settings.ray_address or gpus or settings.torch_threads > 0:
        return 0
    return max(1, (os.cpu_count() or 2) // (engines + 1))


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


