"""Tests of the registry client (builder.registry) against real registries, skopeo and umoci."""
