"""Package layout: the library lives in autopeft/; the top-level folders api/, workers/,
dashboards/ and search_spaces/ are installed as autopeft.api, autopeft.workers, ... so no
generic top-level module named `api` or `workers` is ever installed. Metadata is in
pyproject.toml."""

from setuptools import find_packages, setup

MAPPED = {
    "autopeft.api": "api",
    "autopeft.workers": "workers",
    "autopeft.dashboards": "dashboards",
    "autopeft.search_spaces": "search_spaces",
}

packages = find_packages(include=["autopeft", "autopeft.*"])
package_dir = {"autopeft": "autopeft"}
for package, folder in MAPPED.items():
    package_dir[package] = folder
    packages.append(package)
    packages.extend(f"{package}.{sub}" for sub in find_packages(folder))

setup(packages=packages, package_dir=package_dir)
