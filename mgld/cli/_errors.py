"""How every ``mgld`` command ends: one top-level handler turns any exception into one line and an exit status.

====  ==========================================================================================================
exit  meaning
====  ==========================================================================================================
0     success
1     the command failed: unreadable or inconsistent input data, missing weights, an I/O error, a missing
      optional extra (the message names the ``pip install "mgld[...]"`` to run), or a bug
2     the command line or the config is wrong: unknown command or flag (argparse), a config that does not exist
      or is not valid YAML (file and line named), an override without ``=``, a key or value the schema
      refuses (the key named)
130   interrupted (Ctrl-C): finished outputs are kept and written atomically, so the same command resumes
      (``mgld train``: the same command with ``--resume``); also when a library (Lightning) handles the Ctrl-C
====  ==========================================================================================================

The message is ``error: <what>`` on stderr. Tracebacks are printed only with ``--debug`` (anywhere on the
command line) or ``MGLD_DEBUG=1``. Errors raised while reading a config carry the file or override they come
from (:func:`mgld.config.config_source`); that tag is what makes them exit 2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator

from mgld._extras import install_hint

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C
INTERRUPTED = "interrupted; rerun the same command to resume"
# training resumes only when asked to (a run folder is otherwise refused)
INTERRUPTED_HINTS = {"train": "interrupted; rerun the same command with --resume to continue from the last checkpoint"}
DEBUG_FLAG = "--debug"
DEBUG_ENV = "MGLD_DEBUG"

COMMAND_EXTRA = {"train": "train", "generate-latents": "train", "evaluate": "eval"}

# Exception types whose message is written for users; any other type is named in the line (likely a bug).
_MESSAGE_TYPES = (ValueError, OSError, RuntimeError)


def debug_requested(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (before a ``--``), and whether tracebacks are wanted (flag or MGLD_DEBUG)."""
    end = argv.index("--") if "--" in argv else len(argv)
    flag = DEBUG_FLAG in argv[:end]
    kept = [a for a in argv[:end] if a != DEBUG_FLAG] + argv[end:]
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")
    return kept, flag or env


def _config_source(err: BaseException) -> str | None:
    from mgld.config import CONFIG_SOURCE

    return getattr(err, CONFIG_SOURCE, None)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines()]
    return lines[0] if lines else ""


def _yaml_message(err, source: str | None) -> str:
    mark = getattr(err, "problem_mark", None)
    name = getattr(mark, "name", None)
    where = source or "config"
    if mark is not None and name and not name.startswith("<"):
        where = f"{name}, line {mark.line + 1}, column {mark.column + 1}"
    problem = getattr(err, "problem", None) or _first_line(err)
    context = getattr(err, "context", None)
    context_mark = getattr(err, "context_mark", None)
    if context and context_mark is not None and not str(context_mark.name).startswith("<"):
        problem += f" ({context} from line {context_mark.line + 1})"
    elif context:
        problem += f" ({context})"
    return f"{where}: invalid YAML: {problem}"


def _omegaconf_message(err, source: str | None) -> str:
    key = getattr(err, "full_key", None)
    text = _first_line(getattr(err, "msg", None) or err)
    if key and not text.startswith(f"{key}:"):
        text = f"{key}: {text}"
    return ": ".join(p for p in (source, text) if p)


def _missing_module_message(err: ModuleNotFoundError, command: str) -> str:
    hint = install_hint(err.name or "", COMMAND_EXTRA.get(command))
    if hint is not None:
        return f"mgld {command} needs {hint}"
    return f"{err} (a dependency of mgld is missing: reinstall mgld, e.g. pip install mgld)"


def describe(err: BaseException, command: str) -> tuple[str, int]:
    """The one-line message (without ``error: ``) and the exit status for an exception of ``command``."""
    source = _config_source(err)
    yaml = sys.modules.get("yaml")
    omegaconf_errors = sys.modules.get("omegaconf.errors")
    if yaml is not None and isinstance(err, yaml.MarkedYAMLError):
        return _yaml_message(err, source), EXIT_USAGE
    if omegaconf_errors is not None and isinstance(err, omegaconf_errors.OmegaConfBaseException):
        return _omegaconf_message(err, source), EXIT_USAGE
    if isinstance(err, ModuleNotFoundError):
        return _missing_module_message(err, command), EXIT_FAILED
    text = str(err).strip()
    if text.startswith("error:"):
        text = text[len("error:"):].strip()
    if source is not None:
        return (text if source in text else f"{source}: {text}"), EXIT_USAGE
    if not isinstance(err, _MESSAGE_TYPES) or not text:
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
        text += f" (rerun with {DEBUG_FLAG} for the traceback)"
    return text, EXIT_FAILED


@contextlib.contextmanager
def _recording_sigint(seen: list[bool]) -> Iterator[None]:
    """Note every Ctrl-C while still raising KeyboardInterrupt as Python does. Libraries that turn it into
    another exit (Lightning's trainer calls ``sys.exit(1)`` after a graceful shutdown) are then recognised.
    Left alone when SIGINT is ignored (``nohup``) or handled by someone else, and off the main thread."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def handler(signum, frame):
        seen.append(True)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupted(command: str, debug: bool) -> int:
    if debug and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"\n{INTERRUPTED_HINTS.get(command, INTERRUPTED)}", file=sys.stderr)
    return EXIT_INTERRUPTED


def run_guarded(command: str, run: Callable[[], int | None], debug: bool = False) -> int:
    """Run one subcommand; any exception becomes ``error: <message>`` on stderr and an exit status."""
    sigint: list[bool] = []
    try:
        with _recording_sigint(sigint):
            code = run()
        if sigint:  # a library caught the KeyboardInterrupt and returned
            return _interrupted(command, debug)
        return 0 if code is None else int(code)
    except SystemExit as stop:  # argparse (--help: 0, a bad flag: 2) and ``raise SystemExit("error: ...")``
        if sigint:  # a library's own Ctrl-C handling ended the run
            return _interrupted(command, debug)
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        text = str(stop.code).strip()
        print(text if text.startswith("error:") else f"error: {text}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return _interrupted(command, debug)
    except BrokenPipeError:  # stdout closed early (``mgld infer --help | head``): stop quietly
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the interpreter flushes it at exit)
        except OSError:
            pass
        return EXIT_FAILED
    except Exception as err:
        message, code = describe(err, command)
        if debug:
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return code
