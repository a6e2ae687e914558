from setuptools import find_packages, setup

package_name = "apo_core"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    # rosbags, zstandard, lz4: the bag library apo_core.bags (pinned in requirements/trainer.txt).
    install_requires=["numpy", "pyyaml", "torch", "transformers", "peft", "safetensors", "rosbags", "zstandard", "lz4",
                      "h5py", "tokenizers", "pillow"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="ROS-free core of APO-ROS (labels, action tokenizer, VLA policies, schemas).",
    license="Apache-2.0",
    python_requires=">=3.10",
)
