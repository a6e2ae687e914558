from setuptools import find_packages, setup

package_name = "apo_policy_node"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["apo_core", "apo_ros"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="VLA policy node for APO-ROS.",
    license="Apache-2.0",
    entry_points={"console_scripts": ["apo_policy_node = apo_policy_node.policy_node:main"]},
)
