"""The evaluation's targets in one table (:data:`TARGETS`): what each promises, its threshold, how it is measured.

Each :class:`Target` gives its first column as a format string (``label``), its threshold (``limit``) and a
``measure`` that reads an :class:`~glvd_train.evaluate_results.Evaluation` and yields the report's rows for it
(none where the run did not measure it, one per view count or method where it is measured for several). The
report (:func:`glvd_train.evaluate_report.render_report`) writes the rows in the table's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from glvd.pose import BLEND_MAX_DEG, WIDE_YAW_DEG

from .evaluate_results import (
    HELD_OUT,
    M_3DMM,
    M_ABS,
    M_GLVD_EST,
    M_GLVD_LMK,
    M_GLVD_TRUE,
    M_LVD_EST,
    M_RIDGE,
    M_TEMPLATE,
    OUT_OF_PCA,
    Evaluation,
    fmt,
    fmt_time,
)

#: the LVD target compares models trained with about the same budget (iterations within this factor)
BUDGET_TOLERANCE = 1.5


@dataclass(frozen=True)
class Row:
    """One line of the targets table: the target as measured, the measurement, the verdict (None: no verdict)."""

    target: str
    measured: str
    ok: bool | None
    note: str = ""  # after the verdict


@dataclass(frozen=True)
class Target:
    label: str  # the first column; ``measure`` fills its fields
    limit: float | None
    measure: Callable[[Evaluation, Target], Iterator[Row]]
    views: int | None = None  # the view count it is measured at (None: the measure's own)
    method: str | None = None  # the method it is measured on (None: the measure's own)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def _vs_template(ev: Evaluation, t: Target) -> Iterator[Row]:
    V = t.views
    if V not in ev.views:
        return
    g, g_t, tp = ev.v2v(HELD_OUT, V, M_GLVD_EST), ev.v2v(HELD_OUT, V, M_GLVD_TRUE), ev.v2v(HELD_OUT, V, M_TEMPLATE)
    ok = None if g is None or tp is None else g <= t.limit * tp
    yield Row(t.label.format(views=V, limit=t.limit), f"GLVD {fmt(g)} mm (true cameras {fmt(g_t)}) vs template "
              f"{fmt(tp)} mm: {fmt(g / tp if g and tp else None)}x", ok)


def _vs_ablation(ev: Evaluation, t: Target) -> Iterator[Row]:
    V0 = ev.views[0]
    g, lv = ev.v2v(HELD_OUT, V0, M_GLVD_EST), ev.v2v(HELD_OUT, V0, M_LVD_EST)
    if lv is None:
        yield Row(t.label.format(limit=t.limit, same_budget=""), "ablation not trained yet", None)
        return
    # the target compares equal training budgets; iterations are the one budget both provenances record
    it_g = int((ev.info["provenance"] or {}).get("iterations") or 0)
    it_l = int((ev.info["ablation_provenance"] or {}).get("iterations") or 0)
    equal = it_g > 0 and it_l > 0 and max(it_g, it_l) <= BUDGET_TOLERANCE * min(it_g, it_l)
    budget = "" if equal else (f"; not the same budget: GLVD {it_g:,} iterations, LVD {it_l:,}, so this "
                               "does not measure the guidance")
    yield Row(t.label.format(limit=t.limit, same_budget=" (same budget)"),
              f"{V0} view: GLVD {fmt(g)} vs LVD {fmt(lv)} mm ({fmt(100 * (lv - g) / lv, 1)}% better){budget}",
              (lv - g) / lv >= t.limit if equal else None)


def _vs_abs(ev: Evaluation, t: Target) -> Iterator[Row]:
    for V in ev.views:
        abs_faces = {r["face"] for r in ev.records if r["method"] == M_ABS and r["set"] == HELD_OUT
                     and r["views"] == V}
        if not abs_faces:
            yield Row(t.label.format(limit=t.limit, views=V, faces=""), "(c) skipped", None)
            continue
        sg = ev.summary(HELD_OUT, V, M_GLVD_EST, abs_faces)
        sa = ev.summary(HELD_OUT, V, M_ABS, abs_faces)
        speed = sa["time"] / sg["time"]
        yield Row(t.label.format(limit=t.limit, views=V, faces=f", {len(abs_faces)} faces"),
                  f"GLVD {fmt(sg['v2v'])} mm in {fmt_time(sg['time'])} vs (c) {fmt(sa['v2v'])} mm in "
                  f"{fmt_time(sa['time'])} ({speed:.0f}x)", sg["v2v"] <= sa["v2v"] and speed >= t.limit)


def _falls_every_step(ev: Evaluation, t: Target) -> Iterator[Row]:
    V0 = ev.views[0]
    c = ev.curves.get((HELD_OUT, V0, M_GLVD_EST))
    if c:
        y = np.mean(np.asarray(c), 0)
        rises = [i for i in range(1, len(y)) if y[i] > y[i - 1] + 1e-9]
        yield Row(t.label.format(views=V0), f"{' > '.join(fmt(v) for v in y)} mm"
                  f"{'; rises at step ' + ', '.join(map(str, rises)) if rises else ''}", not rises)


def _out_of_pca(ev: Evaluation, t: Target) -> Iterator[Row]:
    V0 = ev.views[0]
    g, b = ev.v2v(OUT_OF_PCA, V0, M_GLVD_EST), ev.v2v(OUT_OF_PCA, V0, M_3DMM)
    if g is not None and b is not None:
        yield Row(t.label.format(views=V0), f"GLVD {fmt(g)} vs (b) {fmt(b)} mm", g < b)


def _multi_view(ev: Evaluation, t: Target) -> tuple[int, str, list[float]] | None:
    """The most views, how ``t.method`` places its cameras, its rotation errors there; None: not measured."""
    Vm = max(ev.views)
    errors = ev.rot_err.get((HELD_OUT, Vm, t.method))
    if Vm <= 1 or not errors:
        return None
    how = "photo path: landmark PnP" if t.method == M_GLVD_LMK else (
        "camera head" + (" + refiner" if ev.info.get("refiner") else ""))
    return Vm, how, errors


def _rotation(ev: Evaluation, t: Target) -> Iterator[Row]:
    if (mv := _multi_view(ev, t)) is None:
        return
    Vm, how, errors = mv
    med = float(np.median(errors))
    placed = ""
    if t.method == M_GLVD_LMK:
        info = ev.info
        refined = "refined " if info.get("refiner") else ""
        placed = (f", {info['lmk_views'].get((HELD_OUT, Vm), 0)}/{Vm * len(errors)} views placed by landmarks, "
                  f"{info['wide_views'].get((HELD_OUT, Vm), 0)} of them with the {refined}camera head's rotation "
                  f"(yaw >= {WIDE_YAW_DEG:g} deg), {info.get('blended_views', {}).get((HELD_OUT, Vm), 0)} with "
                  f"PnP's rotation blended with it (within {BLEND_MAX_DEG:g} deg)")
    yield Row(t.label.format(limit=t.limit, views=Vm, how=how, placed=placed), f"{med:.1f} deg", med <= t.limit)


def _estimated_vs_true(ev: Evaluation, t: Target) -> Iterator[Row]:
    if (mv := _multi_view(ev, t)) is None:
        return
    Vm, how, _ = mv
    g, g_t = ev.v2v(HELD_OUT, Vm, t.method), ev.v2v(HELD_OUT, Vm, M_GLVD_TRUE)
    if g is not None and g_t is not None:
        yield Row(t.label.format(limit=t.limit, views=Vm, how=how),
                  f"{fmt(g)} vs {fmt(g_t)} mm ({100 * (g - g_t) / g_t:+.1f}%)", g <= (1 + t.limit) * g_t)


def _consistency(ev: Evaluation, t: Target) -> Iterator[Row]:
    c = ev.info.get("consistency")
    if c:
        yield Row(t.label, f"{fmt(c['within_mm'])} vs {fmt(c['between_mm'])} mm (truth: 0 vs "
                  f"{fmt(c['between_gt_mm'])} mm)", c["within_mm"] < c["between_mm"])


def _real_photos(ev: Evaluation, t: Target) -> Iterator[Row]:
    pc = ev.info.get("photo_consistency")
    for m, row in (pc["rows"].items() if pc else ()):
        if "ratio" not in row:
            yield Row(f"real photos ({m}): within / between", "too few photos reconstructed", None)
            continue
        failed = f", {len(row['failed'])} failed" if row["failed"] else ""
        yield Row(t.label.format(method=m, photos=row["photos"], people=row["people"], pairs=row["pairs"],
                                 failed=failed),
                  f"{fmt(row['within_mm'])} / {fmt(row['between_mm'])} mm = {fmt(row['ratio'])}",
                  row["ratio"] <= t.limit, f" (<= {t.limit:.2f})")


def _vs_ridge(ev: Evaluation, t: Target) -> Iterator[Row]:
    for V in ev.views:
        g, f_ = ev.v2v(HELD_OUT, V, M_GLVD_EST), ev.v2v(HELD_OUT, V, M_RIDGE)
        if g is not None and f_ is not None:
            yield Row(t.label.format(limit=t.limit, views=V, s="s" if V > 1 else ""),
                      f"GLVD {fmt(g)} vs (f) {fmt(f_)} mm ({100 * (f_ - g) / f_:+.1f}%)", g <= (1 - t.limit) * f_)


def _neutral(ev: Evaluation, t: Target) -> Iterator[Row]:
    from .evaluate_expression import neutral_rows

    for label, measured, ok in neutral_rows(ev):
        yield Row(label, measured, ok)


def _expression_weights(ev: Evaluation, t: Target) -> Iterator[Row]:
    from .evaluate_expression import weight_rows

    for label, measured, ok in weight_rows(ev, t.limit):
        yield Row(label, measured, ok)


#: the targets, in the report's order (held-out faces unless the label says otherwise)
TARGETS = (
    Target("{views}-view error <= {limit:g}x template", 0.4, _vs_template, views=1),
    Target("{views}-view error <= {limit:g}x template", 0.3, _vs_template, views=3),
    Target("beats the LVD ablation by >= {limit:.0%}{same_budget}", 0.1, _vs_ablation),
    Target("as accurate as (c), >= {limit:g}x faster ({views} view{faces})", 100, _vs_abs),
    Target("error falls at every step ({views} view, estimated cameras)", None, _falls_every_step),
    Target("out-of-PCA: GLVD beats (b) ({views} view)", None, _out_of_pca),
    Target("multi-view cameras: median rotation error <= {limit:g} deg ({views} views, {how}{placed})", 5.0,
           _rotation, method=M_GLVD_LMK),
    Target("{views}-view error with estimated cameras within {limit:.0%} of true cameras ({how})", 0.15,
           _estimated_vs_true, method=M_GLVD_LMK),
    Target("multi-view cameras: median rotation error <= {limit:g} deg ({views} views, {how}{placed})", 5.0,
           _rotation, method=M_GLVD_EST),
    Target("{views}-view error with estimated cameras within {limit:.0%} of true cameras ({how})", 0.15,
           _estimated_vs_true, method=M_GLVD_EST),
    Target("consistency: spread across photos of one person < spread between people (1 view)", None, _consistency),
    Target("real photos: within / between person spread ({method}; {photos} photos of {people} people, {pairs} "
           "same-person pairs{failed})", 0.4, _real_photos),
    Target("at least {limit:.0%} better than (f) ({views} view{s}, estimated cameras)", 0.15, _vs_ridge),
    Target("neutral face no worse than the expressive one was", None, _neutral),
    Target("expression weights R^2", 0.6, _expression_weights),
)


def target_rows(ev: Evaluation) -> Iterator[Row]:
    """Every row of the targets table, in :data:`TARGETS`' order."""
    for t in TARGETS:
        yield from t.measure(ev, t)
