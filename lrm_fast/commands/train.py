"""``lrm-fast train CONFIG``: train or fine-tune (one process, or under ``torchrun``)."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("config", help="training config (.yaml or .json; see configs/)")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="continue from <out_dir>/checkpoint/last.pt (or the given trainer checkpoint)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (value parsed as JSON when it can be), repeatable")


def _parse_sets(items):
    import json

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def run(args) -> int:
    from ..train.config import TrainConfig
    from ..train.trainer import train

    cfg = TrainConfig.load(args.config, _parse_sets(args.set))
    res = train(cfg, resume=args.resume)
    print("done: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    return 0
