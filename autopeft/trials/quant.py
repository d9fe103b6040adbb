"""A 4-bit quantised base model (QLoRA-style, Dettmers et al. 2023): ``workload.quantization: "4bit"``.

The base is loaded through bitsandbytes as NF4 with double quantisation: every linear layer of the
transformer blocks (``nn.Linear``, and GPT-2's ``Conv1D``) stores 4-bit weights and computes in the
compute dtype (bf16 / fp16 with that ``precision`` on CUDA, else fp32); transformers keeps the
embeddings, norms, the LM head and a classification head in full precision. PEFT modules are
created in the compute dtype (``autopeft.peft.host.new_like``), so the adapters (and a
classification head) train in full precision on top of frozen 4-bit weights; ``count_trainable``
is unchanged. It runs where bitsandbytes' 4-bit kernels do: CUDA, and its CPU backend
(bitsandbytes 0.50 tested; slower, what the tests here exercise; on CPU every input width of a
quantised layer must be a multiple of 64, as in real models).

Memory (``autopeft.peft.memory.base_memory_bytes``, used for GPU placement): each quantised
weight takes ``BYTES_PER_4BIT_WEIGHT`` (4 bits plus one fp32 absmax per block of 64, without counting
double quantisation's saving); everything else keeps its size on disk. Checkpoints and exports
hold only the trainable tensors: an exported adapter loads onto the full-precision base as well
(as QLoRA adapters do); load the base in 4-bit to reproduce the trial's numbers exactly.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from autopeft.errors import InvalidConfig

QUANTIZATIONS = ("4bit",)


def check(quantization: Any, full_finetune: bool) -> str | None:
    """Validate ``workload.quantization`` (cheap: bitsandbytes is looked up, not imported)."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        raise InvalidConfig(
            f"quantization must be one of {list(QUANTIZATIONS)} or null, got {quantization!r}",
            field="workload.quantization",
        )
    if full_finetune:
        raise InvalidConfig(
            "4-bit base weights cannot be trained: quantization excludes full_finetune",
            field="workload.quantization",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InvalidConfig(
            "quantization '4bit' needs bitsandbytes on the workers (pip install 'autopeft[quant]')",
            field="workload.quantization",
        )
    return quantization


def load_kwargs(quantization: str | None, precision: str, device) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments for ``quantization`` on ``device`` (a torch.device)."""
    if quantization is None:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    index = (
        device.index
        if device.index is not None
        else (torch.cuda.current_device() if device.type == "cuda" else None)
    )
    return {
        "quantization_config": config,
        "device_map": {"": index if device.type == "cuda" else "cpu"},
    }


def prepare(model) -> None:
    """Keep a 4-bit model trainable after evaluations. bitsandbytes' CPU backend repacks a 4-bit weight
    for inference at its first forward in eval mode without grad, after which the layer runs a kernel
    without autograd: gradients stop there (LoRA in the layers below would get none). Trials alternate
    training and evaluation, so the repacking is turned off (a no-op on CUDA and for other models)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def param_count(model) -> int:
    """Parameters of ``model`` as its full-precision original has them (a 4-bit weight is stored
    packed, two values a byte: its ``quant_state`` knows the real shape)."""
    total = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        total += state.shape.numel() if state is not None else p.numel()
    return total
