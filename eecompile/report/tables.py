"""Rich tables for people (the CLI prints these; --json prints the dicts instead)."""

from __future__ import annotations

from rich.table import Table


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _table(title: str, columns: tuple[str, ...]) -> Table:
    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="right")
    return t


def validation_table(validation: dict) -> Table:
    t = _table(f"validation: {validation['target']} vs PyTorch, {validation['n_samples']} samples "
               f"({validation['policy']}, exit-index agreement {_pct(validation['exit_index_agreement'])})",
               ("exit", "top-1 agree", "SNR dB", "decision agree", "acc torch", "acc exported"))
    for e in validation["exits"]:
        t.add_row(str(e["exit_idx"]), _pct(e["top1_agreement"]), f"{e['snr_db']:.1f}", _pct(e["decision_agreement"]),
                  _pct(e["accuracy_torch"]), _pct(e["accuracy_exported"]))
    return t


def demo_table(report: dict) -> Table:
    t = _table(f"{report['model']} on {report['dataset']} test ({report['n_test']} samples), tflite-int8, "
               f"{report['policy']} calibrated for {report['budget']}",
               ("exit", "kept", "threshold", "cum. MACs", "acc float", "acc int8", "share exiting", "C p50 to exit (us)"))
    last = len(report["exits"]) - 1
    for e, th in zip(report["exits"], report["thresholds"]):
        t.add_row(str(e["exit_idx"]), "yes" if e["kept"] else "dropped",
                  "-" if e["exit_idx"] == last else f"{th:.4g}", f"{e['cum_macs'] / 1e6:.2f}M",
                  _pct(e["accuracy_float"]), _pct(e["accuracy_int8"]), _pct(e["share_exiting"]), f"{e['c_p50_us']:.1f}")
    return t


def run_table(rows: list[dict]) -> Table:
    t = _table("early-exit run", ("sample", "class", "exit", "confidence", "stage times (us)"))
    for r in rows:
        t.add_row(str(r["sample"]), r["class"], str(r["exit_idx"]), f"{r['confidence']:.3f}",
                  " ".join(f"{x:.1f}" for x in r["stage_time_us"] if x > 0))
    return t
