"""APO-ROS human intervention: arbiter (mux, labels, episodes), teleop mappings, scripted operator.

The ROS-free logic (``validation``, ``mux``, ``episodes``, ``joy_mapping``, ``keyboard``,
``operator_logic``, ``config``) imports without rclpy; the ``*_node`` modules are
the thin ROS shells.
"""
