"""pytest plugin: `transformers serve` running the embedded model on loopback, for the API paths.

A real OpenAI-compatible server (chat completions with usage counts). It ignores `logprobs`,
which is what the text-parsing fallbacks are tested against.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass(frozen=True)
class ServedModel:
    base_url: str  # http://127.0.0.1:PORT/v1
    model: str  # the id requests must name

    @property
    def backend(self) -> str:
        return f"openai:{self.model}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Terminate a server the tests started; kill it if it does not go in 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def served_embedded(
    embedded_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedModel]:
    port = free_port()
    cli = Path(sys.executable).parent / "transformers"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(cli),
                "serve",
                str(embedded_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--default-seed",
                "0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"transformers serve exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield ServedModel(f"http://127.0.0.1:{port}/v1", str(embedded_dir))
    finally:
        stop(process)
