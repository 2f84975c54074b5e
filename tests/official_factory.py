"""Small checkpoints in the official layouts, built from the oracle fixtures, for loader tests."""

from __future__ import annotations

import re

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from conftest import load_oracle
from raft_layout import random_raft, to_raft_things_layout


def tiny_openclip_tower(width: int = 64, layers: int = 3, seed: int = 0) -> dict:
    """State dict of a real (tiny) OpenCLIP text tower, prefixed as in an LDM checkpoint."""
    from open_clip.model import CLIPTextCfg, _build_text_tower

    torch.manual_seed(seed)
    tower = _build_text_tower(32, CLIPTextCfg(context_length=77, vocab_size=49408, width=width, heads=1, layers=layers))
    return {"cond_stage_model.model." + k: v for k, v in tower.state_dict().items()}, tower.eval()


def openclip_penultimate(tower, ids: torch.Tensor) -> torch.Tensor:
    """What the authors' FrozenOpenCLIPEmbedder returns: penultimate block output + ln_final."""
    with torch.no_grad():
        x = tower.token_embedding(ids) + tower.positional_embedding
        for block in tower.transformer.resblocks[:-1]:
            x = block(x, attn_mask=tower.attn_mask)
        return tower.ln_final(x)


def official_stage1_state_dict(with_tower: bool = True, raft: torch.nn.Module | None = None,
                               with_raft: bool = True) -> dict:
    """UNet + time-aware encoder of the fixture, plus the other parts a stage-1 checkpoint holds: OpenCLIP tower,
    SD VAE, schedule buffers and the RAFT_SR tensors (``flownet_model.*``, of ``raft`` or a random raft_large)."""
    sd = dict(load_oracle("unet.pt")["state_dict"])
    if with_tower:
        sd.update(tiny_openclip_tower()[0])
    for key, value in sd_first_stage().items():
        sd["first_stage_model." + key] = value
    if with_raft:
        raft = raft if raft is not None else random_raft()
        sd.update(to_raft_things_layout(raft.state_dict(), prefix="flownet_model."))
    sd["betas"] = torch.linspace(1e-4, 2e-2, 1000)
    return sd


def official_vae_state_dict(with_loss: bool = True) -> dict:
    sd = dict(load_oracle("vae.pt")["state_dict"])
    if with_loss:
        sd["loss.logvar"] = torch.zeros(())
        sd["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
    return sd


def sd_first_stage() -> dict:
    """The plain SD VAE part of the fixture's video VAE (no temporal / fusion keys)."""
    return {k: v for k, v in load_oracle("vae.pt")["state_dict"].items() if "temporal" not in k and "fusion" not in k}


def sd_ldm_state_dict() -> dict:
    """An SD-2-style LDM checkpoint for the oracle's tiny config: the fixture UNet without SFT and
    temporal keys, middle block renumbered 0, 2, 4 -> 0, 1, 2, plus an OpenCLIP tower and a VAE."""
    sd = {}
    for key, value in load_oracle("unet.pt")["state_dict"].items():
        if not key.startswith("model.diffusion_model.") or ".spade." in key:
            continue
        match = re.match(r"model\.diffusion_model\.middle_block\.(\d+)\.(.*)", key)
        if match:
            index = {0: 0, 2: 1, 4: 2}.get(int(match.group(1)))
            if index is None:
                continue
            key = f"model.diffusion_model.middle_block.{index}.{match.group(2)}"
        sd[key] = value
    sd.update(tiny_openclip_tower()[0])
    sd.update({"first_stage_model." + k: v for k, v in sd_first_stage().items()})
    return sd


class _Holder(pl.LightningModule):
    """A tiny module whose checkpoint carries a given state dict, like the authors' Lightning 1.x runs."""

    def __init__(self, state_dict: dict):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self._official = state_dict

    def training_step(self, batch, batch_idx):
        return (self.weight * batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["state_dict"] = self._official
        # Lightning 1.x keyed callback states by the callback class itself
        checkpoint["callbacks"][ModelCheckpoint] = {"best_model_score": torch.tensor(0.5), "dirpath": "/x"}


def write_lightning_checkpoint(path, state_dict: dict, tmp_dir) -> None:
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=str(tmp_dir))], default_root_dir=str(tmp_dir),
    )
    data = torch.utils.data.DataLoader(torch.ones(2, 1), batch_size=1)
    trainer.fit(_Holder(state_dict), data)
    trainer.save_checkpoint(str(path))
