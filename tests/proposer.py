"""A process that tops up a bayes sweep's proposals, as every worker does between claims."""

from fcn_sweep.sweep.controller import Controller
from fcn_sweep.sweep.store import Store
from fcn_sweep.sweep.worker import maintain


def top_up(url: str, start, rounds: int, want: int) -> None:
    store = Store(url)
    controller = Controller(store)
    start.wait(timeout=300)  # spawned processes start seconds apart, more on a busy machine
    for _ in range(rounds):
        if store.info.closed:
            break
        maintain(store, controller, want)
        # a worker claims what it proposed before it proposes again
        for r in store.claim_many("proposer", want):
            store.finish(r.id, "finished", {"best_val_acc": 0.5 + r.config.lr})
    store.close()
