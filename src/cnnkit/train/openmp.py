"""The OpenMP wait policy, which libgomp reads once, when torch loads it: ``import cnnkit`` calls
:func:`set_wait_policy_defaults` before anything imports torch, so this module must not import torch.

A thread that reaches the end of a parallel region first spins, waiting for the others, before it sleeps:
libgomp's default is 300,000 spins (milliseconds). On an idle machine that keeps the threads hot between the
hundreds of small operations of a training step; beside another CPU-bound process the spinning threads burn the
cores that the thread everyone waits for needs (LeNet-5, 2 threads on 2 busy cores: ~200 img/s spinning, ~1,700
with 10,000 spins), until the thread policy (train/threads.py) drops to one thread. 10,000 spins cost the demo's
idle epoch ~6 % in one pair of runs, so cnnkit sets 100,000 (about a millisecond), unless the user chose
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping

SPIN_COUNT = "100000"  # spins before a waiting OpenMP thread sleeps; libgomp's default is 300,000
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
MARKER = "CNNKIT_SET_GOMP_SPINCOUNT"  # so the policy can say whose setting is in force


def set_wait_policy_defaults(environ: MutableMapping[str, str] = os.environ,
                             loaded: Mapping[str, object] = sys.modules) -> dict[str, str]:
    """Set cnnkit's OpenMP wait default in ``environ`` (what libgomp reads when torch loads) and return what was
    set: nothing when the user chose a wait policy, or when torch (and with it libgomp) is already loaded."""
    if "torch" in loaded or any(name in environ for name in WAIT_VARIABLES):
        return {}
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    environ[MARKER] = SPIN_COUNT
    return {"GOMP_SPINCOUNT": SPIN_COUNT}


def describe_wait_policy(environ: Mapping[str, str] = os.environ) -> str:
    if environ.get(MARKER) and environ.get("GOMP_SPINCOUNT") == environ[MARKER]:
        return f"OpenMP threads spin {environ['GOMP_SPINCOUNT']} times before sleeping (cnnkit's default)"
    chosen = [f"{name}={environ[name]}" for name in WAIT_VARIABLES if name in environ]
    if chosen:
        return "OpenMP wait policy " + ", ".join(chosen) + " (yours)"
    return "libgomp's default wait policy (torch was loaded before cnnkit)"
