from setuptools import find_packages, setup

package_name = "apo_bench"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["apo_core", "apo_intervention", "apo_recorder", "apo_sim", "apo_trainer", "numpy", "pyyaml"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="The APO benchmark in simulation (lockstep deployment, methods, pooled evaluation, tables).",
    license="Apache-2.0",
)
