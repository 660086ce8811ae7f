"""A process that claims runs until none is left: imports only the store, so it starts fast."""

from fcn_sweep.sweep.store import Store


def claim_all(db: str, worker: str, out) -> None:
    store = Store(db)
    got = []
    while (run := store.claim(worker)) is not None:
        got.append(run.id)
    out.put(got)
