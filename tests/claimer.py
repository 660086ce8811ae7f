"""A process that claims runs until none is left: imports only the store, so it starts fast."""

import time

from fcn_sweep.sweep.store import Store


def claim_all(url: str, worker: str, out, start, work_s: float = 0.002) -> None:
    store = Store(url)
    start.wait(timeout=300)  # spawned processes come up seconds apart; the race only exists once all are up
    got = []
    while claimed := store.claim_many(worker, 1):
        got.append(claimed[0].id)
        if len(got) == 1:
            # Every process holds a run before any takes a second: the work is shared whatever the
            # machine's load (one process could otherwise drain the queue while the others wait for a CPU).
            start.wait(timeout=300)
        time.sleep(work_s)  # a real worker trains between claims
    out.put(got)
