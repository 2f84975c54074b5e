"""Where weights live and how the official files are fetched from the Hugging Face Hub.

Light on purpose (no torch or diffusers import), so command-line tools can show their defaults fast.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mgld.weights.files import FLOW_FILE  # noqa: F401  (re-exported: the folder's RAFT file)

log = logging.getLogger(__name__)

# A public mirror of the authors' released files (not an official upload by the authors).
DEFAULT_REPO_ID = "Iceclear/MGLD-VSR"
OFFICIAL_FILES = {"stage1": "mgldvsr_unet.ckpt", "vae": "video_vae_cfw.ckpt", "raft": "raft-things.pth"}
STAGE1_RAFT_PREFIX = "flownet_model."


def mgld_home() -> Path:
    """Where weights live: ``$MGLD_HOME``, else ``~/.cache/mgld``."""
    return Path(os.environ.get("MGLD_HOME", Path.home() / ".cache" / "mgld")).expanduser()


def default_weights_dir() -> Path:
    """The converted official weights: ``<mgld_home>/mgld-vsr`` (config.yaml + *.safetensors)."""
    return mgld_home() / "mgld-vsr"


def default_official_dir() -> Path:
    """Where the official files are downloaded to / expected: ``<mgld_home>/official``."""
    return mgld_home() / "official"


def missing_weights_message(folder: Path | None = None) -> str:
    """The exact commands that get and convert the official weights."""
    folder = folder or default_weights_dir()
    official = default_official_dir()
    return (
        f"converted MGLD-VSR weights not found in {folder}. Get and convert them with\n"
        f"    mgld download --dest {folder.parent}\n"
        f"or, with the files downloaded by hand into {official}:\n"
        f"    mgld convert --stage1 {official / OFFICIAL_FILES['stage1']} "
        f"--vae {official / OFFICIAL_FILES['vae']} --out {folder}"
    )


def download_official(
    dest: Path, repo_id: str = DEFAULT_REPO_ID, files: dict[str, str] | None = None
) -> dict[str, Path]:
    """Fetch the official files with ``huggingface_hub`` into ``dest`` (files already there are kept).

    Raises ``RuntimeError`` naming the files and where to put them when the hub cannot be reached.
    """
    from huggingface_hub import hf_hub_download

    files = files or OFFICIAL_FILES
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, name in files.items():
        target = dest / name
        if target.is_file():
            log.info("%s: already present, not downloading", target)
        else:
            log.info("downloading %s from %s", name, repo_id)
            try:
                hf_hub_download(repo_id=repo_id, filename=name, local_dir=dest)
            except Exception as err:  # offline, unknown repo or file, HTTP errors
                wanted = ", ".join(f"{dest / n}" for n in files.values())
                raise RuntimeError(
                    f"could not download {name} from the Hub repo {repo_id} ({type(err).__name__}: {err}).\n"
                    f"Download these files by hand and put them here: {wanted}; then run this command again."
                ) from err
        paths[role] = target
    return paths


def default_flow_weights(method: str, weights: str | Path | None, stage1: str | Path | None = None) -> str | None:
    """The flow weights inference uses when ``flow.weights`` is not set: what the authors' script runs.

    ``stage1`` is where the denoiser comes from (a converted folder or an official stage-1 ``.ckpt``; ``None``:
    :func:`default_weights_dir`). For RAFT, in order: ``weights`` when given; the folder's ``flow.safetensors``
    (written by ``mgld convert`` from the stage-1 checkpoint's ``flownet_model.*``, which the authors' script
    loads over raft-things.pth); the stage-1 ``.ckpt`` itself when it holds ``flownet_model.*``;
    ``<mgld_home>/official/raft-things.pth``; else ``None`` (torchvision's ``raft_large`` C_T_V1 file in torch
    hub's cache, a port of raft-things). Other methods: ``weights`` as given.
    """
    if weights or method != "raft":
        return str(Path(weights).expanduser()) if weights else None
    source = Path(stage1).expanduser() if stage1 else default_weights_dir()
    if source.is_dir() and (source / FLOW_FILE).is_file():
        return str(source / FLOW_FILE)
    if source.is_file() and holds_stage1_raft(source):
        return str(source)
    official = default_official_dir() / OFFICIAL_FILES["raft"]
    return str(official) if official.is_file() else None


def holds_stage1_raft(path: str | Path) -> bool:
    """Whether the weight file ``path`` has ``flownet_model.*`` tensors (memory-mapped read; False if unreadable)."""
    from mgld.weights.checkpoints import load_state_dict_file

    try:
        return any(k.startswith(STAGE1_RAFT_PREFIX) for k in load_state_dict_file(path))
    except (OSError, RuntimeError, ValueError):
        return False
