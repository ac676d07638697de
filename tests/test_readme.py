"""Every command block of README.md runs, as written, with its budget shrunk through documented flags.

The README is what a new user types. Each ```bash block is parsed; each `cnnkit ...` line runs in one scratch
folder, in order (later lines use the run folders earlier ones wrote), with a few flags appended from SHRINK
(the same flags the user has: --epochs 1, --train-subset, ...; argparse lets the last one win) and the example
file names mapped to real pictures. A line that cannot run here says why in SKIP. `make demo` runs the Makefile's
own demo command, shrunk. A failing line fails the test with the command and its error, so the README cannot rot.
"""

import re
import shlex
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli import main

REPO = Path(__file__).resolve().parents[1]

# Budget flags per command (the first words of the line: "denoise --train", "detect train" or "train"), appended to
# the line.
SHRINK = {
    "train": "--epochs 1 --train-subset 2000 --test-subset 1000",
    "finetune": "--epochs 1 --train-subset 100 --test-subset 100",
    "stylize": "--size 64 --iterations 4",
    "texture": "--size 64 --iterations 4",
    "denoise --train": "--epochs 1 --train-subset 2000 --test-subset 16 --patch-size 24 --patches-per-image 2",
    "segment --train": "--epochs 1 --num-train 64 --num-test 16 --image-size 32",
    "compress --train": "--epochs 1 --train-subset 300 --test-subset 50",
    "gan --train": "--epochs 1 --train-subset 500 --fid-samples 200",
    "gan": "--count 16",
    "translate --train": "--epochs 1 --train-subset 200 --test-subset 50",
    "detect train": "--epochs 1 --num-train 32 --num-test 8 --batch-size 16",
}
# Lines that do not run here, each with its reason (the first pattern found in the line decides).
SKIP = {
    "make test": "the test suite itself",
    "gpu_check.sh": "the GPU check: a CUDA machine, or minutes on the CPU (tests/test_gpu_check.py runs it)",
    "python benchmarks/": "a benchmark: it measures for minutes to hours by design (BENCHMARKS.md has its figures)",
    "torchrun ": "a torchrun launch over several GPUs or nodes",
    "--nproc 4": "four processes, one per GPU",
    "--nproc 8": "eight processes per node over several nodes",
    "cnnkit serve": "a server that runs until Ctrl-C (tests/serve drive it)",
    "tensorboard --logdir": "TensorBoard's own server, which runs until Ctrl-C (tests/test_tensorboard.py reads logs)",
    " ... ": "a placeholder for a command's options",
    "--data cbsd432": "trains on the 432 CBSD432 photographs for minutes (tests/test_compress_hyperprior.py runs the "
                      "same command, and its --resume, on small images)",
    "--resume runs/compress-cbsd432": "continues the run of the line above, which does not run here",
}


def example_files(folder: Path) -> dict[str, Path]:
    """The README's example file names, mapped to pictures shipped with the repository (or made from them)."""
    photo = Image.open(REPO / "docs" / "images" / "style_content.jpg").convert("RGB")
    small = photo.resize((64, 48))
    small.save(folder / "photo.png")
    small.convert("L").resize((32, 32)).save(folder / "grey.png")
    shapes = np.zeros((64, 64, 3), np.uint8)
    shapes[10:30, 12:40] = (220, 60, 60)
    yy, xx = np.mgrid[:64, :64]
    shapes[(yy - 44) ** 2 + (xx - 40) ** 2 < 120] = (60, 200, 90)
    Image.fromarray(shapes).save(folder / "picture.png")
    return {"photo.jpg": REPO / "docs" / "images" / "style_content.jpg",
            "painting.jpg": REPO / "docs" / "images" / "style_style.jpg",
            "photo.png": folder / "photo.png", "grey.png": folder / "grey.png", "picture.png": folder / "picture.png"}


def readme_sections() -> list[tuple[str, list[str]]]:
    """(section title, command lines) for each ```bash block of README.md: comments dropped, continuation
    lines joined, `a ; b` split."""
    sections, title, inside = [], "", False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
        elif line.strip() == "```bash":
            inside, commands, pending = True, [], ""
        elif inside and line.strip() == "```":
            inside = False
            sections.append((title, commands))
        elif inside:
            text = pending + re.sub(r"(^|\s)#.*$", "", line).strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            commands += [part.strip() for part in text.split(" ; ") if part.strip()]
    return sections


