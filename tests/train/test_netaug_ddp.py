"""2-process gloo DDP under torchrun: identical weights on both ranks after every step, and the
same sampled augmented model on both (the NetAug generator is seeded identically, docs/netaug.md
pitfall 11). The worker runs as a script (torchrun), so it is kept as source text here."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent('''
import json, os, sys
import torch
import torch.distributed as dist
from tinyexport.train.optim import param_groups
from tinyexport.train.trainer import TrainConfig, train
from tinyexport.train.netaug.task import NetAugSchedule, NetAugTask

class _Recording(NetAugTask):
    """Gathers a weight fingerprint before each step and the sampled config after it."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.records = []

    def train_step(self, ctx):
        weights = torch.cat([p.detach().flatten() for p in ctx.module.parameters()])
        result = super().train_step(ctx)
        cfg = self.last_config
        sampled = torch.tensor([cfg.stem, *cfg.stage_widths, cfg.final or 0,
                                *[int(1e6 * (r or 0)) for r in cfg.expand_ratios]],
                               dtype=torch.float64)
        gathered_w = [torch.empty_like(weights) for _ in range(2)]
        gathered_s = [torch.empty_like(sampled) for _ in range(2)]
        dist.all_gather(gathered_w, weights)
        dist.all_gather(gathered_s, sampled)
        self.records.append((torch.equal(*gathered_w), torch.equal(*gathered_s)))
        return result


def main(out_dir):
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    from tinyexport.distributed import init_distributed
    from tinyexport.train.models import model_spec
    from tinyexport.train.netaug.supernet import build_supernet

    init_distributed("cpu")
    torch.manual_seed(0)
    model = build_supernet(model_spec("mbv2-tiny", 10, 32))
    gen = torch.Generator().manual_seed(100 + rank)  # different data on each rank
    data = torch.utils.data.TensorDataset(torch.randn(24, 3, 32, 32, generator=gen),
                                          torch.randint(0, 10, (24,), generator=gen))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    optimizer = torch.optim.SGD(param_groups(model, 4e-5), lr=0.1, momentum=0.9,
                                nesterov=True)
    task = _Recording(torch.nn.CrossEntropyLoss(label_smoothing=0.1),
                      NetAugSchedule(epochs=2, stop_aug_w_epoch=1), seed=0)
    config = TrainConfig(epochs=2, out_dir=out_dir, progress=False, tensorboard=False)
    train(model, task, loader, optimizer, None, config)
    final = torch.cat([p.detach().flatten() for p in model.parameters()])
    both = [torch.empty_like(final) for _ in range(2)]
    dist.all_gather(both, final)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"records": task.records, "final_equal": torch.equal(*both)}, fh)
    dist.destroy_process_group()



if __name__ == "__main__":
    main(sys.argv[1])
''')


def test_two_rank_gloo_keeps_ranks_identical(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--standalone", str(script), str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert len(result["records"]) == 6  # 3 steps x 2 epochs
        assert all(w and s for w, s in result["records"]), result["records"]
        assert result["final_equal"]
    assert (tmp_path / "checkpoint.pt").is_file()


FAILING_WORKER = textwrap.dedent('''
import json, os, sys
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
''')


def test_a_failed_write_on_rank_0_stops_every_rank(tmp_path):
    """Rank 0 cannot write checkpoint.pt (disk full): it raises the OSError, the other rank a
    StageError, and neither waits forever for the other."""
    script = tmp_path / "worker.py"
    script.write_text(FAILING_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--standalone", str(script), str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads((tmp_path / "rank0.json").read_text())
    other = json.loads((tmp_path / "rank1.json").read_text())
    assert first[0] == "OSError" and "disk full" in first[1], first
    assert other[0] == "StageError" and "rank 0 could not write" in other[1], other
