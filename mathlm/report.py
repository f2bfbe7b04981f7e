"""The report card: what was trained on what, how long each stage took, the curves, and the
per-domain accuracy base → SFT → GRPO.

    python -m mathlm.report                # after the pipeline (or any stages) ran here

Reads (whatever exists in the working directory): pipeline.json (stage times, datasets),
*.meta.json (token counts, decontamination drops), checkpoint.json / checkpoint_mathlm.json /
checkpoint_mathlm_grpo.json (configs and histories), eval_base.json / eval_sft.json /
eval_grpo.json / eval_gsm8k.json (accuracies).
Writes: report.md (with the plots embedded), report.json (every number in it),
report_pretrain_loss.png, report_sft_loss.png, report_grpo_reward.png.
A missing input leaves its section saying "not run" rather than failing.
"""
import glob
import json
import os
import platform
from dataclasses import dataclass

from mathlm.common import atomic_write, atomic_write_json, parse_config

SECTIONS = ["Model", "Data", "Stages", "Pretraining", "SFT", "GRPO", "Accuracy", "Hardware"]
EVALS = [("base", "eval_base.json"), ("SFT", "eval_sft.json"), ("GRPO", "eval_grpo.json")]


@dataclass
class Config:
    preset: str = "default"         # the preset named in the report when pipeline.json does not say
    out: str = "report"             # writes <out>.md, <out>.json and <out>_*.png


def read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def hardware():
    import torch
    hw = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
          "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
        hw["gpu_count"] = torch.cuda.device_count()
    try:
        with open("/proc/meminfo") as f:
            hw["memory_gb"] = round(int(f.readline().split()[1]) / 1e6, 1)
    except OSError:
        pass
    return hw


def plot(path, series, title, ylabel):
    """series: {label: (xs, ys)}; returns the path, or None when there is nothing to draw."""
    series = {k: v for k, v in series.items() if v[0]}
    if not series:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 20 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def curve(history, key):
    pts = [(h["step"], h[key]) for h in history or [] if key in h and h[key] == h[key]]
    return [p[0] for p in pts], [p[1] for p in pts]


def data_rows():
    rows = []
    for mp in sorted(glob.glob("*.meta.json")):
        m = read(mp)
        if not m:
            continue
        name = mp[:-len(".meta.json")]
        dropped = m.get("decontam") or {}
        rows.append({"name": name, "tokens": m.get("n_tokens"), "examples": m.get("n_examples"),
                     "sources": m.get("sources"), "decontam_dropped": sum(dropped.values()) if isinstance(dropped, dict) else dropped,
                     "decontam": dropped})
    return rows


def fmt_acc(d):
    if not d:
        return "–"
    return f"{100 * d['accuracy']:.1f}% [{100 * d['ci95'][0]:.1f}, {100 * d['ci95'][1]:.1f}] (n={d['n']})"


