"""Failure across processes: dead or hung workers, restarts, stale segments, shutdown."""
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

import ferry
from conftest import call_in_thread, seg_path, sigstop, wait_served




def test_worker_killed_mid_request_gives_an_error_not_a_hang(procs, name):
    url = f"shm://{name}"
    w = procs.worker(url)
    with ferry.Client(url) as c:
        t, box = call_in_thread(c, {"sleep": np.float64(30), "x": np.zeros(3)}, timeout=20)
        time.sleep(0.5)
        os.kill(w.pid, signal.SIGKILL)
        w.wait()
        t.join(25)
        assert not t.is_alive()
        assert isinstance(box.get("error"), ferry.WorkerDied), box
        assert box["seconds"] < 5, "a dead worker must be noticed well before the timeout"
    assert ferry.reclaim(url), "the dead worker's segment is detected as stale and removed"
    assert not ferry.reclaim(url)


def test_hung_worker_times_out_per_call_and_recovers(procs, name):
    url = f"shm://{name}"
    w = procs.worker(url)
    with ferry.Client(url) as c:
        sigstop(w.pid)
        t0 = time.monotonic()
        with pytest.raises(ferry.Timeout):
            c.call(np.zeros(4), timeout=0.5)
        assert 0.4 < time.monotonic() - t0 < 3
        os.kill(w.pid, signal.SIGCONT)
        np.testing.assert_array_equal(c.call(np.arange(3), timeout=5), np.arange(3))
        # The abandoned slot came back: all slots usable again.
        for _ in range(20):
            c.call(np.zeros(1))


def test_worker_that_took_a_request_then_hung_is_abandoned_cleanly(procs, name):
    url = f"shm://{name}?slots=2"
    w = procs.worker(url)
    with ferry.Client(url) as c:
        with pytest.raises(ferry.Timeout):
            c.call({"sleep": np.float64(1.0), "x": np.zeros(1)}, timeout=0.2)
        # The worker finishes later and frees the abandoned slot; the channel keeps working.
        time.sleep(1.2)
        for _ in range(10):
            np.testing.assert_array_equal(c.call(np.ones(2), timeout=5), np.ones(2))


def test_restarted_worker_serves_the_same_name_and_old_clients_reconnect(procs, name):
    url = f"shm://{name}"
    w = procs.worker(url)
    with ferry.Client(url) as c:
        assert c.call(np.int64(5)) == 5
        os.kill(w.pid, signal.SIGKILL)
        w.wait()
        assert os.path.exists(seg_path(name)), "a crashed server leaves its segment"
        # The request was never taken: the docs promise NoServer, within the check interval.
        t0 = time.monotonic()
        with pytest.raises(ferry.NoServer):
            c.call(np.int64(6), timeout=5)
        assert time.monotonic() - t0 < 1
        procs.worker(url)  # reclaims the stale segment
        assert c.call(np.int64(7), timeout=5) == 7


def test_clean_shutdown_unlinks_the_segment(procs, name):
    url = f"shm://{name}"
    w = procs.worker(url)
    assert os.path.exists(seg_path(name))
    assert oct(os.stat(seg_path(name)).st_mode & 0o777) == "0o600"
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=10) == 0
    assert not os.path.exists(seg_path(name))


def test_two_servers_racing_for_one_name_share_it(procs, name):
    url = f"shm://{name}"
    a = procs.worker(url, wait=False)
    b = procs.worker(url, wait=False)
    wait_served(url)
    with ferry.Client(url) as c:
        pids = {int(c.call({"id": np.arange(2), "x": np.zeros(1)})["pid"]) for _ in range(200)}
    assert pids <= {a.pid, b.pid} and pids
    # The first to stop leaves the channel to the other; the last removes it.
    a.send_signal(signal.SIGTERM)
    a.wait(timeout=10)
    assert os.path.exists(seg_path(name))
    with ferry.Client(url) as c:
        assert int(c.call({"id": np.arange(2), "x": np.zeros(1)})["pid"]) == b.pid
    b.send_signal(signal.SIGTERM)
    b.wait(timeout=10)
    assert not os.path.exists(seg_path(name))


