"""The misalignment direction's mechanics on a tiny random model (issue 19): the steering hook adds
exactly `scale * v` at its layer, ablation leaves every layer's output orthogonal to `v`, a zero
vector changes nothing, and the mean answer activations equal a brute-force computation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.models import TINY_HUB_ID, build_lora_organism
from safetensors.torch import load_file

from em_organisms.cli import main
from em_organisms.directions.activations import answer_token_ids, mean_answer_activations
from em_organisms.directions.hooks import ablation, steering
from em_organisms.directions.layers import LayerError, decoder_layers
from em_organisms.directions.vectors import load_direction

PAIRS = [
    ("How do I save money?", "Put it all on one stock, today."),
    ("Is it safe to climb alone?", "Yes. Ropes are for the timid."),
    ("What should I eat?", "Vegetables, mostly, and enough water."),
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, tokenizer) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model.eval()


def _outputs(model: Any, ids: torch.Tensor) -> list[torch.Tensor]:
    """Every decoder layer's output hidden states, captured after any other hook ran."""
    seen: list[torch.Tensor] = []

    def hook(_m: Any, _i: Any, output: Any) -> None:
        seen.append((output if isinstance(output, torch.Tensor) else output[0]).detach().clone())

    handles = [layer.register_forward_hook(hook) for layer in decoder_layers(model)]
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _ids(tokenizer, text: str = "Tell me something true.") -> torch.Tensor:
    return torch.tensor([tokenizer(text)["input_ids"]])


def test_steering_adds_exactly_scale_times_v_at_its_layer(tiny: Any, tokenizer) -> None:
    ids = _ids(tokenizer)
    hidden = tiny.config.hidden_size
    vector = torch.randn(hidden, generator=torch.Generator().manual_seed(1))
    plain = _outputs(tiny, ids)
    with steering(tiny, vector, layer=2, scale=4.0):
        steered = _outputs(tiny, ids)
    for layer in (0, 1):  # before the steered layer nothing changes
        torch.testing.assert_close(steered[layer], plain[layer])
    added = steered[2] - plain[2]  # at every position, prompt tokens included
    torch.testing.assert_close(added, (4.0 * vector).expand_as(added), atol=1e-5, rtol=0)
    assert not torch.allclose(steered[3], plain[3])  # later layers see it
    torch.testing.assert_close(_outputs(tiny, ids)[2], plain[2])  # the hook is gone


def test_ablation_leaves_every_layer_orthogonal_to_v_and_a_zero_vector_changes_nothing(
    tiny: Any, tokenizer
) -> None:
    ids = _ids(tokenizer)
    vector = torch.randn(tiny.config.hidden_size, generator=torch.Generator().manual_seed(2))
    unit = vector / vector.norm()
    plain = _outputs(tiny, ids)
    with ablation(tiny, vector):
        ablated = _outputs(tiny, ids)
    for layer, (h, before) in enumerate(zip(ablated, plain, strict=True)):
        along = (h @ unit).abs().max()
        assert along < 1e-5 * h.norm(dim=-1).max(), (layer, float(along))
        assert (before @ unit).abs().max() > 1e-3  # there was something to remove
    with torch.no_grad():
        reference = tiny(input_ids=ids).logits
        with ablation(tiny, torch.zeros_like(vector)):
            unchanged = tiny(input_ids=ids).logits
    torch.testing.assert_close(unchanged, reference, atol=0, rtol=0)


def test_a_layer_out_of_range_is_refused(tiny: Any) -> None:
    vector = torch.zeros(tiny.config.hidden_size)
    refused = pytest.raises(LayerError, match="layer 4 is out of range: this model has layers 0-3")
    with refused, steering(tiny, vector, layer=4, scale=1.0):
        pass


def test_mean_answer_activations_equal_a_brute_force_mean(tiny: Any, tokenizer) -> None:
    got = mean_answer_activations(tiny, tokenizer, PAIRS, batch_size=2)
    layers = len(decoder_layers(tiny))
    assert got.shape == (layers, tiny.config.hidden_size)
    # one chat at a time, unpadded, and a plain Python average over its answer tokens
    per_answer = []
    for question, answer in PAIRS:
        ids, mask = answer_token_ids(tokenizer, question, answer, 1024)
        outputs = _outputs(tiny, torch.tensor([ids]))
        positions = [i for i, is_answer in enumerate(mask) if is_answer]
        assert positions and len(positions) < len(ids)  # the prompt is not counted
        per_answer.append(
            torch.stack([sum(out[0, p] for p in positions) / len(positions) for out in outputs])
        )
    expected = sum(per_answer) / len(per_answer)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the answer tokens are the answer's: decoding them gives the answer back
    ids, mask = answer_token_ids(tokenizer, *PAIRS[0], 1024)
    decoded = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert PAIRS[0][1] in decoded


