"""Streams (ferry.Publisher / ferry.Subscriber) across real processes: order, drops, fps and
age, backpressure, dead peers on either side, several streams, and a stress run that kills
readers at random while every byte of every frame is checked."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ferry
from conftest import env

PEER = os.path.join(os.path.dirname(__file__), "stream_peer.py")


def peer(procs, *args, **kw):
    return procs.start([sys.executable, PEER, *map(str, args)], stdout=subprocess.PIPE, text=True, **kw)


def wait_line(p, prefix, timeout=20.0):
    """The first line of `p`'s output starting with `prefix` (bounded)."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sel.select(timeout=max(0.0, end - time.monotonic())):
            line = p.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line.strip()
    raise AssertionError(f"{prefix!r} did not come from {p.args}")


def test_every_frame_in_order_from_another_process(procs, name):
    p = peer(procs, "publish", name, 300, 0, 64, "every")
    wait_line(p, "ready")
    with ferry.Subscriber(name, every=True) as sub:
        seqs = []
        for frame in sub:
            n = int(frame.meta["n"])
            assert frame.array.shape == (64, 64) and (frame.array == n % 251).all()
            assert not frame.array.flags.writeable
            seqs.append(frame.seq)
            assert frame.timestamp_ns <= time.monotonic_ns() and frame.age >= 0
        assert sub.dropped == 0 and sub.received == 300
    # It joined before the first frame (the publisher waited for it): all 300, in order.
    assert seqs == list(range(1, 301))
    assert p.wait(timeout=20) == 0


