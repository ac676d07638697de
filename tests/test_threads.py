"""The training thread policy (train/threads.py) and the OpenMP wait default (train/openmp.py), driven by mocked
readings: affinity, cgroup quota, other processes' CPU time, the clock. No timing is asserted."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnkit.models import create_model
from cnnkit.train import TrainConfig, Trainer
from cnnkit.train import threads
from cnnkit.train.openmp import SPIN_COUNT, describe_wait_policy, set_wait_policy_defaults
from cnnkit.train.threads import CpuTimes, ThreadPolicy
from helpers import bar_dataset

SOURCE = Path(__file__).resolve().parent.parent / "src"


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ budget
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("cpu_max, expected", [("200000 100000\n", 2.0), ("150000 100000\n", 1.5),
                                               ("max 100000\n", None)])
def test_cgroup_v2_quota_is_read_from_the_process_own_cgroup(tmp_path, cpu_max, expected):
    cgroup = write(tmp_path / "cgroup", "0::/user.slice/job\n")
    write(tmp_path / "fs" / "user.slice" / "job" / "cpu.max", cpu_max)
    write(tmp_path / "fs" / "cpu.max", "max 100000\n")  # the root's says nothing: the job's own file counts
    assert threads.cgroup_quota(cgroup, tmp_path / "fs") == expected


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    cgroup = write(tmp_path / "cgroup", "5:memory:/x\n4:cpu,cpuacct:/docker/abc\n")
    write(tmp_path / "fs" / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us", "300000\n")
    write(tmp_path / "fs" / "cpu" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_quota(cgroup, tmp_path / "fs") == 3.0
    write(tmp_path / "fs" / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    assert threads.cgroup_quota(cgroup, tmp_path / "fs") is None
    assert threads.cgroup_quota(tmp_path / "missing", tmp_path / "fs") is None


@pytest.mark.parametrize("cpus, quota, expected", [(8, 2.0, 2), (2, None, 2), (4, 0.5, 1), (4, 2.5, 2), (2, 6.0, 2)])
def test_the_budget_is_the_smaller_of_affinity_and_quota(cpus, quota, expected):
    assert threads.core_budget(cpus, quota) == expected


def test_the_model_size_caps_threads():
    assert threads.size_cap(None) is None
    assert threads.size_cap(threads.FLOPS_PER_THREAD * 0.3) == 1  # too little work to split
    assert threads.size_cap(threads.FLOPS_PER_THREAD * 6.5) == 6


def test_training_flops_are_three_forward_passes_of_the_batch():
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 10))  # a forward pass: 2 x 100 x 10 FLOPs per image
    assert threads.training_flops_per_step(model, (1, 10, 10), batch_size=4) == 3 * 2000 * 4
    assert model.training  # its mode is given back


# ------------------------------------------------------------------------------------------ others' CPU time
PROC_STAT = """cpu  900 0 300 5000 20 0 0 0 0 0
cpu0 100 0 50 1000 10 0 0 0 0 0
cpu1 200 10 40 900 0 5 5 40 0 0
cpu2 9999 0 0 0 0 0 0 0 0 0
intr 12345
"""


def test_cpu_times_sum_only_our_cpus_and_our_own_threads(tmp_path):
    write(tmp_path / "stat", PROC_STAT)
    # the command name may hold spaces and parentheses; utime and stime are fields 14 and 15
    fields = ["S"] + ["0"] * 10 + ["70", "30"] + ["0"] * 20
    write(tmp_path / "self" / "stat", "4242 (python (x) y) " + " ".join(fields) + "\n")
    times = threads.read_cpu_times({0, 1}, proc=tmp_path)
    assert times == CpuTimes(total=1160 + 1200, busy=150 + 300, own=100)
    assert threads.read_cpu_times({0}, proc=tmp_path / "absent") is None


def test_others_busy_cores_is_busy_time_less_our_own():
    before = CpuTimes(total=0, busy=0, own=0)
    # 2 CPUs for 5 s (500 ticks each): both busy all along, 500 ticks of it ours -> others held one core
    assert threads.others_busy_cores(before, CpuTimes(1000, 1000, 500), cpus=2) == pytest.approx(1.0)
    assert threads.others_busy_cores(before, CpuTimes(1000, 1000, 1000), cpus=2) == 0.0
    assert threads.others_busy_cores(before, before, cpus=2) == 0.0


def test_the_first_guess_scales_the_load_average_to_our_share_of_the_machine(tmp_path):
    loadavg = write(tmp_path / "loadavg", "32.0 20.0 10.0 3/900 1234\n")
    assert threads.load_average_busy_cores(2, online=64, loadavg=loadavg) == pytest.approx(1.0)
    assert threads.load_average_busy_cores(2, online=2, loadavg=loadavg) == 2.0  # at most all of them
    assert threads.load_average_busy_cores(2, online=2, loadavg=tmp_path / "absent") == 0.0


@pytest.mark.parametrize("budget, cpus, others, cap, expected", [
    (2, 2, 0.05, None, 2),  # idle
    (2, 2, 0.2, None, 2),  # an editor in the background keeps both threads
    (2, 2, 1.0, None, 1),  # one competing process
    (2, 2, 0.67, None, 1),  # a 1-thread competitor's share beside our 2 threads
    (2, 2, 2.0, None, 1),  # never fewer than one
    (4, 16, 3.0, None, 4),  # the quota is the limit, not the free CPUs
    (16, 16, 1.0, None, 15),
    (16, 16, 0.0, 3, 3),  # a small model
])
def test_threads_follow_the_cores_left_free(budget, cpus, others, cap, expected):
    assert threads.choose_threads(budget, cpus, others, cap) == expected


# ------------------------------------------------------------------------------------------ the policy
class FakeMachine:
    """Two CPUs; ``others`` is the share of them other processes take from now on."""

    def __init__(self):
        self.now, self.times, self.others, self.set = 0.0, CpuTimes(0, 0, 0), 0.0, []

    def advance(self, seconds: float, ours: float) -> None:
        ticks = seconds * 100
        self.now += seconds
        self.times = CpuTimes(self.times.total + int(2 * ticks), self.times.busy + int((ours + self.others) * ticks),
                              self.times.own + int(ours * ticks))

    def policy(self, **options) -> ThreadPolicy:
        options = dict(cpus={0, 1}, quota=None, read_times=lambda: self.times, first_guess=lambda: 0.0,
                       set_threads=self.set.append, clock=lambda: self.now, log=lambda text: None,
                       sleep=lambda seconds: self.advance(seconds, ours=0.0)) | options
        return ThreadPolicy(**options)


def test_the_policy_drops_to_one_thread_beside_a_competitor_and_comes_back_when_it_ends():
    machine = FakeMachine()
    policy = machine.policy(interval=5.0)
    machine.advance(1.0, ours=1.0)  # setting up the model and data
    assert "threads: 2 (automatic" in policy.start() and machine.set == [2]
    machine.others = 1.0
    machine.advance(3.0, ours=1.0)
    policy.on_batch_end(None, None)  # before the interval is over: nothing is read
    assert machine.set == [2]
    machine.advance(2.0, ours=1.0)
    policy.on_batch_end(None, None)
    assert machine.set == [2, 1] and policy.changes == [(2, 1, 1.0)]
    machine.advance(5.0, ours=1.0)
    policy.on_batch_end(None, None)  # still there: no change, so no call
    assert machine.set == [2, 1]
    machine.others = 0.0
    machine.advance(5.0, ours=1.0)
    policy.on_batch_end(None, None)
    assert machine.set == [2, 1, 2] and policy.threads == 2


def test_a_busy_load_average_is_checked_by_a_short_look_before_dropping_threads():
    machine = FakeMachine()  # idle now; the load average still counts our previous run (1.5 cores)
    text = machine.policy(first_guess=lambda: 1.5).start()
    assert machine.set == [2] and "busy on 0.0 cores (a 0.12 s look; the load average said 1.5)" in text
    machine.others = 1.0  # a real competitor: the look confirms it
    text = machine.policy(first_guess=lambda: 1.5).start()
    assert machine.set == [2, 1] and "busy on 1.0 cores (a 0.12 s look" in text
    calm = machine.policy(first_guess=lambda: 0.0, sleep=lambda seconds: pytest.fail("no look needed"))
    assert "(load average)" in calm.start()  # an idle load average costs no look


def test_the_first_choice_falls_back_on_the_load_average_when_nothing_was_measured():
    machine = FakeMachine()
    policy = machine.policy(first_guess=lambda: 1.5, interval=5.0, sleep=lambda seconds: None)  # the clock stands
    assert "(load average)" in policy.start() and machine.set == [1]
    machine.advance(1.0, ours=1.0)  # the machine is idle after all: the first look comes after one second
    policy.on_batch_end(None, None)
    assert machine.set == [1, 2]
    unreadable = machine.policy(read_times=lambda: None, first_guess=lambda: 1.5)
    unreadable.start()
    machine.now += 10
    assert unreadable.recheck() == 1 and machine.set == [1, 2, 1]  # /proc unreadable: the guess stays


def test_the_first_interval_may_start_before_the_policy_was_built():
    machine = FakeMachine()
    before, machine.others = machine.times, 1.0
    machine.advance(1.0, ours=1.0)  # the trainer setting up, beside a competitor
    text = machine.policy(since=before).start()
    assert machine.set == [1] and "busy on 1.0 cores;" in text  # measured, not the load average (0.0 here)


def test_quota_and_model_size_bound_the_policy():
    machine = FakeMachine()
    assert "cgroup quota 1 cores" in machine.policy(quota=1.0).start() and machine.set == [1]
    machine.policy(flops_per_step=threads.FLOPS_PER_THREAD / 2).start()
    assert machine.set == [1, 1]


# ------------------------------------------------------------------------------------------ the trainer
FAST = dict(batch_size=64, lr=0.01, optimizer="adam", weight_decay=0.0, progress=False, eval_batch_size=128,
            device="cpu")


def test_the_trainer_runs_the_policy_unless_threads_are_given(capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    trainer = Trainer(create_model("lenet5_relu", num_classes=2), bar_dataset(n_train=64, n_test=64),
                      TrainConfig(epochs=1, **FAST))
    assert isinstance(trainer.callbacks[0], ThreadPolicy)
    assert trainer.thread_policy.flops_per_step > 0
    trainer.fit()
    out = capsys.readouterr().out
    assert f"threads: {trainer.thread_policy.threads} (automatic: {len(os.sched_getaffinity(0))} CPUs" in out

    fixed = Trainer(create_model("lenet5_relu", num_classes=2), bar_dataset(n_train=64, n_test=64),
                    TrainConfig(epochs=1, num_threads=1, **FAST))
    assert fixed.thread_policy is None and not any(isinstance(c, ThreadPolicy) for c in fixed.callbacks)
    assert torch.get_num_threads() == 1
    fixed.fit()
    assert "threads: 1 (--threads" in capsys.readouterr().out


def test_omp_num_threads_and_data_parallel_runs_fix_the_count():
    assert threads.automatic_threads(None, 1, environ={}) is None
    assert "OMP_NUM_THREADS" in threads.automatic_threads(None, 1, environ={"OMP_NUM_THREADS": "3"})
    assert "launcher" in threads.automatic_threads(None, 2, environ={})
    assert "--threads" in threads.automatic_threads(4, 1, environ={"OMP_NUM_THREADS": "3"})


# ------------------------------------------------------------------------------------------ wait policy
def test_the_wait_default_never_overrides_the_users_and_needs_torch_unloaded():
    environ = {}
    assert set_wait_policy_defaults(environ, loaded={}) == {"GOMP_SPINCOUNT": SPIN_COUNT}
    assert environ["GOMP_SPINCOUNT"] == SPIN_COUNT and "cnnkit's default" in describe_wait_policy(environ)
    for users in ({"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        environ = dict(users)
        assert set_wait_policy_defaults(environ, loaded={}) == {} and environ == users
        assert "(yours)" in describe_wait_policy(environ)
    environ = {}
    assert set_wait_policy_defaults(environ, loaded={"torch": object()}) == {} and environ == {}
    assert "torch was loaded before cnnkit" in describe_wait_policy(environ)


@pytest.mark.parametrize("users, expected", [({}, SPIN_COUNT), ({"OMP_WAIT_POLICY": "ACTIVE"}, None),
                                             ({"GOMP_SPINCOUNT": "5"}, "5")])
def test_import_cnnkit_sets_the_default_before_torch_loads(users, expected):
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    environ |= users | {"PYTHONPATH": str(SOURCE)}
    code = "import os, sys, cnnkit; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(expected), "False"]
