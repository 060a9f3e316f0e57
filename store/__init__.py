"""The collection on disk: manifest and spec, shards (.npy per layer + parquet items), tombstones,
failures; keeping it in step with folders; uploads stored by content."""

from .collection import Collection
from .shards import Shard
from .writer import CollectionWriter

__all__ = ["Collection", "CollectionWriter", "Shard"]
