"""The retina bottleneck (Lindsey et al. 2019, ICLR, Figs. 2-3): does a narrow optic nerve make the retina's output
receptive fields centre-surround, and the first cortical (VVS) layer's oriented?

Protocol. The models are ``retina_net`` (cnnkit/models/retina.py): a two-layer 9x9 retina whose output has
N_BN channels, D_VVS 9x9 VVS convolutions of 32 channels, a 1024-unit dense layer. Each configuration of the grid
N_BN x D_VVS (default {1, 2, 4, 32} x {0, 2, 4}) is trained once with the one training loop on grey CIFAR-10
(the mean of R, G and B, as the authors' code does; here the lossy JPEG copy), on ``--train-images`` training
images drawn at random, for ``--epochs`` epochs: Adam (lr ``--lr``, one-cycle schedule, no weight decay), batch
64, random shifts of up to 3 px and horizontal flips (the paper's 10 % shifts and flips). The paper trains 20
epochs on all 50,000 images with RMSProp at 1e-4; the defaults here fit the whole grid into ~40 minutes on two
CPU cores (see below), so accuracies are lower than the paper's (~70 % at N_BN = 32 for deep VVS nets). Weights
start as in the authors' Keras code (Glorot uniform): with He's larger initial weights the fields of such a
short run are still dominated by the white noise of the initialisation (smoke run, N_BN = 1, D_VVS = 2, 3,000
images x 2 epochs: retina index 0.27 with He, 0.51 with Glorot, 0.29 at initialisation).

Per configuration it records: test accuracy on the full 10,000-image test set; the mean centre-surround index
(cnnkit.viz.center_surround_index: correlation of a receptive field with its best-fitting concentric difference
of Gaussians) over the channels of the retina's output (``retina.conv2``, N_BN units) and of the first VVS layer
(``vvs.conv1``, 32 units; absent when D_VVS = 0); the same two figures for the same network at its random
initialisation (the control: what the index gives for untrained 9x9 stacks); and the wall seconds.
Receptive fields are input gradients of each channel's centre unit, taken at the convolution's output (before
its ReLU), averaged over ``--probe-images`` random test images and cropped to the theoretical field (17x17 for
retina.conv2, 25x25 for vvs.conv1); a channel whose gradient is zero everywhere (a dead unit) gets no index and
is counted as dead. Why not at a blank grey image, as the authors do: a network at initialisation (zero biases)
reads a blank image with every unit exactly at its ReLU's kink, where the gradient is 0, so the control would
have no fields at all; and trained units that are silent on grey would drop out.
The paper's prediction: at N_BN = 1 the retina index is high and the VVS index low; at N_BN = 32 both are low.

Resumable: each finished configuration is written to ``--out``/results.json with its settings; a rerun with the
same settings skips it (its figures stay recorded once in benchmarks/results.jsonl). The receptive fields are
saved next to it; pictures (N_BN = 1 vs 32 at D_VVS = 2 by default) go to docs/images/retina/.

Budget (measured, bf16 autocast with channels_last, one thread, batch 64; bf16 trains ~1.5x and evaluates ~2x
faster than fp32 on this AVX-512-BF16 CPU): N_BN = 32, D_VVS = 4 trains 50 images/s, D_VVS = 2 nets 60-95/s,
D_VVS = 0 nets 100-900/s; the whole grid takes 0.136 s per training image and 0.024 s per test image on one
thread. 10,000 images x 2 epochs is then ~2,700 s of training plus ~250 s of testing on one core; with two
threads (~1.5-1.8x) 28-35 minutes.

Section 3's other experiments (Fig. 1D, Fig. 2D-F):
  --seeds S...  every configuration once per seed (its own random training subset and initial weights, results in
                --out/seedS/), then the mean and sample standard deviation over seeds of accuracy and indices are
                recorded (the paper averages ten networks per configuration).
  --lgn 1       an LGN layer of N_BN channels between retina and VVS; its fields are measured too (lgn.conv1).
  --untied      the retina's output layer locally connected (no weight sharing); with --tsne, the fields of the
                units of the central 16x16 positions (every channel; their 17x17 fields lie inside the image) are
                computed in closed form (RetinaNet.retina_unit_fields), normalised, embedded with scikit-learn's
                t-SNE and split by 2-means; the figure is how often that split agrees with the units' polarity
                (ON or OFF centre, the sign of the fitted difference of Gaussians at its centre). The locally
                connected layer costs ~10 s per batch of 64 on one busy core, so the untied run is small.

    python benchmarks/retina_bottleneck.py                                   # the grid, ~30-40 min on 2 cores
    python benchmarks/retina_bottleneck.py --configs 1x2 32x2 --epochs 5     # two configurations, longer
    python benchmarks/retina_bottleneck.py --configs 1x0 --train-images 500 --epochs 1 --no-record \\
        --out /tmp/retina-smoke --images /tmp/retina-smoke   # smoke run, ~1 min; figures mean nothing
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit.data import DatasetBundle, TensorImageDataset, load_dataset, random_subset  # noqa: E402
from cnnkit.data.augment import normalize  # noqa: E402
from cnnkit.data.datasets import channel_stats  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
from cnnkit.train import TrainConfig, Trainer  # noqa: E402
from cnnkit.viz import center_surround_index, fit_difference_of_gaussians, plot_receptive_fields  # noqa: E402
from cnnkit.viz import plot_embedding, receptive_fields, tsne  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "retina_bottleneck"
LAYERS = {"retina": "retina.conv2", "lgn": "lgn.conv1", "vvs1": "vvs.conv1"}


def grey_cifar10() -> DatasetBundle:
    """CIFAR-10 as one grey channel: the mean of R, G and B (the authors' np.mean(x, 3)), rounded to uint8."""
    bundle = load_dataset("cifar10")

    def grey(split):
        images = split.images.float().mean(1, keepdim=True).round().to(torch.uint8)
        return TensorImageDataset(images, split.labels, split.classes)

    train, test = grey(bundle.train), grey(bundle.test)
    mean, std = channel_stats(train.images)
    return DatasetBundle(f"{bundle.name}-grey", train, test, bundle.classes, mean, std, bundle.note)


def parse_config(text: str) -> tuple[int, int]:
    try:
        bottleneck, depth = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a configuration is N_BNxD_VVS, e.g. 1x2 or 32x4; got {text!r}") from None
    return bottleneck, depth


def config_key(bottleneck: int, depth: int) -> str:
    return f"{bottleneck}x{depth}"


def probe_images(data: DatasetBundle, count: int, seed: int) -> torch.Tensor:
    """``count`` test images drawn at random, normalised as the trainer does: the inputs the gradients average over."""
    return normalize(random_subset(data.test, count, seed + 1).images.float() / 255, data.mean, data.std)


def index_figures(model, layer: str, probes: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Receptive fields of ``layer`` (channels, h, w), and their mean centre-surround index."""
    if model.untied and layer == "retina.conv2":
        # The same gradient as receptive_fields' (tests/test_retina.py checks it), in closed form: the architecture
        # calculator does not follow the locally connected layer's custom product to crop the field.
        centre = model.image_size // 2
        fields = model.retina_unit_fields(probes, torch.tensor([[centre, centre]]))[0]
    else:
        fields = receptive_fields(model, layer, probes)[:, 0]
    index = center_surround_index(fields, fit_difference_of_gaussians(fields))
    alive = ~torch.isnan(index)
    return fields, {"index": float(index[alive].mean()) if alive.any() else float("nan"),
                    "per_channel": [round(float(v), 4) for v in index], "dead": int((~alive).sum())}


def model_layers(bottleneck: int, depth: int, args) -> dict[str, str]:
    """The layers whose fields are measured: the retina's output, the LGN layer if any, the first VVS layer."""
    # Untied: the retina only; a VVS field is a backward pass through the locally connected layer per channel,
    # minutes each on a busy machine, and the paper's untied figure is about the retina's cell types.
    present = {"retina": True, "lgn": args.lgn > 0, "vvs1": depth > 0 and not args.untied}
    return {name: layer for name, layer in LAYERS.items() if present[name]}


def untied_fields(model, probes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fields of the untied retina's output units at every position whose 17x17 field lies inside the image (the
    central 16x16 of the 32x32 map), all channels: (units, 17, 17), and the (row, column, channel) of each."""
    inner = torch.arange(8, 24)
    positions = torch.cartesian_prod(inner, inner)
    fields = model.retina_unit_fields(probes, positions)  # (P, N_BN, 17, 17)
    channels = torch.arange(fields.shape[1])
    where = torch.cat([positions.repeat_interleave(len(channels), 0), channels.repeat(len(positions))[:, None]], 1)
    return fields.flatten(0, 1), where


def run_config(bottleneck: int, depth: int, data: DatasetBundle, probes: torch.Tensor, args, folder: Path) -> dict:
    torch.manual_seed(args.seed)
    model = create_model("retina_net", bottleneck=bottleneck, vvs_depth=depth, lgn_layers=args.lgn,
                         untied=args.untied)
    layers = model_layers(bottleneck, depth, args)
    control = {name: index_figures(model, layer, probes)[1] for name, layer in layers.items()}
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam", lr=args.lr, weight_decay=0.0,
                         schedule="onecycle", augment={"crop": 3, "flip": True}, precision=args.precision,
                         channels_last=args.precision == "bf16", validate_every=0, num_threads=args.threads,
                         seed=args.seed, progress=False)
    run_folder = folder / f"n{bottleneck}_d{depth}" if args.keep_checkpoints else None
    start = time.perf_counter()
    summary = Trainer(model, data, config, out=run_folder, overwrite=True).fit()
    seconds = time.perf_counter() - start
    fields, figures = {}, {}
    for name, layer in layers.items():
        fields[name], figures[name] = index_figures(model, layer, probes)
    folder.mkdir(parents=True, exist_ok=True)
    if args.untied:
        fields["units"], fields["unit_positions"] = untied_fields(model, probes)
    torch.save({name: value.contiguous() for name, value in fields.items()},
               folder / f"receptive_fields_n{bottleneck}_d{depth}.pt")
    return {"bottleneck": bottleneck, "vvs_depth": depth, "test_acc": summary["test_acc"],
            "train_seconds": round(seconds, 1), "index": {k: v["index"] for k, v in figures.items()},
            "dead": {k: v["dead"] for k, v in figures.items()},
            "per_channel": {k: v["per_channel"] for k, v in figures.items()},
            "control_index": {k: v["index"] for k, v in control.items()}}


def settings(args) -> dict:
    """What a recorded configuration must share with this run to be reused."""
    shared = {"train_images": args.train_images, "epochs": args.epochs, "lr": args.lr, "precision": args.precision,
              "seed": args.seed, "probe_images": args.probe_images}
    # Only what differs from the defaults, so results.json files written before these options existed still match.
    extra = {"lgn": args.lgn, "untied": args.untied, "batch_size": args.batch_size, "test_images": args.test_images}
    return shared | {key: value for key, value in extra.items() if value != DEFAULTS[key]}


DEFAULTS = {"lgn": 0, "untied": False, "batch_size": 64, "test_images": 10_000}


def variant_name(bottleneck: int, depth: int, args) -> str:
    # The budget is part of the name: a longer run of a configuration is a different figure, not a newer one.
    name = f"N_BN={bottleneck} D_VVS={depth}"
    name += f", LGN {args.lgn}" if args.lgn else ""
    name += ", untied retina" if args.untied else ""
    name += f", {args.train_images // 1000}k images x {args.epochs} epochs"
    return name + (f", batch {args.batch_size}" if args.batch_size != DEFAULTS["batch_size"] else "")


def record_config(result: dict, args, data_name: str) -> None:
    variant = variant_name(result["bottleneck"], result["vvs_depth"], args)
    common = dict(data=data_name, runs=1, train_images=args.train_images, epochs=args.epochs,
                  precision=args.precision, threads=args.threads)
    record(BENCHMARK, variant, "test_accuracy", round(result["test_acc"], 2), **common)
    record(BENCHMARK, variant, "seconds", result["train_seconds"], **common)
    for name, layer in LAYERS.items():
        if name in result["index"]:
            record(BENCHMARK, variant, f"center_surround_{name}", round(result["index"][name], 4), layer=layer,
                   baseline="random initialisation", baseline_value=round(result["control_index"][name], 4),
                   dead_units=result["dead"][name], **common)


def table(results: dict, value, title: str) -> str:
    bottlenecks = sorted({r["bottleneck"] for r in results.values()})
    depths = sorted({r["vvs_depth"] for r in results.values()})
    lines = [title, "N_BN \\ D_VVS " + "".join(f"{d:>16}" for d in depths)]
    for bottleneck in bottlenecks:
        cells = []
        for depth in depths:
            result = results.get(config_key(bottleneck, depth))
            cells.append(f"{value(result):>16}" if result else f"{'-':>16}")
        lines.append(f"{bottleneck:>13} " + "".join(cells))
    return "\n".join(lines)


def format_index(result: dict, name: str) -> str:
    if name not in result["index"]:
        return "n/a"
    value, control = result["index"][name], result["control_index"][name]
    dead = result["dead"][name]
    text = f"{value:.2f} ({control:.2f})"
    return text + (f" {dead}d" if dead else "") if not math.isnan(value) else f"dead ({control:.2f})"


def draw_pictures(results: dict, folder: Path, images: Path, configs: list[tuple[int, int]], args) -> None:
    for bottleneck, depth in configs:
        key = config_key(bottleneck, depth)
        path = folder / f"receptive_fields_n{bottleneck}_d{depth}.pt"
        if key not in results or not path.exists():
            continue
        fields = torch.load(path, weights_only=True)
        suffix = f"_lgn{args.lgn}" if args.lgn else "_untied" if args.untied else ""
        for name, maps in fields.items():
            if name not in LAYERS:
                continue
            index = results[key]["per_channel"][name]
            labels = ["dead" if math.isnan(v) else f"{v:.2f}" for v in index]
            layer = LAYERS[name]
            png = images / f"n{bottleneck}_d{depth}{suffix}_{name}.png"
            plot_receptive_fields(maps, png, labels=labels,
                                  title=f"{layer} receptive fields, N_BN={bottleneck}, D_VVS={depth}"
                                        f"{suffix.replace('_', ', ')} (centre-surround index per unit)")
            print(f"wrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=parse_config,
                        default=[(n, d) for n in (1, 2, 4, 32) for d in (0, 2, 4)], metavar="N_BNxD_VVS",
                        help="configurations to train, e.g. 1x2 32x4 (default: {1,2,4,32} x {0,2,4})")
    parser.add_argument("--train-images", type=int, default=10_000, help="random training subset (50000: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-4,
                        help="Adam's peak learning rate (one-cycle); 1e-3 kills the N_BN = 1 bottleneck")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16",
                        help="bf16 autocast: ~1.5x faster training, ~2x faster testing on CPUs with AVX-512 BF16")
    parser.add_argument("--probe-images", type=int, default=32,
                        help="test images the receptive-field gradients are averaged over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="train every configuration once per seed (its own training subset and initial weights, "
                             "in --out/seedS/) and record the mean and standard deviation over them")
    parser.add_argument("--lgn", type=int, default=0, metavar="LAYERS",
                        help="LGN layers of N_BN channels between the retina and the VVS (the paper: 1)")
    parser.add_argument("--untied", action="store_true",
                        help="locally connected retinal output layer (no weight sharing across positions)")
    parser.add_argument("--tsne", action="store_true",
                        help="with --untied: t-SNE of the fields of the central 16x16 positions' units -> tsne.png")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-images", type=int, default=10_000,
                        help="random test subset for the accuracy (default: the full test set)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / BENCHMARK,
                        help="results.json and receptive fields (and run folders with --keep-checkpoints)")
    parser.add_argument("--images", type=Path, default=REPO / "docs" / "images" / "retina")
    parser.add_argument("--pictures", nargs="*", type=parse_config,
                        help="configurations whose receptive fields are drawn into --images (default 1x2 32x2; "
                             "none with --seeds, so a seed sweep does not redraw the README's pictures)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="write each network's run folder (~540 MB each: the dense layer has 33 M weights)")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl (smoke runs)")
    args = parser.parse_args()
    if args.pictures is None:
        args.pictures = [] if args.seeds is not None else [(1, 2), (32, 2)]
    torch.set_num_threads(args.threads)
    if args.untied and args.lgn:
        parser.error("--untied and --lgn are separate experiments of the paper; give one of them")
    seeds = args.seeds if args.seeds is not None else [args.seed]
    full = grey_cifar10()
    data_name = "cifar10-jpeg-grey" if full.note else "cifar10-grey"
    per_seed = []
    for seed in seeds:
        args.seed = seed
        # With --seeds each seed has its own folder; the figures recorded are the mean and spread over seeds.
        out = args.out / f"seed{seed}" if args.seeds is not None else args.out
        per_seed.append(train_seed(args, full, data_name, out, record_each=args.seeds is None and not args.no_record))
    if args.seeds is not None:
        summarise_seeds(per_seed, seeds, args, data_name)
    if args.untied and args.tsne:
        draw_tsne(per_seed[0], args.out / f"seed{seeds[0]}" if args.seeds is not None else args.out, args)


def train_seed(args, full: DatasetBundle, data_name: str, out: Path, record_each: bool) -> dict:
    """Trains (or finds in ``out``/results.json) every configuration with ``args.seed``: {key: result}."""
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    stored = json.loads(results_file.read_text()) if results_file.exists() else {}
    results = {key: entry["result"] for key, entry in stored.items() if entry["settings"] == settings(args)}
    train = random_subset(full.train, args.train_images, args.seed)  # the copy is sorted by class: never a prefix
    test = full.test if args.test_images >= len(full.test) else random_subset(full.test, args.test_images, 12345)
    data = DatasetBundle(full.name, train, test, full.classes, full.mean, full.std, full.note)
    probes = probe_images(data, args.probe_images, args.seed)
    print(f"{data.describe()}; {args.epochs} epochs, {args.precision}, {args.threads} threads, seed {args.seed}")

    for bottleneck, depth in args.configs:
        key = config_key(bottleneck, depth)
        if key in results:
            print(f"N_BN={bottleneck} D_VVS={depth}: recorded in {results_file}, skipped")
            continue
        start = time.perf_counter()
        result = run_config(bottleneck, depth, data, probes, args, out)
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        results[key] = result
        stored[key] = {"settings": settings(args), "result": result}
        results_file.write_text(json.dumps(stored, indent=1))
        print(f"N_BN={bottleneck} D_VVS={depth}: test accuracy {result['test_acc']:.2f} %, centre-surround index "
              + ", ".join(f"{name} {format_index(result, name)}" for name in result["index"])
              + f" (random init in brackets); {result['wall_seconds']:.0f} s", flush=True)
        if record_each:
            record_config(result, args, data_name)

    print()
    print(table(results, lambda r: f"{r['test_acc']:.1f}", "test accuracy (%), full test set"))
    for name, layer in LAYERS.items():
        if any(name in r["index"] for r in results.values()):
            print()
            print(table(results, lambda r, name=name: format_index(r, name),
                        f"centre-surround index of {layer} (random init in brackets; Nd: N dead units)"))
    print()
    print(table(results, lambda r: f"{r['wall_seconds']:.0f}", "wall seconds (training, testing, fields)"))
    draw_pictures(results, out, args.images, args.pictures, args)
    return results


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise_seeds(per_seed: list[dict], seeds: list[int], args, data_name: str) -> None:
    """Mean and sample standard deviation over seeds of each configuration's accuracy and indices; recorded."""
    print(f"\nmean +- std over seeds {seeds} (sample standard deviation)")
    for bottleneck, depth in args.configs:
        key = config_key(bottleneck, depth)
        runs = [results[key] for results in per_seed if key in results]
        variant = variant_name(bottleneck, depth, args) + f", {len(runs)} seeds"
        common = dict(data=data_name, runs=len(runs), seeds=seeds, train_images=args.train_images,
                      epochs=args.epochs, precision=args.precision, threads=args.threads)
        figures = {"test_accuracy": [r["test_acc"] for r in runs],
                   "seconds": [r["train_seconds"] for r in runs]}
        for name in LAYERS:
            if all(name in r["index"] and not math.isnan(r["index"][name]) for r in runs):
                figures[f"center_surround_{name}"] = [r["index"][name] for r in runs]
                figures[f"center_surround_{name}_init"] = [r["control_index"][name] for r in runs]
        line = []
        for metric, values in figures.items():
            mean, std = mean_std(values)
            digits = 2 if metric in ("test_accuracy", "seconds") else 4
            line.append(f"{metric} {mean:.{digits}f} +- {std:.{digits}f}")
            if not args.no_record and not metric.endswith("_init"):
                extra = {}
                if metric.startswith("center_surround_"):
                    init_mean, init_std = mean_std(figures[metric + "_init"])
                    extra = dict(layer=LAYERS[metric.removeprefix("center_surround_")],
                                 baseline="random initialisation", baseline_value=round(init_mean, 4),
                                 baseline_std=round(init_std, 4))
                record(BENCHMARK, variant, metric, round(mean, digits), std=round(std, digits),
                       per_seed=[round(v, digits) for v in values], **extra, **common)
        print(f"{variant}: " + "; ".join(line))


def polarity(fields: torch.Tensor) -> torch.Tensor:
    """ON (1) or OFF (0) centre of each (N, H, W) field: the sign of the field, smoothed over 3x3 pixels, where it
    is largest in magnitude (a centre-surround field's centre is its strongest part). A difference-of-Gaussians
    fit per unit would give the same sign but takes minutes for a thousand fields on a busy machine."""
    smooth = torch.nn.functional.avg_pool2d(fields[:, None], 3, stride=1, padding=1)[:, 0].flatten(1)
    peak = smooth.gather(1, smooth.abs().argmax(1, keepdim=True))[:, 0]
    return (peak > 0).long()


def draw_tsne(results: dict, folder: Path, args) -> None:
    """t-SNE of the untied retina's unit fields (Fig. 2F): do they fall into ON and OFF clusters?"""
    from sklearn.cluster import KMeans

    for bottleneck, depth in args.configs:
        path = folder / f"receptive_fields_n{bottleneck}_d{depth}.pt"
        if not path.exists():
            continue
        saved = torch.load(path, weights_only=True)
        fields = saved["units"].float()
        flat = fields.flatten(1)
        alive = flat.abs().amax(1) > 0
        fields, flat, where = fields[alive], flat[alive], saved["unit_positions"][alive]
        # Each field to zero mean and unit norm: t-SNE then compares shapes, not how strongly a unit is driven.
        flat = flat - flat.mean(1, keepdim=True)
        flat = flat / flat.norm(dim=1, keepdim=True)
        on = polarity(fields)
        coordinates = tsne(flat.numpy(), perplexity=30.0, seed=0, progress=True)
        clusters = KMeans(2, n_init=10, random_state=0).fit_predict(coordinates)
        agreement = float((torch.as_tensor(clusters) == on).float().mean())
        agreement = max(agreement, 1 - agreement)  # the cluster labels are arbitrary
        title = (f"t-SNE of {len(flat)} retinal output fields, untied retina N_BN={bottleneck} D_VVS={depth}: "
                 f"2-means agrees with ON/OFF for {100 * agreement:.1f}%")
        png = plot_embedding(coordinates, on.numpy(), args.images / "tsne.png", ["OFF-centre", "ON-centre"], title)
        print(f"wrote {png}")
        examples = torch.cat([fields[on == 1][:8], fields[on == 0][:8]])
        index = center_surround_index(examples)  # the fit on these 16 only: it is the slow part
        labels = [f"{'ON' if k < len(fields[on == 1][:8]) else 'OFF'} {v:.2f}" for k, v in enumerate(index)]
        plot_receptive_fields(examples, args.images / "untied_fields.png", labels=labels, columns=8,
                              title="untied retina: ON- and OFF-centre units (centre-surround index)")
        figures = {"tsne_polarity_agreement": round(100 * agreement, 1),
                   "on_centre_fraction": round(100 * float(on.float().mean()), 1),
                   "example_center_surround_index": round(float(index[~torch.isnan(index)].mean()), 4)}
        print(f"{len(flat)} units ({int((~alive).sum())} dead) of channels/positions "
              f"{where[:, 2].unique().tolist()}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        if not args.no_record:
            key = config_key(bottleneck, depth)
            variant = variant_name(bottleneck, depth, args)
            for metric, value in figures.items():
                record(BENCHMARK, variant, metric, value, units=len(flat), dead_units=int((~alive).sum()),
                       test_accuracy=round(results[key]["test_acc"], 2), seed=args.seed,
                       train_images=args.train_images, epochs=args.epochs, threads=args.threads)

if __name__ == "__main__":
    main()
