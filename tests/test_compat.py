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


def test_loose_version_orders_as_distutils():
    import warnings

    from mgld._compat import LooseVersion

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from distutils.version import LooseVersion as Reference  # Python 3.11's standard library (or setuptools')
    versions = ["0.9.0", "0.15.2", "0.17.0+cu121", "1.4.2", "0.10", "2.1.0a0", "0.9", "10.0.1"]
    for a in versions:
        assert LooseVersion(a).version == Reference(a).version, a
        for b in versions:
            for op in ("__lt__", "__le__", "__eq__", "__ge__", "__gt__"):
                want = getattr(Reference(a), op)(Reference(b))
                assert getattr(LooseVersion(a), op)(LooseVersion(b)) == want, (a, op, b)
    assert LooseVersion("0.15.2") >= "0.9.0" and str(LooseVersion("1.2")) == "1.2"


def test_basicsr_imports_without_any_distutils():
    """As on Python 3.12 without setuptools: no importer has distutils, the shim's LooseVersion serves basicsr."""
    code = (
        "import sys, mgld._compat as c\n"
        "c._available_elsewhere = lambda *a: False\n"  # the standard library's (3.11) and setuptools' hidden
        "import mgld, basicsr.archs.arch_util as u\n"
        "import distutils.version as v\n"
        "print(getattr(sys.modules['distutils'], c._SHIM_MARK, False), u.LooseVersion is c.LooseVersion,"
        " v.LooseVersion('0.17.0') >= v.LooseVersion('0.9.0'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]


def test_a_real_distutils_is_left_alone():
    code = "import mgld, distutils.version, sys; print(hasattr(sys.modules['distutils'], '__mgld_distutils_shim__'))"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"  # Python 3.11: the standard library's distutils
