"""CLI subcommands: each module here has ``register(subparsers)``.

``builder.cli`` discovers the modules of this package, so a new command is a
new module and no shared list needs editing. Modules must keep heavy imports
inside their handlers so that ``pybuild --help`` stays fast.
"""

# Which module registers each command, so ``pybuild CMD`` imports only that module (start-up time
# matters: `pybuild run` and cached builds are latency-bound). tests/commands/test_cli_dispatch.py
# checks this map against what the modules actually register.
COMMAND_MODULES = {
    "build": "build", "report": "build",
    "images": "images", "inspect": "images", "save": "images", "load": "images", "tag": "images",
    "rmi": "images", "image": "images",
    "parse": "parse",
    "pull": "registry", "push": "registry", "login": "registry", "logout": "registry",
    "run": "run", "ps": "run", "stop": "run", "rm": "run",
    "system": "system",
    "cache": "cache",
}
