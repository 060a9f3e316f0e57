"""The collection on disk: manifest and spec, shards (.npy per layer + parquet items), tombstones,
failures; keeping it in step with folders; uploads stored by content."""

from .collection import Collection, CollectionWriter
from .shards import Shard

__all__ = ["Collection", "CollectionWriter", "Shard"]
