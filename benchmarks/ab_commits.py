"""Is a recipe slower at one commit than at another? Times the same recipe's first epochs at two commits,
interleaved A/B/B/A... in one run, so that a shared, loaded machine slows both alike, and reports the ratio.

Each commit is checked out once as a detached git worktree under /tmp (reused on later runs); every
measurement is a fresh ``python -m cnnkit train`` with that worktree's source first on the path, a fixed thread
count and its own temporary run folder. Training seconds (what the trainer times: the epochs' training loops,
not loading or validation) come from the run's summary.json; CPU seconds are the whole process's user + system
time. On a machine shared with other jobs the wall-clock figures swing with the load, while CPU time (the work
done, on one thread) barely does: compare the CPU ratio there.

    python benchmarks/ab_commits.py d28018f HEAD --recipe recipes/lenet5_mnist.yaml --epochs 2 --rounds 3
    python benchmarks/ab_commits.py d28018f HEAD --record      # also append the ratio to results.jsonl
    git worktree remove /tmp/cnnkit-ab-d28018f                 # afterwards: the checkouts are registered in git
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def resolve(commit: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", commit], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()


def worktree(commit: str) -> Path:
    """A detached checkout of ``commit`` (made once, then reused)."""
    path = Path(tempfile.gettempdir()) / f"cnnkit-ab-{commit}"
    if not (path / "src" / "cnnkit").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO, check=True,
                       capture_output=True)
    return path


def train_seconds(source: Path, recipe: Path, epochs: int, threads: int, python: str) -> dict:
    """One training run of ``recipe`` with the cnnkit in ``source``; its summary's timing figures."""
    with tempfile.TemporaryDirectory(prefix="cnnkit-ab-run-") as out:
        env = {**os.environ, "PYTHONPATH": str(source / "src"), "OMP_NUM_THREADS": str(threads)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([python, "-m", "cnnkit", "train", "--recipe", str(recipe), "--epochs", str(epochs),
                        "--threads", str(threads), "--out", f"{out}/run"], env=env, check=True,
                       capture_output=True, text=True, cwd=source)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = json.loads(Path(out, "run", "summary.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"train_seconds": summary["train_seconds"], "wall_seconds": summary["wall_seconds"], "cpu_seconds": cpu,
            "images_per_second": summary["train_images_per_second"], "test_acc": summary["test_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="commit A (e.g. the commit that measured a figure)")
    parser.add_argument("head", nargs="?", default="HEAD", help="commit B (default HEAD)")
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes/lenet5_mnist.yaml")
    parser.add_argument("--epochs", type=int, default=2, help="first epochs to time (timing only, not accuracy)")
    parser.add_argument("--threads", type=int, default=1, help="fixed thread count for both commits")
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs, alternating which goes first")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/results.jsonl")
    args = parser.parse_args()

    commits = [resolve(args.base), resolve(args.head)]
    sources = {c: worktree(c) for c in commits}
    recipe = args.recipe.resolve()
    times: dict[str, list[dict]] = {c: [] for c in commits}
    for round_index in range(args.rounds):
        # ABBA...: the one measured second in a round goes first in the next, so a trend in load cancels.
        for commit in commits if round_index % 2 == 0 else commits[::-1]:
            result = train_seconds(sources[commit], recipe, args.epochs, args.threads, args.python)
            times[commit].append(result)
            print(f"round {round_index + 1} {commit}: {result['train_seconds']:.1f} s training, "
                  f"{result['cpu_seconds']:.1f} s CPU, "
                  f"{result['images_per_second']:.0f} img/s, {result['test_acc']:.2f} %", flush=True)
    a, b = commits
    variant = f"{args.recipe.name}, {args.epochs} epochs, {args.threads} threads, {b} against {a}"
    for key in ("train_seconds", "cpu_seconds"):
        median = {c: statistics.median(r[key] for r in times[c]) for c in commits}
        ratios = [rb[key] / ra[key] for ra, rb in zip(times[a], times[b])]
        print(f"median {key}: {a} {median[a]:.1f}, {b} {median[b]:.1f}; "
              f"{b}/{a} per round {', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f})")
        if args.record:
            record("ab_commits", variant, f"{key}_ratio", round(statistics.median(ratios), 3), baseline=a,
                   baseline_value=round(median[a], 1), head_value=round(median[b], 1), runs=args.rounds,
                   data="mnist", load_average=round(os.getloadavg()[0], 1))


if __name__ == "__main__":
    main()
