"""torchrun worker of test_netaug_ddp: NetAug training on 2 gloo ranks, recording after every
step whether both ranks hold the same weights and sampled the same augmented model."""

import json
import os
import sys

import torch
import torch.distributed as dist

from tinyexport.train.netaug.task import NetAugSchedule, NetAugTask
from tinyexport.train.optim import param_groups
from tinyexport.train.trainer import TrainConfig, train


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
