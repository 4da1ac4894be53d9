"""Set-up scripts: apt-get waits for another apt process's lock and fails loudly otherwise
(checked with a stand-in apt-get on PATH that answers as the real one does)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKED = ("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234 "
          "(apt-get)")


def fake_apt(tmp_path: Path, answers: list[tuple[int, str]]) -> Path:
    """An apt-get that gives `answers` (exit status, stderr) in turn and logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for index, (status, text) in enumerate(answers):
        (tmp_path / f"answer{index}").write_text(f"{status}\n{text}\n")
    script = bin_dir / "apt-get"
    script.write_text(f"""#!/usr/bin/env bash
n=$(cat {tmp_path}/calls 2>/dev/null || echo 0); echo $((n + 1)) > {tmp_path}/calls
echo "$@" >> {tmp_path}/args
answer={tmp_path}/answer$n; [ -f "$answer" ] || answer={tmp_path}/answer{len(answers) - 1}
tail -n +2 "$answer" >&2; exit "$(head -n 1 "$answer")"
""")
    script.chmod(0o755)
    return bin_dir


def apt_get(tmp_path: Path, bin_dir: Path, *args: str, wait: int = 600
            ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "APT_LOCK_RETRY": "0",
           "APT_LOCK_WAIT": str(wait)}
    return subprocess.run(["bash", "-c", f"source {ROOT}/scripts/apt_get.sh; apt_get \"$@\"",
                           "apt_get", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_apt_get_waits_while_another_apt_holds_the_lock(tmp_path):
    bin_dir = fake_apt(tmp_path, [(100, LOCKED), (100, LOCKED), (0, "")])
    result = apt_get(tmp_path, bin_dir, "install", "-y", "dataset-fashion-mnist")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calls").read_text().strip() == "3"
    assert "waiting" in result.stderr
    assert "DPkg::Lock::Timeout=600 install -y dataset-fashion-mnist" in \
        (tmp_path / "args").read_text()


def test_apt_get_gives_up_after_its_wait_and_shows_apts_error(tmp_path):
    bin_dir = fake_apt(tmp_path, [(100, LOCKED)])
    result = apt_get(tmp_path, bin_dir, "update", wait=3)
    assert result.returncode == 1 and LOCKED in result.stderr
    assert int((tmp_path / "calls").read_text()) == 4  # waited 0, 1, 2, 3 "seconds"


def test_apt_get_fails_at_once_on_any_other_error(tmp_path):
    bin_dir = fake_apt(tmp_path, [(100, "E: Unable to locate package dataset-fashion-mnist")])
    result = apt_get(tmp_path, bin_dir, "install", "dataset-fashion-mnist")
    assert result.returncode == 1 and "Unable to locate package" in result.stderr
    assert (tmp_path / "calls").read_text().strip() == "1"
