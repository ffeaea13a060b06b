"""Can a fresh encoder localise the 68 landmarks in the renders better than the template does?

The identity is in a few pixels of landmark offset (research/signal_budget/signal_budget.md): with the true camera the
template's 68 landmarks already project within ~2.4 px of the truth's in the 128 px crop. If the
model's encoder can learn to place the 68 landmarks closer than that, a 2D landmark loss on its
pixel-aligned features is a dense, easy signal the descent can use; if it cannot, it will not
read identity either. Trains the encoder architecture from scratch with a 1x1-conv heatmap head on
its S/4 feature map and a soft-argmax (the 68 points in crop pixels, L1 loss) on a fixed set of
renders per curriculum difficulty, and reports the held-out pixel error as training goes, against
the template projected with the true camera and against the mean landmark position.

Usage: .venv/bin/python -m research.landmark_learnability.landmark_learnability [--difficulties 1] [--iterations 2400]
       [--renders 3072] [--out research/landmark_learnability/landmark_learnability.md]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from glvd.cameras import Cameras
from glvd.encoder import ImageEncoder
from glvd.model import ModelConfig
from glvd.topology import load_kit, template_from_kit
from glvd_train.synth import SynthConfig, SyntheticFaces
from research.common import curriculum_options, finish, generated_by, start


SEED = 30_000_321  # disjoint from training, validation, evaluate and the other tools


class HeatmapLandmarks(nn.Module):
    """``(B, 3, S, S)`` -> ``(B, 68, 2)`` crop pixels: soft-argmax of 68 heatmaps on the S/4 map."""

    def __init__(self, widths: tuple[int, ...], points: int = 68) -> None:
        super().__init__()
        self.encoder = ImageEncoder(widths)
        self.head = nn.Conv2d(self.encoder.out_channels[0], points, 1)
        self.log_temp = nn.Parameter(torch.tensor(0.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f1 = self.encoder(images)[0][0]  # (B, C, S/4, S/4)
        B, _, H, W = f1.shape
        logits = self.head(f1).flatten(2) * self.log_temp.exp()  # (B, 68, H*W)
        p = logits.softmax(-1).view(B, -1, H, W)
        stride = images.shape[-1] / W
        xs = (torch.arange(W, dtype=p.dtype) + 0.5) * stride
        ys = (torch.arange(H, dtype=p.dtype) + 0.5) * stride
        return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)


def render_set(gen: SyntheticFaces, n: int, template_lm: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` one-view renders: images ``(n, 3, S, S)``, true 2D landmarks ``(n, 68, 2)`` and the
    template's 68 landmarks projected with the true camera ``(n, 68, 2)``."""
    ims, gt, tpl = [], [], []
    for _ in range(n // 16):
        s = gen.sample(16, 1)
        ims.append(s["images"][:, 0])
        gt.append(s["landmarks2d"][:, 0])
        cams = Cameras(s["K"], s["R"], s["t"])
        tpl.append(cams.project(template_lm[None].expand(16, -1, -1))[0][:, 0])
    return torch.cat(ims), torch.cat(gt), torch.cat(tpl)


def train_and_score(widths: tuple[int, ...], train: tuple, test: tuple, iterations: int
                    ) -> list[tuple[int, float, float]]:
    """``(iterations, running train px error, held-out px error)`` every 400 iterations."""
    X, Y = train[0], train[1]
    Xv, Yv = test[0], test[1]
    torch.manual_seed(0)
    net = HeatmapLandmarks(widths)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    rows, running = [], None
    for it in range(1, iterations + 1):
        b = torch.randint(0, len(X), (16,))
        loss = (net(X[b]) - Y[b]).norm(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if it % 400 == 0:
            net.eval()
            with torch.no_grad():
                err = torch.cat([(net(Xv[i:i + 64]) - Yv[i:i + 64]).norm(dim=-1) for i in range(0, len(Xv), 64)])
            net.train()
            rows.append((it, running, err.mean().item()))
            print(f"  it {it}: train {running:.2f} px, held-out {err.mean().item():.2f} px", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    curriculum_options(p, [1.0])
    a, t0 = start(p, argv)
    mcfg = ModelConfig()
    lines = ["# Learnability of the 68 landmarks from the renders", "",
             generated_by("research.landmark_learnability.landmark_learnability", argv), "",
             f"A fresh encoder of the model's architecture (widths {list(mcfg.encoder_widths)}, "
             f"{mcfg.image_size} px) with a 1x1-conv heatmap head on its S/4 map and a soft-argmax regresses "
             f"the 68 landmarks (crop pixels, L1) on {a.renders:,} fixed renders, batch 16, {a.iterations:,} "
             "iterations each; mean pixel error on 256 held-out renders of the same difficulty, against "
             "the kit's template projected with the TRUE camera (what the descent starts from) and "
             "against the mean landmark position of the training renders. Difficulty 1 = the training "
             "distribution; see `SynthConfig.at_difficulty`.", ""]
    for d in a.difficulties:
        cfg = SynthConfig(image_size=mcfg.image_size).at_difficulty(d)
        gen = SyntheticFaces(kit_path=a.kit, config=cfg, seed=SEED)
        tpl = template_from_kit(load_kit(a.kit))
        lm = torch.from_numpy(tpl.vertices[tpl.landmarks68]).float()
        print(f"difficulty {d:g}: rendering {a.renders + 256} views", flush=True)
        Xt, Yt, _ = render_set(gen, a.renders, lm)
        Xv, Yv, Tv = render_set(gen, 256, lm)
        base_tpl = (Tv - Yv).norm(dim=-1).mean().item()
        base_mean = (Yt.mean(0) - Yv).norm(dim=-1).mean().item()
        rows = train_and_score(mcfg.encoder_widths, (Xt, Yt), (Xv, Yv), a.iterations)
        lines += [f"## Difficulty {d:g}", "",
                  f"Held-out baselines: template with the true camera {base_tpl:.2f} px; mean position "
                  f"{base_mean:.2f} px.", "", "| iterations | train error (px) | held-out error (px) |",
                  "|---|---|---|"]
        lines += [f"| {i} | {tr:.2f} | {te:.2f} |" for i, tr, te in rows]
        lines.append("")
    finish(lines, t0, a.threads, a.out, echo=a.out is None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
