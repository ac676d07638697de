"""Data-parallel training on PyTorch's own engine: torchrun starts the processes, ``torch.distributed`` joins
them, ``DistributedDataParallel`` averages the gradients. cnnkit adds only what the one training loop needs
around that: joining the group from torchrun's environment, a synchronised BatchNorm that also runs on CPU,
sums all-reduced for metrics, and the ``cnnkit train --nproc N`` launcher.

    torchrun --nproc-per-node 2 -m cnnkit train lenet5 --data mnist     # what --nproc 2 runs
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import torch
import torch.distributed as dist
from torch import nn

from ..errors import CnnkitError
from .threads import affinity_cpus

# torchrun exports these to every worker; their presence is how a process knows it was launched by it.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def restart_count() -> int:
    """How many times torchrun has restarted this worker group (``--max-restarts``); 0 on the first attempt."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world_size() -> tuple[int, int]:
    if is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def mps_is_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def available_device(world_size: int = 1) -> str:
    """What ``--device auto`` picks: a CUDA GPU, else Apple's Metal GPU (MPS), else the CPU. Data-parallel
    processes have no collective backend on MPS, so several of them take the CPU (gloo) there."""
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if world_size == 1 and mps_is_available() else "cpu"


def device_for_this_process(name: str, world_size: int) -> torch.device:
    """The device a process trains on. One process per GPU: under DDP ``auto``/``cuda`` mean the GPU of this
    process's local rank, so N processes on a node use GPUs 0..N-1."""
    try:
        device = torch.device(available_device(world_size) if name == "auto" else name)
    except RuntimeError:
        raise CnnkitError(f"--device {name!r} names no device: use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "mps" and not mps_is_available():
        raise CnnkitError(f"--device {name} was asked for, but this machine has no Apple MPS GPU (or this torch build "
                          "lacks MPS support); use --device cpu, or auto.")
    if device.type == "mps" and world_size > 1:
        raise CnnkitError("data-parallel training has no backend for Apple's MPS GPU: train in one process on "
                          "--device mps, or in several on --device cpu.")
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise CnnkitError(f"--device {name} was asked for, but this machine has no CUDA GPU; use --device cpu.")
    if world_size == 1:
        return device
    if device.index is not None:
        raise CnnkitError(f"--device {name} pins every process to one GPU; with several processes each one takes "
                          "the GPU of its local rank: pass --device cuda (or auto).")
    gpus, index = torch.cuda.device_count(), local_rank()
    if index >= gpus:
        raise CnnkitError(f"local rank {index} has no GPU of its own: this node has {gpus} GPU(s); start at most "
                          f"{gpus} processes per node (--nproc / --nproc-per-node {gpus}).")
    return torch.device("cuda", index)


def init_from_environment(device_name: str = "auto") -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (NCCL for GPUs, gloo for CPUs) and
    return (rank, world_size); (0, 1) when the process was not launched by torchrun. Idempotent."""
    if is_initialized():
        return rank_and_world_size()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    if not dist.is_available():
        raise CnnkitError("This torch build has no torch.distributed; install a build with distributed support.")
    device = device_for_this_process(device_name, int(os.environ["WORLD_SIZE"]))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    # torchrun's workers share its store across restarts, and a restarted group would read the addresses the
    # dead workers published there (gloo: "connectFullMesh failed ... Connection refused"; pytorch#167288).
    # Each attempt therefore keeps its keys under a prefix of its own.
    store, rank, world_size = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"cnnkit/attempt-{restart_count()}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            device_id=device if device.type == "cuda" else None)
    return rank_and_world_size()


def shutdown() -> None:
    """Leave the process group. DDP wrappers no longer referenced are collected first: a DDP reducer that
    outlives its group can abort the process at exit ("terminate called without an active exception")."""
    if is_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor of counters over every rank (in place and returned); a no-op without a process group."""
    if is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on one: a decision (stop training) that all ranks must share."""
    value = torch.tensor([int(flag)], device=device)
    return bool(all_reduce_sum(value).item())


# ------------------------------------------------------------------------------------------ SyncBatchNorm
class SynchronizedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics are computed over the global batch of all ranks.

    torch's ``nn.SyncBatchNorm`` runs on GPUs only; this one is written with a differentiable all-reduce, so
    it runs on gloo and CPUs too, and autograd derives the backward pass that carries the statistics'
    gradient across ranks. On GPUs cnnkit uses torch's fused
    version. Outside training (eval mode, or no process group) it is plain BatchNorm. Its parameters and
    buffers are BatchNorm's, so checkpoints load into the unconverted model.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        synchronise = self.training and is_initialized() and dist.get_world_size() > 1
        if not synchronise:
            return super().forward(input)
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.momentum is None and self.num_batches_tracked is not None:
            momentum = 1.0 / float(self.num_batches_tracked)
        dims = [d for d in range(input.dim()) if d != 1]
        x = input.float()
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=x.dtype)
        # One all-reduce for the count, sum and sum of squares together; the two-pass variance below keeps
        # the precision of BatchNorm's own (E[x^2] - E[x]^2 alone loses digits on large activations).
        moments = _AllReduceSum.apply(torch.cat([count, x.sum(dims)]))
        total, mean = moments[0], moments[1:] / moments[0]
        shape = [1, -1] + [1] * (input.dim() - 2)
        centred = x - mean.view(shape)
        variance = _AllReduceSum.apply((centred * centred).sum(dims)) / total
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                unbiased = variance * total / (total - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        out = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of a sum of every rank's values is every rank's gradient
    summed."""

    @staticmethod
    def forward(ctx, values: torch.Tensor) -> torch.Tensor:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def convert_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer made synchronised: torch's SyncBatchNorm on GPUs, :class:`SynchronizedBatchNorm`
    elsewhere. The layers keep their Parameter objects, so build the optimiser after converting."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    converted = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SynchronizedBatchNorm):
        converted = SynchronizedBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                          module.track_running_stats)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
    for name, child in module.named_children():
        converted.add_module(name, _convert_cpu(child))
    return converted


