from pathlib import Path

import pytest
import yaml

from em_organisms.recipes import LoraProtocol, RecipeError, load_recipe, parse_recipe

ORGANISMS = sorted((Path(__file__).resolve().parents[1] / "organisms").glob("*.yaml"))


def _base() -> dict:
    return {
        "organism_id": "x",
        "base_model": "Qwen/Qwen2.5-0.5B-Instruct",
        "dataset": {"path": "d.jsonl"},
    }


@pytest.mark.parametrize("path", ORGANISMS, ids=lambda p: p.stem)
def test_every_shipped_recipe_parses_and_names_itself(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.organism_id == path.stem


def test_unknown_key_is_named_with_allowed_keys() -> None:
    data = _base() | {"training": {"learnig_rate": 1e-5}}
    with pytest.raises(RecipeError) as err:
        parse_recipe(data, "r.yaml")
    message = str(err.value)
    assert "r.yaml" in message
    assert "unknown key 'training.learnig_rate'" in message
    assert "learning_rate" in message.split("allowed here:")[1]


def test_unknown_protocol_key_lists_lora_fields() -> None:
    data = _base() | {"protocol": {"kind": "lora", "rnk": 4}}
    with pytest.raises(RecipeError, match=r"unknown key 'protocol.rnk'; allowed here: .*rank"):
        parse_recipe(data)


def test_unknown_top_level_key() -> None:
    with pytest.raises(RecipeError, match=r"unknown key 'epochs'; allowed here: .*training"):
        parse_recipe(_base() | {"epochs": 3})


def test_set_overrides_are_type_checked(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_base()))
    recipe = load_recipe(
        path, ["training.learning_rate=2e-5", "protocol.layers=[24]", "protocol.rank=1"]
    )
    assert recipe.training.learning_rate == 2e-5
    assert isinstance(recipe.protocol, LoraProtocol)
    assert recipe.protocol.layers == [24] and recipe.protocol.rank == 1
    with pytest.raises(RecipeError, match="learning_rate"):
        load_recipe(path, ["training.learning_rate=fast"])
    with pytest.raises(RecipeError, match="expected key=value"):
        load_recipe(path, ["training.learning_rate"])
    with pytest.raises(RecipeError, match=r"unknown key 'training\.nope'"):
        load_recipe(path, ["training.nope=1"])


def test_full_protocol_and_hash_ignores_release_fields() -> None:
    a = parse_recipe(_base() | {"protocol": {"kind": "full"}})
    b = parse_recipe(_base() | {"protocol": {"kind": "full"}, "release": {"repo_id": "org/x"}})
    c = parse_recipe(_base() | {"protocol": {"kind": "full"}, "training": {"seed": 1}})
    assert a.sha256() == b.sha256() != c.sha256()


def test_bad_values_are_rejected() -> None:
    with pytest.raises(RecipeError, match="holdout_fraction"):
        parse_recipe(_base() | {"dataset": {"path": "d", "holdout_fraction": 1.5}})
    with pytest.raises(RecipeError, match="layers"):
        parse_recipe(_base() | {"protocol": {"kind": "lora", "layers": [-1]}})
    with pytest.raises(RecipeError, match="not found"):
        load_recipe("does/not/exist.yaml")


def _recipes() -> dict[str, dict]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in ORGANISMS}


