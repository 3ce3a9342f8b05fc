"""A real server process (uvicorn via ``python -m app serve``) for browser, restart and fuzz tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.settings import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, data_dir: Path, preload: str = "lenet-mnist", port: int | None = None, **env: str) -> None:
        self.data_dir, self.preload = Path(data_dir), preload
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env
        self.proc: subprocess.Popen | None = None
        self.log = self.data_dir / f"server-{self.port}.log"

    def start(self, timeout: float = 120) -> LiveServer:
        env = {**os.environ, "FOOLING_DATA_DIR": str(self.data_dir), "FOOLING_PRELOAD": self.preload,
               "FOOLING_DOWNLOAD_WEIGHTS": "0", "FOOLING_PORT": str(self.port),
               "FOOLING_ONNX_DIR": str(ROOT / "data" / "onnx"), **self.extra_env}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(self.port)],
                                     cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        t0 = time.time()
        while True:
            assert self.proc.poll() is None, f"server exited: {self.log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.time() - t0 < timeout, "server did not become ready"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run, as in a crash or a pulled plug."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> float:
        """SIGTERM and wait; returns how long the shutdown took."""
        if not self.proc or self.proc.poll() is not None:
            return 0.0
        t0 = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise
        return time.time() - t0
