"""Before a rerun trusts the shards an earlier run wrote: are they still the vectors of the input's rows?

The job key (input size and mtime, options) catches most changes. An edit that keeps both (or a clock that
lies) does not change the key, so a resumed run also checks the rows themselves: the shard plan must still
describe the input (else the rows moved and the job is refused), and every written shard's stored
`text_hash`es must equal the hashes of its rows' texts now. A shard whose rows changed is removed, so this run
embeds it again: a resumed job never mixes vectors of old and new texts. `out` is a corpus.output Output
(a local folder or an object-store prefix).
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import pyarrow as pa

from bertkit.corpus.shards import text_hash
from bertkit.corpus.source import plan_shards, read_shard
from bertkit.corpus.spec import CorpusError, Shard, Source

log = logging.getLogger(__name__)


def written_rows(table: pa.Table) -> list[tuple[int, str]]:
    """(row, text_hash) of a shard's table, once per input row (chunks of a row share both)."""
    return list(dict.fromkeys(zip(table.column("row").to_pylist(), table.column("text_hash").to_pylist())))


def check_resume(source: Source, out, shards: list[Shard], shard_rows: int, skip_bad_rows: bool) -> int:
    """Refuse a resume whose input rows moved; remove written shards whose rows' texts changed (this run embeds
    them again). Returns how many shards were removed."""
    if [asdict(s) for s in plan_shards(source, shard_rows)] != [asdict(s) for s in shards]:
        raise CorpusError(f"{source.path} changed since the job in {out.uri} started (its rows moved, though its size "
                          "and time did not); pass --overwrite to embed it again from the start")
    stale = 0
    for shard in shards:
        if not out.done(shard):
            continue
        rows, _, texts, _ = read_shard(source, shard, skip_bad_rows)
        if written_rows(out.read_committed(shard, ["row", "text_hash"])) != list(zip(rows, map(text_hash, texts))):
            log.warning("rows of %s changed since it was written; embedding it again", shard.file)
            out.remove(shard)
            stale += 1
    return stale

