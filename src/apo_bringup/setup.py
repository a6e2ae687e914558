import glob
import os

from setuptools import find_packages, setup

package_name = "apo_bringup"
# The workspace's top-level launch/ and config/ are installed into this package's share directory,
# so `ros2 launch apo_bringup deploy.launch.py` finds them after a colcon build.
here = os.path.dirname(os.path.abspath(__file__))
top = os.path.relpath(os.path.join(here, "..", ".."), here)

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", sorted(glob.glob(os.path.join(top, "launch", "*.launch.py")))),
        (f"share/{package_name}/config", sorted(glob.glob(os.path.join(top, "config", "*.yaml")))),
    ],
    install_requires=["apo_core", "apo_ros", "pyyaml"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="Launch support of the APO-ROS deploy graph (graph file, runner, session).",
    license="Apache-2.0",
)
