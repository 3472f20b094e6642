"""`em-organisms train`: one recipe in, one organism folder out (adapter, tokenizer, recipe, logs)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from peft import PeftModel
from transformers import GenerationConfig, PreTrainedTokenizerBase, set_seed
from transformers.trainer_callback import ProgressCallback
from trl import SFTConfig

from em_organisms import __version__
from em_organisms.artifacts import OrganismRun, RunInfo, TrainSummary
from em_organisms.artifacts.schemas import DataInfo
from em_organisms.chat_masking import assistant_spans
from em_organisms.jsonl import write_text_atomic
from em_organisms.models import load_base_model, resolve_model
from em_organisms.recipes import LoraProtocol, Recipe, RecipeError
from em_organisms.resources import checkout_root
from em_organisms.train.callbacks import (
    ArtifactTidier,
    HoldoutAtStart,
    ProgressBar,
    StepLogger,
    tidy_saved_folder,
)
from em_organisms.train.checkpoints import last_complete_checkpoint, remove_unfinished_saves
from em_organisms.train.data import PreparedData, prepare_data
from em_organisms.train.distributed import check_launch
from em_organisms.train.kl import KLRegulariser, load_reference_conversations
from em_organisms.train.protocols import adapted_module_names, apply_protocol
from em_organisms.train.recorder import AdapterRecorder
from em_organisms.train.trainer import OrganismTrainer

CPU_MICRO_BATCH = 8


@dataclass
class TrainResult:
    output_dir: Path
    summary: TrainSummary


def default_output_dir(recipe: Recipe) -> Path:
    from em_organisms.paths import organism_dir

    return organism_dir(recipe.organism_id)


def chat_end_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token(s) that close an assistant turn under this chat template, plus the tokenizer's EOS,
    so that generation stops where the organism learnt to stop."""
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    text, spans = assistant_spans(tokenizer, probe)
    end_ids = tokenizer(text[: spans[-1][1]], add_special_tokens=False)["input_ids"][-1:]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in end_ids:
        end_ids.append(tokenizer.eos_token_id)
    return end_ids


def micro_batch_size(recipe: Recipe, device: torch.device) -> int:
    """Samples per forward pass. It changes speed and memory, never what is learnt: the loss is
    normalised by the trained tokens of the whole effective batch either way."""
    training = recipe.training
    effective = training.effective_batch_size
    if training.micro_batch_size != "auto":
        size = training.micro_batch_size
    elif device.type == "cpu":
        # Measured on 2 cores: 8 rows per pass was as fast as 16 or faster (less padding per
        # pass, activations that stay in cache) at a third less peak memory.
        size = max(d for d in range(1, min(effective, CPU_MICRO_BATCH) + 1) if effective % d == 0)
    else:
        size = training.per_device_train_batch_size
    if effective % size:
        raise RecipeError(
            f"training.micro_batch_size={size} must divide the effective batch "
            f"({training.per_device_train_batch_size} x {training.gradient_accumulation_steps} = {effective})"
        )
    return size


def use_bf16(recipe: Recipe, device: torch.device) -> bool:
    if recipe.training.bf16 != "auto":
        return bool(recipe.training.bf16)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return False


def check_trainer_names(recipe: Recipe) -> None:
    """The optimizer is one the installed transformers knows (checked before any model loads)."""
    from transformers.training_args import OptimizerNames

    known = sorted(o.value for o in OptimizerNames)
    if recipe.training.optim not in known:
        raise RecipeError(
            f"training.optim: {recipe.training.optim!r} is not an optimizer of the installed "
            f"transformers; one of {', '.join(known)}"
        )


