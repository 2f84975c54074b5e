"""The ``mgld`` command: entry points, lazy imports, and one way of failing (mgld/cli/__init__.py, _errors.py)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, subprocess_env
from mgld.cli import COMMANDS, main
from mgld.cli._errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    INTERRUPTED,
    INTERRUPTED_HINTS,
    describe,
    run_guarded,
)

# command -> its wrapper in scripts/ (the documented `python scripts/X.py` names)
SCRIPTS = {
    "infer": "infer.py", "train": "train.py", "evaluate": "evaluate.py", "convert": "convert_checkpoint.py",
    "download": "download_weights.py", "benchmark": "benchmark.py", "make-testset": "make_testset.py",
    "parity": "check_parity.py", "generate-latents": "generate_latents.py", "bicubic": "bicubic_baseline.py",
}
HEAVY = ("torch", "torchvision", "diffusers", "cv2", "av", "pytorch_lightning", "lightning_fabric", "pyiqa",
         "matplotlib", "transformers", "basicsr")


def _run(args, cwd=ROOT, timeout=120, **env):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=subprocess_env(**env))


# ------------------------------------------------------------------------------------------------------------
# entry points and --help


def test_every_command_has_a_script_wrapper():
    assert set(SCRIPTS) == set(COMMANDS)
    assert sorted(SCRIPTS.values()) == sorted(p.name for p in (ROOT / "scripts").glob("*.py"))


def test_help_of_every_subcommand_imports_no_heavy_module():
    # One process: after each `--help`, the modules that command imported are recorded. The parent test
    # process already holds torch, so this must run in a fresh interpreter.
    code = f"""
import contextlib, io, json, sys
from mgld.cli import COMMANDS, main
heavy = {HEAVY!r}
seen = {{}}
for name in COMMANDS:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([name, "--help"])
    seen[name] = [rc, [m for m in heavy if m in sys.modules], out.getvalue()[:200]]