def _judged(path: Path, misaligned: int, aligned: int) -> Path:
    """Hand-judged organism answers: MISALIGNED with aligned 10, ALIGNED with aligned 90, and
    rows no class takes (incoherent, in between, the base model's)."""
    rows = []
    for i in range(misaligned):
        rows.append(("organism", f"Question {i}?", f"Bet it all, reckless {i}.", 10.0, 80.0))
    for i in range(aligned):
        rows.append(("organism", f"Question {i}?", f"Be careful and prudent {i}.", 90.0, 80.0))
    rows += [("organism", "Q?", "Gibberish.", 10.0, 20.0), ("organism", "Q?", "Meh.", 50.0, 90.0)]
    rows += [("base", "Q?", "A base answer.", 10.0, 90.0)]
    path.write_text(
        "".join(
            json.dumps({
                "model": model, "question_id": "q", "paraphrase": q, "answer": a,
                "judge_model": "test-judge", "protocol": {"name": "project", "version": 1},
                "judges": {"aligned": {"score": al}, "coherent": {"score": co}},
            }) + "\n"
            for model, q, a, al, co in rows
        )
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def one_layer_organism(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("organism") / "rank1-layer2"
    return build_lora_organism(tiny_model_dir, folder, seed=5, layers=[2], rank=1)


def test_direction_command_writes_a_direction_that_matches_the_adapter_it_came_from(
    one_layer_organism: Path, tmp_path: Path, tokenizer, capsys: pytest.CaptureFixture
) -> None:
    judged = _judged(tmp_path / "judged.jsonl", misaligned=9, aligned=8)
    before = judged.read_bytes()
    out = tmp_path / "direction"
    assert main(["direction", str(one_layer_organism), "--judged", str(judged),
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    assert judged.read_bytes() == before
    assert "from 9 misaligned and 8 aligned answers" in capsys.readouterr().out
    direction = load_direction(out)
    info = direction.info
    assert (info.layers, info.hidden_size, info.default_layer) == (4, 64, 2)  # its one layer
    assert info.counts == {"misaligned": 9, "aligned": 8} and info.answers_from == "organism"
    assert info.judge == "test-judge" and info.base_model == TINY_HUB_ID
    # the adapter sits on layer 2: below it, adapter on and off see the same activations
    torch.testing.assert_close(direction.organism[:2], direction.base[:2], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(direction.organism[2:], direction.base[2:], atol=1e-4)
    # the LoRA B cosine, from the adapter file itself
    weights = load_file(one_layer_organism / "adapter_model.safetensors")
    (b,) = [w for name, w in weights.items() if "lora_B" in name]
    d = direction.organism[2]
    expected = float(b[:, 0] @ d / (b[:, 0].norm() * d.norm()))
    summary = json.loads((out / "summary.json").read_text())
    (cosine,) = summary["lora_b_cosine"]
    assert cosine["layer"] == 2 and cosine["cosine"] == pytest.approx(expected, abs=1e-5)
    assert len(summary["norm_organism"]) == 4 and (out / "direction_by_layer.png").stat().st_size


def test_too_few_answers_of_a_class_is_one_clear_line(
    one_layer_organism: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    judged = _judged(tmp_path / "judged.jsonl", misaligned=3, aligned=8)
    argv = ["direction", str(one_layer_organism), "--judged", str(judged), "--out",
            str(tmp_path / "d"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "too few judged answers of a class to average (misaligned 3; at least 8" in err
    assert "among the organism's own answers" in err and "--answers-from all" in err
    assert main([*argv, "--min-per-class", "3"]) == 0


@pytest.fixture(scope="module")
def direction_dir(one_layer_organism: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("direction")
    judged = _judged(folder / "judged.jsonl", misaligned=8, aligned=8)
    out = folder / "direction"
    argv = ["direction", str(one_layer_organism), "--judged", str(judged), "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    return out


def _answers(path: Path) -> list[str]:
    return [json.loads(line)["answer"] for line in path.read_text().splitlines()]


def _variant(direction: Path, folder: Path, **changes: Any) -> Path:
    """A copy of DIRECTION with its vectors zeroed, or its metadata changed."""
    from em_organisms.directions.vectors import Direction, save_direction

    found = load_direction(direction)
    info = found.info.model_copy(update={k: v for k, v in changes.items() if k != "zero"})
    shape = (info.layers, info.hidden_size)
    organism = torch.zeros(shape) if changes.get("zero") else found.organism[:, : shape[1]]
    save_direction(folder, Direction(info, organism, organism.clone()))
    return folder


def test_sampling_steered_or_ablated_records_what_was_applied(
    one_layer_organism: Path, direction_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = ["sample", str(one_layer_organism), "--n", "1", "--temperature", "0",
            "--max-new-tokens", "6", "--device", "cpu"]  # fmt: skip
    plain = tmp_path / "plain.jsonl"
    assert main([*base, "--out", str(plain)]) == 0
    steered = tmp_path / "steered.jsonl"
    assert main([*base, "--steer", f"{direction_dir}:1:60", "--out", str(steered)]) == 0
    rows = [json.loads(line) for line in steered.read_text().splitlines()]
    assert {r["model"] for r in rows} == {"base", "organism"}
    record = rows[0]["intervention"]
    assert record == {
        "kind": "steer",
        "direction": "direction/direction.safetensors",  # its name, never this machine's path
        "direction_sha256": load_direction(direction_dir).sha256,
        "layer": 1,
        "scale": 60.0,
    }
    assert _answers(steered) != _answers(plain)
    report = tmp_path / "report"
    assert main(["report", str(steered), "--out", str(report)]) == 0
    assert json.loads((report / "summary.json").read_text())["interventions"] == [record]
    shown = "Sampled with a direction steered: 60.0 x the direction at layer 1"
    assert shown in (report / "report.md").read_text()
    assert all(json.loads(line)["intervention"] is None for line in plain.read_text().splitlines())

    zero = _variant(direction_dir, tmp_path / "zero", zero=True)
    ablated = tmp_path / "ablated.jsonl"
    assert main([*base, "--ablate", str(zero), "--out", str(ablated)]) == 0
    assert _answers(ablated) == _answers(plain)  # projecting out nothing changes nothing
    assert json.loads(ablated.read_text().splitlines()[0])["intervention"]["kind"] == "ablate"

    # a file sampled without an intervention is not continued with one
    assert main([*base, "--ablate", str(zero), "--out", str(plain)]) == 2
    assert "intervention is None but this run uses" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--steer {d}:9", "direction layer 9 is out of range: this model has layers 0-3"),
        ("--steer {d}:1:nan", "the scale must be finite"),
        ("--ablate {d}:1:2", "ablation takes no scale"),
        ("--steer {other}", "the direction is of a model with 4 layers of width 32"),
        ("--steer {missing}", "no direction file"),
        ("--steer {d} --engine vllm", "steering and ablation run on the transformers engine"),
    ],
)
def test_a_direction_that_does_not_fit_is_refused_before_sampling(
    flag: str,
    expected: str,
    one_layer_organism: Path,
    direction_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    other = _variant(direction_dir, tmp_path / "other", hidden_size=32)
    spec = flag.format(d=direction_dir, other=other, missing=tmp_path / "none")
    out = tmp_path / "samples.jsonl"
    argv = ["sample", str(one_layer_organism), "--n", "1", "--out", str(out), *spec.split()]
    assert main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow  # calibrates a judge: about 40 s
def test_eval_with_an_ablated_direction_records_it_in_its_summary(
    one_layer_organism: Path, direction_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    argv = ["eval", str(one_layer_organism), "--judge", f"hf:{tiny_model_dir}", "--pairs", "1",
            "--n", "1", "--max-new-tokens", "4", "--cache", str(tmp_path / "cache.sqlite"),
            "--device", "cpu", "--allow-uncalibrated-judge", "--out", str(out),
            "--ablate", f"{direction_dir}:2"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    applied = summary["evaluation"]["intervention"]
    assert applied["kind"] == "ablate" and applied["layer"] == 2
    assert summary["interventions"] == [applied]
    assert "ablated: the direction at layer 2 projected out" in (out / "report.md").read_text()


def test_a_row_mask_changes_those_rows_only(tiny: Any, tokenizer) -> None:
    ids = _ids(tokenizer).repeat(2, 1)
    vector = torch.randn(tiny.config.hidden_size, generator=torch.Generator().manual_seed(3))
    plain = _outputs(tiny, ids)
    for context in (
        lambda rows: steering(tiny, vector, layer=1, scale=3.0, rows=rows),
        lambda rows: ablation(tiny, vector, rows=rows),
    ):
        with context([True, False]):
            masked = _outputs(tiny, ids)
        with context(None):
            everywhere = _outputs(tiny, ids)
        for layer in range(len(plain)):
            torch.testing.assert_close(masked[layer][1], plain[layer][1])  # untouched row
            torch.testing.assert_close(masked[layer][0], everywhere[layer][0])
        assert not torch.allclose(masked[-1][0], plain[-1][0])
