"""setup.py: the refit module's C extension for `pip install .` (metadata in pyproject.toml).

Builds build/librefit.so first (./configure when there is no config.ninja: REFIT_CONFIGURE passes
options such as --plans=a,b; then ninja), links the extension against it and puts a copy beside the
extension (found through rpath $ORIGIN). `ninja python` builds the same module into build/python."""
import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
# setuptools refuses an egg_base that does not exist, and a fresh clone has no build/pip: make it
# before setup() reads the options (pip runs this file in the source tree, cwd = ROOT)
os.makedirs(os.path.join(ROOT, "build", "pip"), exist_ok=True)


class BuildExt(build_ext):
    def run(self):
        if not os.path.exists(os.path.join(ROOT, "config.ninja")):
            subprocess.check_call(["sh", "./configure"] + os.environ.get("REFIT_CONFIGURE", "").split(), cwd=ROOT)
        subprocess.check_call(["ninja", "build/librefit.so"], cwd=ROOT)
        super().run()
        out = os.path.dirname(self.get_ext_fullpath("refit._refit"))
        shutil.copy2(os.path.join(ROOT, "build", "librefit.so"), os.path.join(out, "librefit.so"))


setup(
    ext_modules=[Extension("refit._refit", sources=["python/refit/_refit.c"], include_dirs=["runtime/include"],
                           library_dirs=["build"], libraries=[":librefit.so"], runtime_library_dirs=["$ORIGIN"],
                           extra_compile_args=["-std=c11"])],
    cmdclass={"build_ext": BuildExt},
    options={"build": {"build_base": "build/pip"}, "egg_info": {"egg_base": "build/pip"}},
)