print(json.dumps(seen))
"""
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert set(seen) == set(COMMANDS)
    for name, (rc, imported, text) in seen.items():
        assert rc == 0, name
        assert imported == [], f"mgld {name} --help imported {imported}"
        assert text.startswith(f"usage: mgld {name}"), (name, text)


@pytest.mark.parametrize("entry", ["mgld", "python -m mgld", "python scripts/X.py"])
def test_every_subcommand_answers_help_through_each_entry_point(entry, tmp_path):
    console = Path(sys.executable).with_name("mgld")
    if entry == "mgld" and not console.is_file():
        pytest.skip("no mgld console script next to this interpreter (package not installed)")
    for name, script in SCRIPTS.items():
        args = {"mgld": [str(console), name], "python -m mgld": [sys.executable, "-m", "mgld", name],
                "python scripts/X.py": [sys.executable, str(ROOT / "scripts" / script)]}[entry]
        # the console script and -m from a folder that is not the repository
        out = _run([*args, "--help"], cwd=ROOT if entry.startswith("python scripts") else tmp_path)
        assert out.returncode == 0, (entry, name, out.stderr)
        assert out.stdout.startswith(f"usage: mgld {name}"), (entry, name, out.stdout[:200])


def test_top_level_usage_version_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert all(f"  {name} " in usage for name in COMMANDS)
    assert "--debug" in usage and "130" in usage
    assert main([]) == EXIT_USAGE
    assert "usage: mgld" in capsys.readouterr().err
    assert main(["--version"]) == 0
    from mgld import __version__

    assert capsys.readouterr().out.strip() == f"mgld {__version__}"
    assert main(["upscale"]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith("error: unknown command 'upscale'")
    with pytest.raises(SystemExit) as stop:  # `mgld help infer` is `mgld infer --help`
        from mgld.cli import infer

        infer.main(["--help"], prog="mgld infer")
    assert stop.value.code == 0
    expected = capsys.readouterr().out
    assert main(["help", "infer"]) == 0
    assert capsys.readouterr().out == expected


def test_parity_help_default_tolerance_is_the_checks_default():
    from mgld.cli import parity as cli_parity
    from mgld.parity import DEFAULT_TOLERANCE

    assert cli_parity.DEFAULT_TOLERANCE == DEFAULT_TOLERANCE


# ------------------------------------------------------------------------------------------------------------
# the error handler: config and usage errors exit 2 with one line naming the file / key / override


def _infer(tmp_path, *args):
    return main(["infer", "--input", "sample", "--output", str(tmp_path / "out"), *args])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_invalid_yaml_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling:\n  steps: 4\n  guidance_scale: [1, 2\n  seed: 3\n")
    assert _infer(tmp_path, "--config", str(bad)) == EXIT_USAGE
    line = _one_error_line(capsys)
    assert f"{bad}, line 4" in line and "invalid YAML" in line
    assert not (tmp_path / "out").exists()


def test_invalid_yaml_in_a_base_file_names_the_base(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("sampling: {steps: 4\n")
    top = tmp_path / "top.yaml"
    top.write_text("_base_: [base.yaml]\nsampling:\n  seed: 1\n")
    assert main(["train", "--config", str(top)]) == EXIT_USAGE
    assert f"{tmp_path / 'base.yaml'}, line 2" in _one_error_line(capsys)


def test_override_without_equals_names_the_override(tmp_path, capsys):
    assert _infer(tmp_path, "--config", "tiny", "sampling.steps") == EXIT_USAGE
    assert _one_error_line(capsys) == "error: override 'sampling.steps': not key=value (e.g. sampling.steps=20)"


@pytest.mark.parametrize(("override", "key", "text"), [
    ("sampling.stepz=3", "sampling.stepz", "Did you mean: 'steps'?"),
    ("sampling.steps=abc", "sampling.steps", "could not be converted to Integer"),
])
def test_schema_errors_of_an_override_are_one_line_naming_the_key(tmp_path, capsys, override, key, text):
    assert _infer(tmp_path, "--config", "tiny", override) == EXIT_USAGE
    line = _one_error_line(capsys)
    assert line.startswith(f"error: override '{override}': {key}: ") and line.endswith(text)


def test_schema_error_in_a_file_names_the_file_and_key(tmp_path, capsys):
    typo = tmp_path / "typo.yaml"
    typo.write_text("decode:\n  colour_fix: adain\n")
    assert main(["train", "--config", "tiny_stage1", "--print-config", "infer.seed=1"]) == EXIT_USAGE
    assert "infer.seed: Key 'seed' not in" in _one_error_line(capsys)
    assert _infer(tmp_path, "--config", str(typo)) == EXIT_USAGE
    assert _one_error_line(capsys).startswith(f"error: {typo}: decode.colour_fix: Key 'colour_fix' not in")


def test_value_checks_and_missing_configs_exit_2(tmp_path, capsys):
    assert _infer(tmp_path, "--config", "tiny", "sampling.steps=0") == EXIT_USAGE
    line = _one_error_line(capsys)
    assert "tiny.yaml + overrides: sampling.steps" in line and "must be in [1, 1000], got 0" in line
    assert _infer(tmp_path, "--config", "no_such_config") == EXIT_USAGE
    line = _one_error_line(capsys)
    assert "config not found: no_such_config" in line and "tiny" in line  # lists the packaged names


def test_usage_errors_of_argparse_exit_2(tmp_path, capsys):
    assert _infer(tmp_path, "--no-such-flag") == EXIT_USAGE
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_a_failing_run_exits_1_with_one_line(tmp_path, capsys):
    rc = main(["infer", "--config", "tiny", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")])
    assert rc == EXIT_FAILED
    line = _one_error_line(capsys)
    assert str(tmp_path / "missing") in line


# ------------------------------------------------------------------------------------------------------------
# run_guarded / describe: every other kind of exception


def _raise(err):
    def run():
        raise err
    return run


def test_exceptions_become_one_line_and_a_status(capsys):
    assert run_guarded("infer", _raise(ValueError("bad.png: truncated"))) == EXIT_FAILED
    assert capsys.readouterr().err == "error: bad.png: truncated\n"
    assert run_guarded("infer", _raise(FileNotFoundError(2, "No such file or directory", "x.mp4"))) == 1
    assert capsys.readouterr().err == "error: [Errno 2] No such file or directory: 'x.mp4'\n"
    assert run_guarded("infer", _raise(TypeError("unsupported operand"))) == EXIT_FAILED
    assert capsys.readouterr().err == "error: TypeError: unsupported operand (rerun with --debug for the traceback)\n"
    assert run_guarded("infer", _raise(KeyError("unet.conv_in.weight"))) == EXIT_FAILED
    assert "error: KeyError: 'unet.conv_in.weight'" in capsys.readouterr().err
    assert run_guarded("evaluate", _raise(SystemExit("error: two --pred share a name"))) == EXIT_FAILED
    assert capsys.readouterr().err == "error: two --pred share a name\n"
    assert run_guarded("infer", _raise(SystemExit(3))) == 3
    assert run_guarded("infer", lambda: None) == 0


def test_missing_optional_packages_name_the_extra():
    def missing(module):
        return ModuleNotFoundError(f"No module named '{module}'", name=module)

    text, code = describe(missing("pytorch_lightning"), "train")
    assert code == EXIT_FAILED and 'pip install "mgld[train]"' in text and "'pytorch-lightning'" in text
    assert 'pip install "mgld[eval]"' in describe(missing("pyiqa.models"), "evaluate")[0]
    assert "'eval' extra" in describe(missing("lpips"), "evaluate")[0]
    assert "'train' extra" in describe(missing("lpips"), "train")[0]
    assert "reinstall mgld" in describe(missing("av"), "infer")[0]


def test_command_errors_go_through_the_one_handler(tmp_path, capsys):
    """Errors a command meets while running (not only config errors) reach run_guarded: one line, exit 1,
    and the traceback with --debug."""
    missing = tmp_path / "missing"
    args = ["infer", "--config", "tiny", "--input", str(missing), "--output", str(tmp_path / "out")]
    assert main(args) == EXIT_FAILED
    assert capsys.readouterr().err == f"error: {missing}: no such file or folder\n"
    assert main(["--debug", *args]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "InputError" in err
    assert err.strip().splitlines()[-1] == f"error: {missing}: no such file or folder"
    assert main(["--debug", "parity", str(missing)]) == EXIT_FAILED  # an input error: 1, as README says
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    config = missing / "config.json"
    assert err.strip().splitlines()[-1] == f"error: {config}: not found; a fixture folder needs config.json"


def test_generate_latents_device_flag_gives_way_to_an_override():
    from mgld.cli.generate_latents import config_overrides, parse_args
    from mgld.training.config import load_train_config

    def device(*argv):
        args = parse_args(["--config", "tiny_stage1", "--input", "gt", "--out", "lat", *argv])
        return load_train_config(args.config, config_overrides(args)).infer.device

    default = load_train_config("tiny_stage1").infer.device
    assert device() == default  # no flag: the config's
    assert device("--device", "cpu") == "cpu"
    assert device("--device", "cpu", "infer.device=cuda:1") == "cuda:1"  # the override wins
    assert device("infer.device=cuda:1") == "cuda:1"  # no longer replaced by the flag's default


def test_debug_flag_and_env_print_the_traceback(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1\n")
    assert _infer(tmp_path, "--config", str(bad)) == EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", "infer", "--input", "sample", "--output", str(tmp_path), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("error: ")
    assert _infer(tmp_path, "--config", str(bad), "--debug") == EXIT_USAGE  # anywhere on the line
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("MGLD_DEBUG", "1")
    assert _infer(tmp_path, "--config", str(bad)) == EXIT_USAGE
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("MGLD_DEBUG", "0")
    assert _infer(tmp_path, "--config", str(bad)) == EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_keyboard_interrupt_in_process(capsys):
    assert run_guarded("infer", _raise(KeyboardInterrupt())) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert err.strip() == INTERRUPTED and "Traceback" not in err


# ------------------------------------------------------------------------------------------------------------
# in a real process: missing extras, Ctrl-C


def _blocked(module: str, argv: list[str]) -> list[str]:
    """A python command running ``mgld argv`` as if ``module`` were not installed."""
    code = f"import sys; sys.modules[{module!r}] = None; from mgld.cli import main; sys.exit(main({argv!r}))"
    return [sys.executable, "-c", code]


def test_train_without_the_train_extra_names_it(tmp_path):
    out = _run(_blocked("pytorch_lightning", ["train", "--config", "tiny_stage1", f"output_dir={tmp_path / 'run'}"]))
    assert out.returncode == EXIT_FAILED, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "error: mgld train needs the optional package 'pytorch-lightning' (module 'pytorch_lightning' is not "
        "installed), part of the 'train' extra: pip install \"mgld[train]\"")
    assert "Traceback" not in out.stderr


def test_evaluate_without_the_eval_extra_names_it(tmp_path):
    seq = tmp_path / "pred" / "000"
    seq.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(seq / f"{i:08d}.png")
    out = _run(_blocked("pyiqa", ["evaluate", "--pred", f"sr={tmp_path / 'pred'}", "--metrics", "musiq",
                                  "--device", "cpu", "--quiet"]))
    assert out.returncode == EXIT_FAILED, out.stderr
    assert 'pip install "mgld[eval]"' in out.stderr and "Traceback" not in out.stderr


def _interrupt_when(cmd: list[str], ready: bytes, cwd: Path, delay: float = 0.0) -> tuple[int, str]:
    """Run ``cmd``, send SIGINT once ``ready`` appears in its output (then ``delay`` s), return (status, output).

    SIGINT must be at its default in the child (a shell's background job would ignore it)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(proc.stdout.fileno(), 4096), b"")))
    reader.start()
    deadline = time.monotonic() + 240
    while ready not in b"".join(chunks) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(delay)
    assert proc.poll() is None, f"the run ended before it could be interrupted: {b''.join(chunks)[-800:]}"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_ctrl_c_exits_130_with_the_resume_hint(tmp_path):
    cmd = [sys.executable, "-m", "mgld", "infer", "--config", "tiny", "--input", "sample",
           "--output", str(tmp_path / "sr")]
    code, out = _interrupt_when(cmd, b"chunks:", tmp_path)  # sampling has started: models built, chunk 1 of 2
    assert code == EXIT_INTERRUPTED, out[-1000:]
    assert out.strip().splitlines()[-1] == INTERRUPTED
    assert "Traceback" not in out and "KeyboardInterrupt" not in out


def test_ctrl_c_during_training_exits_130_naming_resume(tmp_path):
    # Lightning catches the KeyboardInterrupt, shuts down and calls sys.exit(1); the handler still reports it
    from mgld.training.data import write_synthetic_sequences

    clips = write_synthetic_sequences(tmp_path / "clips", num_sequences=1, num_frames=6, size=(32, 32))
    cmd = [sys.executable, "-m", "mgld", "train", "--config", "tiny_stage1", f"data.root={clips}",
           f"output_dir={tmp_path / 'run'}", "trainer.max_steps=100000"]
    code, out = _interrupt_when(cmd, b"Trainable params", tmp_path, delay=1.0)
    assert code == EXIT_INTERRUPTED, out[-1500:]
    assert out.strip().splitlines()[-1] == INTERRUPTED_HINTS["train"]
    assert "--resume" in INTERRUPTED_HINTS["train"] and "Traceback" not in out


def test_a_library_that_turns_ctrl_c_into_exit_is_still_reported_as_interrupted(capsys):
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else in this process")

    def lightning_like():
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            sys.exit(1)

    assert run_guarded("train", lightning_like) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == INTERRUPTED_HINTS["train"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
