"""Deployment edges: a default channel works in a default Docker container's 64 MiB /dev/shm,
and a channel that does not fit says how big it must be, how big /dev/shm is, and what to
change. Each case runs in its own mount namespace with a private 64 MiB tmpfs on /dev/shm
(root only, as in CI; skipped elsewhere)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import MODELS, env

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")


def in_small_shm(script: str, size: str = "64m") -> subprocess.CompletedProcess:
    """Runs a Python script where /dev/shm is a fresh tmpfs of `size` (gone when it exits)."""
    head, _, body = script.partition("\n") if script.startswith("ECHO") else ("", "", script)
    py = (head + "\n" if head else "") + textwrap.dedent(body)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs -o size={size} tmpfs /dev/shm && exec {sys.executable} -c \"$0\"", py],
        capture_output=True, text=True, timeout=120, env=env())


def test_the_default_channel_fits_a_default_docker_shm():
    out = in_small_shm(f"ECHO = {os.path.join(MODELS, 'exact_echo.py')!r}\n" + """
        import numpy as np, os, subprocess, sys, time, ferry
        url = "shm://docker-default"
        w = subprocess.Popen([sys.executable, "-m", "ferry.worker", ECHO, "--url", url])
        try:
            for _ in range(400):
                try:
                    c = ferry.Client(url); break
                except ferry.NoServer:
                    time.sleep(0.05)
            x = np.arange(3 << 17, dtype=np.float32)  # 1.5 MiB: an echo needs room for the request and the reply
            assert (c.call(x) == x).all()
            seg = os.path.getsize(f"/dev/shm/ferry.{os.geteuid()}.docker-default")
            print("answered", os.statvfs("/dev/shm").f_blocks * os.statvfs("/dev/shm").f_frsize, "segment", seg)
        finally:
            w.terminate(); w.wait(10)
    """)
    assert out.returncode == 0, out.stderr
    assert "answered 67108864 segment 33562624" in out.stdout  # 8 × 4 MiB + 8 KiB in 64 MiB


def test_a_channel_too_big_for_shm_says_what_to_change():
    out = in_small_shm("""
        import ferry
        try:
            ferry.Worker("shm://too-big?slots=8&slot_size=8M")
        except ferry.FerryError as e:
            print(e)
        else:
            raise SystemExit("created a channel that does not fit")
    """)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "67,117,056 bytes" in text  # what the channel needs
    assert "holds 67,108,864 bytes (64.0 MiB) in all" in text  # how big /dev/shm is
    assert "--shm-size=192m" in text and "slots" in text and "slot_size" in text
