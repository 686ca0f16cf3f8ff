"""Hardening suite (issue #8): crashes, store check, concurrency, registry faults, hostile inputs."""
