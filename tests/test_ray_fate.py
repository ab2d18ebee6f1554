"""A local Ray instance that lmtx starts dies with lmtx, however lmtx ends (marker ray; .ci/run runs it).

Its own module: the Ray session of tests/test_ray_engine.py is shut down before this one starts its own."""

import os
import signal
import subprocess
import sys
import time

import pytest

from lmtx.search.watchdog import alive, descendants

pytest.importorskip("ray", reason="pip install 'lmtx[ray]'") if os.environ.get("LMTX_NEED_RAY") != "1" else None
pytestmark = pytest.mark.ray

CHILD = """
import time
from lmtx.search.ray_engine import RayEngine, _local_ray_pids
with RayEngine(actors=1, log=lambda s: None):
    print(" ".join(map(str, _local_ray_pids())), flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the watchdog reads /proc")
def test_a_local_ray_dies_with_a_sigkilled_lmtx():
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        heads = [int(x) for x in line.split()]
        assert heads, "the local Ray instance's head processes were not listed"
        procs = descendants(dict.fromkeys(heads))  # the head processes and what they started (workers)
        assert all(alive(x) for x in heads)
    finally:
        p.send_signal(signal.SIGKILL)  # no exit handler runs: only the watchdog can stop Ray now
        p.wait()
    t_end = time.time() + 60
    while time.time() < t_end and any(alive(x) for x in procs):
        time.sleep(0.5)
    left = sorted(x for x in procs if alive(x))
    assert not left, f"Ray processes left after lmtx was SIGKILLed: {left}"
