"""Bulk embedding as a job: image folders in, a collection in step with them out."""

from .bulk import EmbedReport, embed_images

__all__ = ["EmbedReport", "embed_images"]