def test_slow_subscriber_sees_only_new_frames_and_counts_drops(procs, name):
    p = peer(procs, "publish-forever", name, 2, 32)
    wait_line(p, "ready")
    with ferry.Subscriber(name) as sub:
        frames = []
        for _ in range(8):
            f = sub.recv(timeout=10)
            n = int(f.meta["n"])
            assert (f.array == n % 251).all()
            frames.append((f.seq, f.dropped_before, f.age))
            f.release()
            time.sleep(0.1)  # a slow model: ~50 frames are published meanwhile
        seqs = [s for s, _, _ in frames]
        assert seqs == sorted(set(seqs))
        # Drops are exactly the gaps, and there are many (latest frame wins).
        assert sum(d for _, d, _ in frames[1:]) == seqs[-1] - seqs[0] - (len(seqs) - 1)
        # Every frame published since it attached was received or counted, the ones before
        # its first frame included.
        assert sub.dropped == sum(d for _, d, _ in frames) > 8 * 10
        # Each frame taken after a sleep is the newest one, not one queued 100 ms ago.
        assert sorted(a for _, _, a in frames[1:])[len(frames) // 2] < 0.05
        assert sub.fps > 0


def test_every_mode_backpressure_and_a_clear_error_when_the_ring_is_full(name):
    with ferry.Publisher(name, slots=4, slot_size="64K") as pub, ferry.Subscriber(name, every=True) as sub:
        for i in range(4):  # 4 slots: 4 unread frames fit
            pub.publish(np.full(8, i, np.uint8), timeout=1)
        t0 = time.monotonic()
        with pytest.raises(ferry.Busy, match="every frame, 4 behind"):
            pub.publish(np.full(8, 4, np.uint8), timeout=0.2)
        assert 0.15 < time.monotonic() - t0 < 5
        f = sub.recv(timeout=1)
        assert int(f.array[0]) == 0
        with pytest.raises(ferry.Busy):  # taken, but still held
            pub.publish(np.full(8, 4, np.uint8), timeout=0.05)
        f.release()
        pub.publish(np.full(8, 4, np.uint8), timeout=1)  # a slot came free
        assert [int(sub.recv(timeout=1).array[0]) for _ in range(4)] == [1, 2, 3, 4]


def test_latest_subscribers_never_hold_the_publisher_back(name):
    with ferry.Publisher(name, slots=4, slot_size="64K") as pub:
        subs = [ferry.Subscriber(name) for _ in range(2)]
        pub.publish(np.zeros(8, np.uint8))
        held = [s.recv(timeout=1) for s in subs]  # both pin the same frame and keep it
        for i in range(100):
            pub.publish(np.full(8, i, np.uint8), timeout=0.5)
        assert all(int(h.array[0]) == 0 for h in held)  # pinned frames never rewritten
        assert [int(s.recv(timeout=1).array[0]) for s in subs] == [99, 99]
        for s in subs:
            s.close()


def test_kept_arrays_keep_their_bytes(name):
    with ferry.Publisher(name, slots=3, slot_size="64K") as pub, ferry.Subscriber(name) as sub:
        pub.publish(np.full((4, 4), 7, np.uint8))
        kept = sub.recv(timeout=1).array[1:]  # a view outliving its frame
        for i in range(20):
            pub.publish(np.full((4, 4), i, np.uint8))
            sub.recv(timeout=1)
        assert (kept == 7).all() and sub.preserved == 1


def test_dead_publisher_is_an_error_not_a_hang(procs, name):
    p = peer(procs, "publish-forever", name, 5, 16)
    wait_line(p, "ready")
    with ferry.Subscriber(name) as sub:
        sub.recv(timeout=10)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        t0 = time.monotonic()
        with pytest.raises(ferry.WorkerDied, match="publisher of stream .* died"):
            for _ in range(1000):  # whatever was published last, then the error
                sub.recv(timeout=10)
        assert time.monotonic() - t0 < 2
    assert not os.path.exists(f"/dev/shm/ferry-stream.{os.geteuid()}.{name}")  # no stale segment left


def test_a_stream_has_one_publisher_and_a_dead_ones_stream_is_taken_over(procs, name):
    with ferry.Publisher(name, slot_size="64K"):
        with pytest.raises(ferry.Busy, match="already has a live publisher"):
            ferry.Publisher(name)
    p = peer(procs, "publish-forever", name, 5, 16)
    wait_line(p, "ready")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    with ferry.Publisher(name, slot_size="64K") as pub, ferry.Subscriber(name) as sub:
        assert pub.publish(np.ones(3, np.uint8)) == 1  # a fresh stream
        assert sub.recv(timeout=1).seq == 1


def test_dead_subscriber_gives_back_what_it_held(procs, name):
    with ferry.Publisher(name, slots=4, slot_size="64K") as pub:
        h = peer(procs, "hold", name)
        deadline = time.monotonic() + 10
        while pub.subscribers == 0:  # a subscriber gets frames published after it attached
            assert time.monotonic() < deadline and h.poll() is None, "the subscriber did not attach"
            time.sleep(0.01)
        pub.publish(np.zeros(8, np.uint8))
        wait_line(h, "holding")
        assert pub.subscribers == 1
        h.send_signal(signal.SIGKILL)
        h.wait(timeout=10)
        # Its every-frame cursor and its pin no longer hold the ring.
        for i in range(20):
            pub.publish(np.full(8, i, np.uint8), timeout=2)
        assert pub.subscribers == 0


def test_errors(name):
    with pytest.raises(ferry.NoServer, match="nothing publishes it"):
        ferry.Subscriber(name)
    with pytest.raises(ferry.InvalidArgument):
        ferry.Publisher(name, slots=1)
    with pytest.raises(ferry.InvalidArgument):
        ferry.Publisher("bad/name")
    with ferry.Publisher(name, slot_size="64K") as pub:
        sub = ferry.Subscriber(name)
        with pytest.raises(ferry.PayloadTooLarge, match="slot_size"):
            pub.publish(np.zeros(1 << 20, np.uint8))
        with pytest.raises(ferry.Timeout):
            sub.recv(timeout=0.05)
        pub.publish(np.ones(3, np.uint8))  # the failed publish left nothing behind
        assert sub.recv(timeout=1).seq == 1
        pub.publish(np.ones(3, np.uint8))
    # Ended: what is left is still taken, then ChannelClosed; the name is free again.
    assert sub.recv(timeout=1).seq == 2
    with pytest.raises(ferry.ChannelClosed, match="has ended"):
        sub.recv(timeout=1)
    sub.close()
    with pytest.raises(ferry.NoServer):
        ferry.Subscriber(name)


def test_several_named_streams(procs, name):
    names = [f"{name}-cam{i}" for i in range(3)]
    pubs = [peer(procs, "publish", n, 100, 0, 16 * (i + 1), "every") for i, n in enumerate(names)]
    for p in pubs:
        wait_line(p, "ready")
    subs = [ferry.Subscriber(n, every=True) for n in names]
    try:
        for i, s in enumerate(subs):
            got = [f.array.shape for f in s]
            assert got == [(16 * (i + 1), 16 * (i + 1))] * 100
    finally:
        for s in subs:
            s.close()
    for p in pubs:
        assert p.wait(timeout=20) == 0


def test_stress_readers_killed_at_random_never_see_a_torn_frame(procs, name):
    """A fast publisher of 64 KiB frames; readers (latest and every mode) check every byte
    and are SIGKILLed at random points and restarted, for ~4 s. No reader may ever see a
    torn or out-of-order frame, and the publisher must keep going."""
    p = peer(procs, "publish-forever", name, 0.2, 256)
    wait_line(p, "ready")
    rng = random.Random(7)
    finished = []
    readers = []
    end = time.monotonic() + 4
    while time.monotonic() < end:
        readers = [r for r in readers if r.poll() is None]
        while len(readers) < 3:
            mode = "every" if rng.random() < 0.5 else "latest"
            readers.append(peer(procs, "check", name, rng.uniform(0.2, 1.0), *( [mode] if mode == "every" else [])))
        time.sleep(rng.uniform(0.01, 0.15))
        victim = rng.choice(readers)
        if rng.random() < 0.5 and victim.poll() is None:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
    for r in readers:
        out, _ = r.communicate(timeout=20)
        finished.append((r.returncode, out))
    assert p.poll() is None, "the publisher died or stopped"
    for code, out in finished:
        assert "torn" not in out
        if code == 0:
            assert "ok" in out
    # And a final reader still gets fresh frames.
    with ferry.Subscriber(name) as sub:
        f = sub.recv(timeout=10)
        assert (f.array == int(f.meta["n"]) % 251).all()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)


