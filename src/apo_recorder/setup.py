from glob import glob

from setuptools import find_packages, setup

package_name = "apo_recorder"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml", "README.md"]),
        (f"share/{package_name}/config", glob("config/*.yaml")),
    ],
    install_requires=["apo_ros", "rosbags", "pyyaml", "backports.zstd; python_version < '3.14'"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="APO-ROS recorder: one labelled rosbag2 (MCAP) bag per episode, crash-recoverable.",
    license="Apache-2.0",
    python_requires=">=3.10",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "apo_recorder_node = apo_recorder.recorder_node:main",
            "apo_recover_bag = apo_recorder.recovery_cli:main",
            "apo_replay = apo_recorder.replay_node:main",
        ],
    },
)
