"""Bulk embedding as a job: image folders and listings in, a collection in step with them out;
on this machine's threads or as tasks on a Ray cluster.

Exports load lazily: a Ray actor imports `lookalike.jobs.ray_job` without the local job's
model-building imports.
"""

from lookalike.lazy import lazy_exports

_WHERE = {"EmbedReport": "report", "embed_images": "bulk", "RayOptions": "ray_job"}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