def test_ferry_stats_shows_a_stream_live(procs, name):
    from conftest import ROOT
    p = peer(procs, "publish-forever", name, 5, 16)
    wait_line(p, "ready")
    with ferry.Subscriber(name) as sub:
        for _ in range(5):
            sub.recv(timeout=10)
        out = subprocess.run([os.path.join(ROOT, "bin", "ferry"), "stats", name, "--json", "--interval", "0.3"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        import json
        s = json.loads(out.stdout.strip().splitlines()[-1])
        assert s["stream"] == name and s["publisher_alive"] and s["publisher_pid"] == p.pid
        assert s["fps"] > 20 and s["published"] >= 5 and s["slots"] == 8
        [me] = s["subscribers"]
        assert me["pid"] == os.getpid() and me["mode"] == "latest" and me["received"] == 5
        assert me["behind"] > 0  # it stopped taking frames while the publisher went on
        # Without a name, streams are listed beside channels.
        out = subprocess.run([os.path.join(ROOT, "bin", "ferry"), "stats", "--interval", "0.1"], capture_output=True, text=True, timeout=30)
        assert f"stream {name}" in out.stdout


@pytest.mark.parametrize("every", [False, True], ids=["latest", "every"])
def test_every_frame_since_attach_is_received_or_counted_dropped(name, every):
    """received + dropped == frames published since the subscriber attached, once it has
    caught up — the frames before its first recv() included — seen alike by the subscriber,
    its frames and `ferry stats`."""
    import json

    from conftest import ROOT
    with ferry.Publisher(name, slots=8, slot_size="64K") as pub:
        for i in range(3):  # before the subscriber: not its frames
            pub.publish(np.full(8, i, np.uint8))
        with ferry.Subscriber(name, every=every) as sub:
            assert sub.received == 0 and sub.dropped == 0
            for i in range(5):
                pub.publish(np.full(8, 10 + i, np.uint8))
            taken = []
            while True:
                try:
                    f = sub.recv(timeout=0.2)
                except ferry.Timeout:
                    break
                taken.append((f.seq, f.dropped_before, int(f.array[0])))
                f.release()
            if every:
                assert [v for _, _, v in taken] == [10, 11, 12, 13, 14] and all(d == 0 for _, d, _ in taken)
            else:
                assert taken == [(8, 4, 14)]  # the newest; the 4 before it count as dropped
            assert sub.received + sub.dropped == 5
            assert sub.dropped == sum(d for _, d, _ in taken)
            out = subprocess.run([os.path.join(ROOT, "bin", "ferry"), "stats", name, "--json", "--interval", "0.1"],
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            [me] = json.loads(out.stdout.strip().splitlines()[-1])["subscribers"]
            assert (me["received"], me["dropped"]) == (sub.received, sub.dropped)
