"""One ``pybuild build``: read the Dockerfile and context, solve, export, report.

This is the wiring between the CLI and the parts: frontend (parse), context
(sources), solver (steps and cache), store (images), exporters (outputs),
progress and report. ``run(options)`` returns the image id.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import PybuildError, UsageError


@dataclass
class BuildOptions:
    context: str = "."
    dockerfile: Path | None = Path("Dockerfile")  # None: "Dockerfile" inside a stdin context tar
    tags: list[str] = field(default_factory=list)
    target: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    ssh: list[str] = field(default_factory=list)
    no_cache: bool = False
    no_cache_filter: set[str] = field(default_factory=set)
    pull: bool = False
    platform: str | None = None
    network: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    iidfile: str | None = None
    metadata_file: str | None = None
    progress: str = "auto"
    report_file: str | None = None
    jobs: int = 2
    root: Path = Path("/var/lib/pybuild")
    cache_from: list[str] = field(default_factory=list)  # --cache-from values (builder.cache.spec)
    cache_to: list[str] = field(default_factory=list)  # --cache-to values
    # A ContextWarmup already hashing the context in a helper process (builder.context.warmup).
    context_warmup: object | None = None


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, not {value!r}") from None


_OUTPUT_KEYS = ("type", "dest", "name", "push")
# buildx keys whose value here can only be what pybuild always does.
_OUTPUT_FIXED = {"compression": "gzip", "oci-mediatypes": "true"}


def _check_output_keys(value: str, fields: dict[str, str]) -> None:
    """Every key of one ``--output`` is one pybuild acts on: an option silently ignored (say
    ``compression=zstd``) would give an image other than the one asked for."""
    for key, v in fields.items():
        if key in _OUTPUT_KEYS:
            continue
        if _OUTPUT_FIXED.get(key) == v.strip().lower():
            continue
        err = UsageError(f"--output {value!r}: {key}={v} is not supported" if key in _OUTPUT_FIXED
                         else f"--output {value!r}: unknown or unsupported key {key!r}")
        err.hint = ("image layers are exported gzip-compressed with OCI media types; "
                    "--cache-to ...,compression=zstd compresses the exported build cache"
                    if key in _OUTPUT_FIXED or key.startswith("compression") or key == "force-compression"
                    else f"the keys pybuild knows: {', '.join(_OUTPUT_KEYS)}")
        raise err


def parse_outputs(values: list[str]) -> list[dict[str, str]]:
    """``--output`` values (``type=oci,dest=x.tar``, or a bare path for type=local)."""
    out = []
    for value in values:
        if "=" not in value:
            out.append({"type": "local", "dest": value})
            continue
        fields = {}
        for part in value.split(","):
            k, eq, v = part.partition("=")
            if not eq:
                raise UsageError(f"invalid --output {value!r}: expected key=value pairs")
            fields[k.strip()] = v
        kind = fields.get("type")
        if kind not in ("image", "oci", "docker", "local", "tar", "registry"):
            raise UsageError(f"invalid --output type {kind!r}",)
        _check_output_keys(value, fields)
        if kind == "registry" and fields.get("push", "true") == "false":
            fields["type"] = "image"
        if kind in ("oci", "docker", "local", "tar") and not fields.get("dest"):
            raise UsageError(f"--output type={kind} needs dest=PATH")
        out.append(fields)
    return out


def run(options: BuildOptions) -> str:
    """Build, export and report; returns the image id (config digest)."""
    from builder.frontend import parse
    from builder.image.oci import Platform
    from builder.progress import make_progress
    from builder.solver.ops import BuildOps
    from builder.solver.solver import BuildRequest, Solver
    from builder.store.gc import maybe_gc
    from builder.store.store import ContentStore

    from builder.cache.spec import parse_cache_spec
    from builder.context.warmup import stages_up_to

    outputs = parse_outputs(options.outputs)
    cache_to = [parse_cache_spec(v, export=True) for v in options.cache_to]
    cache_from = [parse_cache_spec(v, export=False) for v in options.cache_from]
    platform = options.platform or str(Platform.host())
    store = ContentStore(options.root)
    context = None
    progress = None
    report = None
    cache_import = None
    try:
        if options.context == "-":
            context = _stdin_context(store, options)
        dockerfile = parse(_read_dockerfile(options, context), str(options.dockerfile or "Dockerfile"))
        progress = make_progress(options.progress)
        with store.lease():
            ops = BuildOps(store, options, dockerfile, progress, context=context)
            ops.prefetch(stages_up_to(dockerfile, options.target))
            if cache_from:
                from builder.cache.importer import CacheImport

                cache_import = CacheImport.start(
                    cache_from, platform, progress.warn, store=store,
                    done=lambda imp: progress.info(
                        f"imported {sum(len(s.config.records) for s in imp.sources)} cache record(s) from "
                        f"{len(imp.sources)} of {len(cache_from)} cache source(s)"))
            solver = Solver(store, ops, progress, cache_import)
            request = BuildRequest(
                dockerfile=dockerfile, target=options.target, build_args=options.build_args,
                no_cache=options.no_cache, no_cache_filter=options.no_cache_filter, platform=platform,
                jobs=options.jobs, context_id=ops.context_id,
            )
            try:
                state, report, _graph = solver.build(request)
            except BaseException:
                report = getattr(solver, "_last_report", None)
                raise
            finally:
                ops.close()
            if cache_import is not None:
                cache_import.wait()
                report.warnings.extend(cache_import.warnings)
            inline = None
            if any(spec.type == "inline" for spec in cache_to):
                from builder.cache.exporter import collect, inline_document

                inline = inline_document(collect(store, cache_keys(solver, _graph, "min")),
                                         [lr.digest for lr in state.layers])
            image = export_image(store, state, options, platform, inline_cache=inline)
            report.image_id = image.id
            for out in outputs:
                write_output(store, image, out, options)
            for spec in cache_to:
                if spec.type != "inline":
                    export_cache(store, solver, _graph, spec, progress, report)
        _write_iidfile(options, image.id)
        _write_metadata(options, image)
        maybe_gc(store, keep=[image.digest])  # outside the lease: it needs the store to itself
        return image.id
    finally:
        if progress is not None:
            progress.close()
            if report is not None:
                _save_report(options, report, progress)
        if context is not None:
            context.close()
        if cache_import is not None:
            cache_import.close()
        store.close()


def cache_keys(solver, graph, mode: str) -> list[str]:
    """The cache keys ``--cache-to`` exports: ``min``, the steps that make the final image (the
    target stage and the stages it is built FROM); ``max``, every step of every stage built."""
    if mode == "max":
        return [k for index in sorted(solver.keys_by_stage) for k in solver.keys_by_stage[index]]
    chain = []
    index = graph.target.index
    while index is not None:
        chain.append(index)
        index = graph.deps[index].base_stage
    return [k for index in reversed(chain) for k in solver.keys_by_stage.get(index, [])]


def export_cache(store, solver, graph, spec, progress, report) -> None:
    """One ``--cache-to`` destination; a failure fails the build unless ``ignore-error=true``."""
    from builder.cache.exporter import collect, export_local, export_registry

    t0 = time.monotonic()
    keys = cache_keys(solver, graph, spec.mode)
    config = collect(store, keys)
    selected = set(keys)
    for key, (ident, inputs) in solver.step_inputs.items():
        if key in selected or inputs.get("op") == "from":
            config.steps[ident] = inputs
    try:
        if spec.type == "registry":
            summary = export_registry(store, config, spec, say=progress.info)
        else:
            summary = export_local(store, config, spec, say=progress.info)
    except PybuildError as exc:
        if not spec.ignore_error:
            raise PybuildError(f"exporting the build cache to {spec.describe()}: {exc}") from None
        msg = f"exporting the build cache to {spec.describe()} failed (ignored): {exc}"
        report.warnings.append(msg)
        progress.warn(msg)
        return
    progress.info(f"exported {summary.records} cache record(s) and {summary.layers} layer(s) to "
                  f"{summary.destination} ({summary.uploaded} layer(s) written) in {time.monotonic() - t0:.2f}s")


def _stdin_context(store, options: BuildOptions):
    """``pybuild build -`` reads the context as a tar from standard input."""
    import sys

    from builder.context import BuildContext

    name = options.dockerfile.name if options.dockerfile is not None else "Dockerfile"
    return BuildContext.from_tar(sys.stdin.buffer, dockerfile_name=name, tmp_dir=store.scratch.path)


def _read_dockerfile(options: BuildOptions, context) -> bytes:
    path = options.dockerfile
    if context is not None:
        inside = context.root / (path.name if path is not None else "Dockerfile")
        if path is None or (not path.exists() and inside.is_file()):
            path = inside
    assert path is not None
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file (give the Dockerfile with -f)") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory") from None


def _save_report(options: BuildOptions, report, progress) -> None:
    reports = options.root / "reports"
    try:
        reports.mkdir(parents=True, exist_ok=True)
        report.write(reports / "last.json")
    except OSError:
        pass
    if options.report_file:
        report.write(options.report_file)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(report.markdown())
    if options.progress != "quiet":
        for line in report.summary_lines():
            progress.info(line) if options.progress == "json" else print(line, file=__import__("sys").stderr)


def export_image(store, state, options: BuildOptions, platform: str, inline_cache: dict | None = None):
    """The target stage's final state as an OCI image in the store, tagged."""
    from builder.image.oci import ContainerConfig, Healthcheck, History, ImageConfig, Platform, RootFS, \
        format_created

    epoch = source_date_epoch()
    base = ImageConfig.from_json(state.base_config) if state.base_config else None
    base_count = len(base.history) if base else 0
    # The image is as new as its newest step (kept in the cache), so a build that is cached to
    # the end gives the same image id again; SOURCE_DATE_EPOCH pins every time.
    step_times = [h.created for h in state.history[base_count:] if h.created]
    if epoch is not None:
        created = format_created(epoch)
    elif step_times:
        from datetime import datetime

        created = max(step_times, key=lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")))
    else:
        created = format_created(time.time())
    plat = Platform.parse(state.platform or platform)
    cfg = state.config
    labels = dict(cfg.labels)
    labels.update(options.labels)
    health = None
    if cfg.healthcheck is not None:
        test, interval, timeout, start_period, start_interval, retries = cfg.healthcheck
        health = Healthcheck(test=list(test), interval=interval, timeout=timeout, start_period=start_period,
                             start_interval=start_interval, retries=retries)
    container = ContainerConfig(
        user=cfg.user or None,
        exposed_ports=list(cfg.exposed_ports) or None,
        env=list(cfg.env) or None,
        entrypoint=list(cfg.entrypoint) if cfg.entrypoint is not None else None,
        cmd=list(cfg.cmd) if cfg.cmd is not None else None,
        volumes=list(cfg.volumes) or None,
        working_dir=cfg.working_dir or None,
        labels=labels or None,
        stop_signal=cfg.stop_signal,
        healthcheck=health,
        on_build=list(cfg.on_build) or None,
        shell=list(cfg.shell) if cfg.shell else None,
    )
    history = []
    base_history = base.history if base else []
    for i, h in enumerate(state.history):
        if i < len(base_history):
            history.append(base_history[i])
        else:
            when = created if epoch is not None or not h.created else h.created
            history.append(History(created=when, created_by=h.created_by, comment=h.comment or "buildkit.dockerfile.v0",
                                   empty_layer=h.empty_layer))
    config = ImageConfig(
        architecture=plat.architecture, os=plat.os, variant=plat.variant, created=created,
        author=cfg.author or (base.author if base else None), config=container,
        rootfs=RootFS(diff_ids=[lr.diff_id for lr in state.layers]), history=history,
    )
    if inline_cache is not None:
        from builder.cache.format import INLINE_KEY

        config.extra[INLINE_KEY] = inline_cache
    from builder.image.oci import Descriptor

    layers = [Descriptor(lr.media_type, lr.digest, lr.size) for lr in state.layers]
    image = store.put_image(config, layers)
    for tag in options.tags:
        store.tag(image.digest if hasattr(image, "digest") else image.id, tag)
    return image


def write_output(store, image, out: dict[str, str], options: BuildOptions) -> None:
    kind = out["type"]
    if kind == "image":
        name = out.get("name")
        if name:
            for n in name.split(","):
                store.tag(image.digest, n)
        return
    if kind in ("oci", "docker"):
        from builder.exporter.transfer import save_to_path

        save_to_path(store, options.tags[:1] or [image.digest], out["dest"], fmt=kind)
        return
    if kind in ("local", "tar"):
        export_rootfs(store, image, out["dest"], as_tar=kind == "tar")
        return
    if kind == "registry":
        from builder.registry.api import push_from_store

        names = [n for n in (out.get("name") or "").split(",") if n] or options.tags
        if not names:
            raise UsageError("--push needs a name to push to: give -t REGISTRY/REPO:TAG")
        from builder.registry.config import load_registry_options

        registry_options = load_registry_options(store.root)  # <root>/registries.json, as pybuild push
        for name in names:
            store.tag(image.digest, name)
            push_from_store(name, store, options=registry_options)
        return
    raise PybuildError(f"--output type={kind} is not supported yet")


def export_rootfs(store, image, dest: str, *, as_tar: bool) -> None:
    """``--output type=local,dest=DIR`` (the final file tree) or ``type=tar,dest=FILE`` (as one tar)."""
    import shutil
    import tempfile

    from builder.image import mediatypes as mt
    from builder.image.layer import LayerWriter

    if not as_tar:
        target = Path(dest)
        if target.exists() and any(target.iterdir()):
            raise UsageError(f"--output type=local: {target} is not empty")
        target.mkdir(parents=True, exist_ok=True)
        try:
            store.unpack_image(image, target)
        except BaseException:  # e.g. a refused layer: leave dest empty, not half-written
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            raise
        return
    tmp = Path(tempfile.mkdtemp(prefix="rootfs-", dir=store.scratch.path))
    try:
        store.unpack_image(image, tmp)
        out_path = Path(dest)
        part = out_path.with_name(f".{out_path.name}.pybuild-tmp")
        with open(part, "wb") as fh:
            LayerWriter(compression=mt.UNCOMPRESSED,
                        source_date_epoch=source_date_epoch()).write(tmp, fh)
        part.replace(out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_iidfile(options: BuildOptions, image_id: str) -> None:
    if options.iidfile:
        Path(options.iidfile).write_text(image_id)


def _write_metadata(options: BuildOptions, image) -> None:
    if options.metadata_file:
        meta = {"containerimage.config.digest": image.id,
                "containerimage.digest": image.digest,
                "image.name": ",".join(options.tags) or None}
        Path(options.metadata_file).write_text(json.dumps(meta, indent=2) + "\n")
