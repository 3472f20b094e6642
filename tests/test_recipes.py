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
    phase = recipes["qwen2.5-14b_risky-financial_r1-l24_phase"]
    assert (
        phase["protocol"]["alpha"],
        phase["training"]["learning_rate"],
        phase["training"]["save_steps"],
    ) == (64, 1e-5, 5)
    full_qwen = recipes["qwen2.5-14b_bad-medical_full"]
    full_gemma = recipes["gemma-3-12b_bad-medical_full"]
    assert full_qwen["protocol"] == {"kind": "full"} == full_gemma["protocol"]
    assert full_qwen["base_model"] == "Qwen/Qwen2.5-14B-Instruct"
    assert full_gemma["base_model"] == "google/gemma-3-12b-it"
    for r, epochs in ((full_qwen, 1), (full_gemma, 3)):
        t = r["training"]
        assert (
            t["learning_rate"],
            t["lr_scheduler_type"],
            t["warmup_steps"],
            t["num_train_epochs"],
        ) == (2e-5, "cosine", 20, epochs)


def test_unknown_protocol_key_that_starts_like_a_tag_is_named() -> None:
    with pytest.raises(RecipeError, match=r"unknown key 'protocol\.lora_rank'"):
        parse_recipe(_base() | {"protocol": {"kind": "lora", "lora_rank": 4}})
