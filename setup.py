"""hvm: a hardware-assisted x86 hypervisor in Python (KVM through cffi)."""
from setuptools import find_packages, setup

setup(
    name="hvm",
    version="0.1.0",
    description="A hardware-assisted x86 hypervisor written in Python, driving /dev/kvm through cffi",
    python_requires=">=3.11",
    packages=find_packages(include=["hvm", "hvm.*", "kvmffi", "kvmffi.*", "paravirt", "paravirt.*"]),
    setup_requires=["cffi>=1.16"],
    cffi_modules=["kvmffi/_build.py:ffibuilder", "hvm/engine/_ucstop_build.py:ffibuilder",
                  "hvm/_readahead_build.py:ffibuilder"],
    install_requires=[
        "cffi>=1.16",
        "construct>=2.10,<2.11",
        "psutil>=5.9",
        "capstone>=5.0,<6",
        "pyelftools>=0.29",
        "unicorn==2.1.4",  # the software engine; its semantics are validated against this version
        "zstandard>=0.19",  # host-side decompression of zstd-compressed kernels
        "lz4>=4.0",  # ... and lz4 ones (gzip, xz, lzma, bzip2 are in the standard library)
        "pycdlib>=1.14",  # images: writes the ISO of the linux-iso recipe
        "pillow>=9",  # the VGA screen as a picture (machine.screen.png(), --screenshot)
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
    entry_points={"console_scripts": ["hvmrun = hvm.cli:main"]},
)
