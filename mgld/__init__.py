"""mgld: motion-guided latent diffusion for real-world 4x video super-resolution (MGLD-VSR, ECCV 2024).

``from mgld import MGLDPipeline`` is the Python entry point; ``mgld --help`` the command line.
"""

from mgld._compat import install_distutils_shim, install_torchvision_functional_tensor_alias, quiet_third_party_logs

install_torchvision_functional_tensor_alias()
install_distutils_shim()
quiet_third_party_logs()

__version__ = "0.1.0"
__all__ = ["MGLDPipeline", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import mgld` (and `mgld --help`) does not import torch.
    if name == "MGLDPipeline":
        from mgld.pipeline import MGLDPipeline

        return MGLDPipeline
    raise AttributeError(f"module 'mgld' has no attribute {name!r}")
