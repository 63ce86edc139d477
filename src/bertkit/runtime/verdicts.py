"""Which precision modes are faster than exact fp32 on this CPU, and the fallback when one is not.

Reduced precision is only fast where the CPU has the instructions for it. Measured side by side (docs/RESULTS.md,
issue 22, torch 2.13): on an AMD EPYC with AVX512-BF16 and VNNI, no AMX, torch bf16 ran 1.5-1.7x faster than our
own fp32 (STS-B and long texts, batch 32, 2 threads; the issue had reported 0.14x on such a CPU, which this
machine did not reproduce) and int8 2.4-2.6x; on an Intel CPU with AMX, bf16 was 2x and int8 2.5x faster. So:

| mode                         | fast when the CPU has             | else                     |
|------------------------------|-----------------------------------|--------------------------|
| bf16 (torch, CPU)            | amx_bf16 or avx512_bf16           | slow: falls back to fp32 |
| int8 (torch, onnx)           | avx512_vnni, avx_vnni or amx_int8 | unknown: runs as asked   |
| int8-static (onnx, OpenVINO) | avx512_vnni, avx_vnni or amx_int8 | slow: falls back to fp32 |

Without VNNI (a 2-core AMD EPYC with AVX2 only, 2026-12-07, bench/peers.py, batch 32, 2 threads), dynamic int8 ran
0.98-1.06x of fp32 on the same backend and OpenVINO's static int8 0.80x (STS-B) and 0.75x (AG News) of ONNX
Runtime's fp32: hence "unknown" for the one and "slow" for the other.

A verdict measured on this machine (or set by hand) overrides the table: the verdict file
`$XDG_CACHE_HOME/bertkit/verdicts.json` (or the file named by BERTKIT_VERDICTS) holds, per machine id (a hash
of the CPU model and flags, `machine_id()`), `{"<precision>/<backend>": {"fast": true|false, "why": "..."}}`.
A requested mode whose verdict is "slow" is replaced by exact fp32 on the same backend (the fastest correct mode
then), with a warning naming the reason; `bertkit inspect` and the server's /info show the verdicts.
BERTKIT_VERDICTS=off turns the fallback off (bench/encode.py measures the slow modes on purpose).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

MODES = (("bf16", "torch"), ("int8", "torch"), ("int8", "onnx"), ("int8-static", "onnx"))
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class Verdict:
    fast: bool | None  # None: not known on this CPU (runs as asked)
    why: str
    source: str  # "cpu flags" or the verdict file


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; ("", {}) where there is none (not Linux)."""
    name, flags = "", frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if name and flags:
            break
    return name, flags


def machine_id() -> str:
    name, flags = cpu_info()
    return hashlib.sha256(f"{name}|{' '.join(sorted(flags))}".encode()).hexdigest()[:16]


def verdict_file() -> Path:
    if os.environ.get("BERTKIT_VERDICTS") not in (None, "", "off"):
        return Path(os.environ["BERTKIT_VERDICTS"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bertkit" / "verdicts.json"


def _from_file() -> dict[str, dict]:
    path = verdict_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as e:
        # Anything unreadable (a folder, bad UTF-8 or JSON, a 5,000-digit number, 100,000 nested '['): the file
        # only overrides the CPU-flag table, so it is a warning and ignored, never a failure of the caller.
        log.warning("ignoring the verdict file %s (%s); delete or fix it", path, str(e)[:200])
        return {}
    mine = data.get(machine_id(), {}) if isinstance(data, dict) else {}
    return mine if isinstance(mine, dict) else {}


def record_verdict(precision: str, backend: str, fast: bool, why: str) -> Path:
    """Write one verdict for this machine into the verdict file (e.g. after timing it); returns the file."""
    path = verdict_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data.setdefault(machine_id(), {})[f"{precision}/{backend}"] = {"fast": fast, "why": why}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _by_flags(precision: str, flags: frozenset[str]) -> Verdict:
    if not flags:
        return Verdict(None, "CPU flags unknown (no /proc/cpuinfo)", "cpu flags")
    if precision == "bf16":
        have = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
        if have:
            return Verdict(True, f"{', '.join(have)} present", "cpu flags")
        return Verdict(False, "no AMX-BF16 / AVX512-BF16: bf16 is emulated and slower than fp32 here", "cpu flags")
    have = [f for f in INT8_FLAGS if f in flags]
    if have:
        return Verdict(True, f"{', '.join(have)} present", "cpu flags")
    if precision == "int8-static":
        return Verdict(False, "no VNNI / AMX-INT8: OpenVINO's static int8 ran 0.75-0.80x of fp32 on such a CPU",
                       "cpu flags")
    return Verdict(None, "no VNNI / AMX-INT8: dynamic int8 ran about as fast as fp32 on such a CPU", "cpu flags")


def verdict(precision: str, backend: str) -> Verdict:
    """The verdict on one mode (fp32 is the reference and always 'fast')."""
    if precision == "fp32":
        return Verdict(True, "exact reference", "definition")
    entry = _from_file().get(f"{precision}/{backend}")
    if isinstance(entry, dict) and isinstance(entry.get("fast"), bool):
        return Verdict(entry["fast"], str(entry.get("why", "")), str(verdict_file()))
    return _by_flags(precision, cpu_info()[1])


def all_verdicts() -> dict:
    """What `bertkit inspect` and /info show: the CPU and one verdict per reduced-precision mode."""
    name, flags = cpu_info()
    return {"cpu": name or "unknown", "machine": machine_id(),
            "flags": sorted(f for f in flags if f.startswith(("avx512_vnni", "avx512_bf16", "avx_vnni", "amx"))),
            "modes": {f"{p}/{b}": asdict(verdict(p, b)) for p, b in MODES}}


def choose(precision: str, backend: str, model_dir: Path | None = None, device_type: str = "cpu") -> str:
    """The precision to run: the requested one, or fp32 (same backend) when its verdict here is 'slow'."""
    if precision == "fp32" or device_type != "cpu" or os.environ.get("BERTKIT_VERDICTS") == "off":
        return precision
    v = verdict(precision, backend)
    if v.fast is False:
        log.warning("precision %s on %s would be slower than exact fp32 on this CPU (%s; from %s); running fp32 "
                    "instead", precision, backend, v.why, v.source)
        return "fp32"
    return precision
