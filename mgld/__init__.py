"""mgld: motion-guided latent diffusion for real-world 4x video super-resolution (MGLD-VSR, ECCV 2024)."""

from mgld._compat import install_torchvision_functional_tensor_alias, quiet_third_party_logs

install_torchvision_functional_tensor_alias()
quiet_third_party_logs()

__version__ = "0.1.0"
