import importlib
import subprocess
import sys


def test_basicsr_degradations_import_after_mgld():
    code = "import mgld, basicsr.data.degradations as d; print(d.random_mixed_kernels.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "random_mixed_kernels"


def test_functional_tensor_alias_points_to_public_functional():
    import mgld  # noqa: F401

    alias = importlib.import_module("torchvision.transforms.functional_tensor")
    assert alias is importlib.import_module("torchvision.transforms.functional")
    assert hasattr(alias, "rgb_to_grayscale")


def test_importing_mgld_does_not_import_torchvision_early():
    code = "import sys, mgld; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_import_basicsr_helper_returns_module():
    from mgld._compat import import_basicsr

    module = import_basicsr("basicsr.archs.rrdbnet_arch")
    assert module.ResidualDenseBlock(num_feat=8, num_grow_ch=4).conv5.out_channels == 8
