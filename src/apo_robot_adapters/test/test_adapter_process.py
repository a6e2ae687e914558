"""An adapter as its own process, as launch starts it: a bad setting exits 2 with one line naming it, a
running adapter ends cleanly (exit 0) on SIGINT."""

import signal
import subprocess
import sys

import pytest

from apo_ros.testing import start_node_process, stop_process

pytestmark = pytest.mark.ros


def test_bad_setting_exits_2_naming_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "apo_robot_adapters.joint_adapter_node", "--ros-args",
                           "-p", "output:=trajectory"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "apo_joint_adapter: error:" in proc.stderr and "output" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_twist_adapter_process_publishes_and_stops_cleanly(tmp_path):
    from geometry_msgs.msg import TwistStamped

    from apo_ros.qos import qos_profile
    from apo_ros.testing import RosGraph

    log = tmp_path / "adapter.log"
    proc = start_node_process("apo_robot_adapters.twist_adapter_node", log_path=str(log))
    try:
        with RosGraph() as g:
            probe = g.probe_node("process_probe")
            got = []
            probe.create_subscription(TwistStamped, "/servo_node/delta_twist_cmds", got.append,
                                      qos_profile("reliable", 10))
            g.wait_until(lambda: got, timeout=60, what="zero twist from the adapter process")
            assert got[0].twist.linear.x == 0.0 and got[0].header.frame_id == "base_link"
    finally:
        code = stop_process(proc, signal.SIGINT)
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()