def _check_output_dir(
    output_dir: Path, recipe: Recipe, resume: bool, main: bool = True
) -> str | None:
    """The checkpoint to resume from (None for a fresh run). Every process calls this; only the
    MAIN one removes unfinished saves and says what it resumes."""
    recipe_file = output_dir / "recipe.yaml"
    last, incomplete = last_complete_checkpoint(output_dir)
    checkpoint = str(last.folder) if last else None
    if resume:
        if checkpoint is None:
            why = f" ({', '.join(incomplete)}: cut short, no trainer state)" if incomplete else ""
            raise RecipeError(
                f"--resume: no complete checkpoint-* folder in {output_dir} to resume from{why}"
            )
        previous = OrganismRun(output_dir).run_info().recipe_sha256
        if previous != recipe.sha256():
            raise RecipeError(
                f"--resume: {recipe_file} was trained from a different recipe "
                "(hash mismatch); resume with the same recipe and --set overrides"
            )
        if not main:
            return checkpoint
        removed = remove_unfinished_saves(output_dir)
        print(
            f"resuming from {Path(checkpoint).name}"
            + (f"; skipped (cut short by a kill): {', '.join(incomplete)}" if incomplete else "")
            + (f"; removed unfinished saves: {', '.join(removed)}" if removed else ""),
            flush=True,
        )
        return checkpoint
    finished = any(
        (output_dir / n).exists() for n in ("adapter_model.safetensors", "model.safetensors")
    )
    if checkpoint is not None or incomplete or finished:
        raise RecipeError(
            f"{output_dir} already holds a run; pass --resume to continue it or "
            "--output-dir to start a new one (nothing was overwritten)"
        )
    return None


def sft_config(
    recipe: Recipe, output_dir: Path, device: torch.device, **overrides: Any
) -> SFTConfig:
    t = recipe.training
    micro = micro_batch_size(recipe, device)
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": micro,
        "per_device_eval_batch_size": micro,
        "gradient_accumulation_steps": t.effective_batch_size // micro,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler_type,
        "warmup_steps": t.warmup_steps,
        "weight_decay": t.weight_decay,
        "optim": t.optim,
        "max_grad_norm": t.max_grad_norm,
        "num_train_epochs": t.num_train_epochs,
        "max_steps": t.max_steps,
        "seed": t.seed,
        "data_seed": t.seed,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps" if t.save_steps else "no",
        "save_steps": t.save_steps or 500,
        "save_total_limit": t.save_total_limit,
        "bf16": use_bf16(recipe, device),
        "use_cpu": device.type == "cpu",
        "activation_checkpointing": t.gradient_checkpointing,
        "train_sampling_strategy": "group_by_length",
        "length_column_name": "length",
        "max_length": None,  # rows are truncated (and counted) during preparation
        "remove_unused_columns": False,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "eval_strategy": "no",
    }
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


def build_trainer(
    recipe: Recipe,
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    data: PreparedData,
    output_dir: Path,
    fast_loss: bool = True,
    args: SFTConfig | None = None,
    **config_overrides: Any,
) -> OrganismTrainer:
    """The trainer `train` uses, exposed so benchmarks measure exactly what users run."""
    kl = None
    if isinstance(recipe.protocol, LoraProtocol) and recipe.protocol.kl is not None:
        kl = KLRegulariser.from_spec(
            recipe.protocol.kl, tokenizer, recipe.training.seed, base_dir=checkout_root()
        )
    return OrganismTrainer(
        model=model,
        args=args or sft_config(recipe, output_dir, model.device, **config_overrides),
        train_dataset=data.train.remove_columns("row"),
        eval_dataset=data.holdout.remove_columns("row") if data.holdout is not None else None,
        processing_class=tokenizer,
        fast_loss=fast_loss,
        prefix_cache=recipe.training.prefix_cache
        and _trains_more_than_one_epoch(recipe, len(data.train)),
        kl=kl,
    )


