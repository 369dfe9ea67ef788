"""Retrying a client call against a cluster whose leaders or coordinators may be moving."""
import sys, time


def retry(what, f, deadline, pause=0.3):
    """Calls f until it succeeds; exits non-zero with the last error once `deadline` passed."""
    while True:
        try:
            return f()
        except Exception as e:  # noqa: BLE001 - any client error is retried until the deadline
            if time.time() > deadline:
                sys.exit(f"{what}: no answer before the deadline: {e!r}")
            print(f"{what}: {e!r}; retrying", file=sys.stderr, flush=True)
            time.sleep(pause)
