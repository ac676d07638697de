"""The learned codec's entropy coder: constriction's ANS coder (what .cnk version 2 uses) against the pure-Python
rANS coder cnnkit wrote itself for version 1 (kept here, below, only as the baseline), on the same symbols.

    CNNKIT_DATA=../shared/datasets python benchmarks/entropy_coder.py [--images 24] [--repeats 3]

Trains (once; the run folder runs/compress-entropy-bench is reused) compress_factorized with N = 64, M = 96,
lambda = 0.01 on --train-images CIFAR-10 training images for one epoch, then codes the real rounded latents of
the Kodak images (768x512: 96 x 32 x 48 = 147,456 symbols each) with both coders: encode and decode time (best
of --repeats, one thread), the payload bytes, and the ideal: the sum of -log2 p of the symbols under the 16-bit
coding tables both coders are given (and under the model's own likelihoods). Also the mean payload of 512
CIFAR-10 test images (32x32, 96 x 2 x 2 symbols), where a coder's fixed bytes per file show most.
Both coders must decode every latent exactly; the script stops otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnkit import TrainConfig, Trainer, create_model, load_dataset
from cnnkit.compress import CompressionTask, decode_latent, encode_latent
from cnnkit.compress.entropy import PRECISION
from cnnkit.compress.model import pad_to_multiple
from cnnkit.runs import load_model_checkpoint

from record import record

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "runs" / "compress-entropy-bench"
KODAK = Path(os.environ.get("CNNKIT_DATA", REPO.parent / "shared" / "datasets")) / "kodak24"

# ------------------------------------------------- the baseline: cnnkit's own rANS (src/cnnkit/compress/rans.py)
STATE_LOW = 1 << 23
_RENORM = (STATE_LOW >> PRECISION) << 8


def rans_encode(starts, freqs) -> bytes:
    state, out = STATE_LOW, bytearray()
    for start, freq in zip(reversed(starts), reversed(freqs)):
        limit = _RENORM * freq
        while state >= limit:
            out.append(state & 0xFF)
            state >>= 8
        state = (state // freq << PRECISION) + state % freq + start
    out += state.to_bytes(4, "little")
    out.reverse()
    return bytes(out)


def rans_encode_latent(values: np.ndarray, tables) -> bytes:
    """Version 1's symbols (no value of these latents needs the escape, checked by the caller)."""
    starts, freqs = [], []
    for channel, cdf in enumerate(tables.cdfs):
        for value in values[channel].tolist():
            symbol = value - tables.offsets[channel]
            starts.append(cdf[symbol])
            freqs.append(cdf[symbol + 1] - cdf[symbol])
    return rans_encode(starts, freqs)


def rans_decode_latent(data: bytes, shape, tables) -> np.ndarray:
    from bisect import bisect_right

    state, position, out = int.from_bytes(data[:4], "big"), 4, []
    for channel, cdf in enumerate(tables.cdfs):
        for _ in range(shape[1]):
            slot = state & ((1 << PRECISION) - 1)
            symbol = bisect_right(cdf, slot) - 1
            state = (cdf[symbol + 1] - cdf[symbol]) * (state >> PRECISION) + slot - cdf[symbol]
            while state < STATE_LOW:
                state, position = (state << 8) | data[position], position + 1
            out.append(symbol + tables.offsets[channel])
    assert position == len(data) and state == STATE_LOW
    return np.array(out, dtype=np.int64).reshape(shape)


# --------------------------------------------------------------------------------------------- measuring
def trained_model(train_images: int):
    if not (RUN / "checkpoint.json").exists():
        bundle = load_dataset("cifar10")
        bundle = dataclasses.replace(bundle, train=bundle.train.subset(range(train_images)),
                                     test=bundle.test.subset(range(256)))
        torch.manual_seed(0)
        model = create_model("compress_factorized", channels=64, latent_channels=96)
        config = TrainConfig(epochs=1, batch_size=16, optimizer="adam", lr=3e-3, weight_decay=0.0, grad_clip=1.0,
                             schedule="onecycle", eval_batch_size=256, progress=False)
        Trainer(model, bundle, config, out=RUN, task=CompressionTask(0.01), overwrite=True).fit()
    model, _ = load_model_checkpoint(RUN)
    return model.eval()


