"""`pybuild pull` and `pybuild push` end to end: the content store, a real registry, skopeo."""
from __future__ import annotations

import subprocess

import pytest

from builder.cli import main
from builder.registry.api import pull_to_store, push_from_store
from builder.store.store import open_store
from images import DirBlobStore, make_image, make_index


def into_store(root, scratch: DirBlobStore, top, name: str) -> None:
    """Copy an image assembled in ``scratch`` into a real content store under ``name``."""
    with open_store(root) as store:
        for digest in scratch.blobs():
            store.put_bytes(scratch.path(digest).read_bytes(), digest)
        store.add_image(top.digest, top.media_type, name=name)


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_push_then_pull_through_the_cli(plain_registry, tmp_path, capsys):
    scratch = DirBlobStore(tmp_path / "scratch")
    image = make_image(scratch, [{"etc/os-release": b"ID=pybuild\n"}, {"bin/x": b"\x7fELF"}])
    name = f"{plain_registry.host}/cli/app:1.0"
    into_store(tmp_path / "a", scratch, image.manifest, name)

    code, out, err = run(capsys, "push", "--root", str(tmp_path / "a"), name)
    assert code == 0, err
    assert image.manifest.digest in out and "3 uploaded" in out
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}"],
                         check=True, capture_output=True, timeout=60).stdout
    assert raw == image.manifest.content

    code, out, err = run(capsys, "pull", "--root", str(tmp_path / "b"), "-q", name)
    assert code == 0, err
    assert out.strip() == image.manifest.digest
    with open_store(tmp_path / "b") as store:
        assert store.resolve(name) == image.manifest.digest
        assert store.get_image(name).layers[0].digest == image.layer_digests[0]


def test_pull_a_multi_platform_image_records_the_index(plain_registry, tmp_path, capsys):
    scratch = DirBlobStore(tmp_path / "scratch")
    amd = make_image(scratch, [{"a": b"amd64"}], arch="amd64")
    arm = make_image(scratch, [{"a": b"arm64"}], arch="arm64")
    index = make_index(scratch, {"amd64": amd, "arm64": arm})
    name = f"{plain_registry.host}/cli/multi:1"
    into_store(tmp_path / "a", scratch, index, name)
    assert run(capsys, "push", "--root", str(tmp_path / "a"), name)[0] == 0

    code, out, err = run(capsys, "pull", "--root", str(tmp_path / "b"), "--platform", "linux/arm64", name)
    assert code == 0, err
    with open_store(tmp_path / "b") as store:
        assert store.resolve(name) == index.digest
        assert store.get_image(name, platform=arm_platform()).manifest_digest == arm.manifest.digest
        assert not store.has_blob(amd.config_digest)
        # Pushing it on: only the platform held is pushed, under the new name.
        result = push_from_store(name, store, f"{plain_registry.host}/cli/arm-only:1")
        assert result.digest == arm.manifest.digest


def arm_platform():
    from builder.image.oci import Platform

    return Platform("linux", "arm64")


def test_pull_to_store_is_what_the_solver_calls(plain_registry, tmp_path):
    scratch = DirBlobStore(tmp_path / "scratch")
    image = make_image(scratch, [{"from": b"base"}])
    name = f"{plain_registry.host}/cli/base:v1"
    into_store(tmp_path / "a", scratch, image.manifest, name)
    with open_store(tmp_path / "a") as store:
        push_from_store(name, store)
    with open_store(tmp_path / "b") as store:
        pulled = pull_to_store(name, store)
        assert pulled.manifest_digest == image.manifest.digest
        assert pulled.config.platform.architecture == "amd64"


@pytest.mark.parametrize("argv,message", [
    (["pull", "Not A Ref"], "invalid reference"),
    (["pull", "127.0.0.1:1/nothing/here:v1"], "cannot reach registry"),
    (["push", "busybox:never-stored"], "no such image"),
    (["pull", "--platform", "linux", "127.0.0.1:1/x:y"], "invalid platform"),
])
def test_cli_errors_are_one_clear_line(tmp_path, capsys, argv, message):
    code, out, err = run(capsys, *argv[:1], "--root", str(tmp_path / "root"), *argv[1:])
    assert code != 0
    assert err.startswith("error: ") and message in err.splitlines()[0]
    assert "Traceback" not in err


def test_pull_of_a_missing_tag_from_a_real_registry(plain_registry, tmp_path, capsys):
    code, out, err = run(capsys, "pull", "--root", str(tmp_path / "r"), f"{plain_registry.host}/none/such:tag")
    assert code == 1 and "not found" in err


