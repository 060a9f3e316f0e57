"""The service layer: one object per opened collection, with every flow the CLI and the server run.

    from lookalike import service

    with service.open("photos/", read_only=True) as library:
        found = library.search_images(["query.jpg"], k=5)

Exports load lazily (`lookalike.lazy`): importing the package imports no torch or FAISS.
"""

from lookalike.lazy import lazy_exports

_WHERE = {
    "DedupReport": "library",
    "FolderEmbedded": "library",
    "Found": "library",
    "Library": "library",
    "collection_dirs": "parse",
    "filters": "parse",
    "open": "library",
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
