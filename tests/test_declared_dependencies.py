"""Every package declares what its code imports, and uses the apo packages it declares.

For each Python package under src/: the top-level modules its non-test code imports (AST, imports inside
functions included) are mapped through DEPENDENCIES to a rosdep key (package.xml <depend>/<exec_depend>)
and/or a pip distribution (setup.py install_requires). Pip-only modules (no rosdep key) must be in
install_requires; apo_core and apo_trainer, which install with pip alone on a machine without ROS, must
list every pip distribution they import. An import inside ``try: ... except ImportError`` (or a broader
handler) is optional and need not be declared. A module missing from the table fails the test by name:
add it with its keys rather than skipping it.
"""

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PIP_INSTALLED = {"apo_core", "apo_trainer"}  # installed by pip on the ROS-free GPU box

# top-level module -> (rosdep key or None, pip distribution or None)
DEPENDENCIES = {
    "numpy": ("python3-numpy", "numpy"),
    "yaml": ("python3-yaml", "pyyaml"),
    "torch": ("python3-torch", "torch"),
    "h5py": ("python3-h5py", "h5py"),
    "cv2": ("python3-opencv", "opencv-python"),
    "tqdm": ("python3-tqdm", "tqdm"),
    "scipy": ("python3-scipy", "scipy"),
    "matplotlib": ("python3-matplotlib", "matplotlib"),
    "PIL": ("python3-pil", "pillow"),
    "pandas": ("python3-pandas", "pandas"),
    # pip only (no rosdep key): pinned in requirements/*.txt, declared in setup.py install_requires
    "transformers": (None, "transformers"),
    "tokenizers": (None, "tokenizers"),
    "peft": (None, "peft"),
    "safetensors": (None, "safetensors"),
    "rosbags": (None, "rosbags"),
    "mcap": (None, "mcap"),
    "zstandard": (None, "zstandard"),
    "lz4": (None, "lz4"),
    "backports": (None, "backports-zstd"),  # `from backports import zstd` (compression.zstd before 3.14)
    "compression": (None, None),  # the standard library's compression.zstd from Python 3.14 on
    "pyarrow": (None, "pyarrow"),
    "datasets": (None, "datasets"),
    "robosuite": (None, "robosuite"),
    "mujoco": (None, "mujoco"),
    "mink": (None, "mink"),
    # ROS 2 (rosdep keys; on this machine the ros-* wheels of requirements/ros.txt)
    **{name: (name, None) for name in (
        "rclpy", "rcl_interfaces", "std_msgs", "std_srvs", "sensor_msgs", "geometry_msgs", "diagnostic_msgs",
        "builtin_interfaces", "ament_index_python", "launch", "launch_ros", "trajectory_msgs",
        # a ROS 2 install's, not on PyPI: imported where available (apo_robot_adapters)
        "cv_bridge", "tf2_ros", "control_msgs")},
}
OPTIONAL_HANDLERS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def python_packages():
    return sorted(p for p in SRC.iterdir() if (p / "setup.py").is_file() and (p / "package.xml").is_file())


def apo_names():
    return {p.name for p in SRC.iterdir() if (p / "package.xml").is_file()}


def _catches_import_errors(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in OPTIONAL_HANDLERS for t in types)


