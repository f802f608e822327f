"""Folders, lists and batches (``lrm_fast.reconstruct_many`` / ``lrm-fast reconstruct DIR``): inputs,
resumability, per-file errors, batch == one by one, and torchrun sharding on CPU (2 processes)."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from lrm_fast.batch import is_done, list_inputs, output_names, record_path, reconstruct_many, shard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _image(path, seed, size=40):
    """A small RGBA object on a transparent background."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    a = np.zeros((size, size, 4), np.uint8)
    lo, hi = sorted(rng.integers(4, size - 4, 2))
    a[lo:hi + 2, lo:hi + 2, :3] = rng.integers(0, 255, 3)
    a[lo:hi + 2, lo:hi + 2, 3] = 255
    Image.fromarray(a).save(path)
    return str(path)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for k, name in enumerate(["b.png", "a.jpg.png", "c.PNG", "d.webp"]):
        _image(d / name, k)
    (d / "broken.png").write_text("not an image")
    (d / "notes.md").write_text("ignored: not an image extension")
    (d / "sub").mkdir()  # folders inside are not walked
    return d


@pytest.fixture(scope="module")
def model():
    import lrm_fast

    return lrm_fast.load_model("tiny", seed=0)


FAST = dict(formats=("triplane",), verbose=False)


def test_inputs_folders_lists_and_names(folder, tmp_path):
    got = [os.path.basename(p) for p in list_inputs(folder)]
    assert got == ["a.jpg.png", "b.png", "broken.png", "c.PNG", "d.webp"]  # sorted, by extension only
    lst = tmp_path / "lists" / "todo.txt"
    lst.parent.mkdir()
    lst.write_text("# my photos\n\n../photos/b.png   # the first one\n../photos/missing.png\n../photos/b.png\n")
    paths = list_inputs([lst])
    assert paths == [str(folder / "b.png"), str(folder / "missing.png")]  # relative to the list, deduplicated
    assert output_names(paths) == ["b", "missing"]
    with pytest.raises(ValueError, match="'x'.*x.png.*x.jpg"):
        output_names(["p/x.png", "q/x.jpg"])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        list_inputs([folder / "b.png", tmp_path / "nope.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*no png/jpg/jpeg/webp"):
        list_inputs(tmp_path / "empty")
    (tmp_path / "blank.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="blank.txt.*names no images"):
        list_inputs(tmp_path / "blank.txt")
    assert shard(5, 0, 2) == [0, 2, 4] and shard(5, 1, 2) == [1, 3]
    assert sorted(shard(7, 0, 3) + shard(7, 1, 3) + shard(7, 2, 3)) == list(range(7))


def test_folder_batches_errors_and_resume(folder, tmp_path, model, capsys):
    out = str(tmp_path / "out")
    s = reconstruct_many(model, folder, out, batch_size=3, workers=1, **FAST)
    assert len(s.done) == 4 and not s.skipped and s.total == 5 and not s.ok
    (bad, why), = s.failed
    assert bad.endswith("broken.png") and "broken.png" in why and "not an image" in why and "\n" not in why
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("FAILED") and "broken.png" in err[0]
    assert sorted(os.listdir(out)) == ["a.jpg", "b", "c", "d"]
    assert sorted(os.listdir(os.path.join(out, "b"))) == ["b.done.json", "b.triplane.safetensors"]
    assert s.line().startswith("done 4, skipped 0, failed 1 of 5 images in ")

    # a second run skips what is complete and retries only the failure
    s2 = reconstruct_many(model, folder, out, batch_size=3, workers=0, **FAST)
    assert len(s2.skipped) == 4 and not s2.done and len(s2.failed) == 1

    # killed half-way through an image (a file missing), a changed input, other settings: redone
    os.remove(os.path.join(out, "b", "b.triplane.safetensors"))
    _image(folder / "c.PNG", 9)
    s3 = reconstruct_many(model, folder, out, batch_size=2, workers=0, **FAST)
    assert sorted(map(os.path.basename, s3.done)) == ["b.png", "c.PNG"] and len(s3.skipped) == 2
    s4 = reconstruct_many(model, [folder / "b.png"], out, formats=("triplane", "ply"), workers=0, verbose=False)
    assert len(s4.done) == 1 and os.path.exists(os.path.join(out, "b", "b.ply"))
    s5 = reconstruct_many(model, [folder / "d.webp"], out, overwrite=True, **FAST)
    assert len(s5.done) == 1 and not s5.skipped


def test_batch_equals_one_by_one(folder, tmp_path, model):
    """The triplanes of a batch of 3 are those of 3 single-image runs (batching changes nothing)."""
    from lrm_fast.io.export import load_triplane

    paths = [str(folder / n) for n in ("a.jpg.png", "b.png", "c.PNG")]
    reconstruct_many(model, paths, str(tmp_path / "one"), batch_size=1, workers=0, **FAST)
    reconstruct_many(model, paths, str(tmp_path / "three"), batch_size=3, workers=1, **FAST)
    for n in ("a.jpg", "b", "c"):
        t1, _ = load_triplane(str(tmp_path / "one" / n / f"{n}.triplane.safetensors"))
        t3, _ = load_triplane(str(tmp_path / "three" / n / f"{n}.triplane.safetensors"))
        torch.testing.assert_close(t3, t1, atol=1e-5, rtol=1e-5)
    # and the API's own single-image call agrees
    torch.testing.assert_close(model.reconstruct(paths[1]).triplane[0].float(), t1 if n == "b" else
                               load_triplane(str(tmp_path / "one" / "b" / "b.triplane.safetensors"))[0],
                               atol=1e-5, rtol=1e-5)


def test_record_guards_against_other_settings(folder, tmp_path, model):
    out = str(tmp_path / "out")
    reconstruct_many(model, [folder / "b.png"], out, **FAST)
    settings = json.load(open(record_path(out, "b")))["settings"]
    assert is_done(str(folder / "b.png"), out, "b", settings)
    assert not is_done(str(folder / "b.png"), out, "b", {**settings, "model": "other"})
    with open(record_path(out, "b"), "w") as f:
        f.write("{truncated")
    assert not is_done(str(folder / "b.png"), out, "b", settings)


def test_cli_folder_and_list(folder, tmp_path, capsys, monkeypatch):
    from lrm_fast.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text("photos/b.png\nphotos/c.PNG\n")
    code = main(["reconstruct", "list.txt", "--model", "tiny", "--formats", "triplane", "--out", "o1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and sorted(os.listdir(tmp_path / "o1")) == ["b", "c"]
    assert "done 2, skipped 0, failed 0 of 2 images" in out
    code = main(["reconstruct", "photos", "--model", "tiny", "--formats", "triplane", "--out", "o1",
                 "--batch-size", "4", "--workers", "0"])
    cap = capsys.readouterr()
    assert code == 1, cap.err  # broken.png failed: exit 1, after the others were done
    assert "done 2, skipped 2, failed 1 of 5 images" in cap.out, cap.out
    assert [ln for ln in cap.err.splitlines() if "broken.png" in ln and ln.startswith("FAILED")]
    assert main(["reconstruct", "photos", "--batch-size", "0"]) == 2


def test_torchrun_two_processes_share_a_folder(folder, tmp_path):
    """torchrun --nproc_per_node 2 on CPU: every image once, no overlap, each rank's summary adds up."""
    os.remove(folder / "broken.png")
    _image(folder / "e.png", 5)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("LRM_FAST_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "lrm_fast.cli", "reconstruct", str(folder), "--model", "tiny", "--device", "cpu",
                        "--formats", "triplane", "--out", str(out), "--workers", "0", "--batch-size", "2"],
                       capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(folder) if n.endswith(("png", "PNG", "webp")))
    assert sorted(os.listdir(out)) == names  # the union is every image
    per_rank = {}
    for rank, path in re.findall(r"\[rank (\d)/2\] \[\d+/\d+\] (\S+) ->", r.stdout):
        per_rank.setdefault(int(rank), []).append(os.path.basename(path))
    assert sorted(per_rank) == [0, 1] and not set(per_rank[0]) & set(per_rank[1])  # no overlap
    all_sorted = [os.path.basename(p) for p in list_inputs(folder)]
    assert sorted(per_rank[0]) == all_sorted[0::2] and sorted(per_rank[1]) == all_sorted[1::2]
    totals = re.findall(r"rank (\d)/2: done (\d+), skipped (\d+), failed (\d+) of (\d+) images", r.stdout)
    assert sorted((int(a), int(b), int(c), int(d), int(e)) for a, b, c, d, e in totals) == [(0, 3, 0, 0, 3),
                                                                                          (1, 2, 0, 0, 2)]
