"""Training speed on a machine that is not idle: cnnkit's thread policy against torch's default, in the same run.

For each model, on an idle machine and beside 1 and 2 competing CPU-bound processes (each a torch matrix-product
loop with as many threads as this process may use, with libgomp's default wait policy: a second training job),
two fresh child processes measure training img/s (forward, backward, SGD step on random inputs of the model's
shape, as benchmarks/throughput.py does):

* ``cnnkit``: imports cnnkit first (its OpenMP spin default is set before torch loads) and runs the Trainer's
  thread policy (train/threads.py): the threads chosen at start and re-checked every 5 s while it trains; and
  sets the Trainer's malloc thresholds (train/heap.py);
* ``torch default``: imports torch first and keeps torch's default threads (one per core) and libgomp's wait.

The variants alternate within each load, so both see the same competitors. Goal (issue 28): beside one
competitor, at least 40 % of the idle throughput (a fair share is 50 %) and never below torch's default.

    python benchmarks/contention.py                       # ~5 minutes on 2 cores; records to results.jsonl
    python benchmarks/contention.py --models lenet5 --seconds 4 --demo 0 --no-record

It ends with the idle check of `make demo`'s kind of run (``cnnkit train lenet5 --data mnist --epochs 1``) with the
policy and as before it (``--threads`` = cores, libgomp's default spin), alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

SOURCE = Path(__file__).resolve().parent.parent / "src"
# model: (input shape, training batch)
MODELS = {"lenet5": ((1, 32, 32), 256), "mnist_fast_cnn": ((1, 28, 28), 256), "resnet20": ((3, 32, 32), 128)}
VARIANTS = ("cnnkit", "torch default")

# The child: one variant, one model, timed for `seconds` after a warm-up. cnnkit's variant imports cnnkit before
# torch (what `cnnkit train` and `import cnnkit` do) and runs the thread policy as the Trainer does.
CHILD = r"""
import json, sys, time
variant, name, shape = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
batch, seconds = int(sys.argv[4]), float(sys.argv[5])
if variant == "cnnkit":
    import cnnkit  # before torch: cnnkit's OpenMP spin default
    from cnnkit.train.threads import ThreadPolicy, affinity_cpus, read_cpu_times, training_flops_per_step
    since = read_cpu_times(affinity_cpus())  # as the Trainer does: the first interval starts as it is built
import torch
from torch.nn import functional as F
from cnnkit import create_model
model = create_model(name).to(memory_format=torch.channels_last)
x = torch.randn(batch, *shape).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (batch,))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
def step():
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
if variant == "cnnkit":  # as the Trainer does: built with the model, started when training starts
    from cnnkit.train.heap import keep_freed_memory
    policy = ThreadPolicy(training_flops_per_step(model, tuple(shape), batch), since=since,
                          log=lambda text: print(text, file=sys.stderr))
    keep_freed_memory()  # glibc's thresholds for the steps' recurring tensors (train/heap.py)
    step()
    print(policy.start(), file=sys.stderr)
for _ in range(3):
    step()
count, start, threads_used = 0, time.perf_counter(), []
while count < 3 or time.perf_counter() - start < seconds:
    step()
    count += 1
    if variant == "cnnkit":
        policy.on_batch_end(None, None)
    threads_used.append(torch.get_num_threads())
print(json.dumps({"img_s": count * batch / (time.perf_counter() - start), "threads": sorted(set(threads_used))}))
"""

COMPETITOR = r"""
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(384, 384)
while True:
    a = torch.tanh(a @ a)
"""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def child_environment(variant: str) -> dict:
    """The user's environment less any OpenMP settings, so each variant gets its own defaults."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "CNNKIT_SET_GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), env.get("PYTHONPATH")]))
    return env


