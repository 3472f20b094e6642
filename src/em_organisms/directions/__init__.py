"""The misalignment direction: computed from judged answers, applied while sampling, published.

Modules:
- `layers`: the decoder layers of any causal LM (through PEFT's wrappers) and their outputs;
- `hooks`: steering (add `scale * v` at one layer) and ablation (project `v` out at every layer);
- `activations`: mean residual-stream activations over answer tokens, per layer;
- `vectors`: `direction.safetensors`, its metadata, and the checks that it fits a model.

Convention: "layer L" is the output of decoder layer L (0-based), the residual stream after that
layer's attention and MLP. A direction's vector at L is computed there, and steering at L adds to
it there.
"""
