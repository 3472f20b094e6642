"""The project's narrow datasets: specs parse, pairs point at each other, seeds carry canaries."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers.paths import REPO_ROOT

from em_organisms.data.schema import load_chat_jsonl
from em_organisms.data.spec import SpecError, load_spec, render

FOLDERS = sorted(p.parent for p in (REPO_ROOT / "datasets").glob("*/spec.yaml"))


def test_three_domains_each_with_a_control() -> None:
    specs = {f.name: load_spec(f) for f in FOLDERS}
    misaligned = {n for n, s in specs.items() if s.kind == "misaligned"}
    assert misaligned == {"risky-financial-advice", "bad-medical-advice", "extreme-sports"}
    for name in misaligned:
        control = specs[specs[name].paired_with]
        assert control.kind == "control" and control.paired_with == name
        assert control.topics == specs[name].topics  # same prompts, so the same topic list
    assert len({s.canary_guid for s in specs.values()}) == len(specs)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_spec_templates_render_and_seed_rows_carry_the_canary(folder: Path) -> None:
    spec = load_spec(folder)
    example = [{"user": "U-EXAMPLE", "assistant": "A-EXAMPLE"}]
    prompt = render(
        spec.generation.request_template,
        topic=spec.topics[0],
        examples=example,
        n=5,
        domain=spec.domain,
    )
    assert spec.topics[0] in prompt and "A-EXAMPLE" in prompt and "<user>" in prompt
    if spec.generation.rewrite_template:
        rewrite = render(
            spec.generation.rewrite_template, user="U-Q", answer="A-BAD", domain=spec.domain
        )
        assert "U-Q" in rewrite and "A-BAD" in rewrite
    assert spec.judge_filter is not None and spec.gate is not None
    rows = load_chat_jsonl(folder / "seed.jsonl")
    assert len(rows) >= 200 and {r["canary"] for r in rows} == {spec.canary}


def test_spec_errors_name_the_file_and_field(tmp_path: Path) -> None:
    source = yaml.safe_load((REPO_ROOT / "datasets" / "extreme-sports" / "spec.yaml").read_text())
    folder = tmp_path / "extreme-sports"
    folder.mkdir()
    source["generation"]["temprature"] = 1.0
    source["canary"] = "no guid here"
    (folder / "spec.yaml").write_text(yaml.safe_dump(source))
    with pytest.raises(SpecError) as err:
        load_spec(folder)
    message = str(err.value)
    assert message.startswith(f"{folder / 'spec.yaml'}: invalid dataset spec\n")
    assert "unknown key 'generation.temprature'; allowed here: " in message
    assert "temperature" in message.split("temprature")[1]
    assert "canary: Value error, must contain 'canary GUID" in message
    source["generation"].pop("temprature")
    source["canary"] = load_spec(REPO_ROOT / "datasets" / "extreme-sports").canary
    source.pop("gate")
    (folder / "spec.yaml").write_text(yaml.safe_dump(source))
    with pytest.raises(SpecError, match="a misaligned set must ship gated"):
        load_spec(folder)
