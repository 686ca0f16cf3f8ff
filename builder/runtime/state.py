"""The runtime's state directory: one directory per container id.

``<root>/<id>/state.json`` records what ``state``/``kill``/``delete`` need;
``exec.fifo`` exists from ``create`` until ``start`` (the init process blocks
opening it for writing). Status is derived, not stored: a process that is
gone (or whose pid was reused — checked by its start time) is stopped.
"""
from __future__ import annotations

import json
import os

from .errors import ContainerExists, ContainerNotFound, RuntimeFailure
from .record import asdict, dataclass, field

# A container id: [A-Za-z0-9][A-Za-z0-9_.+-]{0,1023} (checked without ``re``: start-up time).
_ID_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_ID_REST = _ID_FIRST | frozenset("_.+-")
FIFO = "exec.fifo"


def default_root() -> str:
    if os.geteuid() == 0:
        return "/run/pybuild-runc"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.access(xdg, os.W_OK):
        return os.path.join(xdg, "pybuild-runc")
    return f"/tmp/pybuild-runc-{os.geteuid()}"


def check_id(container_id: str) -> str:
    if not (0 < len(container_id) <= 1024 and container_id[0] in _ID_FIRST
            and all(c in _ID_REST for c in container_id)):
        raise RuntimeFailure(f"invalid container id {container_id!r}: use letters, digits, '_', '.', '+', '-'")
    return container_id


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2:].split()
    if rest[0] == b"Z":
        return None
    return int(rest[19])


@dataclass
class ContainerState:
    id: str
    pid: int
    bundle: str
    rootfs: str
    created: str
    owner: str
    start_time: int
    annotations: dict[str, str] = field(default_factory=dict)
    cgroups: dict[str, str] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    rootless: bool = False
    process: dict = field(default_factory=dict)   # config.json's process, for exec defaults
    status_dir: str = ""

    def alive(self) -> bool:
        return self.pid > 0 and process_start_time(self.pid) == self.start_time

    def status(self) -> str:
        if not self.alive():
            return "stopped"
        if os.path.exists(os.path.join(self.status_dir, FIFO)):
            return "created"
        return "running"

    def oci_state(self) -> dict:
        status = self.status()
        doc = {
            "ociVersion": "1.0.2",
            "id": self.id,
            "status": status,
            "pid": self.pid if status != "stopped" else 0,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        }
        if self.annotations:
            doc["annotations"] = self.annotations
        return doc


class StateStore:
    def __init__(self, root: str) -> None:
        self.root = root

    def dir(self, container_id: str) -> str:
        return os.path.join(self.root, check_id(container_id))

    def reserve(self, container_id: str) -> str:
        """Make the container's directory; fail if the id is taken."""
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        path = self.dir(container_id)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise ContainerExists(f"container {container_id!r} already exists") from None
        os.chmod(path, 0o711)   # the container's user must reach exec.fifo
        return path

    def save(self, state: ContainerState) -> None:
        path = os.path.join(self.dir(state.id), "state.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(asdict(state)))    # dumps uses the C encoder, dump a Python one
        os.replace(tmp, path)

    def load(self, container_id: str) -> ContainerState:
        path = os.path.join(self.dir(container_id), "state.json")
        try:
            with open(path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            raise ContainerNotFound(f"container {container_id!r} does not exist") from None
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"container {container_id!r}: unreadable state ({e})") from None
        state = ContainerState(**raw)
        state.status_dir = self.dir(container_id)
        return state

    def ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [n for n in names if os.path.exists(os.path.join(self.root, n, "state.json"))]

    def remove(self, container_id: str) -> None:
        path = self.dir(container_id)
        try:
            for name in os.listdir(path):      # state.json, perhaps exec.fifo: no shutil needed
                os.unlink(os.path.join(path, name))
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            import shutil
            shutil.rmtree(path, ignore_errors=True)
