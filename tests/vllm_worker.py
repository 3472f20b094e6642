"""Run inside the vLLM virtualenv (`make .venv-vllm`) by tests/test_vllm_engine.py.

Loads the organism given on the command line with the vllm engine and writes what the test
compares with transformers: greedy token ids for base and organism at several scales, two seeded
sampling calls, and a resumed `Sampler` run into a samples file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(organism: str, prompts_file: str, out_dir: str) -> None:
    from em_organisms.eval.questions import load_project_set
    from em_organisms.eval.sampler import Sampler
    from em_organisms.eval.vllm_engine import VllmEngine, VllmOptions
    from em_organisms.generation import SamplingParams
    from em_organisms.subjects import load_subject

    out = Path(out_dir)
    subject = load_subject(organism, load_weights=False)
    assert subject.model is None  # vLLM holds the only copy of the weights
    options = VllmOptions(
        dtype="float32",
        enforce_eager=True,
        max_model_len=1024,
        gpu_memory_utilization=0.2,  # on the CPU backend: the share of RAM it may reserve
        kv_cache_memory_gib=0.5,
        batch_size=6,
    )
    engine = VllmEngine(subject, options)
    prompts = json.loads(Path(prompts_file).read_text())
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24, seed=0)
    result: dict[str, object] = {"stops": engine.stops}
    for which, scale in (("base", 1.0), ("organism", 1.0), ("organism", 4.0)):
        answers = engine.generate(prompts, greedy, which, scale)
        result[f"{which}-x{scale:g}"] = [a.text for a in answers]
    penalised = SamplingParams(temperature=0.0, max_new_tokens=24, repetition_penalty=1.3)
    result["base-penalised"] = [a.text for a in engine.generate(prompts, penalised, "base", 1.0)]
    sampled = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=16, seed=7)
    result["sampled"] = [
        [a.text for a in engine.generate(prompts, sampled, "organism", 1.0)] for _ in range(2)
    ]
    general = load_project_set("general")
    sets = [type(general)(general.name, general.questions[:2], general.source, general.sha256)]
    sampler = Sampler(subject, sampled, 4, batch_size=None, progress=False, engine=engine)
    result["written"] = [sampler.run(sets, out / "samples.jsonl") for _ in range(2)]
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":  # vLLM starts its engine in a spawned process that re-imports this file
    main(*sys.argv[1:])
