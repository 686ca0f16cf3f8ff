"""pybuild: a Dockerfile-to-OCI-image build system (import package ``builder``)."""

__version__ = "0.1.0"
