from setuptools import find_packages, setup

package_name = "apo_cli"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["apo_core", "apo_bringup", "apo_bench", "apo_sim", "apo_trainer", "pyyaml"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="The apo command: deploy/graph (over apo_bringup), demo, bench and models.",
    license="Apache-2.0",
    entry_points={"console_scripts": ["apo = apo_cli.cli:main"]},
)
