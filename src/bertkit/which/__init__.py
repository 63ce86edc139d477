"""Which vector for which task: every representation of a model measured on the user's own data.

`bertkit compare --task sts|classify|pair|ner|retrieval` and `bertkit report` are built from these modules:
`represent` (every representation of a text from one forward pass, cached for all tasks), `tasks` (which
task a file fits, splits, caps, `run_task`), `probe` (linear probes for classify and pair), `probe_ner` (the
per-layer NER probe), `retrieval` (recall@k, MRR@10), `results` (result types, JSON lines, the reading),
`charts` (bars and heat maps), `report` (report.md + summary.png) and `finetuned` (fine-tuned models as rows).
STS (`sts`) is `bertkit.which.evaluate`, which these modules reuse.
"""
