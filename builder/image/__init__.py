"""The OCI image format: data model, media types, digests, layer tars and compression.

Modules:
    ``oci``          – Platform, Descriptor, Manifest, Index, ImageConfig: canonical JSON in and out.
    ``mediatypes``   – media type constants and which compression each layer type uses.
    ``digest``       – ``sha256:`` digests: compute, validate, hash while writing.
    ``compress``     – multi-core gzip (ISA-L) and zstd streams, and decompression.
    ``tarformat``    – encoding deterministic USTAR/PAX headers.
    ``tarreader``    – decoding tar streams with limits (untrusted input).
    ``layer_writer`` – a directory / overlay upper dir → a layer blob, diffID and digest.
    ``layer_apply``  – a layer blob → a directory, whiteouts honoured, escapes contained.
    ``layer``        – the writer and the applier in one import.
    ``errors``       – ``InvalidImageError``, ``LayerError`` and friends.
"""