def test_client_killed_while_holding_slots_does_not_leak_them(procs, name):
    url = f"shm://{name}?slots=2"
    procs.worker(url)
    holder = procs.start([sys.executable, "-c", f"""
import ferry, time
from ctypes import byref, c_void_p
from ferry._lib import lib
c = ferry.Client("{url}")
for _ in range(2):
    call = c_void_p(); assert lib.ferry_call_begin(c._handle(), 1000, byref(call)) == 0
print("holding", flush=True)
time.sleep(60)
"""], stdout=__import__("subprocess").PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    holder.kill()
    holder.wait()
    # Both slots were claimed by the dead client; the next client's claim sweeps them back.
    with ferry.Client(url) as c:
        np.testing.assert_array_equal(c.call(np.arange(3), timeout=5), np.arange(3))
        np.testing.assert_array_equal(c.call(np.arange(3), timeout=5), np.arange(3))


def test_supervisor_replaces_a_hung_worker(procs, name):
    from conftest import FERRY, MODELS

    sup = procs.start([FERRY, "serve", os.path.join(MODELS, "testmodel.py"), "--name", name, "--hang-timeout", "1"],
                      stderr=__import__("subprocess").PIPE, text=True)
    url = f"shm://{name}"
    wait_served(url, sup)
    with ferry.Client(url) as c:
        t0 = time.monotonic()
        # The model sleeps 60 s (a hang); the supervisor kills it after ~1 s.
        with pytest.raises(ferry.WorkerDied):
            c.call({"sleep": np.float64(60), "x": np.zeros(1)}, timeout=30)
        assert time.monotonic() - t0 < 10
        # Until the replacement has loaded the model, a call is NoServer at once, saying why.
        try:
            np.testing.assert_array_equal(c.call(np.arange(3), timeout=30), np.arange(3))
        except ferry.NoServer as e:
            assert "no worker serves" in str(e) and ("hung" in str(e) or "restarting" in str(e) or str(e).endswith("now")), str(e)
        # Then the replacement serves the channel.
        wait_served(url, sup)
        np.testing.assert_array_equal(c.call(np.arange(3), timeout=30), np.arange(3))
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0
    assert "worker hung" in sup.stderr.read()


def test_supervisor_killed_takes_its_workers_and_the_segment_is_reclaimed(procs, name):
    from conftest import FERRY, MODELS
    import subprocess

    sup = procs.start([FERRY, "serve", os.path.join(MODELS, "testmodel.py"), "--name", name, "--workers", "2"])
    url = f"shm://{name}"
    wait_served(url, sup)
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(sup.pid)], capture_output=True, text=True).stdout.split()]
    assert len(children) == 2
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in children):
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{p}") for p in children), "workers must exit with their supervisor"
    with pytest.raises(ferry.NoServer):
        ferry.Client(url)
    # The orphaned workers shut down cleanly (the last removes the segment); had they been
    # killed too, the stale segment would be reclaimed here.
    ferry.reclaim(url)
    assert not os.path.exists(seg_path(name))


def test_full_dev_shm_fails_clearly_at_creation(tmp_path):
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private /dev/shm")
    from conftest import PYTHON_DIR

    script = (f"mount -t tmpfs -o size=1m tmpfs /dev/shm && "
              f"PYTHONPATH={PYTHON_DIR} {sys.executable} -c \"import ferry; ferry.Worker('shm://full?slot_size=8M')\"")
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    if "mount" in out.stderr and "permission" in out.stderr.lower():
        pytest.skip("mount not permitted here")
    assert out.returncode != 0
    assert "shared memory full" in out.stderr and "/dev/shm" in out.stderr and "--shm-size" in out.stderr, out.stderr


@pytest.fixture
def other_user():
    """A throwaway system user, and a runner of commands as that user."""
    import pwd
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("useradd"):
        pytest.skip("needs root, setpriv and useradd")
    user = "ferry-test-nobody"
    try:
        pw = pwd.getpwnam(user)
        created = False
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
        pw = pwd.getpwnam(user)
        created = True

    def run(*args, **kw):
        # The ferry command needs nothing from root's home, unlike a Python install there.
        return subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *args],
                              capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"], "HOME": "/tmp"}, **kw)
    run.uid = pw.pw_uid
    yield run
    if created:
        subprocess.run(["userdel", user], check=False)


def test_another_user_cannot_attach(procs, name, other_user):
    from conftest import FERRY
    url = f"shm://{name}"
    procs.worker(url)
    st = os.stat(seg_path(name))
    assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o600
    # The other user's shm://NAME is theirs, a different segment: nothing serves it.
    out = other_user(os.path.realpath(FERRY), "call", url)
    assert out.returncode != 0
    assert "nothing serves it" in out.stderr, out.stdout + out.stderr
    # Even aiming at our segment's file directly is refused by its mode.
    out = other_user("cat", seg_path(name))
    assert out.returncode != 0 and "Permission denied" in out.stderr


def test_another_user_cannot_squat_a_channel_name(procs, name, other_user):
    # Before: any user could create /dev/shm/ferry.NAME first and block the owner's channel.
    made = other_user("touch", f"/dev/shm/ferry.{name}", f"/dev/shm/ferry.shared-not-{name}")
    assert made.returncode == 0, made.stderr
    try:
        url = f"shm://{name}"
        procs.worker(url)  # starts: the owner's name carries the owner's uid
        with ferry.Client(url) as c:
            assert c.call(np.ones(2)).sum() == 2
        # A file planted under this user's own name is reported, naming the planter.
        planted = f"{name}-planted"
        other_user("touch", seg_path(planted))
        try:
            with pytest.raises(ferry.PermissionDenied, match=f"belongs to uid {other_user.uid}"):
                ferry.Worker(f"shm://{planted}")
        finally:
            os.unlink(seg_path(planted))
    finally:
        for f in (f"/dev/shm/ferry.{name}", f"/dev/shm/ferry.shared-not-{name}"):
            if os.path.exists(f):
                os.unlink(f)


def test_a_shared_channel_serves_other_users_explicitly(procs, name, other_user, tmp_path):
    from conftest import FERRY
    url = f"shm://{name}?scope=shared"
    procs.worker(url)
    path = seg_path(name, shared=True)
    assert os.stat(path).st_mode & 0o777 == 0o666  # whatever the umask
    src = "/tmp/" + f"ferry-shared-{name}.npy"
    np.save(src, np.arange(4, dtype=np.float32))
    os.chmod(src, 0o644)
    try:
        out = other_user(os.path.realpath(FERRY), "call", url, "--input", src)
        assert out.returncode == 0, out.stderr
        assert "output: float32 [4]" in out.stdout, out.stdout
    finally:
        os.unlink(src)