# ------------------------------------------------------------------------------------------------ launcher
def usable_cpu_cores() -> int:
    return len(affinity_cpus())


def check_process_count(nproc: int, device_name: str) -> str:
    """Refuse a process count this node cannot run; return the device kind the processes will use."""
    if nproc < 1:
        raise CnnkitError(f"--nproc must be at least 1, not {nproc}.")
    wants_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if wants_cuda:
        if not torch.cuda.is_available():
            raise CnnkitError(f"--device {device_name} was asked for, but this machine has no CUDA GPU; use "
                              "--device cpu (gloo) or run on a GPU machine.")
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise CnnkitError(f"--nproc {nproc} asks for one process per GPU, but this node has {gpus} GPU(s); "
                              f"use --nproc {gpus} or fewer.")
        return "cuda"
    cores = usable_cpu_cores()
    if nproc > cores:
        raise CnnkitError(f"--nproc {nproc} asks for {nproc} CPU processes, but this machine lets this job use "
                          f"{cores} core(s); use --nproc {cores} or fewer (each process needs a core of its own).")
    return "cpu"


def torchrun_command(nproc: int, cnnkit_args: list[str], nnodes: str | None = None, node_rank: int | None = None,
                     rdzv_endpoint: str | None = None, rdzv_id: str = "cnnkit", max_restarts: int = 0) -> list[str]:
    """The torchrun command line ``cnnkit train --nproc N`` stands for. One node: a standalone rendezvous on a
    free local port. Several: a static rendezvous at ``--rdzv-endpoint`` when ``--node-rank`` is given,
    otherwise torch's elastic c10d rendezvous there (ranks are then assigned as nodes join)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    if rdzv_endpoint is None:
        if nnodes not in (None, "1"):
            raise CnnkitError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (a node every node can reach).")
        command.append("--standalone")
    else:
        command += ["--nnodes", nnodes or "1", "--rdzv-endpoint", rdzv_endpoint]
        if node_rank is not None:
            command += ["--node-rank", str(node_rank), "--rdzv-backend", "static"]
        else:
            command += ["--rdzv-backend", "c10d", "--rdzv-id", rdzv_id]
    command += ["--max-restarts", str(max_restarts), "-m", "cnnkit", *cnnkit_args]
    return command


def launch(command: list[str], threads_per_process: int | None) -> int:
    """Run torchrun and wait for it. CPU processes share the cores instead of each taking all of them."""
    env = dict(os.environ)
    if threads_per_process and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(threads_per_process)
    return subprocess.call(command, env=env)
