"""`bertkit export`: write a model's ONNX graphs ahead of time, so that `--backend onnx` later loads and runs
without torch (an install with `bertkit[onnx]` only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from bertkit.cli.common import ModelOpt, read_lines
from bertkit.errors import OptionError

GRAPH_PRECISIONS = ("fp32", "int8", "int8-static")


def export(
    model: str | None = ModelOpt,
    precision: list[str] = typer.Option(["fp32"], "--precision", metavar="[fp32|int8|int8-static]",
                                        help="Graph(s) to write; repeat for several."),
    calibration: Path | None = typer.Option(None, "--calibration", help="int8-static: calibrate on this file's texts "
                                            "(one a line; default: bertkit's 300 plain sentences)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write the graphs again even where sound ones are "
                                   "cached (a graph from an earlier bertkit keeps its older, slower form until then)."),
):
    """Export the model to ONNX (fp32, dynamic int8) and calibrated int8-static (OpenVINO IR quantized by NNCF,
    needs bertkit's openvino extra), cached beside the model (or in ~/.cache/bertkit/onnx when its folder
    is read-only). Prints one JSON line per graph: precision, path, record."""
    for p in precision:
        if p not in GRAPH_PRECISIONS:
            raise OptionError(f"unknown --precision {p!r} for export; choose one of: {', '.join(GRAPH_PRECISIONS)}")
    if calibration is not None and "int8-static" not in precision:
        raise OptionError("--calibration is for --precision int8-static")
    texts = read_lines(str(calibration), False, can_skip=False) if calibration is not None else None
    from bertkit.runtime.export import export_folder

    for graph in export_folder(model, list(dict.fromkeys(precision)), texts, str(calibration) if calibration else None,
                               overwrite=overwrite):
        rec = graph.record
        line = {"precision": rec["precision"], "path": str(graph.path), "key": rec["key"], "bytes": rec["graph_bytes"]}
        if "calibration" in rec:
            line["calibration"] = rec["calibration"]
        sys.stdout.write(json.dumps(line) + "\n")
