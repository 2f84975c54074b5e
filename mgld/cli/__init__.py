"""The ``mgld`` command: one subcommand per job, each a thin module of this package.

``mgld <command> --help`` explains a command's flags; ``python -m mgld`` is the same command, and the
``scripts/*.py`` files of a source checkout are wrappers over the same modules. Subcommand modules import their
heavy dependencies (torch, the pipeline, Lightning, the metrics) inside ``main()``, so every ``--help`` answers
without importing torch (tests/test_cli.py checks it).

Every command fails the same way (mgld/cli/_errors.py): one ``error: ...`` line on stderr naming the file or key,
exit status 2 for a wrong command line or config, 1 for any other failure, 130 for Ctrl-C
("interrupted; rerun the same command to resume"); ``--debug`` or ``MGLD_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import importlib
import sys

from mgld.cli._errors import EXIT_USAGE, debug_requested, run_guarded

# name -> (module under mgld.cli, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "infer": ("infer", "upscale videos or frame folders 4x (the released model by default)"),
    "train": ("train", "train stage 1 (diffusion) or stage 2 (temporal VAE decoder) from a YAML config"),
    "evaluate": ("evaluate", "score method outputs against GT: PSNR/SSIM/LPIPS/DISTS/NIQE/E*warp/..."),
    "convert": ("convert", "convert the official checkpoints (or SD 2.1) to an mgld weights folder"),
    "download": ("download", "download and convert the released weights"),
    "benchmark": ("benchmark", "time and memory of every inference stage on a synthetic clip"),
    "make-testset": ("make_testset", "degrade HR sequences into an LR test set (RealBasicVSR pipeline)"),
    "parity": ("parity", "compare mgld with fixtures computed by the authors' code"),
    "generate-latents": ("generate_latents", "stage-2 training inputs: degraded LQ + stage-1 latents"),
    "bicubic": ("bicubic", "bicubic x4 baseline of an LR test set (a method folder for evaluate)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mgld [--debug] <command> [options]   (mgld <command> --help for its options)", "",
             "MGLD-VSR: motion-guided latent diffusion for real-world 4x video super-resolution.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "options:",
              "  --debug, MGLD_DEBUG=1   print the traceback of an error (otherwise one 'error: ...' line)",
              "  --version               print the version",
              "", "exit status: 0 done, 1 failed, 2 wrong command line or config, 130 interrupted (rerun to resume)",
              "", "examples:",
              "  mgld infer --config tiny --input sample --output out/sample_sr   # tiny random model, CPU, seconds",
              "  mgld download && mgld infer --input clip.mp4 --output clip_x4.mp4",
              "  mgld infer --help"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``mgld <command> ...``; returns the exit status."""
    argv, debug = debug_requested(list(sys.argv[1:] if argv is None else argv))
    if not argv:
        print(_usage(), file=sys.stderr)
        return EXIT_USAGE
    if argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "help":  # mgld help [command]
        argv = [argv[1], "--help"] if len(argv) > 1 else ["--help"]
        if argv[0] == "--help":
            print(_usage())
            return 0
    if argv[0] in ("-V", "--version"):
        from mgld import __version__

        print(f"mgld {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USAGE

    def run() -> int | None:
        module = importlib.import_module(f"mgld.cli.{COMMANDS[name][0]}")
        return module.main(rest, prog=f"mgld {name}")

    return run_guarded(name, run, debug)
