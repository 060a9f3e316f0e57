"""Seeing a collection: maps of its embeddings (UMAP), audits of its labels and items."""
