"""The shared build cache: export records and layers (``--cache-to``), import them (``--cache-from``)."""
