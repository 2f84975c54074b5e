"""The original RAFT / RAFT_SR key layout, written from torchvision's names independently of mgld's converter, to
build raft-things.pth files and the ``flownet_model.*`` part of a stage-1 checkpoint in tests."""

from __future__ import annotations

import re

import torch

# Original RAFT (princeton-vl/RAFT core/extractor.py, update.py) names, written from torchvision's, to re-key a
# state dict into the raft-things layout; independent of the module's (reverse) table.
TO_ORIGINAL = (
    (r"^feature_encoder\.", "fnet."),
    (r"^context_encoder\.", "cnet."),
    (r"^(fnet|cnet)\.convnormrelu\.0\.", r"\1.conv1."),
    (r"^(fnet|cnet)\.convnormrelu\.1\.", r"\1.norm1."),
    (r"^(fnet|cnet)\.conv\.", r"\1.conv2."),
    (r"\.convnormrelu([12])\.0\.", r".conv\1."),
    (r"\.convnormrelu([12])\.1\.", r".norm\1."),
    (r"motion_encoder\.convcorr([12])\.0\.", r"encoder.convc\1."),
    (r"motion_encoder\.convflow([12])\.0\.", r"encoder.convf\1."),
    (r"motion_encoder\.conv\.0\.", "encoder.conv."),
    (r"recurrent_block\.convgru([12])\.conv([zrq])\.", r"gru.conv\2\1."),
    (r"^mask_predictor\.convrelu\.0\.", "update_block.mask.0."),
    (r"^mask_predictor\.conv\.", "update_block.mask.2."),
)


def to_raft_things_layout(state_dict: dict, prefix: str = "module.") -> dict:
    """torchvision ``raft_large`` keys -> original RAFT keys under ``prefix`` (``module.`` as raft-things.pth,
    ``flownet_model.`` as the authors' stage-1 checkpoint), with the shortcut norm stored twice as upstream."""
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in TO_ORIGINAL:
            key = re.sub(pattern, replacement, key)
        out[prefix + key] = value
        if ".downsample.1." in key:  # upstream registers the shortcut norm twice: norm3 and downsample.1
            out[prefix + key.replace(".downsample.1.", ".norm3.")] = value
    return out


def random_raft(seed: int = 0) -> torch.nn.Module:
    """A randomly initialised torchvision ``raft_large`` with non-trivial BatchNorm running statistics."""
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(seed)
    model = raft_large(weights=None).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(1000)
    return model
