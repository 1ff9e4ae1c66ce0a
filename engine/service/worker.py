"""One job, in a process of its own: `python -m engine.service.worker`, started by the engine.

Protocol: the engine writes the job as one JSON line on stdin and keeps stdin open; the worker
answers with JSON lines on stdout ({"type": "progress" | "result" | "error", ...}). stderr is
the job's log file, and stray prints are sent there too so they cannot corrupt the protocol.

The worker lives no longer than its engine: when stdin reaches end-of-file (the engine exited
or was killed) it terminates its process group, so no orphan keeps the GPU or writes into a
folder that a resumed job is about to use.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback

from engine.core.errors import UserError
from engine.service.kinds import LineReporter, encode_message, get_kind

CANCEL_EXIT = 143  # 128 + SIGTERM


class Cancelled(BaseException):
    """Raised in the job's thread on SIGTERM; a BaseException so `except Exception` in job code
    does not swallow it, while `finally` blocks (staged output folders) still run."""


def _on_sigterm(signum, frame):
    raise Cancelled()


def _die_with_engine(grace_s: float = 10.0) -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    # The engine is gone: stop cleanly if we can, for sure if we cannot.
    sys.stderr.write("the engine went away: stopping this job\n")
    sys.stderr.flush()
    try:
        os.killpg(os.getpgrp(), signal.SIGTERM)
        time.sleep(grace_s)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> int:
    spec = json.loads(sys.stdin.buffer.readline())
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # fd 1 is now the log file too
    lock = threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            proto.write(encode_message(msg))
            proto.flush()

    signal.signal(signal.SIGTERM, _on_sigterm)
    threading.Thread(target=_die_with_engine, daemon=True).start()
    report = LineReporter(send, sys.stderr)
    report.log(f"job {spec['id']} ({spec['kind']}) in worker pid {os.getpid()}")
    try:
        result = get_kind(spec["kind"])(spec["params"], report)
    except Cancelled:
        report.log("cancelled")
        return CANCEL_EXIT
    except UserError as e:
        report.log(f"error: {e}")
        send({"type": "error", "error": str(e)})
        return 1
    except Exception as e:  # noqa: BLE001  any failure becomes the job's one-line error
        traceback.print_exc()
        first = (str(e).splitlines() or [""])[0][:300]
        send({"type": "error", "error": f"{type(e).__name__}: {first} (see the job log)"})
        return 1
    send({"type": "result", "result": result if isinstance(result, dict) else {"value": result}})
    report.log("done")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: a job's leftover threads (data loaders, thread pools) must not
    # keep a finished worker alive.
    os._exit(code)