def demo_command() -> str:
    recipe = (REPO / "Makefile").read_text().split("\ndemo:")[1].splitlines()[1]
    return "cnnkit " + recipe.split("/bin/cnnkit ", 1)[1]


def shrunk(command: str, files: dict[str, Path]) -> list[str] | str:
    """The argv to run for a README line, or the reason it is skipped."""
    if command == "make demo":
        command = demo_command()
    for pattern, reason in SKIP.items():
        if pattern in f" {command} ":
            return reason
    words = shlex.split(command)
    assert words[0] == "cnnkit", f"README line {command!r} is neither a cnnkit command nor listed in SKIP"
    # "denoise --train" and "detect train" (an action) have budgets of their own; other lines go by the command
    key = " ".join(words[1:3]) if words[2:3] == ["--train"] or " ".join(words[1:3]) in SHRINK else words[1]
    return [str(files.get(word, word)) for word in words[1:]] + shlex.split(SHRINK.get(key, ""))


# Lines that fail for a reported bug another change fixes: run, and on failure the section ends as an expected
# failure (with the lines that need its output skipped) instead of a failure. Remove an entry once fixed.
KNOWN_BROKEN: dict[str, str] = {}  # "cnnkit ARGS prefix": "issue N: why"
TIMINGS = REPO / "test-artifacts" / "readme_timings.txt"  # kept by CI; the README walk's figures

SECTIONS = readme_sections()


def test_the_readme_has_the_command_blocks_it_is_checked_by():
    titles = [title for title, _ in SECTIONS]
    for expected in ("Quick start", "Transfer learning", "Learned image compression", "GANs and image-to-image "
                     "translation", "Style transfer, textures, denoising and segmentation"):
        assert expected in titles
    assert sum(len(commands) for _, commands in SECTIONS) >= 20



def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_links_only_to_headings_it_has():
    text = (REPO / "README.md").read_text()
    anchors = {heading_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    assert heading_anchor("Detection: Faster R-CNN, and more") == "detection-faster-r-cnn-and-more"
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links - anchors == set(), "README links to headings it does not have"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    for shipped in ("recipes", "docs"):  # README paths are relative to the clone; run folders go to the scratch
        (folder / shipped).symlink_to(REPO / shipped)
    return folder, example_files(folder)


@pytest.mark.readme
@pytest.mark.parametrize("title,commands", SECTIONS, ids=[title for title, _ in SECTIONS])
def test_every_readme_command_runs(title, commands, workdir, monkeypatch, capsys, shared_data):
    folder, files = workdir
    monkeypatch.chdir(folder)
    # As a user's commands would: the decoded CIFAR-10 copy is cached once, not per test.
    monkeypatch.setenv("CNNKIT_CACHE", str(Path.home() / ".cache" / "cnnkit"))
    broken, needs = None, None
    for command in commands:
        argv = shrunk(command, files)
        if isinstance(argv, str):
            print(f"skipped: {command}  ({argv})")
            continue
        if needs is not None and needs in argv:
            continue  # reads what the broken line would have written
        known = next((reason for key, reason in KNOWN_BROKEN.items() if " ".join(argv).startswith(key)), None)
        start = time.perf_counter()
        try:
            code = main(argv)
        except Exception as exc:  # a traceback is a bug; only a listed one is tolerated
            if known is None:
                raise
            code, broken = 1, f"{known} ({type(exc).__name__}: {exc})"
        out = capsys.readouterr()
        seconds = time.perf_counter() - start
        TIMINGS.parent.mkdir(exist_ok=True)
        with open(TIMINGS, "a") as log:
            log.write(f"{title}\t{seconds:.1f}\tcnnkit {' '.join(argv)}\n")
        if code != 0 and known is not None:
            broken = broken or known
            needs = str(argv[argv.index("--out") + 1]) if "--out" in argv else None
            continue
        assert code == 0, f"README ({title}): {command}\n  ran as: cnnkit {' '.join(argv)}\n{out.err[-2000:]}"
        torch.set_num_threads(2)  # a command may have changed it (--threads)
    if broken:
        pytest.xfail(broken)
