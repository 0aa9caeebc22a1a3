"""torchrun worker of test_netaug_ddp: rank 0 cannot write its checkpoint (disk full); each rank
writes how its training ended."""

import json
import os
import sys

import torch

from tinyexport.distributed import init_distributed
from tinyexport.train.task import TrainTask
from tinyexport.train.trainer import TrainConfig, train


class _Task(TrainTask):
    def export_payload(self, module, meta):
        return {"state_dict": module.state_dict()}


def full_disk(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 32")


def main(out_dir):
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    init_distributed("cpu")
    if rank == 0:
        torch.save = full_disk  # rank 0 is the one that writes
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    loader = [(torch.randn(4, 3, 2, 2), torch.randint(0, 3, (4,))) for _ in range(2)]
    config = TrainConfig(epochs=2, out_dir=out_dir, progress=False)
    try:
        train(model, _Task(torch.nn.CrossEntropyLoss()), loader,
              torch.optim.SGD(model.parameters(), lr=0.1), None, config)
        outcome = ["finished", ""]
    except Exception as exc:
        outcome = [type(exc).__name__, str(exc)]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(outcome, fh)
    # What is checked is written: leave without gloo's teardown, whose threads can abort the
    # process ("terminate called without an active exception") when the peer has already gone.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
