"""Map the stage folders at the repo root onto the one import namespace ``tinyexport``.

``core/`` is ``tinyexport`` itself; ``train/`` is ``tinyexport.train``, and so on. Every subpackage
is listed explicitly (found below), because an unlisted one would import in an editable install
but be missing from the wheel (docs/style.md, "Layout").
"""

from setuptools import find_packages, setup

STAGE_FOLDERS = {
    "tinyexport": "core",
    "tinyexport.train": "train",
    "tinyexport.export": "export",
    "tinyexport.quantize": "quantize",
    "tinyexport.firmware_eval": "firmware_eval",
    "tinyexport.benchmarks": "benchmarks",
}


def _packages() -> list[str]:
    packages = []
    for package, folder in STAGE_FOLDERS.items():
        packages.append(package)
        packages += [f"{package}.{sub}" for sub in find_packages(folder)]
    return packages


setup(
    package_dir=dict(STAGE_FOLDERS),
    packages=_packages(),
    package_data={"": ["*.yaml", "*.json", "*.cc", "*.cc.in", "*.h.in", "*.txt",
                        # firmware_eval/templates: the bundle's model API and project layouts;
                        # firmware_eval/bundle_files: its generated headers and model array
                        "templates/*", "templates/*/*", "bundle_files/*"]},
)
