"""The build context: what COPY/ADD may read, and the digests cache keys are made of.

* ``BuildContext`` (``source.py``): a context directory or a tar stream,
  with its ``.dockerignore``; ``select(patterns)`` resolves COPY/ADD sources
  with Docker's rules and returns a ``Selection`` (entries, one digest, a
  per-file digest map for "which files changed").
* ``tree_selection(root)``: the same over any directory (``COPY --from``).
* ``dockerignore.py``: Docker's ignore-file syntax and matching.
* ``metacache.py`` / ``hashing.py``: content digests, read once and then
  remembered by (path, size, mtime, ctime, inode, device).
* ``copy_selection`` (``materialize.py``): write a selection into a staging
  directory, re-checking every file against the digest its cache key used.
"""
from importlib import import_module

# Where each public name lives. Imported on first use (PEP 562), so that a build can start
# its context warm-up (``builder.context.warmup``) before paying for the rest of the package.
_HOME = {
    "IgnoreMatcher": "dockerignore", "find_ignore_file": "dockerignore", "load_ignore": "dockerignore",
    "parse_ignore_lines": "dockerignore",
    "BadPattern": "errors", "ContextError": "errors", "SourceNotFound": "errors", "UnsafeArchive": "errors",
    "FileHasher": "hashing", "HashStats": "hashing",
    "MetadataCache": "metacache",
    "CopyStats": "materialize", "copy_selection": "materialize",
    "BuildContext": "source", "Entry": "source", "Selection": "source", "SourceMatch": "source",
    "tree_selection": "source",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'builder.context' has no attribute {name!r}")
    value = getattr(import_module(f"builder.context.{home}"), name)
    globals()[name] = value
    return value
