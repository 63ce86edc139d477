"""The torch backend: bertkit's own model as a Runner (packed forward, bf16 autocast, dynamic int8).

Vectors only take the packed forward, which computes nothing on padding; heads and attention probabilities
take the padded reference forward of the fp32 model. int8 runs a quantized copy (the fp32 model is kept for
training and for calls that need exact outputs). Precisions and tolerances: bertkit.runtime.modes.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from bertkit.model import Bert, BertOutput
from bertkit.runtime.modes import check_names
from bertkit.runtime.seam import BackendError, Facts, default_threads

log = logging.getLogger(__name__)


def check_options(precision: str, backend: str, device: torch.device | str = "cpu") -> None:
    check_names(precision, backend)
    if backend == "onnx" and torch.device(device).type != "cpu":
        raise BackendError("the onnx backend runs on CPU; use --backend torch on a GPU")
    if precision == "int8" and backend == "torch" and torch.device(device).type != "cpu":
        raise BackendError("int8 dynamic quantization runs on CPU only; use --precision bf16 on a GPU")


def autocast(precision: str, device: torch.device):
    """bf16 autocast: matmuls and attention in bfloat16, LayerNorm and the residual stream stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def quantize_int8(model: Bert) -> Bert:
    """A copy of the model whose nn.Linear layers are dynamically quantized to int8."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    # Per-channel weight scales: per-tensor ones lose much more on this model (min cosine 0.80 vs 0.91).
    with warnings.catch_warnings():  # torch.ao's deprecation notices, once per load
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            copy.deepcopy(model).eval(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )


def model_facts(model: Bert) -> Facts:
    c = model.config
    return Facts(c.hidden_size, c.num_hidden_layers, c.max_position_embeddings, model.has_pooler,
                 model.has_mlm, model.has_nsp)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchRunner:
    """bertkit's Bert on a device, in a precision (the verdict already applied: `precision` is what runs)."""

    backend = "torch"
    arrays = "torch"
    batch_cost = None  # the packed forward computes nothing on padding

    def __init__(self, model: Bert, device: str | torch.device = "cpu", precision: str = "fp32",
                 requested_precision: str | None = None):
        self.device = torch.device(device)
        check_options(precision, "torch", self.device)
        self.model = model.to(self.device).eval()
        self.precision = precision
        self.requested_precision = requested_precision or precision
        self.facts = model_facts(model)
        self._int8 = quantize_int8(self.model) if precision == "int8" else None
        if default_threads() is not None:
            torch.set_num_threads(default_threads())

    def run(self, input_ids, attention_mask, token_type_ids, hidden_states: bool = False) -> BertOutput:
        model = self._int8 if self._int8 is not None else self.model
        with autocast(self.precision, self.device):
            return model.forward_packed(input_ids, attention_mask, token_type_ids, hidden_states)

    def forward(self, input_ids, attention_mask, token_type_ids, *, hidden_states: bool = False,
                attentions: bool = False, heads: bool | tuple[str, ...] = False) -> BertOutput:
        model = self._int8 if self._int8 is not None else self.model
        with autocast(self.precision, self.device):
            return model(input_ids, attention_mask, token_type_ids, output_hidden_states=hidden_states,
                         output_attentions=attentions, compute_heads=heads)

    def inference(self):
        return torch.inference_mode()

    def threads(self) -> int:
        return torch.get_num_threads()

    def set_threads(self, n: int) -> None:
        torch.set_num_threads(n)
