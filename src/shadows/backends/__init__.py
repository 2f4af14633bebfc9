"""Opening files and stores; the only layer (with ``elements``) that imports h5py or zarr."""

from shadows.backends.fileref import FileRef, resolve

__all__ = ["FileRef", "resolve"]
