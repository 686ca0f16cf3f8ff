"""The OCI image format: data model (``oci``), media types, digests, layer tars and compression.

Modules:
    ``mediatypes`` – media type constants and their compression.
    ``digest``     – ``sha256:`` digests: compute, validate.
    ``oci``        – Platform, Descriptor, Manifest, Index, ImageConfig: canonical JSON in and out.
    ``compress``   – multi-core gzip / zstd streams.
    ``layer``      – write a directory diff as a layer; apply a layer safely onto a directory.
"""
