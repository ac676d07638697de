"""What each :class:`~cnnkit.train.TrainConfig` field means, in one line: the help of its ``cnnkit train`` flag
and the reference for recipe authors. A field without a line here fails tests/test_cli_train_flags.py."""

TRAIN_OPTION_HELP = {
    "epochs": "epochs to train",
    "batch_size": "images per batch (per process under data-parallel training)",
    "eval_batch_size": "images per evaluation batch",
    "optimizer": "optimiser: sgd, adam or adamw",
    "lr": "(peak) learning rate",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum (SGD)",
    "weight_decay": "L2 weight decay",
    "betas": "Adam's beta1,beta2",
    "schedule": "learning-rate schedule: constant, step (x gamma at the milestones), plateau, cosine or one-cycle",
    "milestones": "epochs at which the step schedule multiplies the learning rate by gamma, e.g. 30,60",
    "gamma": "the step schedule's factor at each milestone",
    "warmup_epochs": "linear learning-rate warm-up (cosine schedule)",
    "onecycle_pct": "share of the one-cycle schedule spent raising the learning rate",
    "plateau_metric": "the metric the plateau schedule and early stopping watch (val_loss, val_acc, ...)",
    "plateau_patience": "epochs without improvement before the plateau schedule lowers the learning rate",
    "plateau_factor": "the plateau schedule's factor on the learning rate",
    "label_smoothing": "label smoothing epsilon, e.g. 0.1",
    "mixup": "mixup with weights ~ Beta(ALPHA, ALPHA), e.g. 0.2 (0: off)",
    "cutmix": "CutMix with box areas ~ Beta(ALPHA, ALPHA), e.g. 1 (0: off; with mixup: one of them per batch)",
    "ema": "validate and keep a moving average of the weights, e.g. 0.998 (~ the last 500 steps; 0: off)",
    "grad_clip": "clip the gradient norm to this value",
    "accumulate": "batches per optimiser step (gradient accumulation)",
    "scale_lr": "linear scaling rule: lr x global batch / reference batch, with warm-up",
    "reference_batch": "the batch the learning rate was tuned for (default: the batch size)",
    "sync_batchnorm": "BatchNorm statistics over the global batch of all processes",
    "precision": "fp32; bf16 autocast (faster on recent CPUs and GPUs); fp16 autocast with loss scaling (GPUs "
                 "without bf16; on a CPU it runs but is far slower than fp32)",
    "channels_last": "channels_last memory layout (faster convolutions)",
    "compile": "torch.compile the model",
    "seed": "random seed: initial weights, data order, augmentation",
    "val_split": "fraction of the training set held out for validation (0: validate on the test set)",
    "early_stopping": "stop after EPOCHS epochs without improvement of the watched metric",
    "augment": ("training augmentation as a YAML mapping, e.g. '{crop: 4, flip: true, cutout: 8}', or AlexNet's "
                "'{resized_crop: [0.08, 1], flip: true, lighting: 0.1}'"),
    "validate_every": "validate after every k-th epoch and the last (0: the last only)",
    "tta_flip": "test-time augmentation: evaluate each image and its mirror image, averaging the logits",
    "tta_shift": "test-time augmentation: also each view moved by this many pixels up, down, left and right",
    "tta_sizes": "test-time augmentation: also those views resized to each of these sizes, e.g. 28,36",
    "tta_crop": "ten-crop testing (AlexNet): average the softmax over crops of SIZE px at the four corners and the "
                "centre and their mirror images; replaces the other test-time views",
    "input_size": "resize or pad images to this side (default: native size, or the model's when too small)",
    "resize": "auto: pad smaller images (LeNet on MNIST); interpolate: always resize (pretrained nets)",
    "device": "auto (a CUDA GPU, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps",
    "num_threads": "CPU threads for PyTorch (default: the cores other processes leave free, re-checked while "
                   "training, at most what the model's size is worth)",
    "num_workers": "image-folder decoding processes",
    "lr_multipliers": "learning-rate factor per parameter-name prefix as a YAML mapping, e.g. '{features.: 0.1}'",
    "progress": "a progress bar (--no-progress: per-epoch lines only)",
    "tensorboard": "also write TensorBoard logs to RUN_DIR/tensorboard: per-epoch metrics and learning rate, the "
                   "curves and first-layer filters at the end (needs: pip install 'cnnkit[tensorboard]')",
    "tensorboard_steps": "with --tensorboard: also log the batch loss and learning rate every STEPS steps",
    "record_gradients": ("record each layer's weight-gradient norm every STEPS optimiser steps (and the first) into "
                         "gradients.json, for `cnnkit viz gradients` (0: off)"),
}
