"""The local Hub fixture for real: huggingface_hub and datasets clients push to it and read back.

Each client runs in a subprocess (``local_hub.run_client``) so that HF_ENDPOINT and
HF_HUB_DISABLE_XET are set before huggingface_hub is imported.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import save_file

from hub_server.fixture import LocalHub


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    """The JSON a client script printed on its last line."""
    return json.loads(proc.stdout.strip().splitlines()[-1])


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def test_create_repo_kinds_private_and_exist_ok(local_hub: LocalHub) -> None:
    out = last_json(
        local_hub.run_client("""
        import json
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
        api = HfApi()
        urls = [
            api.create_repo("org/kinds-model"),
            api.create_repo("org/kinds-data", repo_type="dataset", private=True),
            api.create_repo("org/kinds-space", repo_type="space", space_sdk="gradio"),
        ]
        for _ in range(2):
            again = api.create_repo("org/kinds-data", repo_type="dataset", exist_ok=True)
        try:
            api.create_repo("org/kinds-model")
            conflict = None
        except HfHubHTTPError as err:
            conflict = err.response.status_code
        print(json.dumps({
            "urls": [u.repo_id for u in urls],
            "again": again.repo_id,
            "conflict": conflict,
            "model_private": api.model_info("org/kinds-model").private,
            "data_private": api.dataset_info("org/kinds-data").private,
            "sdk": api.space_info("org/kinds-space").sdk,
            "exists": api.repo_exists("org/kinds-space", repo_type="space"),
            "missing": api.repo_exists("org/nope"),
        }))
        """)
    )
    assert out["urls"] == ["org/kinds-model", "org/kinds-data", "org/kinds-space"]
    assert out["again"] == "org/kinds-data"
    assert out["conflict"] == 409
    assert (out["model_private"], out["data_private"]) == (False, True)
    assert out["sdk"] == "gradio"
    assert (out["exists"], out["missing"]) == (True, False)
    for plural, name in [("models", "kinds-model"), ("datasets", "kinds-data")]:
        assert (local_hub.mirrors / plural / "org" / name / ".git").is_dir()


def test_upload_folder_lfs_and_snapshot_roundtrip(local_hub: LocalHub, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    save_file({"w": np.arange(600, dtype=np.float32).reshape(20, 30)}, src / "model.safetensors")
    (src / "config.json").write_text(json.dumps({"hidden": 64}))
    (src / "sub" / "notes.txt").write_text("notes\n" * 50)
    dest = tmp_path / "dest"
    out = last_json(
        local_hub.run_client(f"""
        import json
        from huggingface_hub import HfApi, snapshot_download
        api = HfApi()
        api.create_repo("org/roundtrip")
        info = api.upload_folder(repo_id="org/roundtrip", folder_path={str(src)!r})
        path = snapshot_download("org/roundtrip", local_dir={str(dest)!r})
        lfs = {{f.path: f.lfs is not None for f in api.list_repo_tree("org/roundtrip", recursive=True)
               if hasattr(f, "lfs")}}
        print(json.dumps({{"oid": info.oid, "lfs": lfs}}))
        """)
    )
    for rel in ["model.safetensors", "config.json", "sub/notes.txt"]:
        assert (dest / rel).read_bytes() == (src / rel).read_bytes(), rel
    assert out["lfs"]["model.safetensors"] and not out["lfs"]["config.json"]
    repo = local_hub.mirrors / "models" / "org" / "roundtrip"
    assert git(repo, "rev-parse", "main").strip() == out["oid"]
    pointer = git(repo, "show", "main:model.safetensors")
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1\noid sha256:")
    oid = pointer.split("sha256:")[1].split()[0]
    lfs_object = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    assert lfs_object.read_bytes() == (src / "model.safetensors").read_bytes()


def test_missing_file_and_revision_errors(local_hub: LocalHub) -> None:
    local_hub.run_client("""
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError
        api = HfApi()
        api.create_repo("org/missing")
        sha = api.model_info("org/missing").sha
        for revision in (None, "main", sha):
            try:
                hf_hub_download("org/missing", "README.md", revision=revision)
                raise SystemExit(f"no error at {revision}")
            except EntryNotFoundError:
                pass
        assert not api.file_exists("org/missing", "README.md")
        assert api.file_exists("org/missing", ".gitattributes")
        try:
            hf_hub_download("org/missing", ".gitattributes", revision="no-such-branch")
            raise SystemExit("no error for a missing revision")
        except RevisionNotFoundError:
            pass
        """)


def test_branch_push_and_download(local_hub: LocalHub) -> None:
    out = last_json(
        local_hub.run_client("""
        import json
        from pathlib import Path
        from huggingface_hub import HfApi, snapshot_download
        api = HfApi()
        repo = "org/branches"
        api.create_repo(repo)
        api.upload_file(path_or_fileobj=b"main v1", path_in_repo="weights.txt", repo_id=repo)
        api.create_branch(repo, branch="checkpoint-3")
        api.create_branch(repo, branch="checkpoint-3", exist_ok=True)
        api.upload_file(path_or_fileobj=b"step 3", path_in_repo="weights.txt", repo_id=repo,
                        revision="checkpoint-3")
        api.upload_file(path_or_fileobj=b"\\0opt", path_in_repo="optimizer.pt", repo_id=repo,
                        revision="checkpoint-3")

        def files(revision):
            root = Path(snapshot_download(repo, revision=revision))
            return {p.name: p.read_text() for p in root.iterdir() if p.suffix in (".txt", ".pt")}

        refs = api.list_repo_refs(repo)
        print(json.dumps({
            "branch": files("checkpoint-3"),
            "main": files("main"),
            "branches": sorted(b.name for b in refs.branches),
            "commits": len(api.list_repo_commits(repo, revision="checkpoint-3")),
            "expanded": {f.path: f.last_commit.title
                         for f in api.list_repo_tree(repo, revision="checkpoint-3", expand=True)},
            "main_commits": len(api.list_repo_commits(repo)),
        }))
        """)
    )
    assert out["branch"] == {"weights.txt": "step 3", "optimizer.pt": "\0opt"}
    assert out["main"] == {"weights.txt": "main v1"}
    assert out["branches"] == ["checkpoint-3", "main"]
    assert (out["commits"], out["main_commits"]) == (4, 2)
    assert out["expanded"]["optimizer.pt"] == "Upload optimizer.pt with huggingface_hub"


def test_dataset_push_to_hub_and_load_dataset(local_hub: LocalHub) -> None:
    rows = [{"id": i, "text": f"row {i}", "tags": ["a"] * (i % 3)} for i in range(25)]
    push = f"""
        from datasets import Dataset
        Dataset.from_list({rows!r}).push_to_hub("org/rows")
        Dataset.from_list({rows[:5]!r}).push_to_hub("org/rows", split="test")
        """
    local_hub.run_client(push)
    out = last_json(
        local_hub.run_client("""
        import json
        from datasets import load_dataset
        ds = load_dataset("org/rows")
        print(json.dumps({split: ds[split].to_list() for split in ds}))
        """)
    )
    assert out == {"train": rows, "test": rows[:5]}


def test_cards_roundtrip_metadata(local_hub: LocalHub) -> None:
    out = last_json(
        local_hub.run_client("""
        import json
        from huggingface_hub import DatasetCard, HfApi, ModelCard
        api = HfApi()
        api.create_repo("org/carded")
        api.create_repo("org/carded-data", repo_type="dataset")
        ModelCard("---\\nlicense: apache-2.0\\ntags: [em, test]\\n---\\n# Model\\n").push_to_hub(
            "org/carded")
        DatasetCard("---\\nlicense: mit\\npretty_name: Rows\\n---\\n# Data\\n").push_to_hub(
            "org/carded-data")
        model, data = ModelCard.load("org/carded"), DatasetCard.load("org/carded-data")
        print(json.dumps({
            "model": model.data.to_dict(), "text": model.text.strip(),
            "data": data.data.to_dict(), "card_data": api.model_info("org/carded").card_data.license,
        }))
        """)
    )
    assert out["model"] == {"license": "apache-2.0", "tags": ["em", "test"]}
    assert out["text"] == "# Model"
    assert out["data"] == {"license": "mit", "pretty_name": "Rows"}
    assert out["card_data"] == "apache-2.0"


def test_gated_and_private_settings(local_hub: LocalHub) -> None:
    out = last_json(
        local_hub.run_client("""
        import json
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo("org/gated")
        before = api.model_info("org/gated").gated
        api.update_repo_settings("org/gated", gated="manual", private=True)
        info = api.model_info("org/gated")
        print(json.dumps({"before": before, "gated": info.gated, "private": info.private}))
        """)
    )
    assert out == {"before": False, "gated": "manual", "private": True}
    settings = local_hub.mirrors / "models" / "org" / "gated" / ".git" / "hub-settings.json"
    assert json.loads(settings.read_text())["gated"] == "manual"


def test_identical_reupload_makes_no_commit(local_hub: LocalHub, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("same")
    (tmp_path / "b.bin").write_bytes(b"\0" * 64)
    out = last_json(
        local_hub.run_client(f"""
        import json
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo("org/same")
        first = api.upload_folder(repo_id="org/same", folder_path={str(tmp_path)!r}).oid
        second = api.upload_folder(repo_id="org/same", folder_path={str(tmp_path)!r}).oid
        print(json.dumps({{"first": first, "second": second,
                          "commits": len(api.list_repo_commits("org/same"))}}))
        """)
    )
    assert out["first"] == out["second"]
    assert out["commits"] == 2  # the initial commit and the upload
    # The server, too, writes no commit for a change-free commit (the client usually skips it).
    ndjson = [
        {"key": "header", "value": {"summary": "again", "description": ""}},
        {
            "key": "file",
            "value": {
                "path": "a.txt",
                "content": base64.b64encode(b"same").decode(),
                "encoding": "base64",
            },
        },
    ]
    body = "".join(json.dumps(line) + "\n" for line in ndjson)
    url = f"{local_hub.endpoint}/api/models/org/same/commit/main"
    headers = {"Content-Type": "application/x-ndjson"}
    assert httpx.post(url, content=body, headers=headers, trust_env=False).status_code == 401
    headers["Authorization"] = f"Bearer {local_hub.token}"
    response = httpx.post(url, content=body, headers=headers, trust_env=False)
    assert response.status_code == 200, response.text
    assert response.json()["commitOid"] == out["first"]
