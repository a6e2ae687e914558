"""apo_sim: the embedded default robot of APO-ROS (robosuite arm, scripted expert, demo collection).

ROS-free modules: ``env`` (SimEnv), ``expert`` (scripted experts), ``demos`` (demo collection).
``sim_node`` is the ROS 2 driver node built on them.
"""
