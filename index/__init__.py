"""FAISS similarity index over a collection (nearest neighbours, near-duplicates)."""
