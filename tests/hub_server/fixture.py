"""pytest plugin: a session-scoped local Hugging Face Hub (olah + the write front-end).

Client code must run in a subprocess started with ``LocalHub.env()`` (or ``run_client``):
huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET`` when it is imported, and the
test session itself runs with ``HF_HUB_OFFLINE=1``. Example::

    def test_push(local_hub: LocalHub) -> None:
        proc = local_hub.run_client('''
            from huggingface_hub import HfApi
            api = HfApi()
            api.create_repo("org/demo")
            print(api.upload_file(path_or_fileobj=b"hi", path_in_repo="a.txt", repo_id="org/demo").oid)
        ''')
        sha = proc.stdout.split()[-1]

Repos live as git repositories under ``local_hub.mirrors/{models|datasets|spaces}/{ns}/{name}``.
Not covered (no self-hostable server does it): running Spaces, pull requests, Xet uploads,
multipart LFS, the dataset viewer; private and gated settings are stored and reported in repo
info but reads are not restricted.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
OLAH_CLI = Path(os.environ.get("OLAH_CLI", REPO_ROOT / ".venv-olah" / "bin" / "olah-cli"))
# Variables that would point a client at another cache, the real Hub or offline mode.
_DROPPED = (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "HF_XET_CACHE",
    "HF_ASSETS_CACHE",
    "TRANSFORMERS_CACHE",
    "HF_TOKEN_PATH",
    "HF_STORED_TOKENS_PATH",
    "HUGGING_FACE_HUB_TOKEN",
)


@dataclass
class LocalHub:
    """A running local Hub: ``endpoint`` takes Hub API calls, ``token`` authorizes pushes."""

    endpoint: str
    token: str
    root: Path
    mirrors: Path
    _homes: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def env(self, hf_home: Path | None = None) -> dict[str, str]:
        """The full environment for a client process: this Hub, the token, no Xet, online, and
        a fresh HF_HOME (an empty cache) unless ``hf_home`` is given."""
        if hf_home is None:
            hf_home = self.root / "clients" / f"hf-home-{next(self._homes)}"
        hf_home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_TOKEN=self.token,
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_XET="1",
            HF_HUB_OFFLINE="0",
            HF_DATASETS_OFFLINE="0",
            TRANSFORMERS_OFFLINE="0",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            NO_PROXY=no_proxy,
            no_proxy=no_proxy,
        )
        return env

    def run_client(
        self,
        script: str,
        *,
        hf_home: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet (dedented) in this interpreter against this Hub, with
        ``self.env(hf_home)`` plus ``env``; raise with its output if it fails. Further keyword
        arguments go to ``subprocess.run`` (e.g. ``cwd``)."""
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            env={**self.env(hf_home), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"client script failed with exit code {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the test process dies, even if it is SIGKILLed."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Wait until ``url`` answers at all (any HTTP status) or ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            httpx.get(url, timeout=2, trust_env=False)
            return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """Start olah (reads) and the write front-end on free 127.0.0.1 ports for the session."""
    if not OLAH_CLI.exists():
        pytest.fail(
            f"olah is not installed ({OLAH_CLI} is missing): run `make .venv-olah` "
            "(or `make test`, which installs it) to create its own virtualenv.",
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("local-hub")
    mirrors = root / "mirrors"
    for plural in ("models", "datasets", "spaces"):
        (mirrors / plural).mkdir(parents=True)
    olah_port, front_port = _free_port(), _free_port()
    (root / "olah.toml").write_text(
        textwrap.dedent(f"""\
            [basic]
            host = "127.0.0.1"
            port = {olah_port}
            repos-path = "{root / "olah-cache"}"
            mirror-scheme = "http"
            mirror-netloc = "127.0.0.1:{front_port}"
            mirror-lfs-netloc = "127.0.0.1:{front_port}"
            mirrors-path = ["{mirrors}"]
            # Offline olah should never go upstream; if it tried, it would hit a closed port.
            hf-scheme = "http"
            hf-netloc = "127.0.0.1:9"
            hf-lfs-netloc = "127.0.0.1:9"

            [accessibility]
            offline = true
            """)
    )
    token = f"hf_local_{secrets.token_hex(16)}"
    endpoint = f"http://127.0.0.1:{front_port}"
    olah_log, front_log = root / "olah.log", root / "frontend.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with olah_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [str(OLAH_CLI), "-c", str(root / "olah.toml")],
                    cwd=root,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
            )
        # olah 0.5.4's index page answers 500 (a jinja2 incompatibility): probe a repo route.
        probe = f"http://127.0.0.1:{olah_port}/api/models/local-hub/probe/revision/main"
        _wait_until_up(probe, procs[0], olah_log)  # offline, it answers 401 without going out
        front = [sys.executable, str(Path(__file__).with_name("frontend.py"))]
        front += ["--port", str(front_port), "--mirrors", str(mirrors)]
        front += ["--olah", f"http://127.0.0.1:{olah_port}", "--token", token]
        with front_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    front,
                    cwd=root,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
            )
        _wait_until_up(f"{endpoint}/_local_hub/health", procs[1], front_log)
        yield LocalHub(endpoint=endpoint, token=token, root=root, mirrors=mirrors)
    finally:
        for proc in reversed(procs):
            _stop(proc)
