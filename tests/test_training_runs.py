"""Whole training runs as a user starts them (issue 11 §2, issue 12 items 2, 9): two CPU processes (gloo DDP) train
as one process with the global batch, both tiny stages, resumed; a run killed with SIGKILL and resumed ends with
the weights and losses of a run that never stopped; checkpoints survive a kill during a save and a full disk.

The multi-process runs are subprocesses of ``python -m mgld train`` (Lightning re-launches the command for rank 1),
each compared with the same config trained in this process. The weights compared are the trained ones; at most
1 % may differ by more than 1e-6 (fp32 reduction order: DDP averages the two halves' gradients, one process sums
the whole batch at once).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import subprocess_env
from mgld.training import Stage1System, Stage2System, train
from mgld.training.checkpointing import (
    AtomicCheckpointIO,
    find_resume_checkpoint,
    load_checkpoint_file,
    remove_stale_temporaries,
)
from mgld.weights.checkpoints import CheckpointError
from training_helpers import TINY_STAGE, tiny_config, tiny_overrides

LOGGING = ("trainer.log_every_n_steps=1", "trainer.image_every_n_steps=0")  # scalars every step, no images
pytestmark = pytest.mark.usefixtures("one_thread_module")


def overrides(stage: int, data: Path, out: Path, *extra: str) -> list[str]:
    return tiny_overrides(stage, data, out, *LOGGING, *extra)


def config(stage: int, data: Path, out: Path, *extra: str):
    return tiny_config(stage, data, out, *LOGGING, *extra)


def mgld_train(stage: int, args: list[str], *, wait: bool = True, timeout: float = 240):
    """``python -m mgld train --config tiny_stageN args`` in a subprocess (one thread per process)."""
    env = subprocess_env()
    cmd = [sys.executable, "-m", "mgld", "train", "--config", str(TINY_STAGE[stage]),
           *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def trained(path: Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    state = load_checkpoint_file(path)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(prefixes) and v.is_floating_point()}


def fraction_differing(a: dict, b: dict, tol: float = 1e-6) -> tuple[float, float]:
    """(fraction of the weights differing by more than ``tol``, largest difference)."""
    assert a.keys() == b.keys() and a
    diff = [(x - b[k]).abs() for k, x in a.items()]
    total = sum(d.numel() for d in diff)
    return sum(int((d > tol).sum()) for d in diff) / total, max(float(d.max()) for d in diff)


def logged_losses(run_dir: Path) -> list[dict[int, float]]:
    """``train/loss`` per step, one dict per TensorBoard events file (one file per launch), oldest first."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = []
    for path in sorted((run_dir / "tb").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        events = EventAccumulator(str(path))
        events.Reload()
        out.append({e.step: e.value for e in events.Scalars("train/loss")})
    return out


def run_folder_listing(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if not p.name.startswith("events."))


# ---------------------------------------------------------------------------------------------------------
# Two processes (gloo) = one process with the global batch
# ---------------------------------------------------------------------------------------------------------


def test_stage1_two_processes_train_as_one_process_with_the_global_batch(data, tmp_path):
    ddp = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "data.batch_size=1"]
    mgld_train(1, overrides(1, data, tmp_path / "ddp", "trainer.max_steps=3", *ddp))
    train(config(1, data, tmp_path / "one", "trainer.max_steps=3", "data.batch_size=2"), enable_progress_bar=False)

    a = trained(tmp_path / "ddp" / "checkpoints" / "last.ckpt", Stage1System.trained_prefixes)
    b = trained(tmp_path / "one" / "checkpoints" / "last.ckpt", Stage1System.trained_prefixes)
    differing, largest = fraction_differing(a, b)
    print(f"stage 1, 2 processes x 1 vs 1 x 2, 3 steps: {differing:.3%} of the trained weights differ by > 1e-6 "
          f"(largest {largest:.2g})")
    assert differing <= 0.01 and largest < 1e-4
    moved, _ = fraction_differing(b, trained(tmp_path / "one" / "checkpoints" / "step00000002.ckpt",
                                             Stage1System.trained_prefixes))
    assert moved > 0.5  # the third step changed most weights: the agreement is not that of untouched models
    # only rank 0 wrote: the run folder of the 2-process run is that of the 1-process run
    assert run_folder_listing(tmp_path / "ddp") == run_folder_listing(tmp_path / "one")
    assert len(list((tmp_path / "ddp" / "tb").glob("events.out.tfevents.*"))) == 1


