"""What ``bench_online`` reports: the summary (max sustainable rates, ratios, the
issue's targets), a text table and the PNG."""

from __future__ import annotations

from typing import Any

from tests.gpu.online_load import max_sustainable

SYSTEM_STYLE = {"medocr": ("C0", "-", "o"), "peer": ("C3", "--", "^")}


def with_summary(
    results: dict[str, Any], reference_rate: float, bound_s: float
) -> None:
    """``results["summary"]``, and the headline figures at the top of the JSON, named
    so they read without this script: ``max_sustainable_pages_per_s`` per system and
    ``raw_offline_pages_per_s`` (the reference the ratios are taken against)."""
    summary = summarize(results, reference_rate, bound_s)
    results["summary"] = summary
    results["max_sustainable_pages_per_s"] = summary["max_sustainable_rate"]
    results["raw_offline_pages_per_s"] = reference_rate


def summarize(
    results: dict[str, Any], reference_rate: float, bound_s: float
) -> dict[str, Any]:
    """Max sustainable rates, their ratios, and the issue's targets where measured.

    ``max_sustainable_rate``: p99 within ``bound_s`` and not saturated (the targets
    use it); ``max_rate_p99_only``: p99 within the bound, saturated or not."""
    systems = results["systems"]
    best = {name: max_sustainable(s["rates"]) for name, s in systems.items()}
    loose = {name: max_sustainable(s["rates"], bound_s) for name, s in systems.items()}
    summary: dict[str, Any] = {
        "max_sustainable_rate": best,
        "max_rate_p99_only": loose,
        "reference_rate": reference_rate,
        "over_reference": _over(best, reference_rate),
        "p99_only_over_reference": _over(loose, reference_rate),
    }
    for key, rates in (
        ("medocr_over_peer", best),
        ("p99_only_medocr_over_peer", loose),
    ):
        medocr, peer = rates.get("medocr"), rates.get("peer")
        if medocr and peer:
            summary[key] = round(medocr / peer, 3)
    summary["p99_medocr_vs_peer"] = p99_pairs(systems)
    medocr, peer = best.get("medocr"), best.get("peer")
    targets: dict[str, bool] = {}
    if "medocr" in best:
        targets["medocr_max_ge_0.90_reference"] = (medocr or 0) >= 0.90 * reference_rate
    if "medocr" in best and peer is not None:
        targets["medocr_max_ge_1.15_peer"] = (medocr or 0) >= 1.15 * peer
    pairs = [p for p in summary["p99_medocr_vs_peer"] if p["medocr_unsaturated"]]
    if pairs:
        targets["medocr_p99_le_peer_below_saturation"] = all(
            p["medocr_le_peer"] for p in pairs
        )
    summary["targets"] = targets
    return summary


def _over(rates: dict[str, float | None], reference: float) -> dict[str, float | None]:
    return {
        name: None if rate is None else round(rate / reference, 3)
        for name, rate in rates.items()
    }


def p99_pairs(systems: dict[str, Any]) -> list[dict[str, Any]]:
    """Rate by rate (both measured): medocr's p99 vs the peer's (None = unanswered)."""
    if "medocr" not in systems or "peer" not in systems:
        return []
    peer = {r["offered_rate"]: r for r in systems["peer"]["rates"]}
    pairs = []
    for row in systems["medocr"]["rates"]:
        other = peer.get(row["offered_rate"])
        if other is None:
            continue
        mine, theirs = row["p99_s"], other["p99_s"]
        pairs.append({
            "rate": row["offered_rate"],
            "medocr_p99_s": mine,
            "peer_p99_s": theirs,
            "medocr_unsaturated": not row["saturated"],
            "medocr_le_peer": mine is not None and (theirs is None or mine <= theirs),
        })  # fmt: skip
    return pairs


