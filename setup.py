"""Build script for unlearnx and its native extension ``unlearnx._C``.

C++ CPU kernels are always built. CUDA kernels are added when a CUDA toolkit is found
(``CUDA_HOME``, defaulting to /usr/local/cuda), when ``FORCE_CUDA=1``, or when
``TORCH_CUDA_ARCH_LIST`` is set; ``FORCE_CPU=1`` turns them off whatever else is set.

Environment switches: FORCE_CUDA, FORCE_CPU, TORCH_CUDA_ARCH_LIST (default "8.0;9.0+PTX" when no GPU is
visible), NVCC_FLAGS (extra nvcc flags), DEBUG=1 (-O0 -g), MAX_JOBS (ninja parallelism),
UNLEARNX_REQUIRE_NATIVE=1 (a failed native build fails the install; by default it warns and installs the
pure-PyTorch package).
"""
import glob
import json
import os
import platform
import sys

# torch.utils.cpp_extension reads CUDA_HOME when it is imported; its own guess can land on the folder
# of an nvcc wrapper whose lib64 has no libcudart, so prefer the standard location when it exists.
if not os.environ.get("CUDA_HOME") and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


FORCE_CUDA = _flag("FORCE_CUDA")
FORCE_CPU = _flag("FORCE_CPU")
DEBUG = _flag("DEBUG")
TORCH_HAS_CUDA = torch.version.cuda is not None
TOOLKIT_FOUND = CUDA_HOME is not None and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))
ARCH_LIST_SET = bool(os.environ.get("TORCH_CUDA_ARCH_LIST"))
BUILD_CUDA = not FORCE_CPU and (FORCE_CUDA or ARCH_LIST_SET or (TOOLKIT_FOUND and TORCH_HAS_CUDA))
if BUILD_CUDA and not TOOLKIT_FOUND:
    sys.exit("unlearnx: a CUDA build was asked for (FORCE_CUDA/TORCH_CUDA_ARCH_LIST) but no nvcc was found; "
             "set CUDA_HOME to your CUDA toolkit")
if BUILD_CUDA and not ARCH_LIST_SET:
    # No GPU to ask: compile for Ampere and Hopper (A100, H100/H200), plus PTX of the newest so that
    # later GPUs can JIT-compile the kernels.
    if not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"

cpu_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
cuda_sources = sorted(glob.glob("csrc/cuda/*.cu")) if BUILD_CUDA else []

parallel = torch.__config__.parallel_info()
openmp = "OpenMP" in parallel and "not available" not in parallel.split("ATen parallel backend:")[-1].split("\n")[0]
cxx_flags = ["-O0", "-g"] if DEBUG else ["-O3", "-DNDEBUG"]
cxx_flags += ["-std=c++20"]  # torch >= 2.10 headers require C++20
if openmp and platform.system() == "Linux":
    cxx_flags += ["-fopenmp"]
# No fast math: its flush-to-zero changes the kernels' results (csrc/cuda/losses.cu and reinit.cu say why).
nvcc_flags = ["-O0", "-g", "-lineinfo"] if DEBUG else ["-O3", "-DNDEBUG"]
nvcc_flags += os.environ.get("NVCC_FLAGS", "").split()
if BUILD_CUDA and any("fast_math" in f or "ftz=true" in f for f in nvcc_flags):
    sys.exit("unlearnx: NVCC_FLAGS must not enable fast math (--use_fast_math, -ftz=true): flush-to-zero "
             "changes the CUDA kernels' results")
define_macros = [("WITH_CUDA", None)] if BUILD_CUDA else []

config = {
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "python": platform.python_version(),
    "cuda_home": CUDA_HOME,
    "build_cuda": BUILD_CUDA,
    "force_cuda": FORCE_CUDA,
    "force_cpu": FORCE_CPU,
    "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if BUILD_CUDA else None,
    "openmp": openmp,
    "debug": DEBUG,
    "cxx_flags": cxx_flags,
    "nvcc_flags": nvcc_flags if BUILD_CUDA else None,
    "sources": cpu_sources + cuda_sources,
}
print("unlearnx build configuration:")
for key, value in config.items():
    print(f"  {key} = {value}")
# Read at import time to warn when the extension was built against another torch.
with open(os.path.join(ROOT, "unlearnx", "_build_info.json"), "w") as fh:
    json.dump(config, fh, indent=2)

Extension = CUDAExtension if BUILD_CUDA else CppExtension
ext = Extension(
    name="unlearnx._C",
    sources=cpu_sources + cuda_sources,
    include_dirs=[os.path.join(ROOT, "csrc")],
    define_macros=define_macros,
    extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags} if BUILD_CUDA else {"cxx": cxx_flags},
    extra_link_args=["-fopenmp"] if openmp and platform.system() == "Linux" else [],
)

class OptionalNativeBuild(BuildExtension):
    """Compile ``unlearnx._C``; if that fails, warn and install without it (unlearnx then runs its pure-PyTorch
    ops), unless UNLEARNX_REQUIRE_NATIVE=1 makes the failure fatal."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # compiler missing or failing, ninja errors, link errors
            if _flag("UNLEARNX_REQUIRE_NATIVE"):
                raise
            bar = "=" * 78
            sys.stderr.write(f"\n{bar}\nWARNING: unlearnx's native extension did not build ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}).\nunlearnx is "
                             "installed without it and uses its pure-PyTorch ops (same results, slower). Set "
                             f"UNLEARNX_REQUIRE_NATIVE=1 to make this an error.\n{bar}\n\n")


packages = ["unlearnx", "unlearnx.ops", "unlearnx.data", "unlearnx.methods", "unlearnx.metrics",
            "unlearnx.bench", "unlearnx.cli"]
setup(
    packages=packages,
    package_dir={"unlearnx.cli": "cli"},
    package_data={"unlearnx": ["_build_info.json"]},
    ext_modules=[ext],
    cmdclass={"build_ext": OptionalNativeBuild},
    zip_safe=False,
)