def best_time(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def ideal_bits(values: np.ndarray, tables) -> float:
    bits = 0.0
    for channel, cdf in enumerate(tables.cdfs):
        cdf = np.asarray(cdf)
        symbols = values[channel] - tables.offsets[channel]
        assert ((symbols >= 0) & (symbols < len(cdf) - 2)).all(), "a value needs the escape; widen the baseline"
        bits -= np.log2((cdf[symbols + 1] - cdf[symbols]) / (1 << PRECISION)).sum()
    return float(bits)


def code_both(latent: torch.Tensor, tables, repeats: int) -> dict:
    values = latent.to(torch.int64).flatten(1).numpy()
    own_encode, own = best_time(lambda: rans_encode_latent(values, tables), repeats)
    own_decode, back = best_time(lambda: rans_decode_latent(own, values.shape, tables), repeats)
    assert np.array_equal(back, values)
    lib_encode, lib = best_time(lambda: encode_latent(latent, tables), repeats)
    lib_decode, back = best_time(lambda: decode_latent(lib, tuple(latent.shape), tables), repeats)
    assert torch.equal(back, latent)
    return {"symbols": values.size, "ideal_bits": ideal_bits(values, tables), "own_bytes": len(own),
            "lib_bytes": len(lib), "own_s": own_encode + own_decode, "lib_s": lib_encode + lib_decode,
            "own_encode_s": own_encode, "own_decode_s": own_decode, "lib_encode_s": lib_encode,
            "lib_decode_s": lib_decode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="Kodak images (of 24)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = trained_model(args.train_images)
    tables = model.entropy_model.coding_tables()
    rows, model_bits = [], 0.0
    for path in sorted(KODAK.glob("*.png"))[:args.images]:
        image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
        with torch.no_grad():
            latent = model.quantized_latent(pad_to_multiple(image.float()[None] / 255))[0]
            model_bits -= torch.log2(model.entropy_model.likelihood(latent[None])).sum().item()
        rows.append(code_both(latent, tables, args.repeats))
        print(f"{path.name}: {rows[-1]['symbols']} symbols, ideal {rows[-1]['ideal_bits'] / 8:.0f} B, own "
              f"{rows[-1]['own_bytes']} B {rows[-1]['own_s']:.3f} s, constriction {rows[-1]['lib_bytes']} B "
              f"{rows[-1]['lib_s']:.4f} s")
    total = {key: sum(row[key] for row in rows) for key in rows[0]}
    cifar = load_dataset("cifar10").test.subset(range(512)).images
    with torch.no_grad():
        small = [model.quantized_latent(pad_to_multiple(image.float()[None] / 255))[0] for image in cifar]
    small_rows = [code_both(latent, tables, 1) for latent in small]
    small_total = {key: sum(row[key] for row in small_rows) for key in small_rows[0]}
    load = os.getloadavg()[0]
    print(f"\n{len(rows)} Kodak latents, {total['symbols']:,} symbols; ideal under the tables "
          f"{total['ideal_bits'] / 8:,.0f} B (model likelihoods {model_bits / 8:,.0f}); load {load:.1f}")
    common = dict(data="kodak24 latents, compress_factorized N=64 M=96 lambda=0.01", images=len(rows),
                  symbols=total["symbols"], threads=1, repeats=args.repeats, load_average=round(load, 1),
                  train_images=args.train_images)
    for name, prefix in (("cnnkit pure-Python rANS (.cnk v1)", "own"), ("constriction 0.5 AnsCoder (.cnk v2)", "lib")):
        per_image = total[f"{prefix}_s"] / len(rows)
        overhead = 8 * total[f"{prefix}_bytes"] / total["ideal_bits"] - 1
        small_bytes = small_total[f"{prefix}_bytes"] / len(small_rows)
        print(f"{name:<38} encode+decode {per_image:.4f} s per image ({total[f'{prefix}_encode_s'] / len(rows):.4f}"
              f" + {total[f'{prefix}_decode_s'] / len(rows):.4f}), {total[f'{prefix}_bytes']:,} bytes "
              f"(+{100 * overhead:.3f} % over ideal); 32x32 CIFAR payload {small_bytes:.2f} bytes "
              f"(ideal {small_total['ideal_bits'] / 8 / len(small_rows):.2f})")
        record("entropy_coder", name, "encode_decode_seconds_per_image", round(per_image, 4),
               encode_seconds=round(total[f"{prefix}_encode_s"] / len(rows), 4),
               decode_seconds=round(total[f"{prefix}_decode_s"] / len(rows), 4), **common)
        record("entropy_coder", name, "bytes_over_ideal_percent", round(100 * overhead, 4),
               bytes=total[f"{prefix}_bytes"], ideal_bytes=round(total["ideal_bits"] / 8, 1),
               model_ideal_bytes=round(model_bits / 8, 1), **common)
        record("entropy_coder", name, "cifar32_payload_bytes", round(small_bytes, 2),
               ideal_bytes=round(small_total["ideal_bits"] / 8 / len(small_rows), 2), images_32=len(small_rows),
               **{k: v for k, v in common.items() if k not in ("images", "symbols")})


if __name__ == "__main__":
    main()