def test_stage2_resumed_on_two_processes_trains_as_one_process(data, tmp_path):
    """Manual optimisation, the GAN starting at step 2, resumed from step 2 onto 2 processes."""
    extra = ["losses.disc_start=2", "discriminator.sync_batchnorm=true", "losses.reduction=mean"]
    train(config(2, data, tmp_path / "one", "trainer.max_steps=4", "data.batch_size=2", *extra),
          enable_progress_bar=False)
    # the one-process run as it was at step 2 (max_steps changes nothing before it is reached) ...
    (tmp_path / "ddp" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "one" / "config.yaml", tmp_path / "ddp" / "config.yaml")
    shutil.copy(tmp_path / "one" / "checkpoints" / "step00000002.ckpt", tmp_path / "ddp" / "checkpoints")
    # ... resumed on two processes
    ddp = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "data.batch_size=1"]
    mgld_train(2, [*overrides(2, data, tmp_path / "ddp", "trainer.max_steps=4", *extra, *ddp), "--resume"])

    a = trained(tmp_path / "ddp" / "checkpoints" / "last.ckpt", Stage2System.trained_prefixes)
    b = trained(tmp_path / "one" / "checkpoints" / "last.ckpt", Stage2System.trained_prefixes)
    differing, largest = fraction_differing(a, b)
    print(f"stage 2, resumed at 2 on 2 processes x 1 vs 1 x 2, 4 steps: {differing:.3%} of the trained weights "
          f"differ by > 1e-6 (largest {largest:.2g})")
    assert differing <= 0.01
    disc = [k for k in a if k.startswith("discriminator.")]
    assert any(not torch.equal(a[k], trained(tmp_path / "ddp" / "checkpoints" / "step00000002.ckpt",
                                             Stage2System.trained_prefixes)[k]) for k in disc)  # the GAN trained
    last = load_checkpoint_file(tmp_path / "ddp" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 4
    assert [next(iter(s["state"].values()))["step"].item() for s in last["optimizer_states"]] == [4, 4]
    # only rank 0 wrote; the changed config (2 devices) is kept beside the old one
    assert run_folder_listing(tmp_path / "ddp") == sorted([*run_folder_listing(tmp_path / "one"),
                                                           "config.previous.yaml"])
    assert len(list((tmp_path / "ddp" / "tb").glob("events.out.tfevents.*"))) == 1


# ---------------------------------------------------------------------------------------------------------
# Killed and resumed = never stopped
# ---------------------------------------------------------------------------------------------------------


def test_run_killed_with_sigkill_and_resumed_equals_an_uninterrupted_run(data, tmp_path):
    extra = ["optim.accumulate_grad_batches=2"]
    train(config(1, data, tmp_path / "straight", "trainer.max_steps=6", *extra), enable_progress_bar=False)

    killed = tmp_path / "killed"
    proc = mgld_train(1, overrides(1, data, killed, "trainer.max_steps=100", *extra), wait=False)
    target, deadline = killed / "checkpoints" / "step00000002.ckpt", time.monotonic() + 240
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
    start, _ = find_resume_checkpoint(killed / "checkpoints")
    step = load_checkpoint_file(start)["global_step"]
    assert 2 <= step < 6

    run = mgld_train(1, [*overrides(1, data, killed, "trainer.max_steps=6", *extra), "--resume"])
    assert f"resuming from {start}" in run.stderr

    a = trained(killed / "checkpoints" / "last.ckpt", Stage1System.trained_prefixes)
    b = trained(tmp_path / "straight" / "checkpoints" / "last.ckpt", Stage1System.trained_prefixes)
    differing, largest = fraction_differing(a, b, tol=0.0)
    print(f"killed at step {step} + resumed vs uninterrupted, 6 steps: largest weight difference {largest:.2g}")
    assert largest <= 1e-6
    (reference,) = logged_losses(tmp_path / "straight")
    before, after = logged_losses(killed)
    assert set(after) == set(range(step, 6)) or set(after) == set(range(step + 1, 7))  # the steps after the resume
    for losses in (before, after):
        for s, value in losses.items():
            assert value == pytest.approx(reference[s], rel=1e-5, abs=1e-7), (s, value, reference[s])


# ---------------------------------------------------------------------------------------------------------
# Checkpoints that survive kills and full disks
# ---------------------------------------------------------------------------------------------------------

_KILL_DURING_SAVE = """
import os, signal, sys, torch
from mgld.training.checkpointing import AtomicCheckpointIO

def dying_save(obj, f):
    f.write(b"PK" + b"x" * 100_000)  # part of a checkpoint ...
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # ... then the process is killed

torch.save = dying_save
AtomicCheckpointIO().save_checkpoint({"state_dict": {}, "global_step": 9}, sys.argv[1])
"""


def test_checkpoint_killed_during_its_save_leaves_the_previous_one_intact(tmp_path):
    folder = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 4}, folder / "last.ckpt")
    run = subprocess.run([sys.executable, "-c", _KILL_DURING_SAVE, str(folder / "last.ckpt")], env=subprocess_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    leftovers = [p for p in folder.iterdir() if p.name != "last.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.ckpt.")  # the cut temporary file
    assert load_checkpoint_file(folder / "last.ckpt")["global_step"] == 4  # the previous checkpoint, whole
    assert remove_stale_temporaries(folder) == leftovers and sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]