def measure(variant: str, model: str, seconds: float) -> dict:
    shape, batch = MODELS[model]
    result = subprocess.run([sys.executable, "-c", CHILD, variant, model, json.dumps(shape), str(batch),
                             str(seconds)], env=child_environment(variant), capture_output=True, text=True,
                            timeout=seconds * 10 + 120)
    if result.returncode != 0:
        raise SystemExit(f"the {variant} child for {model} failed:\n{result.stderr}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["log"] = [line for line in result.stderr.splitlines() if line.startswith("threads")]
    return figures


def start_competitors(count: int, threads: int) -> list[subprocess.Popen]:
    processes = [subprocess.Popen([sys.executable, "-c", COMPETITOR, str(threads)], env=child_environment("x"))
                 for _ in range(count)]
    time.sleep(2.0)  # torch loaded and the loop running before we measure
    return processes


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait()


def run(models: list[str], loads: list[int], seconds: float, competitor_threads: int) -> dict:
    results = {}
    for load in loads:
        competitors = start_competitors(load, competitor_threads)
        try:
            for model in models:
                for variant in VARIANTS:
                    figures = measure(variant, model, seconds)
                    results[(model, load, variant)] = figures
                    print(f"{model:15s} {load} competing  {variant:13s} {figures['img_s']:9,.0f} img/s  threads "
                          f"{figures['threads']}  {' | '.join(figures['log'])}", flush=True)
        finally:
            stop(competitors)
    return results


def table(results: dict, models: list[str], loads: list[int]) -> list[str]:
    lines = ["| model | competing processes | cnnkit img/s (share of idle) | torch default img/s (share of idle) |",
             "| --- | --- | --- | --- |"]
    for model in models:
        idle = {variant: results.get((model, 0, variant), {}).get("img_s") for variant in VARIANTS}
        for load in loads:
            cells = []
            for variant in VARIANTS:
                value = results[(model, load, variant)]["img_s"]
                share = f" ({100 * value / idle[variant]:.0f} %)" if idle[variant] and load else ""
                cells.append(f"{value:,.0f}{share}")
            lines.append(f"| `{model}` | {load} | {cells[0]} | {cells[1]} |")
    return lines


def record_results(results: dict, models: list[str], loads: list[int], competitor_threads: int, seconds: float,
                   load_average: list[float]) -> None:
    for model in models:
        for load in loads:
            ours, theirs = results[(model, load, "cnnkit")], results[(model, load, "torch default")]
            idle = results.get((model, 0, "cnnkit"), {}).get("img_s")
            idle_torch = results.get((model, 0, "torch default"), {}).get("img_s")
            record("contention", f"{model}-{load}-competing", "images_per_second", round(ours["img_s"], 1),
                   baseline="torch default threads and wait policy", baseline_value=round(theirs["img_s"], 1),
                   ratio=round(ours["img_s"] / theirs["img_s"], 2), competing_processes=load,
                   competitor_threads=competitor_threads, threads=ours["threads"],
                   share_of_idle=round(ours["img_s"] / idle, 3) if idle and load else None,
                   baseline_share_of_idle=round(theirs["img_s"] / idle_torch, 3) if idle_torch and load else None,
                   batch=MODELS[model][1], seconds=seconds, runs=1, load_average=load_average,
                   load_average_after=[round(v, 2) for v in os.getloadavg()[:2]],
                   note="training img/s on random inputs, fp32, channels_last; each figure a fresh process")


def demo_images_per_second(policy: bool, out: Path) -> float:
    """One epoch of `cnnkit train lenet5 --data mnist` (the demo's model and data, its default recipe), with the
    thread policy, or as before it: torch's default threads (one per core) and libgomp's default spin."""
    env = child_environment("demo")
    command = [sys.executable, "-m", "cnnkit", "train", "lenet5", "--data", "mnist", "--epochs", "1", "--out",
               str(out), "--overwrite", "--no-progress"]
    if not policy:
        command += ["--threads", str(usable_cores())]
        env["GOMP_SPINCOUNT"] = "300000"  # libgomp's own default, which cnnkit leaves alone when set
    subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=900)
    return json.loads((out / "summary.json").read_text())["train_images_per_second"]


def demo(repeats: int, record_figures: bool) -> None:
    import tempfile

    figures = {True: [], False: []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            for policy in (True, False):  # alternating, so both see the same machine
                figures[policy].append(demo_images_per_second(policy, Path(folder) / "run"))
                print(f"demo epoch, {'thread policy' if policy else 'before (torch default)':22s} "
                      f"{figures[policy][-1]:9,.0f} img/s", flush=True)
    ours, before = max(figures[True]), max(figures[False])
    print(f"cnnkit train lenet5 --data mnist --epochs 1: {ours:,.0f} img/s with the policy, {before:,.0f} before "
          f"(best of {repeats}; ratio {ours / before:.2f})")
    if record_figures:
        record("contention", "demo-lenet5-mnist-idle", "images_per_second", ours, baseline="before the policy: "
               "torch default threads, libgomp default spin", baseline_value=before, ratio=round(ours / before, 2),
               runs=repeats, data="mnist", load_average=[round(v, 2) for v in os.getloadavg()[:2]],
               note="train_images_per_second of one epoch of the demo's model and data (default recipe), best of "
                    "the runs, alternating")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--loads", nargs="+", type=int, default=[0, 1, 2], help="competing processes")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed training per figure")
    parser.add_argument("--competitor-threads", type=int, default=usable_cores())
    parser.add_argument("--demo", type=int, default=2, metavar="N",
                        help="also N alternating idle epochs of `cnnkit train lenet5 --data mnist` (0: none)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    load_average = [round(v, 2) for v in os.getloadavg()[:2]]  # before; the figures also carry the one after
    print(f"load average before: {load_average}; {usable_cores()} usable cores; competitors use "
          f"{args.competitor_threads} threads each")
    results = run(args.models, args.loads, args.seconds, args.competitor_threads)
    print("\n".join(table(results, args.models, args.loads)))
    if not args.no_record:
        record_results(results, args.models, args.loads, args.competitor_threads, args.seconds, load_average)
    if args.demo:
        demo(args.demo, not args.no_record)


if __name__ == "__main__":
    main()
