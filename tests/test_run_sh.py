"""run.sh's own checks (the shell functions, run on their own: no install is started)."""

import subprocess
from pathlib import Path

RUN_SH = Path(__file__).resolve().parent.parent / "run.sh"


def _need_disk(gb: int, where: Path, **env) -> subprocess.CompletedProcess:
    fn = subprocess.run(
        ["sed", "-n", "/^need_disk()/,/^}/p", str(RUN_SH)], capture_output=True, text=True, check=True
    ).stdout
    assert fn.startswith("need_disk()"), "run.sh lost its need_disk function"
    return subprocess.run(
        ["bash", "-c", f'{fn}\nneed_disk {gb} "{where}" && echo passed'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_disk_check_refuses_with_a_clear_message_and_passes_when_there_is_room(tmp_path):
    r = _need_disk(10**7, tmp_path / "venv")  # ten petabytes: never free
    assert r.returncode == 1 and "passed" not in r.stdout
    assert "GB free on the disk holding" in r.stderr and "needs about 10000000 GB" in r.stderr
    assert _need_disk(0, tmp_path).stdout.strip() == "passed"
    assert _need_disk(10**7, tmp_path, LMTX_SKIP_DISK_CHECK="1").stdout.strip() == "passed"
