"""A process that claims runs until none is left: imports only the store, so it starts fast."""

import time

from fcn_sweep.sweep.store import Store


def claim_all(url: str, worker: str, out, start, work_s: float = 0.002) -> None:
    store = Store(url)
    start.wait(timeout=60)  # spawned processes come up seconds apart; the race only exists once all are up
    got = []
    while claimed := store.claim_many(worker, 1):
        got.append(claimed[0].id)
        time.sleep(work_s)  # a real worker trains between claims; without this one process can drain the queue
    out.put(got)
