"""CLI subcommands: each module here has ``register(subparsers)``.

``builder.cli`` discovers the modules of this package, so a new command is a
new module and no shared list needs editing. Modules must keep heavy imports
inside their handlers so that ``pybuild --help`` stays fast.
"""
