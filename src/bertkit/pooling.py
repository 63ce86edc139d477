"""From token vectors to one sentence vector. Padding never takes part.

| mode            | what it is                                                                  |
|-----------------|-----------------------------------------------------------------------------|
| cls             | the [CLS] token's output vector (last layer, or the chosen layers)          |
| pooler          | [CLS] through the NSP-trained dense + tanh (pooler_output)                  |
| mean            | average of the token vectors (what Sentence-BERT models are trained with)   |
| max             | per-dimension maximum over tokens                                           |
| mean_sqrt_len   | sum of token vectors / sqrt(number of tokens)                               |
| first_last_avg  | mean over tokens of (first transformer layer + last layer) / 2              |
| mask_prompt     | PromptBERT: the [MASK] vector of a template wrapped around the text         |

`pool` takes torch tensors (the torch backends) or numpy arrays (the graph runners, bertkit.runtime.onnxrt)
and answers in the same kind; the few operations that differ are in `_ops` below. torch is never imported
for numpy input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bertkit.errors import InputError, MissingHeadError, OptionError

if TYPE_CHECKING:
    import torch

    from bertkit.model import BertOutput

POOLING_MODES = ("cls", "pooler", "mean", "max", "mean_sqrt_len", "first_last_avg", "mask_prompt")
DEFAULT_PROMPT = 'This sentence : "{text}" means [MASK] .'


def check_pooling(mode: str, layers: list[int] | None = None) -> None:
    """Raise ValueError naming the bad value and the allowed ones."""
    if mode not in POOLING_MODES:
        raise OptionError(f"unknown pooling {mode!r}; choose one of: {', '.join(POOLING_MODES)}")
    if layers is not None and mode in ("pooler", "first_last_avg"):
        raise OptionError(f"pooling {mode!r} fixes its own layers; drop layers= or use cls/mean/max")
    if layers is not None and len(layers) == 0:
        raise OptionError("layers= needs at least one layer index (0 = embeddings, -1 = last layer)")


def prompt_for(template: str, mask_token: str) -> str:
    """The template with BERT's `[MASK]` written as this model's mask token (RoBERTa's `<mask>`), so one
    template (the default one too) serves every family; a template that names the model's own token is kept."""
    if mask_token != "[MASK]" and mask_token not in template:
        return template.replace("[MASK]", mask_token)
    return template


def check_template(template: str, mask_token: str = "[MASK]") -> None:
    template = prompt_for(template, mask_token)
    if template.count("{text}") != 1 or mask_token not in template:
        raise OptionError(f"prompt template must contain {{text}} once and {mask_token}; got {template!r}")


def needs_hidden_states(mode: str, layers: list[int] | None) -> bool:
    return layers is not None or mode == "first_last_avg"


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Each row (the last axis) scaled to unit L2 length, as float32: x / max(||x||, 1e-12), the definition of
    torch.nn.functional.normalize, so a zero row stays zero instead of turning into NaNs. The one numpy
    normalisation of bertkit; float64 input is divided in float64 (whitening's output) before the cast."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32, copy=False)


class _NumpyOps:
    @staticmethod
    def stack_mean(arrays):
        return np.stack(arrays).mean(0)

    @staticmethod
    def weights(mask, dtype):  # (B, T) -> (B, T, 1)
        return mask[..., None].astype(dtype)

    @staticmethod
    def at_least_one(counts):
        return np.maximum(counts, 1)

    sqrt = staticmethod(np.sqrt)

    @staticmethod
    def max_over_tokens(hidden, mask):
        return np.where(mask.astype(bool)[..., None], hidden, np.finfo(hidden.dtype).min).max(1)

    @staticmethod
    def rows(hidden, positions):
        return hidden[np.arange(hidden.shape[0]), positions]

    normalize = staticmethod(normalize_rows)

    @staticmethod
    def positions(is_mask, last: bool):  # (B, T) bool -> (B,) first / last True column
        T = is_mask.shape[1]
        pos = np.broadcast_to(np.arange(T), is_mask.shape)
        return np.where(is_mask, pos, -1).max(1) if last else np.where(is_mask, pos, T).min(1)


class _TorchOps:
    @staticmethod
    def stack_mean(tensors):
        import torch

        return torch.stack(tensors).mean(0)

    @staticmethod
    def weights(mask, dtype):
        return mask.unsqueeze(-1).to(dtype)

    @staticmethod
    def at_least_one(counts):
        return counts.clamp(min=1)

    @staticmethod
    def sqrt(x):
        return x.sqrt()

    @staticmethod
    def max_over_tokens(hidden, mask):
        import torch

        return hidden.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(hidden.dtype).min).max(1).values

    @staticmethod
    def rows(hidden, positions):
        import torch

        return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]

    @staticmethod
    def normalize(vec):
        import torch.nn.functional as F

        return F.normalize(vec, dim=-1)

    @staticmethod
    def positions(is_mask, last: bool):
        import torch

        T = is_mask.shape[1]
        pos = torch.arange(T, device=is_mask.device).expand_as(is_mask)
        return torch.where(is_mask, pos, -1).max(1).values if last else torch.where(is_mask, pos, T).min(1).values