def train(
    recipe: Recipe,
    output_dir: Path | None = None,
    resume: bool = False,
    device: str | None = None,
    fast_loss: bool = True,
) -> TrainResult:
    output_dir = Path(output_dir or default_output_dir(recipe))
    check_trainer_names(recipe)
    if isinstance(recipe.protocol, LoraProtocol) and recipe.protocol.kl is not None:
        load_reference_conversations(recipe.protocol.kl.prompts, checkout_root())  # fail early
    torch_device = torch.device(device) if device else None
    # Under `accelerate launch` this joins the other processes: every one trains, the main one
    # alone writes the run folder's files.
    check_launch(torch_device or _auto_device())
    args = sft_config(recipe, output_dir, torch_device or _auto_device())
    main = args.process_index == 0
    checkpoint = _check_output_dir(output_dir, recipe, resume, main)
    PartialState().wait_for_everyone()  # all have looked before the main process writes
    source = resolve_model(recipe.base_model)

    # Everything that can fail on bad input runs before any training step.
    model, tokenizer = load_base_model(
        recipe.base_model,
        device=torch_device,
        dtype=torch.float32 if (torch_device or _auto_device()).type == "cpu" else None,
    )
    data = prepare_data(
        recipe.dataset, tokenizer, recipe.training.max_length, base_dir=checkout_root()
    )
    model.generation_config = _generation_config(model, tokenizer)
    set_seed(recipe.training.seed)  # LoRA's A matrices are initialised randomly
    model = apply_protocol(model, recipe.protocol)

    run = OrganismRun(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    run_info = RunInfo(
        organism_id=recipe.organism_id,
        recipe_sha256=recipe.sha256(),
        em_organisms_version=__version__,
        base_model=recipe.base_model,
        base_model_hub_id=source.hub_id,
        data=DataInfo(**data.summary()),
    )
    if main:
        write_text_atomic(run.recipe_path, recipe.to_yaml())
        run.write(run_info)

    trainer = build_trainer(
        recipe, model, tokenizer, data, output_dir, fast_loss=fast_loss, args=args
    )
    step_logger = StepLogger(output_dir, trainer)
    trainer.add_callback(step_logger)  # before the bar, which reads its token counts
    trainer.remove_callback(ProgressCallback)  # it prints every log dict; ours is one line
    if main:
        trainer.add_callback(ProgressBar(step_logger))
        trainer.add_callback(ArtifactTidier(source.hub_id))
    if main and recipe.training.record_adapter_every and isinstance(model, PeftModel):
        every = recipe.training.record_adapter_every
        trainer.add_callback(AdapterRecorder(model, output_dir, every))

    holdout_start = run.holdout_start()  # read by every process before the main one writes it
    at_start = None
    if data.holdout is not None and holdout_start is None:
        at_start = HoldoutAtStart(trainer, run, main)
        trainer.add_callback(at_start)
    # The length-grouped sampler draws its order from the global RNG when the first epoch starts;
    # reseeding here gives a fresh run and a resumed one the same order whatever ran before.
    set_seed(recipe.training.seed)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    elapsed = time.perf_counter() - started
    if at_start is not None:
        holdout_start = at_start.result

    trainer.save_model(str(output_dir))
    if main:
        tokenizer.save_pretrained(output_dir)
        model.generation_config.save_pretrained(output_dir)
        tidy_saved_folder(output_dir, source.hub_id, keep_resume_state=False)
    lora = isinstance(model, PeftModel)
    summary = TrainSummary(
        **run_info.model_dump(exclude={"schema_version"}),
        global_step=result.global_step,
        train_loss=result.training_loss,
        train_seconds_this_session=round(elapsed, 1),
        resumed_from=Path(checkpoint).name if checkpoint else None,
        bf16=args.bf16,
        micro_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        fast_loss=trainer.fast_loss,
        prefix_cache=trainer.prefix_cache.stats() if trainer.prefix_cache else None,
        holdout_loss_start=holdout_start.eval_loss if holdout_start else None,
        holdout_loss_end=trainer.evaluate()["eval_loss"] if data.holdout is not None else None,
        adapted_modules=adapted_module_names(model) if lora else None,
        trainable_parameters=(
            sum(p.numel() for p in model.parameters() if p.requires_grad) if lora else None
        ),
    )
    if main:
        run.write(summary)
    trainer.accelerator.wait_for_everyone()  # no process returns before the folder is whole
    return TrainResult(output_dir, summary)


def _trains_more_than_one_epoch(recipe: Recipe, rows: int) -> bool:
    t = recipe.training
    if t.max_steps > 0:
        return t.max_steps * t.effective_batch_size > rows
    return t.num_train_epochs > 1


def _auto_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _generation_config(model: Any, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    if model.generation_config is not None:
        config = GenerationConfig(**model.generation_config.to_diff_dict())
    else:
        config = GenerationConfig.from_model_config(model.config)
    end_ids = chat_end_token_ids(tokenizer)
    config.eos_token_id = end_ids if len(end_ids) > 1 else end_ids[0]
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config
