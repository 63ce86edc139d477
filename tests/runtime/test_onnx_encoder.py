"""The torch-free ONNX path (issue 22): numpy pooling == torch pooling, `Encoder.load(backend="onnx")`, `bertkit
encode` and the server without torch in the process, `bertkit export`, and the cache's bad cases (no
onnxruntime, a corrupt graph, a changed model, a model folder that cannot be written)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from support import BERTKIT, assert_user_error, run_process

from bertkit.pooling import POOLING_MODES, pool

pytest.importorskip("onnxruntime")

TEXTS = ["Hi.", "A man is playing a guitar.", "Cats sleep.",
         "The stock market fell sharply today after the central bank raised interest rates by half a point."]


def test_numpy_pooling_equals_torch_pooling_for_every_mode():
    from bertkit.model import BertOutput
    from bertkit.runtime.seam import ArrayOutput

    g = torch.Generator().manual_seed(0)
    states = tuple(torch.randn(3, 6, 8, generator=g) for _ in range(4))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    pooler = torch.randn(3, 8, generator=g)
    positions = torch.tensor([1, 4, 0])
    t_out = BertOutput(last_hidden_state=states[-1], pooler_output=pooler, hidden_states=states)
    n_out = ArrayOutput(states[-1].numpy(), pooler.numpy(), tuple(s.numpy() for s in states))
    for mode in POOLING_MODES:
        for layers in ([None] if mode in ("pooler", "first_last_avg") else [None, [0, -1], [2]]):
            for normalize in (False, True):
                want = pool(t_out, mask, mode, layers, positions, normalize=normalize).numpy()
                got = pool(n_out, mask.numpy(), mode, layers, positions.numpy(), normalize=normalize)
                assert isinstance(got, np.ndarray) and got.dtype == np.float32, mode
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{mode} {layers} {normalize}")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, packaged_dir) -> Path:
    """A small random BERT with a pooler and the packaged tokenizer, exported with `bertkit export`."""
    from bertkit.model import Bert, BertConfig, save_model
    from bertkit.tokenizer import BertTokenizer

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("small-bert")
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    save_model(Bert(config, pooler=True), folder)
    BertTokenizer.from_dir(packaged_dir).save(folder)
    r = run_process("export", "--model", folder, "--precision", "fp32", "--precision", "int8")
    assert r.returncode == 0, r.stderr.decode()
    lines = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [x["precision"] for x in lines] == ["fp32", "int8"]
    assert all(Path(x["path"]).parent == folder / "onnx" and Path(x["path"]).is_file() for x in lines)
    return folder


def torch_vectors(folder: Path, **kw) -> np.ndarray:
    from bertkit import Encoder

    return Encoder.load(folder, device="cpu").encode(TEXTS, **kw)


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, check=False)


def test_encoder_load_onnx_runs_without_torch_for_every_pooling(small_model):
    code = f"""
        import json, sys
        from bertkit import Encoder
        enc = Encoder.load({str(small_model)!r}, backend="onnx")
        out = {{}}
        for p in {list(POOLING_MODES)!r}:
            out[p] = enc.encode({TEXTS!r}, pooling=p, normalize=p == "mean").tolist()
        out["layers"] = enc.encode({TEXTS!r}, pooling="max", layers=[1, -1]).tolist()
        out["tokens"] = enc.encode_tokens({TEXTS[1]!r})[0].vectors.tolist()
        print(json.dumps({{"torch": "torch" in sys.modules, "type": type(enc).__name__, "v": out}}))
    """
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["torch"] is False and got["type"] == "Encoder"
    from bertkit import Encoder

    ref = Encoder.load(small_model, device="cpu")
    for p in POOLING_MODES:
        want = ref.encode(TEXTS, pooling=p, normalize=p == "mean")
        assert np.abs(np.array(got["v"][p]) - want).max() < 1e-5, p
    assert np.abs(np.array(got["v"]["layers"]) - ref.encode(TEXTS, pooling="max", layers=[1, -1])).max() < 1e-5
    assert np.abs(np.array(got["v"]["tokens"]) - ref.encode_tokens(TEXTS[1])[0].vectors).max() < 1e-5


CLI_WITHOUT_TORCH = """
    import sys
    from bertkit.cli import main
    sys.argv = ["bertkit", *sys.argv[1:]]
    try:
        main()
    finally:
        sys.stderr.write("torch imported: %s\\n" % ("torch" in sys.modules))
