"""Command line: serve a Python model on a Ferry channel.

    python -m ferry.worker model.py --url shm://digits

`model.py` defines `predict(inputs)` (or the function named by --function); an optional
`setup()` runs once first and, if it returns a callable, that becomes the model.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys

from .errors import ChannelClosed
from .serving import load_model, model_identity, serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferry.worker", description="Serve a Python model on a Ferry channel.")
    p.add_argument("model", help="model file (model.py) or module name")
    p.add_argument("--url", default=None, help="channel URL (default shm://NAME from --name)")
    p.add_argument("--name", default="ferry", help="channel name when --url is not given")
    p.add_argument("--function", default="predict", help="function to serve (default: predict)")
    p.add_argument("--inputs", choices=["auto", "dict"], default="auto")
    p.add_argument("--tensors", choices=["numpy", "torch"], default=None,
                   help="what the model gets and returns: numpy arrays (default) or torch tensors (zero-copy)")
    p.add_argument("--exit-with-parent", action="store_true", help="exit when the supervising process dies")
    p.add_argument("--cpu", type=int, default=None, help="pin this worker to one CPU")
    p.add_argument("--max-batch", type=int, default=1, help="merge up to this many requests into one model call")
    p.add_argument("--max-delay-us", type=int, default=500, help="how long to wait for more requests to batch (µs)")
    p.add_argument("--model-version", default=None, help="a version, part of the model's identity (one model per channel)")
    p.add_argument("--model-id", default=None, help="the model's identity as `ferry serve` computed it (default: computed here)")
    p.add_argument("--identity", action="store_true", help="print the model's identity and exit (what `ferry serve` asks)")
    args = p.parse_args(argv)
    if args.identity:
        print(model_identity(args.model, args.function, args.model_version))
        return 0
    if args.exit_with_parent:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            return 1
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    fn = load_model(args.model, args.function)
    url = args.url or f"shm://{args.name}"
    try:
        identity = args.model_id or model_identity(args.model, args.function, args.model_version)
        serve(url, fn, inputs=args.inputs, max_batch=args.max_batch, max_delay_us=args.max_delay_us if args.max_batch > 1 else 0,
              model=identity, tensors=args.tensors or "numpy")
    except ChannelClosed as e:
        if "broken" in str(e):  # another process truncated the segment: say so, fail
            print(f"ferry.worker: {e}", file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
