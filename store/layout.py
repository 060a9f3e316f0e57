"""The names of a collection's files (the layout is described in `lookalike.store.collection`)."""

MANIFEST = "manifest.json"
FAILED = "failed.jsonl"
DELETED = "deleted.jsonl"
UPLOADS = "uploads"  # the collection's own copies of uploaded images (see lookalike.store.ingest)
WRITE_LOCK = ".lock"  # held by the one writer, for a commit (a shard, tombstones, failures)
EMBED_LOCK = ".embed.lock"  # held by the one bulk embedding run, for the whole run
GENERATION = ".generation"  # replaced after each shard is renamed in: see `Collection.generation`
FORMAT_VERSION = 1
