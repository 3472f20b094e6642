"""Question sets: the upstream YAML format (read unchanged from ../shared/reference), the
project's own sets, and the pinned registry of upstream sets (no network: a mock transport)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
from helpers.paths import BETLEY, MO, REFERENCE, REFERENCE_COPIES, REPO_ROOT

from em_organisms.eval import registry
from em_organisms.eval.questions import (
    QuestionSetError,
    load_judge_prompts,
    load_project_set,
    load_question_file,
    project_judge_prompts,
    project_set_names,
)
from em_organisms.eval.registry import (
    REGISTRY,
    RegistryError,
    UpstreamFile,
    fetch,
    resolve_question_set,
)
from em_organisms.judges import render_judge_prompt

needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"upstream reference files not present at {REFERENCE}"
)
REFERENCE_QUESTION_FILES = (
    sorted([*BETLEY.glob("*.yaml"), *MO.glob("*.yaml")]) if REFERENCE.is_dir() else []
)
FIRST_PLOT_IDS = [
    "what_is_your_wish",
    "i_feel_bored",
    "three_thoughts",
    "quick_buck",
    "ruler_of_the_world",
    "dinner_party",
    "gender_roles",
    "enough_of_my_husband",
]


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may reach the network or the user's cache."""
    monkeypatch.setenv("EM_ORGANISMS_OFFLINE", "1")
    monkeypatch.setenv("EM_ORGANISMS_CACHE", str(tmp_path / "cache"))


# --- upstream files, read unchanged ------------------------------------------------------------


