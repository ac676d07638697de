"""Where a recipe's time goes: one short run of it under torch.profiler, the top operators by self CPU time.

The run is the recipe itself through the Trainer (so data preparation, augmentation, the optimiser and the
final evaluation are in the picture), shortened to ``--images`` training images and one epoch.

    python benchmarks/profile_recipe.py recipes/fashion_fast.yaml
    python benchmarks/profile_recipe.py recipes/cifar10_fast.yaml --images 4096 --top 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    from cnnkit import TrainConfig, Trainer, create_model, load_dataset
    from cnnkit.train.recipe import load_recipe
    from cnnkit.data import random_subset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--images", type=int, default=10240, help="training images in the profiled epoch")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    options = load_recipe(args.recipe)
    name, data = options.pop("model"), options.pop("data")
    model_args = options.pop("model_args", {})
    bundle = load_dataset(data)
    bundle = type(bundle)(bundle.name, random_subset(bundle.train, args.images), random_subset(bundle.test, 2000),
                          bundle.classes, bundle.mean, bundle.std, bundle.note)
    options.update(epochs=1, progress=False)
    model = create_model(name, num_classes=len(bundle.classes), in_channels=bundle.image_shape[0], **model_args)
    trainer = Trainer(model, bundle, TrainConfig.from_dict(options))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.fit()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))


if __name__ == "__main__":
    main()