def table(results: dict[str, Any]) -> list[str]:
    lines = [
        "system  offered  arrived  sustained   p50_s   p90_s   p99_s  sat  unanswered"
    ]
    for name, system in results["systems"].items():
        for r in system["rates"]:
            lines.append(
                f"{name:<7} {r['offered_rate']:>7.2f} {r['arrived_per_s']:>8.2f}"
                f" {r['sustained_per_s']:>10.2f} {_s(r['p50_s'])} {_s(r['p90_s'])}"
                f" {_s(r['p99_s'])}  {'yes' if r['saturated'] else 'no ':<4}"
                f" {r['unanswered']:>5}"
            )
    return lines


def _s(value: float | None) -> str:
    return f"{value:>7.2f}" if value is not None else "    inf"


def plot(results: dict[str, Any], png: Any) -> None:
    """Latency percentiles and sustained rate vs offered rate (both systems), and each
    page's latency over its arrival time (one panel per system, one colour per rate)."""
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    systems = results["systems"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    latency, sustained = axes[0]
    for name, system in systems.items():
        colour, style, marker = SYSTEM_STYLE.get(name, ("C2", ":", "s"))
        rows = system["rates"]
        rates = [r["offered_rate"] for r in rows]
        for key, alpha in (("p50_s", 0.4), ("p90_s", 0.7), ("p99_s", 1.0)):
            values = [r[key] if r[key] is not None else float("nan") for r in rows]
            latency.plot(rates, values, style, marker=marker, color=colour,
                         alpha=alpha, label=f"{name} {key[:-2]}")  # fmt: skip
        for r in rows:
            if r["saturated"]:
                latency.annotate("saturated", (r["offered_rate"], r["p99_s"] or 0),
                                 fontsize=7, color=colour)  # fmt: skip
        sustained.plot(rates, [r["sustained_per_s"] for r in rows], style,
                       marker=marker, color=colour, label=name)  # fmt: skip
    reference = results["summary"]["reference_rate"]
    latency.axhline(results["config"]["bound_s"], color="grey", lw=0.8)
    latency.text(latency.get_xlim()[0], results["config"]["bound_s"],
                 " p99 bound", va="bottom", fontsize=8)  # fmt: skip
    latency.set_xlabel("offered rate (pages/s, Poisson)")
    latency.set_ylabel("end-to-end latency (s)")
    latency.set_title("latency percentiles (steady window)")
    latency.legend(fontsize=7, ncol=2)
    latency.grid(alpha=0.3)
    offered = [r["offered_rate"] for s in systems.values() for r in s["rates"]]
    top = max(offered + ([reference] if results["config"]["engine"] == "vllm" else []))
    sustained.plot([0, top], [0, top], color="grey", lw=0.8, label="offered")
    if results["config"]["engine"] == "vllm":
        for ax in (latency, sustained):
            ax.axvline(reference, color="grey", ls=":", lw=0.8)
    sustained.set_xlabel("offered rate (pages/s)")
    sustained.set_ylabel("completions/s (steady window)")
    sustained.set_title(f"sustained rate (dotted: raw offline {reference} pages/s)")
    sustained.legend(fontsize=8)
    sustained.grid(alpha=0.3)
    for ax, name in zip(axes[1], SYSTEM_STYLE, strict=True):
        _plot_pages(ax, name, systems.get(name))
    config = results["config"]
    fig.suptitle(
        f"online: medocr vs vllm serve ({config['device']}, {config['engine']}, "
        f"max_tokens {config['max_tokens']}, max_num_seqs {config['max_num_seqs']})"
    )
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _plot_pages(ax: Any, name: str, system: dict[str, Any] | None) -> None:
    ax.set_title(f"{name}: each page's latency by arrival time")
    ax.set_xlabel("arrival (s since the rate's start)")
    ax.set_ylabel("latency (s)")
    ax.grid(alpha=0.3)
    if not system:
        return
    for index, row in enumerate(system["rates"]):
        points = [(a, d - s) for a, s, d in row["pages"] if d is not None]
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=3,
                   color=f"C{index}", label=f"{row['offered_rate']:g} pages/s")  # fmt: skip
    ax.legend(fontsize=8, markerscale=3)
