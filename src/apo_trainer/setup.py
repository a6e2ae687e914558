from setuptools import find_packages, setup

package_name = "apo_trainer"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["apo_core", "numpy", "pyyaml", "torch", "h5py", "peft", "safetensors", "tqdm", "tensorboard",
                      "matplotlib", "opencv-python", "pyarrow", "rosbags",
                      "datasets", "pandas"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="APO-ROS trainer: conversion, APO and baseline losses, distributed training (no ROS needed).",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "apo-train = apo_trainer.train:main",
            "apo-train-bc = apo_trainer.train:main_bc",
            "apo-convert = apo_trainer.convert:main",
            "apo-report = apo_trainer.analysis:main",
            "apo-export-lerobot = apo_trainer.lerobot_export:main",
        ],
    },
)
