"""Attention as one ONNX Runtime op in the exported graph: `fuse_attention`.

torch's ONNX exporter spells each layer's scaled-dot-product attention out: the fused q|k|v projection reshaped
to (B, T, 3, heads, d) and split, q and k each scaled by sqrt(1/sqrt(d)), MatMul, the key mask added, Softmax,
an IsNaN / Where for rows whose keys are all masked, MatMul with v, Transpose, Reshape: some 50 nodes with their
shape arithmetic, and the (B, heads, T, T) scores written out and read back between them. ONNX Runtime's
contrib op `com.microsoft.MultiHeadAttention` does the same in one kernel: on 2 AMD EPYC cores (2026-12-07)
8 x 512-token documents 9.2 -> 12.1 texts/s, one 10-token sentence 3.06 -> 2.61 ms, 32 x 32 tokens unchanged,
vectors within 2e-6 (docs/RESULTS.md, issue 30).

The pass matches that structure layer by layer and replaces it by Split(q | k | v) -> MultiHeadAttention
(`num_heads`, key_padding_mask = the attention mask as int32). BERT, RoBERTa, XLM-R, ELECTRA and DistilBERT
match; a layer that differs (MPNet's relative position bias, ModernBERT's rotary and local windows) does not and
stays as exported. `fuse_file` keeps the fused graph only if its outputs on a padded batch match the exported
one's; a graph whose weights are stored as external data (over 2 GB) is left as exported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

log = logging.getLogger(__name__)

MASK_INPUT = "attention_mask"


class _Graph:
    """Producer and consumer maps over an onnx GraphProto's nodes."""

    def __init__(self, graph):
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def made_by(self, name: str, op: str):
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op else None

    def only_consumer(self, name: str, op: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    def graph_inputs_behind(self, name: str) -> set[str]:
        """The graph inputs a value is computed from (initializers and constants are not inputs)."""
        inputs = {i.name for i in self.graph.input}
        seen, todo, found = set(), [name], set()
        while todo:
            value = todo.pop()
            if value in seen or not value:
                continue
            seen.add(value)
            if value in inputs:
                found.add(value)
            node = self.producer.get(value)
            if node is not None:
                todo.extend(node.input)
        return found


def _perm(node) -> list[int] | None:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None


def _match(g: _Graph, softmax) -> tuple[str, str] | None:
    """(the q|k|v projection's output, the attention output to replace) for one layer, or None."""
    add = g.made_by(softmax.input[0], "Add")
    if add is None:
        return None
    scores = [g.producer.get(i) for i in add.input]
    mm1 = next((n for n in scores if n is not None and n.op_type == "MatMul"), None)
    bias = next((i for i, n in zip(add.input, scores, strict=True) if n is not mm1), None)
    if mm1 is None or bias is None or g.graph_inputs_behind(bias) != {MASK_INPUT}:
        return None  # a bias made from anything but the key mask (a relative position bias) is not ours to fuse
    q_mul, k_mul = (g.made_by(i, "Mul") for i in mm1.input)
    k_t = g.made_by(k_mul.input[0], "Transpose") if k_mul is not None else None
    if q_mul is None or k_t is None or _perm(k_t) != [0, 1, 3, 2]:
        return None
    q_sq, k_sq = g.made_by(q_mul.input[0], "Squeeze"), g.made_by(k_t.input[0], "Squeeze")
    # softmax -> IsNaN / Where (rows with no key) -> MatMul with v -> Transpose -> Reshape
    where = next((n for n in g.consumers.get(softmax.output[0], []) if n.op_type == "Where"), None)
    mm2 = g.only_consumer(where.output[0], "MatMul") if where is not None else None
    v_sq = g.made_by(mm2.input[1], "Squeeze") if mm2 is not None else None
    if q_sq is None or k_sq is None or v_sq is None:
        return None
    split = g.made_by(q_sq.input[0], "Split")
    if split is None or [k_sq.input[0], v_sq.input[0]] != list(split.output[1:3]) or q_sq.input[0] != split.output[0]:
        return None
    qkv_t = g.made_by(split.input[0], "Transpose")
    qkv_r = g.made_by(qkv_t.input[0], "Reshape") if qkv_t is not None and _perm(qkv_t) == [2, 0, 3, 1, 4] else None
    out_t = g.only_consumer(mm2.output[0], "Transpose")
    out_r = g.only_consumer(out_t.output[0], "Reshape") if out_t is not None and _perm(out_t) == [0, 2, 1, 3] else None
    if qkv_r is None or out_r is None:
        return None
    return qkv_r.input[0], out_r.output[0]


def _live_in_order(graph, nodes: list) -> Iterator:
    """The nodes the graph's outputs need, in an order where each comes after what it reads."""
    producer = {out: node for node in nodes for out in node.output}
    live, todo = set(), [o.name for o in graph.output]
    while todo:
        node = producer.get(todo.pop())
        if node is not None and id(node) not in live:
            live.add(id(node))
            todo.extend(i for i in node.input if i)
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = [n for n in nodes if id(n) in live]
    while pending:
        waiting = []
        for node in pending:
            if all(i in ready for i in node.input):
                ready.update(node.output)
                yield node
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError("the graph has a cycle")
        pending = waiting


def fuse_attention(model, num_heads: int, hidden: int) -> int:
    """Replace every matching layer's attention in `model` (an onnx ModelProto, changed in place) by one
    com.microsoft.MultiHeadAttention of `num_heads` heads over `hidden` features; the number of layers fused."""
    from onnx import TensorProto, helper

    g = _Graph(model.graph)
    found = [m for m in (_match(g, n) for n in model.graph.node if n.op_type == "Softmax") if m is not None]
    if not found:
        return 0
    if {o.name for o in model.graph.output} & {out for _, out in found}:
        return 0  # a layer's attention as a graph output: never the case in our graphs; left as it is
    mask = "bertkit/key_padding_mask"
    added = [helper.make_node("Cast", [MASK_INPUT], [mask], to=TensorProto.INT32, name="bertkit/mask_int32")]
    renamed = {}
    for layer, (qkv, out) in enumerate(found):
        q, k, v, fused = (f"bertkit/layer{layer}/{n}" for n in ("q", "k", "v", "attention"))
        added.append(helper.make_node("Split", [qkv], [q, k, v], axis=-1, name=f"bertkit/layer{layer}/split"))
        added.append(helper.make_node("MultiHeadAttention", [q, k, v, "", mask], [fused], domain="com.microsoft",
                                      num_heads=num_heads, name=f"bertkit/layer{layer}/attention"))
        renamed[out] = fused
        # typed, so that onnx's shape inference (which knows no contrib op) reaches the layers after it: ONNX
        # Runtime's dynamic quantization relies on it to find the float MatMuls it quantizes
        model.graph.value_info.append(helper.make_tensor_value_info(fused, TensorProto.FLOAT, ["batch", "seq", hidden]))
    for node in model.graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
    nodes = list(_live_in_order(model.graph, [*model.graph.node, *added]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(found)


def fuse_file(path, num_heads: int, hidden: int, feed: dict[str, np.ndarray], atol: float = 1e-4) -> int:
    """Fuse the attention of the ONNX graph at `path` in place, if its outputs on `feed` (a padded batch) stay
    within `atol` of the exported graph's on every real token; else leave the file as it is (logged). The number
    of layers fused."""
    import onnx

    from bertkit.runtime.onnxrt import require_onnxruntime

    ort = require_onnxruntime()
    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        # over protobuf's 2 GB: the fused graph could not be checked from memory; left as exported
        log.info("attention not fused in %s: its weights are stored as external data", path)
        return 0
    fused = fuse_attention(model, num_heads, hidden)
    if not fused:
        return 0
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in before.get_outputs()]
    real = feed[MASK_INPUT].astype(bool)
    worst = 0.0
    for name, x, y in zip(names, before.run(names, feed), after.run(names, feed), strict=True):
        diff = np.abs(x - y)
        if name == "last_hidden_state":
            diff = diff[real]
        elif name == "hidden_states":
            diff = diff[:, real]
        worst = max(worst, float(diff.max()))
    if worst > atol:
        log.warning("attention not fused in %s: the fused graph's outputs differ by %.3g (> %g)", path, worst, atol)
        return 0
    onnx.save(model, str(path))
    log.info("fused the attention of %d layers into MultiHeadAttention (outputs within %.2g)", fused, worst)
    return fused
