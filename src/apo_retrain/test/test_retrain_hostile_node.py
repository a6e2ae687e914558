"""The retrain node as its own process: a malformed request does not end it; a bad parameter ends its start.

(The full set of hostile requests over DDS is in test_retrain_hostile_requests.py.)
"""

import signal
import subprocess
import sys

import pytest
import yaml

from apo_core import topics
from apo_ros.testing import RosGraph, start_node_process, stop_process

pytestmark = pytest.mark.ros
MODULE = "apo_retrain.retrain_node"


def test_malformed_job_id_does_not_stop_the_node_process(tmp_path):
    from apo_interfaces.msg import RetrainStatus
    from apo_interfaces.srv import GetRetrainStatus

    # an empty model store is enough to answer status requests
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text(yaml.safe_dump({"work_dir": str(tmp_path / "work"), "bags_dir": str(tmp_path / "bags"),
                                   "model_store": str(tmp_path / "models")}))
    proc = start_node_process(MODULE, ["--ros-args", "-p", f"config_file:={cfg}"], log_path=str(tmp_path / "node.log"))
    try:
        with RosGraph() as g:
            client = g.probe_node().create_client(GetRetrainStatus, topics.RETRAIN_STATUS)
            got = g.call(client, GetRetrainStatus.Request(job_id="x" * 300), timeout=60).status
            assert "invalid job id" in got.message
            got = g.call(client, GetRetrainStatus.Request(), timeout=30).status
            assert got.state == RetrainStatus.STATE_IDLE and "invalid" not in got.message and proc.poll() is None
    finally:
        rc = stop_process(proc, sig=signal.SIGINT)
    assert rc == 0, (tmp_path / "node.log").read_text()  # a clean stop


@pytest.mark.parametrize("param, words", [
    ("stepz:=5", ["'stepz'", "did you mean 'steps'", "config_file"]),
    ("steps:=2147483647", ["steps", "1000000"]),
    ("config_file:=/nonexistent/retrain.yaml", ["/nonexistent/retrain.yaml"]),
])
def test_bad_parameter_exits_2_naming_it(tmp_path, param, words):
    proc = subprocess.run([sys.executable, "-m", MODULE, "--ros-args", "-p", param], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert all(word in proc.stderr for word in words), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
