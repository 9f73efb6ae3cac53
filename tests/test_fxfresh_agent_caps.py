"""`farm status` listed an agent's capabilities (``blender`` among them: the frames media type's
renderer; its --tag values) while the agent's own "connected" line named its media types only.
Both say the same list now.

A real controller, a real `farm agent` process (as a node's operator starts it), the real status text.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from conftest import wait_for

from farm.cli.status import status_text

FARM = [sys.executable, "-m", "farm"]


def test_the_agents_connected_line_names_the_capabilities_farm_status_lists(tmp_path, controller):
    env = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    node = subprocess.Popen([*FARM, "agent", "--controller", controller.url, "--id", "n1", "--slots", "1",
                             "--tag", "gpu"], env=env, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(node.stderr), daemon=True)
    reader.start()
    try:
        (line,) = wait_for(lambda: [li for li in list(said) if "connected to " in li], 120, "its line")
        report = controller.status()
        (agent,) = report["agents"]
    finally:
        node.terminate()
        node.wait(60)
        reader.join(30)
        node.stderr.close()
    caps = agent["capabilities"]
    assert "gpu" in caps, caps  # before: the line named media types only, never a tag or a renderer
    listed = f"[{', '.join(caps)}]"
    assert line.rstrip().endswith(f"as n1, 1 slot, {listed}"), (line, caps)
    status_line = next(li for li in status_text(report).splitlines() if li.startswith("  n1 "))
    assert f"  {listed}" in status_line, status_line
