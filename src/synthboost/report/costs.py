"""What the runs in a report cost, from their own timings: core-hours per family.

A run's core-hours are its ``time/cell`` × ``machine.threads``; a generator's training counts once, on the run that
trained it, since the other cells of its data draw reuse it.
"""

from __future__ import annotations

import pandas as pd


def cost_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per family (the run's model) and a total: runs, generators trained, core-hours in all and in
    generator training, and the median minutes of a run.  Empty when no run logged its time."""
    if "time_cell" not in runs or runs["time_cell"].notna().sum() == 0:
        return pd.DataFrame()
    timed = runs[runs["time_cell"].notna()]
    threads = timed["threads"].fillna(1).clip(lower=1)
    core_h = timed["time_cell"] * threads / 3600
    gen_h = timed["time_gen"].fillna(0).where(timed["generator_trained"], 0) * threads / 3600
    frame = pd.DataFrame({"family": timed["model"], "core_h": core_h, "gen_h": gen_h,
                          "minutes": timed["time_cell"] / 60, "trained": timed["generator_trained"]})
    g = frame.groupby("family", sort=False)
    out = pd.DataFrame({"runs": g.size(), "generators trained": g["trained"].sum(),
                        "core-hours": g["core_h"].sum(), "of which training generators": g["gen_h"].sum(),
                        "median minutes per run": g["minutes"].median()})
    out = out.sort_values("core-hours", ascending=False)
    total = pd.DataFrame({"runs": [len(frame)], "generators trained": [int(frame["trained"].sum())],
                          "core-hours": [frame["core_h"].sum()], "of which training generators": [frame["gen_h"].sum()],
                          "median minutes per run": [frame["minutes"].median()]}, index=["total"])
    out = pd.concat([out, total]).rename_axis("family").reset_index()
    out["generators trained"] = out["generators trained"].astype(int)
    return out


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The cost table with hours and minutes rounded for reading."""
    if table.empty:
        return table
    out = table.copy()
    for c in ("core-hours", "of which training generators"):
        out[c] = [f"{v:.2f}" for v in out[c]]
    out["median minutes per run"] = [f"{v:.1f}" for v in out["median minutes per run"]]
    return out


NOTE = ("Core-hours are each run's wall time × the threads it ran on (tag `machine.threads`; one per process in "
        "the grid); a generator's training counts once, on the run that trained it — the other runs of its data "
        "draw load it. Wall time includes whatever else the machine was doing.")
