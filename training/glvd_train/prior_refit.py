"""``glvd-train prior``: refit a checkpoint's identity prior on the feature cache, the rest unchanged.

The prior (``GLVD.identity_prior``: the face the descent starts from and measures its offsets
against) is baseline (f)'s descriptor ridge times the kit's identity basis
(:func:`glvd_train.guided_training.fit_prior`). It is fitted, not trained, so it can be refitted
when the ridge or the cache improves; the cache's held-out shards stay out of the fit.

    glvd-train prior --init-from vendor/glvd/glvd/weights/glvd_face.pt --cache runs/cache --out runs/prior.pt
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from glvd.checkpoint import load_checkpoint, save_checkpoint

    from .guided_training import fit_prior, with_prior

    p = argparse.ArgumentParser(prog="glvd-train prior", description=__doc__.split("\n\n")[0])
    p.add_argument("--init-from", required=True, help="the checkpoint whose prior is refitted")
    p.add_argument("--cache", type=Path, default=Path("runs/cache"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rank", type=int, default=None, help="the prior's rank (default: the checkpoint's, else 32)")
    p.add_argument("--val-shards", type=int, default=2, help="held-out shards left out of the fit")
    p.add_argument("--kit", default=None)
    a = p.parse_args(argv)
    try:
        model, prov = load_checkpoint(a.init_from, torch.device("cpu"))
        held_out = a.val_shards * json.loads((a.cache / "cache.json").read_text())["faces_per_shard"]
        rank = a.rank or model.cfg.identity_prior_rank or 32
        prior_map, prior_basis = fit_prior(a.cache, model, rank, a.kit, skip_faces=held_out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"glvd-train prior: {exc}", file=sys.stderr)
        return 2
    if model.cfg.identity_prior_rank == rank:
        model.prior_map.copy_(prior_map)
        model.prior_basis.copy_(prior_basis)
    else:
        model = with_prior(model, prior_map, prior_basis)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    prov = dict(prov)
    prov.pop("saved", None)
    prov["identity prior refitted"] = (f"from {a.init_from}, rank {rank}, cache {a.cache} without its first "
                                       f"{held_out} faces, commit {commit or '?'}")
    save_checkpoint(a.out, model, prov, half=prov.get("stored_as") == "float16")
    print(f"identity prior refitted (rank {rank}) -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
