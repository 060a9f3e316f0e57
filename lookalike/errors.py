"""One family of library errors; the CLI turns them into one-line messages, the server into problem+json."""


class LookalikeError(Exception):
    """Base class of every error the library raises on purpose (bad input, mismatched artefacts)."""


class SpecMismatch(LookalikeError):
    """An artefact was made with a different embedder spec than the one asked for."""


class UnknownItem(LookalikeError):
    """An item id (or path) that the collection does not hold."""


class BadImage(LookalikeError):
    """A file that cannot be used as an image: corrupt, truncated, empty, too large, wrong format."""


class CollectionError(LookalikeError):
    """A collection directory that is missing, damaged or locked by another writer."""


class CollectionBusy(CollectionError):
    """Another write holds the collection longer than the caller would wait: retry shortly."""


class LabelError(LookalikeError):
    """Training labels that cannot train a classifier: too few classes or examples, unknown items."""


class ClassifierError(LookalikeError):
    """A classifier that does not exist, already exists, or cannot be loaded safely."""


class UnknownClassifier(ClassifierError):
    """No classifier of that name in the collection."""


class ClassifierExists(ClassifierError):
    """A classifier of that name exists and replacing it was not asked for."""


class PathNotAllowed(LookalikeError):
    """A file whose real path lies outside the folders it may be read from (a link elsewhere)."""


class StorageFull(LookalikeError):
    """The disk (or quota) holding a collection is full: nothing was acknowledged, retry once
    space is freed."""


class StorageReadOnly(LookalikeError):
    """The file system holding a collection refuses writes (mounted read-only, or no permission):
    reads go on; a write needs a writable mount."""


class Cancelled(LookalikeError):
    """A job stopped because it was asked to; what it had committed stays."""


class CannotCalibrate(LookalikeError):
    """Too few of a collection's images can be read to calibrate a dedup threshold."""


class InvalidArgument(LookalikeError, ValueError):
    """An argument the caller got wrong: a shape, a range, an unknown name or option."""


class UnknownLayer(LookalikeError, KeyError):
    """A layer the collection or backbone does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class VectorStoreUnavailable(LookalikeError):
    """A vector database (Milvus) that cannot be reached or refused a request; retry later."""


class WritePending(VectorStoreUnavailable):
    """A write made durable in the collection that the vector store could not take yet: it is
    applied when the store is back, and retrying the request is safe (the same ids)."""

    def __init__(self, message: str, items: list[int]) -> None:
        super().__init__(message)
        self.items = items


class FolderGone(CollectionError):
    """A collection's folder that is no longer there (deleted, moved or unmounted)."""