def test_a_lying_registry_leaves_nothing_in_the_content_store(plain_registry, tmp_path, capsys):
    from fault_proxy import FaultProxy

    scratch = DirBlobStore(tmp_path / "scratch")
    image = make_image(scratch, [{"big": bytes(range(256)) * 512}])
    name = f"{plain_registry.host}/cli/liar:1"
    into_store(tmp_path / "a", scratch, image.manifest, name)
    assert run(capsys, "push", "--root", str(tmp_path / "a"), name)[0] == 0
    layer = image.layer_digests[0]
    proxy = FaultProxy(plain_registry.host, lambda m, p, n: "corrupt" if p.endswith(layer) else None)
    try:
        code, out, err = run(capsys, "pull", "--root", str(tmp_path / "b"), f"{proxy.host}/cli/liar:1")
    finally:
        proxy.stop()
    assert code == 1 and "does not match its digest" in err and "Traceback" not in err
    with open_store(tmp_path / "b") as store:
        assert not store.has_blob(layer)
        assert store.list_images() == []


def test_pushing_a_pulled_image_to_another_repository_mounts_its_blobs(plain_registry, tmp_path, capsys):
    scratch = DirBlobStore(tmp_path / "scratch")
    image = make_image(scratch, [{"m": b"mount me"}, {"n": b"and me"}])
    name = f"{plain_registry.host}/cli/mount-src:1"
    into_store(tmp_path / "a", scratch, image.manifest, name)
    assert run(capsys, "push", "--root", str(tmp_path / "a"), name)[0] == 0
    root = str(tmp_path / "b")
    assert run(capsys, "pull", "--root", root, name)[0] == 0
    target = f"{plain_registry.host}/cli/mount-dst:1"
    with open_store(root) as store:
        store.tag(name, target)
    code, out, err = run(capsys, "push", "--root", root, target)
    assert code == 0, err
    assert "3 mounted" in out and "0 uploaded" in out



def test_an_image_made_by_pybuild_goes_through_the_registry_to_skopeo_and_umoci(plain_registry, tmp_path, capsys):
    """Layers written by builder.image from a directory, stored by builder.store, pushed by
    `pybuild push`, copied by skopeo and unpacked by umoci: the files arrive intact."""
    import shutil

    from builder.image.layer_writer import LayerWriter
    from builder.image.oci import ContainerConfig, ImageConfig, Platform, RootFS

    if not shutil.which("umoci"):
        pytest.fail("umoci missing: install it (.ci/install)")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "greeting").write_text("hello from pybuild\n")
    (rootfs / "bin").mkdir()
    (rootfs / "bin" / "tool").write_bytes(bytes(range(256)) * 64)
    (rootfs / "bin" / "tool").chmod(0o755)
    name = f"{plain_registry.host}/made/by-pybuild:1"
    with open_store(tmp_path / "root") as store:
        with store.blob_writer() as out:
            layer = LayerWriter().write(rootfs, out)
            out.commit(layer.digest, layer.size)
        config = ImageConfig.for_platform(Platform("linux", "amd64"), rootfs=RootFS([layer.diff_id]),
                                          config=ContainerConfig(cmd=["/bin/tool"]))
        image = store.put_image(config, [layer.descriptor()], name=name)

    code, out, err = run(capsys, "push", "--root", str(tmp_path / "root"), name)
    assert code == 0, err
    layout = tmp_path / "layout"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{layout}:x"],
                   check=True, capture_output=True, timeout=120)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:x", str(bundle)],
                   check=True, capture_output=True, timeout=120)
    assert (bundle / "rootfs" / "etc" / "greeting").read_text() == "hello from pybuild\n"
    assert (bundle / "rootfs" / "bin" / "tool").read_bytes() == bytes(range(256)) * 64
    assert image.manifest_digest in out


def test_pull_all_platforms_then_push_the_whole_index_on(plain_registry, tmp_path, capsys):
    scratch = DirBlobStore(tmp_path / "scratch")
    amd = make_image(scratch, [{"a": b"all amd64"}], arch="amd64")
    arm = make_image(scratch, [{"a": b"all arm64"}], arch="arm64")
    index = make_index(scratch, {"amd64": amd, "arm64": arm})
    name = f"{plain_registry.host}/cli/all:1"
    into_store(tmp_path / "a", scratch, index, name)
    assert run(capsys, "push", "--root", str(tmp_path / "a"), name)[0] == 0

    code, out, err = run(capsys, "pull", "--root", str(tmp_path / "b"), "--all-platforms", name)
    assert code == 0, err
    with open_store(tmp_path / "b") as store:
        assert store.has_blob(amd.config_digest) and store.has_blob(arm.config_digest)
        result = push_from_store(name, store, f"{plain_registry.host}/cli/all-copy:1")
    assert result.digest == index.digest and result.mounted  # whole index, blobs mounted
