"""Inside the model for one short input: attention maps, per-layer similarities, each token against [CLS],
the module tree and the outputs' shapes, as plain data (what the playground draws).

Everything here runs the encoder's own calls (`Encoder.forward`, `Encoder.encode_poolings`), so the numbers
are the library's: the attention maps equal `Encoder.forward(..., output_attentions=True).attentions`.

    from bertkit import Encoder
    from bertkit.which.inside import attention_maps, layer_similarities
    att = attention_maps(Encoder.load(), "The cat sat on the mat.")
    att.maps.shape                      # (layers, heads, tokens, tokens)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertkit.errors import BertkitError
from bertkit.tokenizer import as_text_list

if TYPE_CHECKING:
    import torch

    from bertkit.encoder import Encoder

LAYER_POOLINGS = ("cls", "mean", "max")  # the poolings compared layer by layer
HEAVY = 0.5  # a head whose queries give [SEP] (or [CLS]) at least this share of their attention, on average


@dataclass
class Attention:
    tokens: list[str]  # wordpieces, [CLS] and [SEP] included
    segments: list[int]  # 0 for the first text, 1 for the pair
    maps: np.ndarray  # (layers, heads, T, T) float32: row = query token, column = key token; rows sum to 1
    sep_share: np.ndarray  # (layers, heads): mean over queries of the attention given to the [SEP] tokens
    cls_share: np.ndarray  # (layers, heads): the same for [CLS] (the "no-op" sink of many heads)

    @staticmethod
    def heavy(share: np.ndarray) -> list[list[int]]:
        """[layer, head] pairs (0-based) whose queries give the token at least HEAVY of their attention."""
        return [[int(i), int(j)] for i, j in zip(*np.nonzero(share >= HEAVY))]


def attention_maps(encoder: Encoder, text: str, pair: str | None = None) -> Attention:
    """Every layer's and head's attention probabilities for one text (or a pair encoded together)."""
    (text,) = as_text_list(text)
    pairs = as_text_list(pair, "second text") if pair is not None else None
    (encoding,) = encoder.tokenizer.encode([text], pairs)
    out = encoder.forward(text, pair, output_attentions=True)
    import torch

    maps = torch.stack([a[0] for a in out.attentions]).float().cpu().numpy()  # (L, heads, T, T)
    sep = np.asarray(encoding.ids) == encoder.tokenizer.sep_id
    sep_share, cls_share = maps[..., sep].sum(-1).mean(-1), maps[..., 0].mean(-1)
    return Attention(list(encoding.tokens), list(encoding.type_ids), maps, sep_share, cls_share)


def layer_similarities(encoder: Encoder, texts: Sequence[str], poolings: Sequence[str] = LAYER_POOLINGS,
                       truncate: bool = True) -> tuple[dict[str, np.ndarray], list[int]]:
    """Per pooling, the cosine matrix of `texts` at every hidden state: (layers + 1, n, n), 0 = embeddings.
    One forward pass for all of them (`encode_poolings` with one single-layer spec per state). Also returns
    the positions of truncated texts."""
    states = encoder.model.config.num_hidden_layers + 1
    specs = [(p, [layer]) for p in poolings for layer in range(states)]
    encoded = encoder.encode_poolings(list(texts), specs, normalize=True, truncate=truncate)
    out = {}
    for i, p in enumerate(poolings):
        vectors = encoded.vectors[i * states:(i + 1) * states]
        out[p] = np.stack([v @ v.T for v in vectors]).clip(-1, 1)
    return out, encoded.truncated


def token_similarity_to_cls(encoder: Encoder, text: str) -> tuple[list[str], np.ndarray]:
    """Each token's cosine similarity to the [CLS] vector of the same hidden state: (layers + 1, T)."""
    (text,) = as_text_list(text)
    (encoding,) = encoder.tokenizer.encode([text])
    out = encoder.forward(text, output_hidden_states=True)
    import torch

    hidden = torch.nn.functional.normalize(torch.stack([h[0] for h in out.hidden_states]).float(), dim=-1)
    sims = (hidden @ hidden[:, 0, :].unsqueeze(-1)).squeeze(-1)  # (states, T)
    return list(encoding.tokens), sims.clamp(-1, 1).cpu().numpy()


def model_tree(encoder: Encoder) -> dict[str, Any]:
    """What `bertkit inspect` prints, as data: the configuration, each part's tensors with shapes and
    parameter counts (a tied matrix counted once), the heads present, the total."""
    from bertkit.model import describe

    model, c = encoder.model, encoder.model.config
    parts = [
        {"name": p.name, "count": p.count, "note": p.note,
         "tensors": [{"name": n, "shape": list(shape), "count": k} for n, shape, k in p.tensors]}
        for p in describe(model)
    ]
    return {
        "model": encoder.name,
        "config": {"layers": c.num_hidden_layers, "hidden": c.hidden_size, "heads": c.num_attention_heads,
                   "head_dim": c.head_dim, "intermediate": c.intermediate_size, "vocab": c.vocab_size,
                   "positions": c.max_position_embeddings, "max_length": encoder.max_length},
        "parts": parts,
        "heads": {"pooler": model.has_pooler, "mlm": model.has_mlm, "nsp": model.has_nsp},
        "total": sum(p["count"] for p in parts),
    }


def output_shapes(encoder: Encoder, text: str, pair: str | None = None) -> dict[str, Any]:
    """The shapes of the model's outputs for one input, from a real forward pass with every output asked for:
    last_hidden_state, pooler_output, hidden_states (a tuple), attentions (a tuple), and the heads' logits."""
    (text,) = as_text_list(text)
    pairs = as_text_list(pair, "second text") if pair is not None else None
    (encoding,) = encoder.tokenizer.encode([text], pairs)
    out = encoder.forward(text, pair, output_hidden_states=True, output_attentions=True)

    def shape(t: torch.Tensor | None) -> list[int] | None:
        return None if t is None else list(t.shape)

    return {
        "tokens": list(encoding.tokens),
        "outputs": {
            "last_hidden_state": {"shape": shape(out.last_hidden_state)},
            "pooler_output": {"shape": shape(out.pooler_output)},
            "hidden_states": {"count": len(out.hidden_states), "shape": shape(out.hidden_states[0])},
            "attentions": {"count": len(out.attentions), "shape": shape(out.attentions[0])},
            "mlm_logits": {"shape": shape(out.mlm_logits)},
            "nsp_logits": {"shape": shape(out.nsp_logits)},
        },
    }


RETRIEVAL_TUNED_NOTE = (
    "splade-tiny's masked-LM head was tuned for retrieval (SPLADE), not left as BERT's pre-training head: its "
    "guesses favour topical words over the grammatical best fit."
)


def mask_model_note(encoder: Encoder) -> str | None:
    """A caveat for fill-mask guesses of this model, or None: the packaged splade-tiny is retrieval-tuned."""
    from bertkit.model.locate import splade_tiny_dir

    try:
        splade = splade_tiny_dir().resolve()
    except BertkitError:  # not installed: then this model is not it
        return None
    return RETRIEVAL_TUNED_NOTE if Path(encoder.path).resolve() == splade else None
