from setuptools import find_packages, setup

package_name = "apo_retrain"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["apo_core", "apo_ros", "apo_trainer", "apo_sim"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="The /apo/retrain service node of APO-ROS (over the ROS-free apo_trainer.retrain jobs).",
    license="Apache-2.0",
    entry_points={"console_scripts": ["apo_retrain_node = apo_retrain.retrain_node:main"]},
)
