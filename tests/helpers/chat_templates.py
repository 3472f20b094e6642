"""The chat templates of the model families we train on, as each renders them."""

from __future__ import annotations

CHATML_QWEN = (
    "{% if messages[0].role != 'system' %}<|im_start|>system\nYou are a careful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAMA3 = (
    "<|begin_of_text|>"
    "{% if messages[0].role != 'system' %}<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023<|eot_id|>{% endif %}"
    "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

GEMMA3 = (
    "<bos>"
    "{% if messages[0].role == 'system' %}{% set prefix = messages[0].content + '\n\n' %}{% set rest = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set rest = messages %}{% endif %}"
    "{% for m in rest %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{{ (prefix if loop.first else '') + m.content | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

CASES = {
    # name: (template, extra special tokens, end-of-turn marker, whitespace after it)
    "chatml-qwen2.5": (CHATML_QWEN, [], "<|im_end|>", "\n"),
    "llama-3": (
        LLAMA3,
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|eot_id|>",
        "",
    ),
    "gemma-3": (GEMMA3, ["<bos>", "<start_of_turn>", "<end_of_turn>"], "<end_of_turn>", "\n"),
}
