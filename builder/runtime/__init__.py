"""An OCI runtime (``pybuild-runc``) and the executor that runs build steps with it.

Public entry points:
- ``builder.runtime.container``: create/start/run/kill/delete/exec on a bundle;
- ``builder.runtime.config``: parse and validate config.json, ``default_spec``;
- ``builder.runtime.executor``: ``Executor.run`` for RUN steps (in-memory spec).

Nothing heavy is imported here: ``pybuild-runc``'s start-up time matters.
"""