def _ops(array):
    return _NumpyOps if isinstance(array, np.ndarray) else _TorchOps


def mask_positions(input_ids, mask_id: int, template: str, mask_token: str = "[MASK]"):
    """(B,) row-wise index of the prompt template's [MASK]: the last one if the template puts it after the text."""
    is_mask = input_ids == mask_id  # (B, T)
    if not bool(is_mask.any(1).all()):
        raise InputError("a prompt lost its [MASK] token; use a shorter template")
    return _ops(input_ids).positions(is_mask, template.index(mask_token) > template.index("{text}"))


def layer_average(output: BertOutput, layers: list[int] | None) -> torch.Tensor:
    """The average of the chosen hidden states (0 = embedding output, 1..L = layers, -1 = last)."""
    if layers is None:
        return output.last_hidden_state
    if output.hidden_states is None:
        raise ValueError("layers= needs the forward pass to run with output_hidden_states=True")
    n = len(output.hidden_states)
    for i in layers:
        if not -n <= i < n:
            raise OptionError(f"layer {i} does not exist; this model has hidden states 0..{n - 1} (or -1..-{n})")
    return _ops(output.last_hidden_state).stack_mean([output.hidden_states[i] for i in layers])  # (B, T, H)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    ops = _ops(hidden)
    m = ops.weights(mask, hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / ops.at_least_one(m.sum(1))


def pool(
    output: BertOutput,
    attention_mask: torch.Tensor,  # (B, T)
    mode: str = "mean",
    layers: list[int] | None = None,
    mask_positions: torch.Tensor | None = None,  # (B,) the [MASK] index per row, for mask_prompt
    normalize: bool = False,
    check: bool = True,
) -> torch.Tensor:
    """(B, H) sentence vectors (torch in, torch out; numpy in, numpy out). check=False: the caller ran
    check_pooling once for the whole call (the encoder does), not once per batch."""
    if check:
        check_pooling(mode, layers)
    ops = _ops(attention_mask)
    if mode == "pooler":
        if output.pooler_output is None:
            raise MissingHeadError("pooling='pooler' needs the pooler (bert.pooler.dense.*), which this checkpoint "
                                   "does not have; use cls or mean pooling")
        vec = output.pooler_output
    elif mode == "first_last_avg":
        if output.hidden_states is None:
            raise ValueError("first_last_avg needs the forward pass to run with output_hidden_states=True")
        hidden = (output.hidden_states[1] + output.hidden_states[-1]) / 2
        vec = masked_mean(hidden, attention_mask)
    else:
        hidden = layer_average(output, layers)  # (B, T, H)
        if mode == "cls":
            vec = hidden[:, 0]
        elif mode == "mean":
            vec = masked_mean(hidden, attention_mask)
        elif mode == "mean_sqrt_len":
            m = ops.weights(attention_mask, hidden.dtype)
            vec = (hidden * m).sum(1) / ops.sqrt(ops.at_least_one(m.sum(1)))
        elif mode == "max":
            vec = ops.max_over_tokens(hidden, attention_mask)
        else:  # mask_prompt
            if mask_positions is None:
                raise ValueError("mask_prompt needs the [MASK] position of each row")
            vec = ops.rows(hidden, mask_positions)
    return ops.normalize(vec) if normalize else vec
