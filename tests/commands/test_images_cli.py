"""The image commands as a user types them: load, images, inspect, tag, save, rmi, system df/prune."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder.cli import main
from builder.store import ContentStore
from tests.store.conftest import busybox_archive  # noqa: F401 (fixture)


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "state")


def cli(capsys, root: str, *args: str) -> tuple[int, str, str]:
    code = main(["--root", root, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert len([l for l in lines if l.startswith("error:")]) == 1 and len(lines) <= 2, err
    for word in words:
        assert word in lines[0], err


def test_load_images_tag_inspect_rmi(capsys, root, busybox_archive):
    code, out, _ = cli(capsys, root, "load", "-i", str(busybox_archive))
    assert (code, out) == (0, "Loaded image: busybox:latest\n")
    assert cli(capsys, root, "tag", "busybox", "localhost:5000/tools/bb:1.0")[0] == 0
    code, out, _ = cli(capsys, root, "images")
    lines = out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert [l.split()[:2] for l in lines[1:]] == [["busybox", "latest"], ["localhost:5000/tools/bb", "1.0"]]
    image_id = lines[1].split()[2]
    assert len(image_id) == 12
    code, out, _ = cli(capsys, root, "images", "-q")
    assert out.split() == [image_id]
    code, out, _ = cli(capsys, root, "images", "busybox")
    assert len(out.splitlines()) == 2

    code, out, _ = cli(capsys, root, "inspect", "busybox")
    doc = json.loads(out)[0]
    assert doc["Id"].startswith("sha256:" + image_id)
    assert doc["RepoTags"] == ["busybox:latest", "localhost:5000/tools/bb:1.0"]
    assert doc["RepoDigests"][0].startswith("busybox@sha256:")
    assert doc["Os"] == "linux" and doc["Config"]["Cmd"] == ["sh"]
    assert doc["RootFS"]["Type"] == "layers" and len(doc["RootFS"]["Layers"]) == 1
    assert doc["Created"] == "1970-01-01T00:00:00Z" and doc["Size"] > 1_000_000

    code, out, _ = cli(capsys, root, "rmi", "localhost:5000/tools/bb:1.0")
    assert (code, out) == (0, "Untagged: localhost:5000/tools/bb:1.0\n")
    code, out, _ = cli(capsys, root, "rmi", image_id)
    assert code == 0 and out.splitlines()[0] == "Untagged: busybox:latest"
    assert out.splitlines()[1].startswith("Deleted: sha256:")
    assert cli(capsys, root, "images", "-q")[1] == ""


def test_save_formats_and_load_them_back(capsys, root, tmp_path, busybox_archive):
    cli(capsys, root, "load", "-i", str(busybox_archive))
    for fmt in ("oci", "docker"):
        out_file = tmp_path / f"bb-{fmt}.tar"
        assert cli(capsys, root, "save", "--format", fmt, "-o", str(out_file), "busybox")[0] == 0
        other = str(tmp_path / f"other-{fmt}")
        code, out, _ = cli(capsys, other, "load", "-i", str(out_file))
        assert (code, out) == (0, "Loaded image: busybox:latest\n")


def test_load_from_standard_input_and_save_to_standard_output(root, busybox_archive, tmp_path):
    env_cmd = [sys.executable, "-m", "builder", "--root", root]
    loaded = subprocess.run(env_cmd + ["load"], stdin=open(busybox_archive, "rb"), capture_output=True, timeout=60)
    assert loaded.returncode == 0 and loaded.stdout == b"Loaded image: busybox:latest\n", loaded.stderr
    saved = subprocess.run(env_cmd + ["save", "busybox"], capture_output=True, timeout=60)
    assert saved.returncode == 0 and saved.stdout == busybox_archive.read_bytes()


def test_system_df_and_prune(capsys, root, busybox_archive):
    cli(capsys, root, "load", "-i", str(busybox_archive))
    code, out, _ = cli(capsys, root, "system", "df")
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and rows["Images"][1:3] == ["1", "1"] and rows["Blobs"][1] == "3"
    code, out, _ = cli(capsys, root, "system", "prune")
    assert (code, out) == (0, "Total reclaimed space: 0B\n")  # everything is referenced
    with ContentStore(root) as store:
        orphan, _ = store.put_bytes(b"left behind by a crashed build" * 1000)
    code, out, _ = cli(capsys, root, "system", "prune", "-f")
    assert (code, out) == (0, f"Deleted blob: {orphan}\nTotal reclaimed space: 30kB\n")
    code, out, _ = cli(capsys, root, "rmi", "busybox")
    assert code == 0 and out.count("Deleted: sha256:") == 3  # image, config and layer
    code, out, _ = cli(capsys, root, "system", "df")
    totals = [line.split()[-4] for line in out.splitlines()[1:]]  # TOTAL, whatever the TYPE's words
    assert totals == ["0", "0", "0", "0"]


@pytest.mark.parametrize("args, words", [
    (["inspect", "nothere"], ["no such image: nothere"]),
    (["tag", "nothere", "x"], ["no such image"]),
    (["rmi", "nothere"], ["no such image"]),
    (["tag", "busybox", "Bad Name"], ["whitespace"]),
    (["images", "UPPER"], ["lowercase"]),
    (["load", "-i", "/nonexistent.tar"], ["no such file"]),
    (["load", "-i", "/etc/passwd"], ["not a tar archive"]),
    (["save", "-o", "/", "busybox"], ["is a directory"]),
    (["save", "-o", "/nonexistent-dir/x.tar", "busybox"], ["cannot write"]),
    (["inspect", "--platform", "bogus", "busybox"], ["invalid platform"]),
    (["system"], ["df, prune or check"]),
    (["image"], ["ls, inspect, save, load, tag, rm or prune"]),
    (["system", "prune", "-a", "--filter", "until=soon"], ["bad duration 'soon'"]),
    (["system", "prune", "--keep-storage", "lots"], ["bad --keep-storage 'lots'"]),
    (["system", "prune", "-a", "--filter", "label=x"], ["unsupported filter"]),
    (["images", "-f", "color=blue"], ["unsupported filter 'color'"]),
    (["images", "-f", "dangling"], ["expected KEY=VALUE"]),
    (["inspect", "-f", "{{.Nope}}", "busybox"], ["no field 'Nope'"]),
    (["inspect", "-f", "{{range .RepoTags}}", "busybox"], ["unsupported template"]),
])
def test_bad_input_is_one_clear_line(capsys, root, busybox_archive, args, words):
    cli(capsys, root, "load", "-i", str(busybox_archive))
    code, _, err = cli(capsys, root, *args)
    assert code != 0
    assert_one_line_error(err, *words)


def test_a_store_root_that_is_a_file_is_a_clear_error(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = cli(capsys, str(blocker), "images")
    assert code != 0
    assert_one_line_error(err, "cannot open the store")


def test_root_comes_from_the_environment(monkeypatch, capsys, tmp_path, busybox_archive):
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "env-root"))
    assert main(["load", "-i", str(busybox_archive)]) == 0
    assert (Path(tmp_path / "env-root") / "index.db").is_file()


def test_inspect_format_templates(capsys, root, busybox_archive):
    cli(capsys, root, "load", "-i", str(busybox_archive))
    code, out, _ = cli(capsys, root, "inspect", "-f", "{{.Os}} {{.Config.Cmd}} {{json .RepoTags}}", "busybox")
    assert (code, out) == (0, 'linux [sh] ["busybox:latest"]\n')
    code, out, _ = cli(capsys, root, "images", "--format", "json")
    row = json.loads(out)
    assert (row["Repository"], row["Tag"]) == ("busybox", "latest") and row["ID"].startswith("sha256:")


def test_loading_over_an_existing_name_says_what_it_replaced(capsys, root, busybox_archive, tmp_path):
    cli(capsys, root, "load", "-i", str(busybox_archive))
    code, out, _ = cli(capsys, root, "inspect", "-f", "{{.Id}}", "busybox")
    old_id = out.strip()
    other = tmp_path / "other.tar"
    with ContentStore(tmp_path / "elsewhere") as store:
        from builder.exporter import save_to_path
        from tests.store.conftest import load_make_busybox

        load_make_busybox().make_image(store, epoch=1_700_000_000)  # same files, other times: another image
        save_to_path(store, ["busybox"], str(other))
    code, out, _ = cli(capsys, root, "load", "-i", str(other))
    assert out.splitlines() == [
        f"The image busybox:latest already exists, renaming the old one with ID {old_id} to empty string",
        "Loaded image: busybox:latest"]
    code, out, _ = cli(capsys, root, "images")
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["busybox", "latest"], ["<none>", "<none>"]]


def test_images_filters(capsys, root, busybox_archive, tmp_path):
    cli(capsys, root, "load", "-i", str(busybox_archive))
    with ContentStore(tmp_path / "elsewhere") as store:
        from builder.exporter import save_to_path
        from tests.store.conftest import load_make_busybox

        load_make_busybox().make_image(store, epoch=1_700_000_000)
        save_to_path(store, ["busybox"], str(tmp_path / "newer.tar"))
    cli(capsys, root, "load", "-i", str(tmp_path / "newer.tar"))  # the old busybox is left without a name
    cli(capsys, root, "tag", "busybox", "tools/bb:1")

    def names(*filters):
        code, out, _ = cli(capsys, root, "images", *[a for f in filters for a in ("-f", f)])
        assert code == 0
        return [" ".join(line.split()[:2]) for line in out.splitlines()[1:]]

    assert names("dangling=true") == ["<none> <none>"]
    assert names("dangling=false") == ["busybox latest", "tools/bb 1"]
    assert names("reference=tools/*") == ["tools/bb 1"]
    assert names("reference=busybox:lat*") == ["busybox latest"]


def test_docker_image_group_spellings(capsys, root, busybox_archive, tmp_path):
    assert cli(capsys, root, "image", "load", "-i", str(busybox_archive))[0] == 0
    assert cli(capsys, root, "image", "tag", "busybox", "bb:2")[0] == 0
    code, out, _ = cli(capsys, root, "image", "ls", "-q")
    assert code == 0 and len(out.split()) == 1
    code, out, _ = cli(capsys, root, "image", "inspect", "-f", "{{json .RepoTags}}", "bb:2")
    assert out == '["bb:2","busybox:latest"]\n'
    assert cli(capsys, root, "image", "rm", "bb:2")[1] == "Untagged: bb:2\n"
    with ContentStore(root) as store:  # an unnamed image, as an untagged build leaves
        store.put_index([store.get_image("busybox")])
        unnamed = [s.digest for s in store.list_images() if s.name is None]
    code, out, _ = cli(capsys, root, "image", "prune", "-f")
    assert out.splitlines()[:2] == ["Deleted Images:", f"deleted: {unnamed[0]}"]
    assert cli(capsys, root, "image", "ls", "busybox")[1].count("busybox") == 1


def test_prune_build_cache_by_age(capsys, root):
    with ContentStore(root) as store:
        store.cache_put("old-step", {"n": 1})
        store.index.query("UPDATE cache SET last_used = last_used - 3 * 86400 WHERE key = 'old-step'")
        store.cache_put("new-step", {"n": 2})
    code, out, _ = cli(capsys, root, "system", "prune", "-a", "--filter", "until=48h")
    assert code == 0 and "Deleted build cache entries: 1" in out
    with ContentStore(root) as store:
        assert [key for key, _, _ in store.index.cache_keys()] == ["new-step"]
