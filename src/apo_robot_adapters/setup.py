from setuptools import find_packages, setup

package_name = "apo_robot_adapters"

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
    description="Robot adapters of APO-ROS: a real arm's camera, joint states, pose, MoveIt Servo and "
                "ros2_control interfaces <-> the APO-ROS robot topics.",
    license="Apache-2.0",
    entry_points={"console_scripts": [
        "apo_camera_adapter = apo_robot_adapters.camera_adapter_node:main",
        "apo_state_adapter = apo_robot_adapters.state_adapter_node:main",
        "apo_twist_adapter = apo_robot_adapters.twist_adapter_node:main",
        "apo_joint_adapter = apo_robot_adapters.joint_adapter_node:main",
    ]},
)
