"""Peak training memory of a trial, predicted from the config, the model's config and the workload.

``estimate_memory(config, model_config, workload)`` adds up, in bytes (``MemoryEstimate``):

* **weights**: every parameter and buffer of the task model (counted on the meta device: exact, no
  weights read), in fp32 (the trainer loads fp32; autocast keeps the weights fp32), or the 4-bit base
  of :mod:`autopeft.trials.quant` when ``quantization: 4bit``; plus the PEFT modules' own weights
  (``count_trainable``, fp32);
* **gradients**: one fp32 value per trainable parameter (every weight for ``full_finetune``);
* **optimizer**: AdamW's ``exp_avg`` and ``exp_avg_sq``, two fp32 values per trainable parameter;
* **activations**: what autograd keeps for the backward pass of one batch of ``batch_size`` x
  ``max_length`` tokens (padding to the longest example is the worst case, one full example), plus the
  largest transient working set of one layer. Per layer, for ``T`` tokens, hidden ``H``, intermediate
  ``I``, ``A`` heads, attention over ``S = L + prefix`` keys, activations of ``a`` bytes (4; 2 under
  bf16 / fp16 autocast):

  - layer norms keep their inputs (2 ``TH``), the FFN activation its input (``TI``; gated FFNs 3 ``TI``),
    attention its query, key, value (3 ``TH``) and its probabilities (``B A L S``, plus the dropout's
    output and one-byte mask when attention dropout is on), dropouts a one-byte mask per element;
  - frozen linears keep nothing (no weight gradient), trainable ones their input; full fine-tuning
    also keeps the inputs of the output projection and of the FFN's down projection (``TH + TI``);
  - LoRA keeps its ``T r`` bottleneck per target, bottleneck adapters their ``T size`` hidden and
    their input, prefixes their key / value caches (``2 B p H``) and the reparameterisation MLP's output;
  - the methods peft injects (issue 35; not yet checked against measured peaks): DoRA keeps LoRA's
    tensors plus the base output it rescales (``T out`` per target); VeRA its two ``T r`` bottlenecks
    and ``T out``; AdaLoRA LoRA's; LoHa and LoKr their input and the delta weight they rebuild each
    step (``in x out``, kept for the backward pass); prompt tuning lengthens every sequence by
    its ``prompt.length`` virtual tokens (``L`` and ``T`` count them) and, its gradient reaching
    the input, makes every layer keep its activations;
  - only layers from the first one with a trainable module upwards keep anything (below it nothing
    needs a gradient); with ``gradient_checkpointing`` each of those layers keeps only its input
    ``TH``, one layer's activations are recomputed at a time, and the backward working set is half
    as large (the recomputed tensors are freed as that layer's backward proceeds; factor measured).

  The logits (``B x labels``, or for ``causal_lm`` the completion tokens' ``x vocab`` in fp32: the
  trainer gathers them; a quarter of the tokens is assumed) and their gradient come on top.

On ``device: cuda`` the **workspace** comes on top: PyTorch allocates cuBLAS workspaces through its
caching allocator, one per cuBLAS handle and stream (handles are per thread, and autograd runs the
backward pass on a thread of its own). :data:`CUDA_WORKSPACE_BYTES` is two of PyTorch's default size
on Hopper (sm_90), 32 MiB: measured on an H200, the model was 56-84 MiB low on 21 of 22 rows before
this term. Older GPUs default to about 8 MiB a workspace, so there the prediction is about 48 MiB
high (not measured).

Checked against measured peaks in ``benchmarks/memory_model.py`` (BENCHMARKS.md, "Memory model").
It is a model: the caching allocator on CUDA rounds blocks, which the placement's safety margin
covers.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from autopeft.peft.arch import describe_config
from autopeft.peft.config import parse_peft_config
from autopeft.peft.cost import count_trainable

CAUSAL_COMPLETION_SHARE = (
    0.25  # share of tokens that are completion (whose logits the trainer keeps)
)
#: the batch size a prediction assumes when the workload leaves it to the trainer (its largest default)
DEFAULT_PREDICTION_BATCH = 32
#: cuBLAS workspaces on CUDA (module doc): two of PyTorch's Hopper default, 32 MiB
#: (``CUBLAS_WORKSPACE_CONFIG=:4096:8``)
CUDA_WORKSPACE_BYTES = 2 * 32 * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak training memory, in bytes, by component (module doc); ``total`` is the peak."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    checkpointing: bool = False
    workspace: int = 0

    @property
    def total(self) -> int:
        """Weights and optimiser states live throughout; the gradients of the layers are created while the
        backward pass frees those layers' activations, so the peak holds the larger of the two. Under
        gradient checkpointing the recomputed activations come on top of the gradients already made
        (measured: full fine-tuning of MiniLM, 16 x 64)."""
        resident = self.workspace + self.weights + self.optimizer
        if self.checkpointing:
            return resident + self.activations + self.gradients
        return resident + max(self.activations, self.gradients)

    @property
    def total_mb(self) -> float:
        return self.total / 2**20

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


@functools.lru_cache(maxsize=32)
def _model_bytes(config_json: str, task: str, num_labels: int) -> tuple[int, int, int]:
    """(bytes of parameters + buffers in fp32, parameter count, vocabulary size) of the task model,
    built on the meta device."""
    import torch

    from autopeft.models import transformers_attrs

    auto_config, causal_lm, classifier = transformers_attrs(
        "AutoConfig", "AutoModelForCausalLM", "AutoModelForSequenceClassification"
    )
    config = auto_config.for_model(**__import__("json").loads(config_json))
    with torch.device("meta"):
        if task == "causal_lm":
            model = causal_lm.from_config(config)
        else:
            config.num_labels = num_labels
            model = classifier.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    vocab = int(model.get_input_embeddings().num_embeddings)
    return 4 * n_params + n_buffers, n_params, vocab


def _config_json(model_config: Any) -> str:
    d = model_config.to_dict()
    for key in ("_name_or_path", "transformers_version", "architectures", "id2label", "label2id"):
        d.pop(key, None)
    return __import__("json").dumps(d, sort_keys=True, default=str)


def estimate_memory(
    config: Mapping[str, Any],
    model_config: Any,
    workload: Mapping[str, Any],
    num_labels: int | None = None,
) -> MemoryEstimate:
    """Predicted peak memory of training ``config`` (see the module doc for every term).

    ``workload`` keys read: ``task`` (classification), ``batch_size`` (default
    :data:`DEFAULT_PREDICTION_BATCH`, 32: the trainer's largest default), ``max_length``
    (128), ``precision`` (fp32), ``quantization``, ``full_finetune``, ``gradient_checkpointing``,
    ``labels``, ``dropout``. ``num_labels`` defaults to ``len(workload["labels"])``, else 2.
    Raises :class:`autopeft.InvalidConfig` for a bad config, like ``count_trainable``.
    """
    from autopeft.errors import InvalidConfig

    task = str(workload.get("task") or "classification")
    if num_labels is None:
        labels = workload.get("labels")
        num_labels = len(labels) if labels else 2
    batch = int(workload.get("batch_size") or DEFAULT_PREDICTION_BATCH)
    length = int(workload.get("max_length") or 128)
    if batch < 1 or length < 1:
        raise InvalidConfig("batch_size and max_length must be >= 1", field="workload.batch_size")
    act = 2 if str(workload.get("precision", "fp32")) in ("bf16", "fp16") else 4
    full = bool(workload.get("full_finetune"))
    checkpointing = bool(workload.get("gradient_checkpointing"))

    desc = describe_config(model_config)
    spec = parse_peft_config({} if full else config, desc.num_layers)
    lora, lengths = spec["lora"], spec["prefix"].length
    prompted = spec["prompt"].active  # the virtual tokens lengthen every layer's sequence
    length += spec["prompt"].length
    head_labels = None if task == "causal_lm" else num_labels
    weights, n_base, vocab = _model_bytes(_config_json(model_config), task, num_labels)
    if workload.get("quantization") == "4bit":
        weights = base_memory_bytes(model_config, weights)
    if full:
        trainable = n_base
    else:
        trainable = count_trainable(config, model_config, head_labels)
        head = desc.head_params(head_labels)
        weights += 4 * (
            trainable - head
        )  # PEFT modules are new weights; the head is in the model already

    L, H, I, A, N = length, desc.hidden, desc.intermediate, desc.heads, desc.num_layers  # noqa: E741 (the docstring's names)
    T = batch * length
    drop = workload.get("dropout")
    attn_drop = (
        float(drop)
        if drop is not None
        else _first_attr(
            model_config, ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout")
        )
    )
    hidden_drop = (
        float(drop)
        if drop is not None
        else _first_attr(
            model_config, ("hidden_dropout_prob", "resid_pdrop", "dropout", "hidden_dropout")
        )
    )
    # the attention map is materialised (and kept) by eager attention and by torch's SDPA whenever
    # attention dropout is on and the fused kernels do not apply (the CPU); the fused CUDA kernels keep
    # only the output and a log-sum-exp per row
    cuda = str(workload.get("device", "auto")) == "cuda"
    fused = cuda or (attn_drop == 0 and desc.family == "decoder")
    probs = 0 if fused else 1
    act_fn = str(
        getattr(model_config, "activation_function", getattr(model_config, "hidden_act", ""))
    )
    n_ffn = (
        3 if desc.gated else (4 if act_fn == "gelu_new" else 1)
    )  # gelu_new: tanh formula in 4 ops

    def layer_bytes(i: int) -> float:
        prefix = lengths[i]
        S = L + prefix
        b = act * (
            2 * T * H + n_ffn * T * I + 3 * T * H + probs * batch * A * L * S
        )  # norms, FFN, q k v, map
        if attn_drop > 0 and probs:
            b += (act + 1) * batch * A * L * S  # dropped map and its mask
        if hidden_drop > 0:
            b += 2 * T * H  # two one-byte dropout masks
        if full:
            b += act * (T * H + T * I + T * H)  # inputs of o, down, and q/k/v
        else:
            rank = lora.rank[i]
            if rank:
                targets = set(lora.targets)
                inputs = (
                    T * H * bool(targets & {"q", "k", "v"})
                    + T * H * ("o" in targets)
                    + T * H * ("ffn_in" in targets)
                    + T * I * ("ffn_out" in targets)
                )
                b += act * (inputs + len(targets) * T * rank)
            b += act * _tuner_bytes(spec, desc, i, T)
            for sizes in (spec["serial"].size, spec["parallel"].size):
                size = sizes[i]
                if size:
                    b += act * (T * H + 2 * T * size)
            if prefix:
                b += act * 2 * batch * prefix * H * 2
        return b

    from autopeft.peft.tuners import NAMES as TUNERS

    per_layer = (
        lora.rank,
        spec["serial"].size,
        spec["parallel"].size,
        lengths,
        *(spec[n].rank for n in TUNERS),
    )

    def trainable_at(i: int) -> bool:  # a prompt's gradient passes through every layer
        return full or prompted or any(seq[i] for seq in per_layer) or i in spec["ia3"].layers

    first = next((i for i in range(N) if trainable_at(i)), N)
    kept = [layer_bytes(i) for i in range(first, N)]
    if checkpointing and kept:
        saved = act * T * H * len(kept) + max(kept)
    else:
        saved = sum(kept)
    if full:
        saved += act * T * H * 2  # embeddings: norm input and dropout
    # one layer's backward working set: four buffers of the FFN's width and, where materialised, four of
    # the attention map (the factor 4 is measured: MiniLM, LoRA q,v; BENCHMARKS.md "Memory model")
    transient = act * (4 * T * I + 4 * probs * batch * A * L * L) if kept or full else 0
    if checkpointing and kept:
        transient //= (
            2  # the recomputed layer's tensors are freed as its backward goes (measured: MiniLM)
        )
    if task == "causal_lm":
        tokens = max(batch, int(T * CAUSAL_COMPLETION_SHARE))
        logits = 3 * 4 * tokens * vocab  # logits, log-softmax, their gradient (fp32)
    else:
        logits = 3 * 4 * batch * num_labels
    activations = int(saved + transient + logits)
    return MemoryEstimate(
        weights=int(weights),
        gradients=4 * trainable,
        optimizer=8 * trainable,
        activations=activations,
        checkpointing=checkpointing,
        workspace=CUDA_WORKSPACE_BYTES if cuda else 0,
    )


def _tuner_bytes(spec: Any, desc: Any, i: int, T: int) -> int:
    """Elements the peft-injected methods keep in layer ``i`` beyond LoRA's own terms (DoRA's
    rescaled base output; VeRA, AdaLoRA, LoHa and LoKr in full: they are not in LoRA's terms)."""
    from autopeft.peft.tuners import NAMES as TUNERS

    available = desc.projections
    lora = spec["lora"]
    total = 0
    if lora.variant == "dora" and lora.rank[i]:
        total += sum(T * desc.linear_shape(t)[1] for t in lora.targets_in(available))
    for name in TUNERS:
        tuner = spec[name]
        r = tuner.rank[i]
        if not r:
            continue
        for target in tuner.targets_in(available):
            n_in, n_out = desc.linear_shape(target)
            if name == "vera":
                total += T * n_in + 2 * T * r + T * n_out
            elif name == "adalora":
                total += T * n_in + T * r
            else:  # loha, lokr: the input and the rebuilt delta weight
                total += T * n_in + n_in * n_out
    return total


def _first_attr(model_config: Any, names: tuple[str, ...]) -> float:
    for name in names:
        value = getattr(model_config, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


def predicted_memory_mb(config, model_config, workload, num_labels: int | None = None) -> float:
    """The ``predicted_memory_mb`` objective: ``estimate_memory(...).total_mb`` for the same
    arguments (a workload that leaves ``batch_size`` to the trainer is predicted at
    :data:`DEFAULT_PREDICTION_BATCH`). The same number the trainer reports, the controller knows
    before training, and placement packs by."""
    return estimate_memory(config, model_config, workload, num_labels=num_labels).total_mb


# -- a 4-bit quantised base (``workload.quantization: "4bit"``, autopeft.trials.quant) -------
#: bytes of one 4-bit weight: 4 bits plus one fp32 absmax per block of 64 (double quantisation's
#: saving not counted)
BYTES_PER_4BIT_WEIGHT = 0.5 + 4 / 64
_DISK_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def quantized_weights(model_config: Any) -> int:
    """Number of weights the 4-bit load quantises: the linear layers of every block."""
    desc = describe_config(model_config)
    names = list(desc.projections)
    per_layer = sum(a * b for a, b in (desc.linear_shape(n) for n in names))
    return desc.num_layers * per_layer


def base_memory_bytes(model_config: Any, weights_bytes: int) -> int:
    """Memory of the 4-bit base whose full-precision weights take ``weights_bytes`` on disk."""
    dtype = str(
        getattr(model_config, "dtype", None)
        or getattr(model_config, "torch_dtype", None)
        or "float32"
    )
    per_weight = _DISK_BYTES.get(dtype.replace("torch.", ""), 4)
    n = quantized_weights(model_config)
    return int(max(0, weights_bytes - n * per_weight) + n * BYTES_PER_4BIT_WEIGHT)
