from setuptools import find_packages, setup

package_name = "apo_sim"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    # robosuite/mujoco are pinned in requirements/base.txt (robosuite==1.5.2, mujoco==3.3.7).
    install_requires=["apo_core", "apo_ros", "numpy", "h5py", "tqdm", "robosuite", "mujoco"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="APO-ROS simulated robot: robosuite arm driver node, scripted expert, demo collection.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "apo_sim_node = apo_sim.sim_node:main",
            "apo-collect-demos = apo_sim.demos:main",
        ],
    },
)