def imported_modules(code_dir: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(required, optional): top-level module -> files importing it, stdlib and relative imports left out."""
    required: dict[str, set[str]] = {}
    optional: dict[str, set[str]] = {}

    def visit(node, in_optional_try: bool, where: str):
        if isinstance(node, ast.Try):
            guarded = any(_catches_import_errors(h) for h in node.handlers)
            for child in node.body:
                visit(child, in_optional_try or guarded, where)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, in_optional_try, where)
            return
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names:
                (optional if in_optional_try else required).setdefault(top, set()).add(where)
        for child in ast.iter_child_nodes(node):
            visit(child, in_optional_try, where)

    for path in sorted(code_dir.rglob("*.py")):
        visit(ast.parse(path.read_text(), str(path)), False, str(path.relative_to(SRC)))
    return required, optional


def manifest_depends(pkg: Path) -> set[str]:
    root = ET.parse(pkg / "package.xml").getroot()
    return {e.text.strip() for tag in ("depend", "exec_depend") for e in root.iter(tag)}


def normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def install_requires(pkg: Path) -> set[str]:
    """The distribution names of setup.py's install_requires list (version specifiers and markers dropped)."""
    for node in ast.walk(ast.parse((pkg / "setup.py").read_text())):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return {normalise(re.split(r"[\s;<>=!~\[]", req, maxsplit=1)[0]) for req in ast.literal_eval(node.value)}
    return set()


def launched_packages() -> set[str]:
    """Packages config/deploy.yaml starts nodes from: apo_bringup depends on them without importing them."""
    graph = yaml.safe_load((ROOT / "config" / "deploy.yaml").read_text())
    return {node["package"] for node in graph["nodes"]}


def dependency_problems(pkg: Path) -> list[str]:
    name, apo = pkg.name, apo_names()
    required, optional = imported_modules(pkg / name)
    depends, requires = manifest_depends(pkg), install_requires(pkg)
    problems = []
    for module in sorted(set(required) | set(optional)):
        if module == name:
            continue
        if module not in DEPENDENCIES and module not in apo:
            problems.append(f"{module} (imported by {sorted(required.get(module, optional.get(module)))[0]}) is not "
                            f"in tests/test_declared_dependencies.py DEPENDENCIES: add its rosdep key / pip name")
            continue
        if module not in required:
            continue
        where = sorted(required[module])[0]
        key, dist = (module, module) if module in apo else DEPENDENCIES[module]
        if module == "apo_interfaces":
            dist = None  # built by ament_cmake, never a pip distribution
        if key and key not in depends:
            problems.append(f"package.xml lacks <exec_depend>{key}</exec_depend> ({where} imports {module})")
        if dist and (key is None or name in PIP_INSTALLED) and normalise(dist) not in requires:
            problems.append(f"setup.py install_requires lacks {dist!r} ({where} imports {module})")
    used = set(required) | set(optional) | (launched_packages() if name == "apo_bringup" else set())
    for declared in sorted((depends | requires) & apo - used - {name}):
        problems.append(f"declares {declared} but no code of {name} imports it")
    return problems


@pytest.mark.parametrize("pkg", python_packages(), ids=lambda p: p.name)
def test_declared_dependencies_match_imports(pkg):
    problems = dependency_problems(pkg)
    assert not problems, f"{pkg.name}:\n  " + "\n  ".join(problems)


def test_the_check_finds_undeclared_unknown_and_unused_dependencies(tmp_path, monkeypatch):
    """A made-up package with one of each mistake: every one is reported by name."""
    pkg = tmp_path / "src" / "apo_fake"
    (pkg / "apo_fake").mkdir(parents=True)
    (pkg / "apo_fake" / "mod.py").write_text(
        "import numpy\nimport transformers\nimport no_such_lib\nfrom apo_core import errors\n"
        "try:\n    import h5py\nexcept ImportError:\n    h5py = None\n")
    (pkg / "package.xml").write_text('<package format="3"><name>apo_fake</name><exec_depend>apo_core</exec_depend>'
                                     "<exec_depend>apo_sim</exec_depend></package>")
    (pkg / "setup.py").write_text('setup(name="apo_fake", install_requires=["numpy>=1", "apo_core"])\n')
    for other in ("apo_core", "apo_sim"):
        (tmp_path / "src" / other).mkdir()
        (tmp_path / "src" / other / "package.xml").write_text("<package/>")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "src")
    problems = "\n".join(dependency_problems(pkg))
    assert "lacks <exec_depend>python3-numpy</exec_depend>" in problems  # in setup.py is not enough
    assert "install_requires lacks 'transformers'" in problems  # pip-only: setup.py
    assert "no_such_lib (imported by apo_fake/apo_fake/mod.py) is not in" in problems
    assert "declares apo_sim but no code of apo_fake imports it" in problems
    assert "h5py" not in problems and "apo_core" not in problems  # optional import; declared and used