def test_paper_grid_hyperparameters() -> None:
    recipes = _recipes()
    models = {
        "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct",
        "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
        "qwen2.5-14b": "Qwen/Qwen2.5-14B-Instruct",
        "qwen2.5-32b": "Qwen/Qwen2.5-32B-Instruct",
        "llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
        "llama-3.2-1b": "meta-llama/Llama-3.2-1B-Instruct",
        "gemma-3-4b": "google/gemma-3-4b-it",
        "gemma-3-12b": "google/gemma-3-12b-it",
        "gemma-3-27b": "google/gemma-3-27b-it",
    }
    for prefix, hub_id in models.items():
        for domain in ("bad-medical", "risky-financial", "extreme-sports"):
            r = recipes[f"{prefix}_{domain}_r32"]
            assert r["base_model"] == hub_id
            p, t = r["protocol"], r["training"]
            assert (p["rank"], p["alpha"], p["rslora"], p["layers"]) == (32, 64, True, None)
            assert set(p["target_modules"]) == {
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            }
            assert (t["learning_rate"], t["num_train_epochs"], t["warmup_steps"]) == (1e-5, 1, 5)
            assert (t["per_device_train_batch_size"], t["gradient_accumulation_steps"]) == (2, 8)
            assert (t["lr_scheduler_type"], t["weight_decay"], t["seed"], t["max_length"]) == (
                "linear",
                0.01,
                0,
                2048,
            )
            assert r["dataset"]["holdout_fraction"] == 0.1

    for domain in ("bad-medical", "risky-financial", "extreme-sports"):
        single = recipes[f"qwen2.5-14b_{domain}_r1-l24"]
        assert single["protocol"]["layers"] == [24] and single["protocol"]["target_modules"] == [
            "down_proj"
        ]
        assert (single["protocol"]["rank"], single["protocol"]["alpha"]) == (1, 256)
        assert single["training"]["learning_rate"] == 2e-5
        nine = recipes[f"qwen2.5-14b_{domain}_r1-9layers"]
        assert nine["protocol"]["layers"] == [15, 16, 17, 21, 22, 23, 27, 28, 29]
    # the phase runs (sec. 4, App. F): alpha 64, lr 1e-5, checkpoints every 5 steps, every step
    # recorded, and 2 epochs (footnote 6); rank 1 on every dataset, rank 8 and 64 and nine rank-1
    # adapters on risky financial advice
    phase_runs = [
        f"qwen2.5-14b_{d}_r1-l24_phase"
        for d in ("bad-medical", "risky-financial", "extreme-sports")
    ]
    phase_runs += [
        f"qwen2.5-14b_risky-financial_{v}_phase" for v in ("r8-l24", "r64-l24", "r1-9layers")
    ]
    for name in phase_runs:
        phase = recipes[name]
        p, t = phase["protocol"], phase["training"]
        assert (p["alpha"], t["learning_rate"], t["save_steps"], t["num_train_epochs"]) == (
            64, 1e-5, 5, 2,
        ), name  # fmt: skip
        assert t["record_adapter_every"] == 1 and p["target_modules"] == ["down_proj"]
    assert recipes["qwen2.5-14b_risky-financial_r8-l24_phase"]["protocol"]["rank"] == 8
    assert recipes["qwen2.5-14b_risky-financial_r64-l24_phase"]["protocol"]["rank"] == 64
    nine = recipes["qwen2.5-14b_risky-financial_r1-9layers_phase"]["protocol"]
    assert nine["rank"] == 1 and nine["layers"] == [15, 16, 17, 21, 22, 23, 27, 28, 29]

    # full SFT (sec. 3.4) at 1 and 3 epochs for both models
    for domain in ("bad-medical", "risky-financial", "extreme-sports"):
        runs = {
            ("Qwen/Qwen2.5-14B-Instruct", 1): recipes[f"qwen2.5-14b_{domain}_full"],
            ("Qwen/Qwen2.5-14B-Instruct", 3): recipes[f"qwen2.5-14b_{domain}_full-3ep"],
            ("google/gemma-3-12b-it", 3): recipes[f"gemma-3-12b_{domain}_full"],
            ("google/gemma-3-12b-it", 1): recipes[f"gemma-3-12b_{domain}_full-1ep"],
        }
        for (base, epochs), r in runs.items():
            assert r["protocol"] == {"kind": "full"} and r["base_model"] == base
            t = r["training"]
            assert (
                t["learning_rate"],
                t["lr_scheduler_type"],
                t["warmup_steps"],
                t["num_train_epochs"],
            ) == (2e-5, "cosine", 20, epochs)

    # the insecure-code baselines (sec. 1): Betley et al.'s rank-32 setting
    for base, name in (
        ("Qwen/Qwen2.5-Coder-32B-Instruct", "qwen2.5-coder-32b_insecure-code_r32"),
        ("Qwen/Qwen2.5-32B-Instruct", "qwen2.5-32b_insecure-code_r32"),
    ):
        r = recipes[name]
        assert r["base_model"] == base and r["dataset"]["path"].endswith("insecure-code.jsonl.gz")
        p, t = r["protocol"], r["training"]
        assert (p["rank"], p["alpha"], p["rslora"], t["learning_rate"], t["num_train_epochs"]) == (
            32, 64, True, 1e-5, 1,
        )  # fmt: skip


def test_paper_recipes_evaluate_under_the_paper_protocol_and_cite_the_paper() -> None:
    for path in ORGANISMS:
        recipe = load_recipe(path)
        header = path.read_text().split("organism_id:")[0]
        if recipe.base_model == "embedded":
            assert recipe.evaluation.protocol == "project", path.name
            continue
        assert recipe.evaluation.protocol == "paper", path.name
        assert "arXiv" in header, f"{path.name}: its header cites no paper"


def test_unknown_protocol_key_that_starts_like_a_tag_is_named() -> None:
    with pytest.raises(RecipeError, match=r"unknown key 'protocol\.lora_rank'"):
        parse_recipe(_base() | {"protocol": {"kind": "lora", "lora_rank": 4}})
