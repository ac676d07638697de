"""Property-based fuzzing of every parser of untrusted bytes (issue 24): IDX, CIFAR batches (binary, the
restricted python-pickle reader, tar.gz releases), image files of every mode and size, safetensors files and
the ``.cnk`` bitstream. Each input must end in a result that matches what it declares, or a CnnkitError, never
another exception, and the process's peak memory must stay bounded. The strategies and properties live in
fuzz_properties.py; benchmarks/fuzz.py runs them for longer and counts what it tried."""

import resource

import pytest
import torch
from fuzz_properties import PARSERS
from hypothesis import HealthCheck, given, settings

EXAMPLES = {"idx": 300, "cifar_binary": 100, "cifar_python": 150, "cifar_archive": 60, "image": 300,
            "safetensors": 200, "cnk": 120}
MEMORY_BOUND_MB = 1024  # growth of the process's peak resident memory over one parser's whole run


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def one_thread():
    """The codec's tiny convolutions run 100x slower on two threads of a busy machine than on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")  # Pillow's notes on corrupt TIFF tags
@pytest.mark.parametrize("parser", list(PARSERS))
def test_parser_ends_in_a_result_or_a_cnnkit_error(parser, one_thread):
    strategy, check = PARSERS[parser]
    before = peak_rss_mb()

    @settings(max_examples=EXAMPLES[parser], deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(strategy)
    def fuzz(example):
        check(example)

    fuzz()
    assert peak_rss_mb() - before < MEMORY_BOUND_MB
