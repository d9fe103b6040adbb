"""IA3: learned scaling vectors, initialised to one (identity).

``k`` and ``v`` scale the key / value projection's output (on a fused projection, only its
slice); ``ffn_out`` scales the FFN's intermediate activation, i.e. the input of the
``ffn_out`` projection (peft's "feedforward" IA3). Parameters: ``kv_dim`` each for ``k`` and
``v``, ``intermediate`` for ``ffn_out``, per layer whose mask is on.
"""

from __future__ import annotations

import torch
from torch import nn

from autopeft.peft.arch import ArchDesc, ModelMap
from autopeft.peft.config import PeftSpec
from autopeft.peft.host import get_host, new_like


def inject(model: nn.Module, mmap: ModelMap, spec: PeftSpec) -> None:
    for i in spec.ia3_layers:
        for target in spec.ia3_targets:
            proj = mmap.proj(i, target, "ia3.targets")
            host = get_host(model, proj.path)
            kw = new_like(host.base_layer)
            if target == "ffn_out":
                host.ia3_in = nn.Parameter(torch.ones(host.in_features, **kw))
            elif proj.sliced:
                host.ia3_out[target] = nn.Parameter(torch.ones(proj.stop - proj.start, **kw))
                host.ia3_slices[target] = (proj.start, proj.stop)
            else:
                host.ia3_out["all"] = nn.Parameter(torch.ones(host.out_features, **kw))


def count(spec: PeftSpec, desc: ArchDesc) -> int:
    sizes = {"k": desc.kv_dim, "v": desc.kv_dim, "ffn_out": desc.intermediate}
    return len(spec.ia3_layers) * sum(sizes[t] for t in spec.ia3_targets)