def test_full_disk_during_a_save_keeps_the_previous_checkpoint_and_names_the_file(tmp_path, monkeypatch):
    import errno

    folder = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 4}, folder / "step00000004.ckpt")

    def full_disk(obj, f):
        f.write(b"PK" + b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write checkpoint .*step00000006.ckpt: No space left") as err:
        io.save_checkpoint({"state_dict": {}, "global_step": 6}, folder / "step00000006.ckpt")
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in folder.iterdir()) == ["step00000004.ckpt"]  # no partial file, no temporary


def test_resume_takes_the_newest_checkpoint_that_loads_and_says_what_it_skipped(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    for step in (2, 4, 6):
        io.save_checkpoint({"state_dict": {"w": torch.full((1000,), float(step))}, "global_step": step},
                           folder / f"step{step:08d}.ckpt")
    (folder / "last.ckpt").write_bytes(b"")  # left at 0 bytes
    six = folder / "step00000006.ckpt"
    six.write_bytes(six.read_bytes()[: six.stat().st_size // 2])  # truncated (a full disk)
    with caplog.at_level("WARNING"):
        path, skipped = find_resume_checkpoint(folder)
    assert path == folder / "step00000004.ckpt"
    assert [p.name for p, _ in skipped] == ["step00000006.ckpt"]
    assert "truncated or corrupt" in skipped[0][1] and "step00000006.ckpt" in caplog.text
    (folder / "step00000004.ckpt").write_bytes(b"garbage")
    (folder / "step00000002.ckpt").unlink()
    with pytest.raises(CheckpointError) as err:
        find_resume_checkpoint(folder)
    message = str(err.value)
    assert "step00000004.ckpt" in message and "last.ckpt: empty file" in message and "\n" not in message
    assert "weights_only" not in message


def test_a_checkpoint_holding_code_is_refused_without_suggesting_an_unsafe_load(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "x": Path("/")}, path)  # a pickled object, not a tensor
    with pytest.raises(CheckpointError, match="refused: unsafe to unpickle") as err:
        load_checkpoint_file(path)
    assert "weights_only" not in str(err.value) and str(path) in str(err.value)
