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
from builder.context.dockerignore import IgnoreMatcher, find_ignore_file, load_ignore, parse_ignore_lines
from builder.context.errors import BadPattern, ContextError, SourceNotFound, UnsafeArchive
from builder.context.hashing import FileHasher, HashStats
from builder.context.metacache import MetadataCache
from builder.context.materialize import CopyStats, copy_selection
from builder.context.source import BuildContext, Entry, Selection, SourceMatch, tree_selection

__all__ = [
    "BadPattern", "BuildContext", "ContextError", "CopyStats", "copy_selection", "Entry", "FileHasher", "HashStats", "IgnoreMatcher",
    "MetadataCache", "Selection", "SourceMatch", "SourceNotFound", "UnsafeArchive", "find_ignore_file",
    "load_ignore", "parse_ignore_lines", "tree_selection",
]
