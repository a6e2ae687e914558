"""Workspace consistency: manifests, setup scripts, CI, docker files and README stay in step."""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "src").iterdir() if (p / "package.xml").is_file())


def test_expected_packages_exist():
    names = {p.name for p in PACKAGES}
    assert {"apo_interfaces", "apo_core", "apo_policy_node", "apo_intervention", "apo_recorder", "apo_trainer",
            "apo_sim", "apo_bringup"} <= names


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_package_manifest(pkg):
    root = ET.parse(pkg / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == pkg.name
    build_type = root.find("export/build_type").text
    if build_type == "ament_python":
        setup = (pkg / "setup.py").read_text()
        assert re.search(rf"package_name = \"{pkg.name}\"|name=\"{pkg.name}\"", setup)
        assert (pkg / "resource" / pkg.name).is_file()
        assert (pkg / pkg.name / "__init__.py").is_file()
        if "console_scripts" in setup:
            cfg = (pkg / "setup.cfg").read_text()
            assert f"$base/lib/{pkg.name}" in cfg
    else:
        assert build_type == "ament_cmake" and (pkg / "CMakeLists.txt").is_file()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/run.sh" in readme
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_pins_agree_between_setup_and_docker():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    torch_pin = re.search(r'TORCH_PIN="torch==([\d.]+)"', setup).group(1)
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        text = dockerfile.read_text()
        assert f"ARG TORCH_VERSION={torch_pin}" in text, dockerfile.name
        for req in re.findall(r"requirements/[\w.]+\.txt", text):
            assert (ROOT / req).is_file(), f"{dockerfile.name} names missing {req}"
    assert "-r trainer.txt" in (ROOT / "requirements" / "base.txt").read_text()


def test_every_requirement_is_pinned():
    for req in (ROOT / "requirements").glob("*.txt"):
        for line in req.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-r"):
                assert "==" in line, f"{req.name}: {line} is not pinned"
