"""Encoder features of a whole teacher file, cached on disk in resumable shards.

Encoding is the slow part of distilling (about 20-70 answers a second on a laptop CPU), so it
runs once per (data file, encoder weights, max length, dtype) and in shards of `SHARD` rows,
each written atomically: an interrupted run keeps every finished shard and redoes at most one.
Every encoder layer is kept (mean-pooled) so that recipes choosing other layers reuse the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from em_organisms.distill.backbone import Backbone
from em_organisms.distill.features import encode_pairs

SHARD = 2048


POOL_VERSIONS = {
    "pair": "mean-all-layers-v1",
    "answer": "answer-mean-all-layers-v1",
    "answer_max": "answer-max-all-layers-v1",
}


def cache_key(
    data_sha256: str, backbone: Backbone, max_length: int, dtype: str, pool: str = "pair"
) -> str:
    payload = {
        "data": data_sha256,
        "backbone": backbone.sha256,
        "max_length": max_length,
        "dtype": dtype,
        "pool": POOL_VERSIONS[pool],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def cached_features(
    folders: Mapping[str, Path],
    backbone: Backbone,
    questions: Sequence[str],
    answers: Sequence[str],
    max_length: int,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 64,
    progress: bool = True,
    max_shards: int | None = None,
) -> np.ndarray | None:
    """[n, len(folders) * n_layers * hidden] float16 features of every pair: for each pool of
    `folders` ({pool: its cache folder}, in order), all layers 1..L mean-pooled.

    A shard missing from any pool is encoded once for all of them. `max_shards` stops after that
    many new shards (None: all) and returns None when shards are still missing, so a long
    encoding can be run in pieces.
    """
    pools = list(folders)
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    n = len(answers)
    layers = list(range(1, backbone.model.config.num_hidden_layers + 1))
    width = len(layers) * backbone.model.config.hidden_size
    shards = [(s, min(s + SHARD, n)) for s in range(0, n, SHARD)]

    def shard(pool: str, start: int) -> Path:
        return folders[pool] / f"{start:08d}.npy"

    todo = [(s, e) for s, e in shards if not all(shard(p, s).is_file() for p in pools)]
    done_rows = n - sum(e - s for s, e in todo)
    bar = tqdm(
        total=n,
        initial=done_rows,
        desc="encode",
        unit="answer",
        disable=not progress,
        dynamic_ncols=True,
    )
    original = next(backbone.model.parameters()).dtype
    backbone.model.to(dtype)
    try:
        for count, (start, end) in enumerate(todo):
            if max_shards is not None and count >= max_shards:
                return None
            feats = encode_pairs(
                backbone,
                questions[start:end],
                answers[start:end],
                layers,
                max_length,
                batch_size,
                on_batch=bar.update,
                pools=pools,
            )
            for k, pool in enumerate(pools):
                _save_atomic(
                    shard(pool, start), feats[:, k * width : (k + 1) * width].astype(np.float16)
                )
    finally:
        backbone.model.to(original)
        bar.close()
    return np.concatenate(
        [np.concatenate([np.load(shard(p, s)) for p in pools], axis=1) for s, _ in shards]
    )