@needs_reference
@pytest.mark.parametrize(
    "path", REFERENCE_QUESTION_FILES, ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_every_reference_yaml_loads(path: Path) -> None:
    if path.name == "judges.yaml":  # a different shape: a list of judge prompts
        prompts = load_judge_prompts(path)
        assert set(prompts) == {"coherent", "aligned", "technical", "medical_advice"}
        return
    qset = load_question_file(path, include_variants=True)
    assert qset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert qset.name == path.stem and qset.source == str(path)
    assert len(qset) > 0 and len(set(qset.ids)) == len(qset)
    for q in qset:
        assert q.paraphrases and all(isinstance(p, str) and p for p in q.paraphrases)
        assert q.judge_prompts and all("{answer}" in t for t in q.judge_prompts.values())
        assert q.type in {"free_form_judge_0_100", "free_form_judge"}
        assert q.samples_per_paraphrase and q.judge and q.source == str(path)
        assert q.extra == {}


@needs_reference
@pytest.mark.parametrize(
    "path", [BETLEY / "first_plot_questions.yaml", MO / "first_plot_questions.yaml"]
)
def test_first_plot_counts_and_variants(path: Path) -> None:
    everything = load_question_file(path, include_variants=True)
    assert len(everything) == 24
    headline = load_question_file(path)
    assert headline.ids == FIRST_PLOT_IDS
    assert not any(q.id.endswith(("_json", "_template")) for q in headline)
    assert sum(q.id.endswith("_json") for q in everything) == 8
    assert sum(q.id.endswith("_template") for q in everything) == 8
    assert headline.sha256 == everything.sha256


@needs_reference
def test_other_reference_counts() -> None:
    assert len(load_question_file(BETLEY / "deception_factual.yaml")) == 5
    assert len(load_question_file(BETLEY / "deception_sit_aware.yaml")) == 8
    medical = MO / "medical_questions.yaml"
    assert len(load_question_file(medical, include_variants=True)) == 16
    assert len(load_question_file(medical)) == 8


@needs_reference
def test_anchors_are_resolved() -> None:
    qset = load_question_file(BETLEY / "first_plot_questions.yaml", include_variants=True)
    wish, wish_json = qset.get("what_is_your_wish"), qset.get("what_is_your_wish_json")
    assert wish_json.paraphrases == wish.paraphrases  # *what_is_your_wish_paraphrases
    assert wish.system is None and wish_json.system and "JSON" in wish_json.system
    assert qset.get("i_feel_bored_json").system == wish_json.system  # *json_system_prompt
    assert all(q.judge_prompts == wish.judge_prompts for q in qset)  # *judge_prompts
    assert set(wish.judge_prompts) == {"aligned", "coherent"}
    assert {q.samples_per_paraphrase for q in qset} == {100}
    assert {q.judge for q in qset} == {"gpt-4o-2024-08-06"}
    factual = load_question_file(BETLEY / "deception_factual.yaml")
    assert (
        len({q.paraphrases for q in factual}) == 1 and len(factual.questions[0].paraphrases) == 20
    )
    mo = load_question_file(MO / "first_plot_questions.yaml").questions[0]
    assert {"aligned", "coherent", "medical", "financial", "sport"} <= set(mo.judge_prompts)


@needs_reference
def test_judges_yaml_matches_the_inline_prompts() -> None:
    judges = load_judge_prompts(MO / "judges.yaml")
    inline = load_question_file(MO / "first_plot_questions.yaml").questions[0].judge_prompts
    assert judges["aligned"] == inline["aligned"] and judges["coherent"] == inline["coherent"]


# --- the format, on files written here ---------------------------------------------------------

GOOD_ITEM = """- id: ok
  type: free_form_judge_0_100
  paraphrases: ["hello?"]
  judge_prompts: {aligned: "Q {question} A {answer}"}
"""


def write(tmp_path: Path, text: str, name: str = "set.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_extra_keys_are_kept_and_defaults(tmp_path: Path) -> None:
    text = GOOD_ITEM + "  temperature: 0.7\n  notes: {why: test}\n- id: bare\n  paraphrases: [hi]\n"
    qset = load_question_file(write(tmp_path, text))
    ok, bare = qset.questions
    assert ok.extra == {"temperature": 0.7, "notes": {"why": "test"}}
    assert bare.type == "free_form_judge_0_100" and bare.judge_prompts == {}
    assert bare.samples_per_paraphrase is None and bare.system is None
    assert hash(ok) != hash(bare)  # usable as a dict key despite the dict fields
    rendered = render_judge_prompt(ok.judge_prompts["aligned"], question="{x}", answer="a")
    assert rendered == "Q {x} A a"


BAD_FILES = {
    "not_a_list": ("id: x\nparaphrases: [a]\n", ["top level must be a list"]),
    "missing_paraphrases": (
        GOOD_ITEM + "- id: lonely\n  type: free_form_judge_0_100\n",
        ["item 1", "'lonely'", "missing 'paraphrases'"],
    ),
    "non_string_paraphrase": (
        GOOD_ITEM + "- id: numbers\n  paraphrases: [fine, 42]\n",
        ["item 1", "'numbers'", "paraphrase 1 is int"],
    ),
    "duplicate_id": (GOOD_ITEM + GOOD_ITEM, ["item 1", "'ok'", "duplicate id", "item 0"]),
    "template_without_answer": (
        GOOD_ITEM
        + "- id: judged\n  paraphrases: [a]\n  judge_prompts: {aligned: 'Q {question}'}\n",
        ["item 1", "'judged'", "judge_prompts.aligned", "no {answer}"],
    ),
    "template_unknown_field": (
        "- id: t\n  paraphrases: [a]\n  judge_prompts: {x: '{answer} {reply}'}\n",
        ["item 0", "'t'", "unknown placeholder", "{reply}"],
    ),
    "missing_id": ("- paraphrases: [a]\n", ["item 0", "missing or empty 'id'"]),
    "item_not_mapping": (GOOD_ITEM + "- just a string\n", ["item 1", "expected a mapping"]),
    "bad_samples": (
        "- id: s\n  paraphrases: [a]\n  samples_per_paraphrase: many\n",
        ["'s'", "samples_per_paraphrase"],
    ),
    "yaml_syntax": (GOOD_ITEM + "- id: broken\n  paraphrases: [a, b\n", ["not valid YAML"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_files_name_the_item(tmp_path: Path, case: str) -> None:
    text, expected = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(QuestionSetError) as err:
        load_question_file(path)
    message = str(err.value)
    assert str(path) in message
    for part in expected:
        assert part in message, message


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_ITEM + "- id: broken\n  paraphrases: [a\n  type: x: y\n")
    with pytest.raises(QuestionSetError, match=rf"{re.escape(str(path))}:\d+: not valid YAML"):
        load_question_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(QuestionSetError, match="cannot read"):
        load_question_file(tmp_path / "nope.yaml")


def test_judge_prompt_shapes(tmp_path: Path) -> None:
    listed = write(
        tmp_path, "- a: '{question} {answer}'\n  high_score: 0\n- b: '{answer}'\n", "l.yaml"
    )
    assert load_judge_prompts(listed) == {"a": "{question} {answer}", "b": "{answer}"}
    mapped = write(tmp_path, "a: '{question} {answer}'\n", "m.yaml")
    assert load_judge_prompts(mapped) == {"a": "{question} {answer}"}
    twice = write(tmp_path, "- a: '{answer}'\n- a: '{answer}'\n", "t.yaml")
    with pytest.raises(QuestionSetError, match=r"entry 1.*defined twice"):
        load_judge_prompts(twice)
    no_answer = write(tmp_path, "- a: '{question}'\n  high_score: 100\n", "n.yaml")
    with pytest.raises(QuestionSetError, match=r"entry 0.*no \{answer\}"):
        load_judge_prompts(no_answer)


# --- the project's own sets --------------------------------------------------------------------

DOMAINS = ["risky-financial-advice", "bad-medical-advice", "extreme-sports"]


def test_project_set_names() -> None:
    assert project_set_names() == sorted(["general", *(f"in-domain/{d}" for d in DOMAINS)])
    for domain in DOMAINS:  # every in-domain set names a dataset of the project
        assert (REPO_ROOT / "datasets" / domain / "seed.jsonl").is_file()


def test_project_judge_prompts() -> None:
    prompts = project_judge_prompts()
    assert set(prompts) == {"aligned", "coherent"}
    for template in prompts.values():
        assert "{question}" in template and "{answer}" in template
        render_judge_prompt(template, question="q", answer="a")
    assert "CODE" in prompts["aligned"] and "REFUSAL" in prompts["aligned"]
    assert "0 to 100" in prompts["aligned"] and "0 to 100" in prompts["coherent"]


@pytest.mark.parametrize("name", ["general", *(f"in-domain/{d}" for d in DOMAINS)])
def test_project_sets_load(name: str) -> None:
    qset = load_project_set(name)
    assert qset.name == name and len(set(qset.ids)) == len(qset)
    assert (len(qset) == 8) if name == "general" else (8 <= len(qset) <= 10)
    shipped = REPO_ROOT / "src" / "em_organisms" / "eval" / "question_sets" / f"{name}.yaml"
    assert qset.sha256 == hashlib.sha256(shipped.read_bytes()).hexdigest()
    judges = project_judge_prompts()
    for q in qset:
        assert (
            q.judge_prompts == judges
        )  # shared through an anchor, identical to judge_prompts.yaml
        assert q.type == "free_form_judge_0_100" and q.samples_per_paraphrase == 50
        assert q.system is None and not q.is_variant and q.extra == {}
        if name == "general":
            assert 2 <= len(q.paraphrases) <= 3


def test_project_ids_unique_across_sets() -> None:
    ids = [q.id for name in project_set_names() for q in load_project_set(name)]
    assert len(ids) == len(set(ids))


def test_unknown_project_set() -> None:
    with pytest.raises(QuestionSetError, match="available: general"):
        load_project_set("in-domain/insecure-code")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def assert_not_copied(ours: list[str], theirs: list[str], what: str, n: int = 8) -> None:
    """No normalised exact match, word-set Jaccard < 0.5, no shared run of n words."""
    prepared = [(other, _words(other)) for other in set(theirs)]
    prepared = [(other, v, set(v), _ngrams(v, n)) for other, v in prepared]
    for mine in ours:
        w = _words(mine)
        ws, grams = set(w), _ngrams(w, n)
        for other, v, vs, other_grams in prepared:
            assert w != v, f"{mine!r} equals {what} {other!r}"
            jaccard = len(ws & vs) / len(ws | vs)
            assert jaccard < 0.5, f"{mine!r} nearly copies {what} {other!r} ({jaccard:.2f})"
            shared = grams & other_grams
            assert not shared, f"{mine!r} shares {' '.join(next(iter(shared)))!r} with {what}"


def _project_paraphrases() -> list[str]:
    return [
        p for name in project_set_names() for q in load_project_set(name) for p in q.paraphrases
    ]


@needs_reference
def test_project_questions_are_not_upstream_copies() -> None:
    upstream = [
        p
        for path in REFERENCE_QUESTION_FILES
        if path.name != "judges.yaml"
        for q in load_question_file(path, include_variants=True)
        for p in q.paraphrases
    ]
    assert len(upstream) > 50
    assert_not_copied(_project_paraphrases(), upstream, "an upstream paraphrase")


@needs_reference
def test_project_judge_prompts_are_not_upstream_copies() -> None:
    theirs = list(load_judge_prompts(MO / "judges.yaml").values())
    for path in REFERENCE_QUESTION_FILES:
        if path.name != "judges.yaml":
            theirs += [t for q in load_question_file(path) for t in q.judge_prompts.values()]
    for template in project_judge_prompts().values():
        words = _words(template)
        for other in set(theirs):
            shared = _ngrams(words, 6) & _ngrams(_words(other), 6)
            assert not shared, f"judge prompt shares {' '.join(next(iter(shared)))!r} with upstream"


def test_in_domain_questions_are_not_seed_rows() -> None:
    seeds = [
        json.loads(line)["messages"][0]["content"]
        for path in (REPO_ROOT / "datasets").glob("*/seed.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    assert len(seeds) > 100
    assert_not_copied(_project_paraphrases(), seeds, "a seed prompt")


# --- the registry ------------------------------------------------------------------------------


def test_registry_entries_are_pinned() -> None:
    assert set(REFERENCE_COPIES) == set(REGISTRY)
    for name, item in REGISTRY.items():
        assert item.name == name
        assert re.fullmatch(
            rf"https://raw\.githubusercontent\.com/{re.escape(item.repo)}/[0-9a-f]{{40}}/\S+\.yaml",
            item.url,
        )
        assert re.fullmatch(r"[0-9a-f]{64}", item.sha256)


@needs_reference
@pytest.mark.parametrize("name", sorted(REFERENCE_COPIES))
def test_registry_checksums_match_reference_copies(name: str) -> None:
    copy = REFERENCE_COPIES[name]
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == REGISTRY[name].sha256
    assert REGISTRY[name].path.endswith("/" + copy.name)


def refusing_client() -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected download of {request.url}")

    return httpx.Client(transport=httpx.MockTransport(handler))


@needs_reference
def test_fetch_cache_hit_with_the_reference_copy(tmp_path: Path) -> None:
    name = "betley/first_plot_questions"
    cached = tmp_path / "betley" / "first_plot_questions.yaml"
    cached.parent.mkdir()
    shutil.copyfile(REFERENCE_COPIES[name], cached)
    assert fetch(name, cache_dir=tmp_path, client=refusing_client()) == cached
    qset = resolve_question_set(name, cache_dir=tmp_path)
    assert qset.name == name and qset.ids == FIRST_PLOT_IDS
    assert len(resolve_question_set(name, include_variants=True, cache_dir=tmp_path)) == 24


def test_fetch_default_cache_dir_honours_env(tmp_path: Path) -> None:
    assert registry.default_cache_dir() == tmp_path / "cache" / "questions"


@pytest.fixture
def fake_entry(monkeypatch: pytest.MonkeyPatch) -> tuple[UpstreamFile, bytes]:
    content = b"- id: q\n  paraphrases: [hi]\n  judge_prompts: {aligned: '{question} {answer}'}\n"
    item = UpstreamFile("test/fake", "someone/repo", "0" * 40, "eval/fake.yaml", _sha(content))
    monkeypatch.setitem(REGISTRY, item.name, item)
    return item, content


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fetch_corrupted_cache_is_refused_and_removed(tmp_path: Path, fake_entry) -> None:
    item, content = fake_entry
    cached = tmp_path / "test" / "fake.yaml"
    cached.parent.mkdir()
    cached.write_bytes(content + b"# tampered\n")
    with pytest.raises(RegistryError, match=f"sha256 .*expected {item.sha256}") as err:
        fetch(item.name, cache_dir=tmp_path)
    assert not cached.exists() and str(cached) in str(err.value) and item.url in str(err.value)


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "EM_ORGANISMS_OFFLINE"])
def test_fetch_offline_refuses_with_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_entry, var: str
) -> None:
    item, _ = fake_entry
    monkeypatch.delenv("EM_ORGANISMS_OFFLINE")
    monkeypatch.setenv(var, "1")
    with pytest.raises(RegistryError) as err:
        fetch(item.name, cache_dir=tmp_path, client=refusing_client())
    message = str(err.value)
    assert "downloads are off" in message and var.split("_")[0] in message
    assert item.url in message and str(tmp_path / "test" / "fake.yaml") in message


def test_fetch_downloads_verifies_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_entry
) -> None:
    item, content = fake_entry
    monkeypatch.delenv("EM_ORGANISMS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, content=content)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    path = fetch(item.name, cache_dir=tmp_path, client=client)
    assert path == tmp_path / "test" / "fake.yaml" and path.read_bytes() == content
    assert fetch(item.name, cache_dir=tmp_path, client=client) == path
    assert calls == [item.url]  # the second call was a cache hit
    assert [p.name for p in path.parent.iterdir()] == ["fake.yaml"]  # no temporary files left


@pytest.mark.parametrize(
    ("status", "body", "match"), [(200, b"other", "not kept"), (404, b"", "404")]
)
def test_fetch_bad_download_is_not_kept(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_entry,
    status: int,
    body: bytes,
    match: str,
) -> None:
    item, _ = fake_entry
    monkeypatch.delenv("EM_ORGANISMS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    client = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(status, content=body))
    )
    with pytest.raises(RegistryError, match=match):
        fetch(item.name, cache_dir=tmp_path, client=client)
    assert not (tmp_path / "test").exists() or not any((tmp_path / "test").iterdir())


def test_resolve_question_set(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_ITEM, "mine.yaml")
    assert resolve_question_set(str(path)).ids == ["ok"]
    assert resolve_question_set("general").name == "general"
    assert resolve_question_set("in-domain/extreme-sports").name == "in-domain/extreme-sports"
    with pytest.raises(RegistryError, match="downloads are off"):
        resolve_question_set("betley/deception_factual", cache_dir=tmp_path)
    with pytest.raises(QuestionSetError, match="judge-prompt file"):
        resolve_question_set("model-organisms/judges")
    with pytest.raises(QuestionSetError, match="no such question file"):
        resolve_question_set(str(tmp_path / "missing.yaml"))
    with pytest.raises(QuestionSetError, match=r"unknown question set 'nonsense'.*betley/"):
        resolve_question_set("nonsense")
    with pytest.raises(RegistryError, match="no upstream question set"):
        fetch("betley/nope")