"""


def test_cli_encode_with_backend_onnx_runs_without_torch(small_model):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(CLI_WITHOUT_TORCH), "encode", "hello world",
                        "--backend", "onnx", "--model", str(small_model), "--normalize"],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "torch imported: False" in r.stderr
    got = np.array(json.loads(r.stdout.splitlines()[0]))
    from bertkit import Encoder

    want = Encoder.load(small_model, device="cpu").encode("hello world", normalize=True)[0]
    assert np.abs(got - want).max() < 1e-5


def test_cli_embed_corpus_with_backend_onnx_runs_without_torch(small_model, tmp_path):
    import pyarrow.parquet as pq

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(CLI_WITHOUT_TORCH), "embed-corpus", str(corpus),
                        str(tmp_path / "out"), "--backend", "onnx", "--model", str(small_model)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "torch imported: False" in r.stderr
    (shard,) = sorted((tmp_path / "out").glob("part-*.parquet"))
    table = pq.read_table(shard).to_pydict()
    got = np.array([table["embedding"][table["row"].index(i)] for i in range(len(TEXTS))], dtype=np.float32)
    from bertkit import Encoder

    want = Encoder.load(small_model, device="cpu").encode(TEXTS)
    assert np.abs(got - want).max() < 1e-5


def test_server_with_backend_onnx_runs_without_torch(small_model):
    pytest.importorskip("fastapi")
    code = f"""
        import json, sys
        from fastapi.testclient import TestClient
        from bertkit.cli.common import load_encoder
        from bertkit.serve import create_app
        with TestClient(create_app(load_encoder({str(small_model)!r}, None, "onnx"))) as client:
            emb = client.post("/v1/embeddings", json={{"input": ["hello world"], "model": "m"}}).json()
            info = client.get("/info").json()
        print(json.dumps({{"torch": "torch" in sys.modules, "emb": emb["data"][0]["embedding"], "info": info}}))
    """
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["torch"] is False
    from bertkit import Encoder

    want = Encoder.load(small_model, device="cpu").encode("hello world", normalize=True)[0]
    assert np.abs(np.array(got["emb"]) - want).max() < 1e-5
    info = got["info"]
    assert info["layers"] == 2 and info["heads"]["pooler"] is True and info["heads"]["mlm"] is False
    assert info["precision"]["backend"] == "onnx" and info["precision"]["running"] == "fp32"
    assert set(info["precision"]["verdicts"]["modes"]) == {"bf16/torch", "int8/torch", "int8/onnx", "int8-static/onnx"}


def test_heads_outside_the_graph_load_the_torch_model_on_demand(small_model):
    from bertkit import Encoder
    from bertkit.errors import MissingHeadError

    enc = Encoder.load(small_model, backend="onnx")
    ref = Encoder.load(small_model, device="cpu")
    with pytest.raises(MissingHeadError, match="masked-LM head"):
        enc.fill_mask("a [MASK] b")
    assert enc.forward("a b").last_hidden_state.shape == ref.forward("a b").last_hidden_state.shape


# ---- bad input -------------------------------------------------------------------------------------------------


def hide(tmp_path: Path, *packages: str) -> dict:
    """An environment in which `import <package>` fails (a shadowing package that raises ImportError)."""
    for name in packages:
        (tmp_path / "hidden" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "hidden" / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named {name!r} (hidden by the test)\", name={name!r})\n")
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path / "hidden"), os.environ.get("PYTHONPATH", "")])}


def test_backend_onnx_without_onnxruntime_is_a_clear_error(small_model, tmp_path):
    r = run_process("encode", "hi", "--backend", "onnx", "--model", small_model, env=hide(tmp_path, "onnxruntime"))
    assert_user_error(r, "backend onnx needs onnxruntime", "pip install 'bertkit[onnx]'")


def test_a_torch_command_without_torch_is_a_clear_error(small_model, tmp_path):
    r = run_process("encode", "hi", "--model", small_model, env=hide(tmp_path, "torch"))
    assert_user_error(r, "this command needs torch", "pip install 'bertkit[torch]'")


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_corrupt_graph_is_refused_without_torch_and_exported_again_with_it(small_model, tmp_path):
    folder = copy_model(small_model, tmp_path / "m")
    (graph,) = (folder / "onnx").glob("*-fp32.onnx")
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: ONNX Runtime would load it and answer wrongly
    graph.write_bytes(bytes(data))
    r = run_process("encode", "hi", "--backend", "onnx", "--model", folder, env=hide(tmp_path, "torch"))
    assert_user_error(r, "is corrupt", "bertkit export")
    r = run_process("encode", "hi", "--backend", "onnx", "--model", folder)
    assert r.returncode == 0 and "is corrupt" in r.stderr.decode() and "exporting again" in r.stderr.decode()
    from bertkit import Encoder

    got = np.array(json.loads(r.stdout.decode().splitlines()[0]))
    assert np.abs(got - Encoder.load(folder, device="cpu").encode("hi")[0]).max() < 1e-5


def test_changed_model_never_reuses_the_old_graph(small_model, tmp_path):
    from bertkit import Encoder
    from bertkit.model import Bert, BertConfig, save_model

    folder = copy_model(small_model, tmp_path / "m")
    torch.manual_seed(7)  # retrained: same shapes, other weights
    save_model(Bert(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
                    pooler=True), folder)
    r = run_process("encode", "hi", "--backend", "onnx", "--model", folder, env=hide(tmp_path, "torch"))
    assert_user_error(r, "exported from an earlier version", "changed since", "bertkit export")
    enc = Encoder.load(folder, backend="onnx")  # with torch: a new export, named by the new contents
    assert np.abs(enc.encode(TEXTS) - torch_vectors(folder)).max() < 1e-5
    assert len(list((folder / "onnx").glob("*-fp32.onnx"))) == 2


def test_unwritable_model_folder_caches_in_the_user_cache(small_model, tmp_path, caplog, monkeypatch):
    from bertkit import Encoder

    folder = tmp_path / "m"
    folder.mkdir()
    for f in small_model.iterdir():
        if f.is_file():
            shutil.copy(f, folder)
    (folder / "onnx").write_text("not a folder")  # nothing can be written at <model>/onnx
    cache = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    with caplog.at_level("WARNING", logger="bertkit"):
        enc = Encoder.load(folder, backend="onnx")
    assert enc.runner.graph.path.parent == cache / "bertkit" / "onnx"
    assert f"caching the ONNX graph in {cache / 'bertkit' / 'onnx'}" in caplog.text
    assert np.abs(enc.encode(TEXTS) - torch_vectors(folder)).max() < 1e-5


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to run "
                    "as an unprivileged user (root writes anywhere)")
def test_read_only_model_folder_as_an_unprivileged_user(small_model):
    import tempfile

    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*nobody, sys.executable, "-c", "import bertkit.cli"],
                      capture_output=True, check=False).returncode:
        pytest.skip("the virtual environment is not readable by an unprivileged user")
    root = Path(tempfile.mkdtemp(prefix="bertkit-readonly-"))  # pytest's own tmp folders are private to root
    try:
        root.chmod(0o755)
        folder = copy_model(small_model, root / "m")
        shutil.rmtree(folder / "onnx")
        for p in [folder, *folder.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        cache = root / "xdg"
        cache.mkdir(mode=0o777)
        cache.chmod(0o777)
        env = {**os.environ, "XDG_CACHE_HOME": str(cache), "HOME": str(cache)}
        r = subprocess.run([*nobody, *BERTKIT, "encode", "hi", "--backend", "onnx", "--model", str(folder)],
                           capture_output=True, text=True, env=env, timeout=300, check=False, cwd=root)
        assert r.returncode == 0, r.stderr
        assert f"is not writable; caching the ONNX graph in {cache / 'bertkit' / 'onnx'}" in r.stderr
        assert not (folder / "onnx").exists() and list((cache / "bertkit" / "onnx").glob("*-fp32.onnx"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_export_refuses_bad_options(small_model, tmp_path):
    assert_user_error(run_process("export", "--model", small_model, "--precision", "bf16"),
                      "unknown --precision 'bf16'", "fp32, int8, int8-static")
    texts = tmp_path / "cal.txt"
    texts.write_text("a\n")
    assert_user_error(run_process("export", "--model", small_model, "--calibration", texts),
                      "--calibration is for --precision int8-static")
    assert_user_error(run_process("export", "--model", small_model, "--precision", "int8-static", "--calibration",
                                  texts), "at least 10")


def test_export_keeps_a_cached_graph_and_writes_it_again_with_overwrite(small_model, tmp_path):
    # a graph exported before attention was fused (spelled out) is kept by `bertkit export` and still runs;
    # `--overwrite` writes fp32 and int8 again, with attention as one op
    import onnx

    from bertkit.runtime import export
    from bertkit.runtime.folder import load_body, open_folder

    folder = copy_model(small_model, tmp_path / "m")
    shutil.rmtree(folder / "onnx", ignore_errors=True)
    opened = open_folder(folder)
    mp = pytest.MonkeyPatch()
    mp.setattr(export, "fuse_file", lambda *a, **k: 0)
    try:
        old = export.export_graph(load_body(opened), opened.tokenizer, opened.root, "int8")
    finally:
        mp.undo()
    fp32 = old.path.with_name(old.path.name.replace("-int8", "-fp32"))

    def attention_ops(path: Path) -> int:
        return sum(n.op_type == "MultiHeadAttention" for n in onnx.load(str(path)).graph.node)

    assert attention_ops(fp32) == 0 and attention_ops(old.path) == 0
    before = old.path.read_bytes()
    r = run_process("export", "--model", folder, "--precision", "int8")
    assert r.returncode == 0, r.stderr.decode()
    assert old.path.read_bytes() == before  # kept: nothing is written again without --overwrite
    r = run_process("export", "--model", folder, "--precision", "int8", "--overwrite")
    assert r.returncode == 0, r.stderr.decode()
    assert attention_ops(fp32) == 2 and attention_ops(old.path) == 2  # both layers of the small model
    from bertkit import Encoder
    from bertkit.runtime.modes import TOLERANCE

    got = Encoder.load(folder, backend="onnx", precision="int8").encode(TEXTS)
    want = torch_vectors(folder)
    assert (got * want).sum(1).min() >= TOLERANCE["int8", "onnx"]


def test_graph_runners_cut_batches_where_padding_is_least_and_the_vectors_stay(small_model):
    from bertkit import Encoder
    from bertkit.runtime.seam import GRAPH_BATCH_COST, graph_batch_cost

    graph = Encoder.load(small_model, backend="onnx", precision="int8")
    assert graph.runner.batch_cost == GRAPH_BATCH_COST and graph_batch_cost("fp32") == GRAPH_BATCH_COST
    assert graph_batch_cost("int8-static") is None  # OpenVINO: count cuts (runtime/seam.py says why)
    assert Encoder.load(small_model, device="cpu").runner.batch_cost is None  # packed: padding costs nothing
    child = Encoder.load(small_model, backend="onnx", precision="int8", process=True)
    try:  # the model in a child process: the child's graph runner's cost
        assert child.runner.batch_cost == GRAPH_BATCH_COST
    finally:
        child.runner.close()
    texts = [("word " * n).strip() for n in (40, 3, 39, 2, 38, 4, 1, 37, 5, 36)]
    seen: list[list[int]] = []
    graph.each_batch(graph.prepare(texts), lambda idx, batch: seen.append(idx.tolist()), batch_size=8)
    assert [len(b) for b in seen] == [5, 5]  # long ones apart from short ones, not 8 + 2 by count
    cut = graph.encode(texts, batch_size=8)
    graph.runner.batch_cost = None
    by_count = graph.encode(texts, batch_size=8)
    np.testing.assert_allclose(cut, by_count, atol=2e-2)  # dynamic int8 scales per batch; cosine checked below
    cos = (cut * by_count).sum(1) / np.linalg.norm(cut, axis=1) / np.linalg.norm(by_count, axis=1)
    assert cos.min() > 0.999


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a thread pool spins only with 2 or more threads")
def test_a_graph_session_stops_spinning_when_its_run_returns(small_model):
    """Sessions spin between ops within a run (short batches hand over faster) and stop at its end: without
    `session.force_spinning_stop`, a worker kept a core busy ~40 ms after each run, slowing whatever ran next."""
    code = f"""
        import json, resource, time
        from bertkit import Encoder
        from bertkit.runtime.seam import set_local_threads
        enc = Encoder.load({str(small_model)!r}, backend="onnx", precision="int8")
        set_local_threads(2)  # one lone batch: one 2-thread session, its pool in use
        cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        texts = [" ".join({TEXTS!r} * 8)] * 16  # ops big enough for ONNX Runtime to use its pool
        enc.encode(texts)  # first-call work (allocations, pool start) out of the way
        time.sleep(0.2)
        burned = []
        for _ in range(3):
            enc.encode(texts)
            start = cpu()
            time.sleep(0.2)
            burned.append(cpu() - start)
        print(json.dumps(burned))
    """
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    burned_ms = [s * 1000 for s in json.loads(r.stdout)]
    assert max(burned_ms) < 10, f"CPU burned while idle after a run: {burned_ms} ms"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs a pool, so 2 or more CPUs")
def test_a_session_owning_the_cpus_pins_its_workers_one_to_a_cpu(small_model):
    """A 2-thread session in a process allowed 2 CPUs pins its one pool worker to the second (the caller stays
    free): unpinned, the scheduler woke the worker onto the caller's CPU after idle and a run took 11 ms, not 4.6.
    A session with fewer threads than CPUs pins nothing (several sessions or processes share them)."""
    code = f"""
        import json, os
        cpus = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, cpus)  # this process owns 2 CPUs, as a 2-core machine
        from bertkit import Encoder
        from bertkit.runtime.onnxrt import worker_affinities
        from bertkit.runtime.seam import set_local_threads
        enc = Encoder.load({str(small_model)!r}, backend="onnx", precision="int8")
        set_local_threads(2)
        enc.encode({TEXTS!r})
        pinned = {{}}
        for tid in os.listdir("/proc/self/task"):
            allowed = sorted(os.sched_getaffinity(int(tid)))
            if allowed != cpus:
                pinned[tid] = allowed
        print(json.dumps([cpus, list(pinned.values()), worker_affinities(1), worker_affinities(3)]))
    """
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    cpus, pinned, one, three = json.loads(r.stdout)
    assert pinned == [[cpus[1]]], f"threads pinned off the process's {cpus}: {pinned}"
    assert one is None and three is None
