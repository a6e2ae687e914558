from setuptools import find_packages, setup

package_name = "apo_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["apo_core"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="The one ROS layer: QoS profiles, strict parameter loading, callback guards, run_node, "
                "an in-process graph helper.",
    license="Apache-2.0",
    python_requires=">=3.10",
)
