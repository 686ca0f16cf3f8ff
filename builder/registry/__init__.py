"""OCI distribution client: talk to registries (pull, push, auth, retries).

Modules (one job each):
    ``reference``   – parse/normalise image references (``parse_reference``), docker-style.
    ``credentials`` – docker ``config.json`` credentials and ``docker-credential-*`` helpers.
    ``auth``        – ``WWW-Authenticate`` challenges, Basic, Bearer token flow with caching.
    ``transport``   – one registry's HTTP: scheme/TLS choice, retries with backoff, safe redirects.
    ``client``      – distribution-spec operations on a repository (manifests, blobs, uploads, mounts).
    ``platform``    – choosing a platform's manifest from an index.
    ``pull``        – ``pull_image(ref, store, platform)``: verified, parallel, skips what is stored.
    ``push``        – ``push_image(ref, source, manifest)``: HEAD-skip, mount, monolithic/chunked upload.
    ``sources``     – which repositories a blob came from (for cross-repository mounts).
    ``config``      – ``<root>/registries.json`` (insecure registries, CA).
    ``login``       – checking credentials before ``pybuild login`` stores them.

Import the submodules directly, e.g. ``from builder.registry.pull import pull_image``.
"""
