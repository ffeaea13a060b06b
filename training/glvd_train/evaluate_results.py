"""What one ``glvd-train evaluate`` run measured (:class:`Evaluation`), the names of the methods its rows carry,
and the number formats its report and its targets share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

M_GLVD_TRUE = "GLVD, true cameras"
M_GLVD_EST = "GLVD, estimated cameras"
M_GLVD_LMK = "GLVD, landmark cameras (photo path)"
M_TEMPLATE = "(a) template (= step 0)"
M_3DMM = "(b) 3DMM landmark fit"
M_3DMM_GT = "(b') 3DMM fit, GT landmarks + 2 px noise"
M_ABS = "(c) analysis-by-synthesis"
M_LVD_TRUE = "(d) LVD ablation, true cameras"
M_LVD_EST = "(d) LVD ablation, estimated cameras"
M_MP = "(e) MediaPipe Face Mesh"
M_RIDGE = "(f) identity descriptor, ridge to the kit's identity"
#: the rows of the report's main tables, in this order
METHOD_ORDER = [M_GLVD_EST, M_GLVD_LMK, M_GLVD_TRUE, M_TEMPLATE, M_3DMM, M_3DMM_GT, M_ABS, M_LVD_EST, M_LVD_TRUE,
                M_RIDGE]
HELD_OUT = "held-out"
OUT_OF_PCA = "out-of-PCA"
#: the test sets' seeds (training uses ``seed * 1_000_003 + iteration``, validation ``10_000_019``)
HELD_OUT_SEED = 20_000_000
OUT_OF_PCA_SEED = 20_000_500
CONSISTENCY_SEED = 20_000_900
#: test renders are made at this multiple of the model's crop and area-resized to it, as the feature
#: cache's are: MediaPipe and the identity chip of (f) see the larger image, as they see a photo
RENDER_SCALE = 2
#: GLVD's time per face is the median of this many runs of the same face: one run of ~0.1 s catches
#: one-time start-up costs (the first face) and the machine's hiccups; (c) runs for seconds
TIMING_REPEATS = 3
#: the scores every record carries besides its keys (millimetres; ``time`` in seconds)
SCORES = ("v2v", "v2v_n", "surf", "surf_n", "lm68", "time")

#: (set, views, method): a list with one entry per face
Curves = dict[tuple[str, int, str], list[list[float]]]


@dataclass
class Evaluation:
    """The measurements: ``records`` one dict per (set, views, face, method) with the :data:`SCORES`;
    ``curves`` the face-area v2v after every descent step per face; ``rot_err`` the mean camera rotation error
    (deg) per face; ``mp_rows`` baseline (e)'s comparison at MediaPipe's points (1 view); ``expr_rows`` the
    expression weights (glvd_train.evaluate_expression); ``info`` how the run was made (command, checkpoint and
    provenance, seeds, landmark sources, consistency, ...)."""

    records: list[dict] = field(default_factory=list)
    curves: Curves = field(default_factory=dict)
    rot_err: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)
    mp_rows: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    # a model with an expression head: per (set, views, face, landmark source) its predicted and true weights
    expr_rows: list[dict] = field(default_factory=list)

    @property
    def sets(self) -> list[str]:
        return sorted({r["set"] for r in self.records}, key=lambda s: 0 if s == HELD_OUT else 1)

    @property
    def views(self) -> list[int]:
        return sorted({r["views"] for r in self.records})

    def summary(self, sname: str, V: int, method: str, faces: set[int] | None = None) -> dict | None:
        """The mean of every score over the matching records, and their count ``n``; None when there are none."""
        rows = [r for r in self.records if r["set"] == sname and r["views"] == V and r["method"] == method
                and (faces is None or r["face"] in faces)]
        if not rows:
            return None
        s = {k: mean_of(rows, k) for k in SCORES}
        s["n"] = len(rows)
        return s

    def v2v(self, sname: str, V: int, method: str, faces: set[int] | None = None) -> float | None:
        x = self.summary(sname, V, method, faces)
        return None if x is None else x["v2v"]


def mean_of(rows: list[dict], key: str) -> float | None:
    """The mean of ``key`` over the rows that have a finite value for it."""
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None


def fmt(x: float | None, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{nd}f}"


def fmt_time(s: float | None) -> str:
    if s is None or not np.isfinite(s):
        return "-"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"