def main(argv=None):
    cfg = parse_config(Config, None, argv)
    state = read("pipeline.json") or {}
    pre, sft, grpo = read("checkpoint.json"), read("checkpoint_mathlm.json"), read("checkpoint_mathlm_grpo.json")
    evals = {tag: read(p) for tag, p in EVALS}
    gsm8k = read("eval_gsm8k.json")
    rep = {"preset": state.get("preset", cfg.preset), "hardware": hardware(), "datasets": state.get("datasets", {}),
           "model": None, "data": data_rows(), "stages": {}, "pretrain": None, "sft": None, "grpo": None,
           "accuracy": {}, "gsm8k_2shot": gsm8k}
    for k, v in (state.get("stages") or {}).items():
        rep["stages"][k] = {"seconds": round(v.get("seconds", 0.0), 1), "status": v.get("status")}
    if pre:
        rep["model"] = {"n_params": pre.get("n_params"), **pre.get("model_config", {})}
        vals = curve(pre.get("history"), "val_loss")
        rep["pretrain"] = {"steps": pre.get("step"), "val_loss_start": vals[1][0] if vals[1] else None,
                           "val_loss_end": vals[1][-1] if vals[1] else None, "config": pre.get("config")}
    if sft:
        vals = curve(sft.get("history"), "val_loss")
        rep["sft"] = {"steps": sft.get("step"), "val_loss_start": vals[1][0] if vals[1] else None,
                      "val_loss_end": vals[1][-1] if vals[1] else None}
    if grpo:
        rew = curve(grpo.get("history"), "reward")
        acc = curve(grpo.get("history"), "heldout_acc")
        rep["grpo"] = {"steps": grpo.get("step"), "reward_first": rew[1][0] if rew[1] else None,
                       "reward_last": rew[1][-1] if rew[1] else None,
                       "heldout_acc_first": acc[1][0] if acc[1] else None, "heldout_acc_last": acc[1][-1] if acc[1] else None}
    domains = []
    for tag, e in evals.items():
        for d in (e or {}).get("domains", {}):
            if d not in domains:
                domains.append(d)
    for d in domains:
        rep["accuracy"][d] = {tag: (e or {}).get("domains", {}).get(d) for tag, e in evals.items()}

    plots = {
        "pretrain": plot(f"{cfg.out}_pretrain_loss.png", {"train": curve(pre and pre.get("history"), "loss"),
                                                           "val": curve(pre and pre.get("history"), "val_loss")},
                         "pretraining loss", "loss (nats/token)"),
        "sft": plot(f"{cfg.out}_sft_loss.png", {"train (answer tokens)": curve(sft and sft.get("history"), "loss"),
                                                 "val": curve(sft and sft.get("history"), "val_loss")},
                    "SFT loss", "loss (nats/token)"),
        "grpo": plot(f"{cfg.out}_grpo_reward.png", {"mean reward": curve(grpo and grpo.get("history"), "reward"),
                                                     "held-out accuracy": curve(grpo and grpo.get("history"), "heldout_acc")},
                     "GRPO reward", "reward / accuracy"),
    }
    rep["plots"] = {k: v for k, v in plots.items() if v}

    # --- markdown --------------------------------------------------------------------------
    md = [f"# mathlm report card — preset `{rep['preset']}`", ""]
    md += ["## Model", ""]
    if rep["model"]:
        m = rep["model"]
        md += [f"{m['n_params'] / 1e6:.2f}M parameters: {m['n_layer']} layers × {m['n_embd']}, "
               f"{m['n_head']} query / {m['n_kv_head']} KV heads, SwiGLU {m['ffn_hidden']}, "
               f"context {m['block_size']}, vocab {m['vocab_size']:,}"
               + (f", MoE {m['n_expert']} experts top-{m['expert_top_k']}" if m.get("n_expert") else "") + ".", ""]
    else:
        md += ["not run", ""]
    md += ["## Data", "", "| file | tokens | examples | decontamination drops | source |", "|---|---|---|---|---|"]
    for r in rep["data"]:
        src = ", ".join(os.path.basename(str(s.get("path", s) if isinstance(s, dict) else s))
                        for s in (r["sources"] or [])[:4])
        md.append(f"| {r['name']}.bin | {r['tokens'] or 0:,} | {r['examples'] if r['examples'] is not None else '–'} "
                  f"| {r['decontam_dropped'] or 0} | {src} |")
    if rep["datasets"]:
        md += ["", "Datasets: " + ", ".join(f"{k} ({v})" for k, v in rep["datasets"].items())]
    md += ["", "## Stages", "", "| stage | wall time |", "|---|---|"]
    md += [f"| {k} | {v['seconds']:.1f}s |" for k, v in rep["stages"].items()]
    total = sum(v["seconds"] for v in rep["stages"].values())
    md += [f"| **total** | **{total / 60:.1f} min** |", ""]
    for title, key, what in (("Pretraining", "pretrain", "val loss"), ("SFT", "sft", "val loss (answer tokens)")):
        md += [f"## {title}", ""]
        r = rep[key]
        if r and r.get("val_loss_start") is not None:
            md += [f"{r['steps']:,} steps; {what} {r['val_loss_start']:.3f} → {r['val_loss_end']:.3f}.", ""]
        else:
            md += ["not run", ""]
        if plots[key]:
            md += [f"![{title} loss]({plots[key]})", ""]
    md += ["## GRPO", ""]
    g = rep["grpo"]
    if g and g.get("reward_first") is not None:
        line = f"{g['steps']:,} steps; mean reward {g['reward_first']:.3f} → {g['reward_last']:.3f}"
        if g.get("heldout_acc_first") is not None:
            line += f"; held-out accuracy {100 * g['heldout_acc_first']:.1f}% → {100 * g['heldout_acc_last']:.1f}%"
        md += [line + ".", ""]
    else:
        md += ["not run", ""]
    if plots["grpo"]:
        md += [f"![GRPO reward]({plots['grpo']})", ""]
    md += ["## Accuracy", "", "Greedy, zero-shot, per domain; 95% Wilson intervals (`python -m mathlm.eval.math`).", "",
           "| domain | base | SFT | GRPO |", "|---|---|---|---|"]
    for d, row in rep["accuracy"].items():
        md.append(f"| {d} | " + " | ".join(fmt_acc(row.get(t)) for t, _ in EVALS) + " |")
    if not rep["accuracy"]:
        md.append("| not run | | | |")
    if gsm8k:
        md += ["", f"GSM8K {gsm8k.get('shots_used_min', gsm8k.get('shots'))}-shot CoT on the GRPO model: "
                   f"{100 * gsm8k['accuracy']:.1f}% [{100 * gsm8k['ci95'][0]:.1f}, {100 * gsm8k['ci95'][1]:.1f}] (n={gsm8k['n']})."]
    hw = rep["hardware"]
    md += ["", "## Hardware", "", f"{hw.get('gpu', 'no GPU')}; {hw['cpu_count']} CPU cores ({hw['processor']}); "
           f"{hw.get('memory_gb', '?')} GB RAM; {hw['platform']}; Python {hw['python']}; torch {hw['torch']}.", ""]
    atomic_write(f"{cfg.out}.md", "\n".join(md))
    atomic_write_json(f"{cfg.out}.json", rep)
    print(f"wrote {cfg.out}.md and {cfg.out}.json ({len(rep['plots'])} plots)")
    return rep


if __name__ == "__main__":
    main()
