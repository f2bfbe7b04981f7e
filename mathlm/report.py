"""The report card: what was trained on what, how long each stage took, the curves, and the
accuracy base → SFT → GRPO per domain and per topic, with paired significance tests.

    python -m mathlm.report                # after the pipeline (or any stages) ran here

Reads (whatever exists in the working directory): pipeline.json (stage times, datasets used and
skipped), *.meta.json (token counts, decontamination drops), checkpoint.json /
checkpoint_mathlm.json / checkpoint_mathlm_grpo.json (configs, tokens, tokens/s, histories),
eval_base / eval_sft / eval_grpo .json (per-domain accuracy) and .jsonl (one row per problem:
the topic tables and the samples), eval_gsm8k.json (GSM8K few-shot).
Writes: report.md (with the plots embedded), report.json (every number in it),
report_pretrain_loss.png, report_sft_loss.png, report_grpo_reward.png, report_grpo_signal.png.
A missing input leaves its section saying "not run" rather than failing. The last section,
"Try it", names the checkpoints here and the commands that use them.

The per-topic p-values are exact McNemar tests on the problems both checkpoints answered,
paired by (domain, index): the eval takes the same seeded subset for every checkpoint.
"""
import glob
import json
import os
import platform
import random
import re
from dataclasses import dataclass

from mathlm.common import SEED_MAX, atomic_write, atomic_write_json, check_range, cli, parse_config
from mathlm.eval.stats import mcnemar_exact, wilson_interval

SECTIONS = ["Model", "Data", "Datasets skipped", "Stages", "Hyperparameters", "Pretraining", "SFT", "GRPO",
            "Accuracy", "Per-topic accuracy", "Samples", "Hardware", "Try it"]
EVALS = [("base", "eval_base.json"), ("SFT", "eval_sft.json"), ("GRPO", "eval_grpo.json")]
TAGS = [t for t, _ in EVALS]
TRAINERS = [("pretrain", "checkpoint.json"), ("sft", "checkpoint_mathlm.json"), ("grpo", "checkpoint_mathlm_grpo.json")]
NOT_RUN = "not run"
# GRPO history keys, first match wins: the trainer's names and the spellings other versions used
GRPO_CURVES = {"reward": ("reward", "mean_reward"), "pass_at_1": ("pass@1", "pass_at_1"),
               "pass_at_g": ("pass@G", "pass_at_g", "pass@g", "pass_at_G"),
               "zero_signal": ("zero_signal", "zero_signal_frac", "zero_signal_fraction"),
               "heldout_acc": ("heldout_acc",)}
ALPHA = 0.05  # McNemar p below this (and GRPO lower) marks a topic GRPO made worse


@dataclass
class Config:
    preset: str = "default"         # the preset named in the report when pipeline.json does not say
    out: str = "report"             # writes <out>.md, <out>.json and <out>_*.png
    samples: int = 3                # sample answers shown per domain, the same problems for every checkpoint
    seed: int = 0                   # picks the sample problems


# -----------------------------------------------------------------------------
# reading and small helpers

def read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_rows(path):
    """{(domain, index): row} of an eval .jsonl, or None when it is absent; unreadable lines are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError:
        return None
    rows = {}
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and "domain" in r and "index" in r:
            rows.setdefault((r["domain"], r["index"]), r)
    return rows


def curve(history, keys):
    """(steps, values) of the first of `keys` (a name or a tuple of spellings) the history holds; nan left out."""
    keys = (keys,) if isinstance(keys, str) else keys
    for key in keys:
        pts = [(h["step"], h[key]) for h in history or [] if isinstance(h, dict) and "step" in h
               and isinstance(h.get(key), (int, float)) and not isinstance(h[key], bool) and h[key] == h[key]]
        if pts:
            return [p[0] for p in pts], [p[1] for p in pts]
    return [], []


def domain_curves(history, key="val"):
    """{domain: (steps, values)} of the per-domain numbers a history logs as {key: {domain: value}} (SFT's val)."""
    out = {}
    for h in history or []:
        if isinstance(h, dict) and "step" in h and isinstance(h.get(key), dict):
            for d, v in h[key].items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                    xs, ys = out.setdefault(d, ([], []))
                    xs.append(h["step"])
                    ys.append(v)
    return out


def plot(path, series, title, ylabel, logy=False):
    """series: {label: (xs, ys)}; returns the path, or None when there is nothing to draw. logy: a log
    y axis, for losses: on a linear one the first steps' 9-10 nats squash everything below 1."""
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
    if logy and all(y > 0 for _, ys in series.values() for y in ys):
        from matplotlib.ticker import LogFormatter

        class Plain(LogFormatter):  # LogFormatter's choice of ticks to label (minor ones on a short range)
            def __call__(self, x, pos=None):  # written "0.6", "3", not 6e-01, 3×10⁰
                return f"{x:g}" if super().__call__(x, pos) else ""
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(Plain(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def num(x):
    return "–" if x is None else f"{x:,}"


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


def fmt_acc(d, n=True):
    if not d or d.get("accuracy") is None:
        return "–"
    s = f"{100 * d['accuracy']:.1f}% [{100 * d['ci95'][0]:.1f}, {100 * d['ci95'][1]:.1f}]"
    return s + (f" (n={d['n']})" if n else "")


def fmt_p(p):
    return "–" if p is None else f"{p:.2g}" if p >= 1e-4 else f"{p:.0e}"


def fmt_seconds(s):
    return "–" if s is None else f"{s:.1f}s" if s < 120 else f"{s / 60:.1f} min"


def fmt_value(v):
    return json.dumps(v) if isinstance(v, (list, dict)) or v == "" else str(v)


def kv_block(d, width=100):
    """`key=value` pairs packed into lines of about `width` characters, in the dict's order."""
    lines, cur = [], ""
    for k, v in d.items():
        item = f"{k}={fmt_value(v)}"
        if cur and len(cur) + 2 + len(item) > width:
            lines.append(cur)
            cur = item
        else:
            cur = f"{cur}  {item}" if cur else item
    return lines + ([cur] if cur else [])


def order(v):
    """Sort key for indices, topics and levels: numbers by value, before strings."""
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def level_name(level):
    return f"L{level}" if isinstance(level, int) or str(level).isdigit() else str(level)


# -----------------------------------------------------------------------------
# sections: each returns (the data for report.json, its markdown lines)

def tokenizer_vocab(path="math_tokenizer"):
    """The tokenizer's own vocab size (tokens, not the model's padded rows), or None when it is not here."""
    try:
        from mathlm.tokenizer import MathTokenizer
        return MathTokenizer.load(path).vocab_size
    except (ValueError, ImportError):
        return None


def model_section(pre, tok_vocab=None):
    if not pre or not pre.get("model_config"):
        return None, [NOT_RUN]
    m = {"n_params": pre.get("n_params"), **pre["model_config"]}
    g = m.get
    vocab = g("vocab_size") or 0
    # pretrain pads the embedding to a multiple of 64 (aligned matmuls): the two numbers differ on purpose
    pad = (f" (the tokenizer's {tok_vocab:,} tokens padded to a multiple of 64 for aligned matmuls)"
           if tok_vocab and tok_vocab < vocab == (tok_vocab + 63) // 64 * 64 else "")
    if tok_vocab:
        m["tokenizer_vocab_size"] = tok_vocab
    line = (f"{(g('n_params') or 0) / 1e6:.2f}M parameters: {g('n_layer')} layers × {g('n_embd')}, "
            f"{g('n_head')} query / {g('n_kv_head')} KV heads, SwiGLU {g('ffn_hidden')}, "
            f"context {g('block_size')}, vocab {vocab:,}{pad}"
            + (f", MoE {g('n_expert')} experts top-{g('expert_top_k')}" if g("n_expert") else "") + ".")
    return m, [line]


def data_section(state):
    rows = []
    for mp in sorted(glob.glob("*.meta.json")):
        m = read(mp)
        if not isinstance(m, dict):
            continue
        dropped = m.get("decontam") or {}
        rows.append({"name": mp[:-len(".meta.json")], "tokens": m.get("n_tokens"), "examples": m.get("n_examples"),
                     "sources": m.get("sources"),
                     "decontam_dropped": sum(dropped.values()) if isinstance(dropped, dict) else dropped,
                     "decontam": dropped})
    md = []
    if rows:
        md += ["| file | tokens | examples | decontamination drops | source |", "|---|---|---|---|---|"]
        for r in rows:
            src = ", ".join(os.path.basename(str(s.get("path", s) if isinstance(s, dict) else s))
                            for s in (r["sources"] or [])[:4])
            md.append(f"| {r['name']}.bin | {r['tokens'] or 0:,} | {num(r['examples'])} "
                      f"| {num(r['decontam_dropped'] or 0)} | {src} |")
    else:
        md.append(f"{NOT_RUN} (no *.meta.json here)")
    datasets = state.get("datasets") or {}
    if datasets:
        md += ["", "Datasets: " + ", ".join(f"{k} ({v})" for k, v in datasets.items())]
    return rows, datasets, md


def skipped_section(state):
    if not state:
        return None, [f"{NOT_RUN} (no pipeline.json)"]
    skipped = state.get("skipped")
    if skipped is None:
        return None, ["not recorded (pipeline.json has no `skipped`; rerun the pipeline's data stages)"]
    if not skipped:
        return {}, ["none: every dataset the pipeline knows was used"]
    return skipped, ["| dataset | why |", "|---|---|"] + [f"| {k} | {v} |" for k, v in skipped.items()]


def throughput(name, ck, state):
    """Tokens, training seconds and tokens/s of one trainer: its checkpoint's keys, else estimated
    from the config and the logged tok/s (then "source" says so); wall time from pipeline.json."""
    wall = ((state.get("stages") or {}).get(name) or {}).get("seconds")
    if not ck:
        return {"steps": None, "tokens": None, "train_seconds": None, "tokens_per_s": None, "wall_seconds": wall,
                "source": None}
    tokens, secs, tps = ck.get("tokens"), ck.get("train_seconds"), ck.get("tokens_per_s")
    source = "checkpoint"
    cfg = ck.get("config") or {}
    if tokens is None and name == "pretrain" and ck.get("step") is not None \
            and all(isinstance(cfg.get(k), int) for k in ("batch_size", "block_size", "grad_accum")):
        tokens = ck["step"] * cfg["batch_size"] * cfg["block_size"] * cfg["grad_accum"]  # windows are always full
        source = "config × steps"
    if tps is None and tokens is not None and secs:
        tps = tokens / secs
    if tps is None:
        logged = curve(ck.get("history"), "tok_s")[1]
        if logged:
            tps = sum(logged) / len(logged)
            source = "history (mean logged tok/s" + (", generated tokens)" if name == "grpo" else ")")
    return {"steps": ck.get("step"), "tokens": tokens, "train_seconds": secs, "tokens_per_s": tps,
            "wall_seconds": wall, "source": source}


def stages_section(state, ckpts):
    stages = {}
    for k, v in (state.get("stages") or {}).items():
        if not isinstance(v, dict) or (k == "report" and v.get("status") == "running"):
            continue  # the pipeline marks its report stage running before it starts this very program
        status = "interrupted" if v.get("status") == "running" else v.get("status")  # no other stage runs now
        stages[k] = {"seconds": round(v.get("seconds", 0.0), 1), "status": status}
    thr = {name: throughput(name, ckpts[name], state) for name, _ in TRAINERS}
    md = []
    if stages:
        md += ["| stage | wall time | status |", "|---|---|---|"]
        md += [f"| {k} | {v['seconds']:.1f}s | {v['status'] or '–'} |" for k, v in stages.items()]
        total = sum(v["seconds"] for v in stages.values())
        md += [f"| **total** | **{total / 60:.1f} min** | |", "",
               "Wall times as `python -m mathlm.pipeline` measured them, summed over its runs of each stage: a "
               "stage run by hand is not counted, so one the pipeline only resumed afterwards shows just the resume.",
               ""]
    else:
        md += [f"Stage wall times: {NOT_RUN} (no pipeline.json)", ""]
    if any(ckpts.values()):
        md += ["| trainer | steps | tokens | train time | tokens/s | wall time | from |", "|---" * 7 + "|"]
        for name, t in thr.items():
            if not ckpts[name]:
                md.append(f"| {name} | {NOT_RUN} | | | | | |")
                continue
            tps = None if t["tokens_per_s"] is None else round(t["tokens_per_s"])
            md.append(f"| {name} | {num(t['steps'])} | {num(t['tokens'])} | {fmt_seconds(t['train_seconds'])} "
                      f"| {num(tps)} | {fmt_seconds(t['wall_seconds'])} | {t['source']} |")
    else:
        md.append(f"Tokens and tokens/s: {NOT_RUN} (no checkpoint*.json)")
    return stages, thr, md


def hyperparameters_section(ckpts):
    hp, md = {}, []
    base_mc = None
    for name, path in TRAINERS:
        ck = ckpts[name]
        md += [f"### {name}", ""]
        if not ck or not (ck.get("config") or ck.get("model_config")):
            hp[name] = None
            md += [f"{NOT_RUN} (no {path})", ""]
            continue
        hp[name] = {"config": ck.get("config"), "model_config": ck.get("model_config")}
        md += ["```text", *kv_block(ck.get("config") or {}), "```"]
        mc = ck.get("model_config")
        if mc and mc == base_mc:
            md += ["model: as above", ""]
        elif mc:
            md += ["model:", "```text", *kv_block(mc), "```", ""]
            base_mc = base_mc or mc
    return hp, md


def loss_section(ck, what, png, title):
    if not ck:
        return None, [NOT_RUN]
    vals = curve(ck.get("history"), "val_loss")[1]
    r = {"steps": ck.get("step"), "val_loss_start": vals[0] if vals else None,
         "val_loss_end": vals[-1] if vals else None}
    md = [f"{r['steps'] or 0:,} steps; {what} {vals[0]:.3f} → {vals[-1]:.3f}." if vals
          else f"{r['steps'] or 0:,} steps; no {what} logged."]
    by_domain = domain_curves(ck.get("history"))  # SFT: the val loss of each domain, as its trainer prints it
    if by_domain:
        r["val_loss_by_domain"] = {d: {"start": ys[0], "end": ys[-1]} for d, (_, ys) in by_domain.items()}
        md.append("Per domain: " + ", ".join(f"{d} {ys[0]:.3f} → {ys[-1]:.3f}" for d, (_, ys) in by_domain.items())
                  + " (a rise is forgetting).")
    if png:
        md += ["", f"![{title} loss]({png})"]
    return r, md


def grpo_section(grpo, out):
    if not grpo:
        return None, {}, [NOT_RUN]
    hist = grpo.get("history")
    G = (grpo.get("config") or {}).get("group_size", "G")
    curves = {k: curve(hist, keys) for k, keys in GRPO_CURVES.items()}
    if not curves["pass_at_g"][0]:  # a pass@<G> spelled with the number
        names = sorted({k for h in hist or [] if isinstance(h, dict) for k in h
                        if re.fullmatch(r"pass@\d+", k) and k != "pass@1"})
        if names:
            curves["pass_at_g"] = curve(hist, names[0])
    r = {"steps": grpo.get("step"), "group_size": G}
    for k, (_, ys) in curves.items():
        r[f"{k}_first"] = ys[0] if ys else None
        r[f"{k}_last"] = ys[-1] if ys else None
        r[f"{k}_mean"] = sum(ys) / len(ys) if ys else None
    labels = {"reward": "mean reward", "pass_at_1": "pass@1", "pass_at_g": f"pass@{G}",
              "zero_signal": "zero-signal groups", "heldout_acc": "held-out accuracy"}
    plots = {"grpo": plot(f"{out}_grpo_reward.png",
                          {labels[k]: curves[k] for k in ("reward", "pass_at_1", "pass_at_g", "heldout_acc")},
                          "GRPO reward and pass@k", "reward / fraction"),
             "grpo_signal": plot(f"{out}_grpo_signal.png", {labels["zero_signal"]: curves["zero_signal"]},
                                 "GRPO zero-signal groups (all G answers equal: no gradient)", "fraction of groups")}
    md = [f"{r['steps'] or 0:,} steps, G = {G}.", "", "| curve | first | last | mean |", "|---|---|---|---|"]
    for k, label in labels.items():
        if r[f"{k}_first"] is None:
            md.append(f"| {label} | not logged | | |")
        elif k == "reward":
            md.append(f"| {label} | {r[k + '_first']:.3f} | {r[k + '_last']:.3f} | {r[k + '_mean']:.3f} |")
        else:
            md.append(f"| {label} | {pct(r[k + '_first'])} | {pct(r[k + '_last'])} | {pct(r[k + '_mean'])} |")
    fit = next((h for h in reversed(hist or []) if isinstance(h, dict) and "trained_acc" in h), None)
    if fit:  # what GRPO fitted, beside what carried over to new problems (the held-out row above)
        r["trained"] = {"n": fit.get("trained_n"), "sft": fit.get("trained_acc_sft"), "grpo": fit["trained_acc"]}
        md += ["", f"On {fit.get('trained_n', '?')} of the questions it trained on (right and wrong samples both "
                   f"seen), greedy: SFT {pct(fit.get('trained_acc_sft'))} → GRPO {pct(fit['trained_acc'])}. The "
                   "held-out row is how much of that carries to problems GRPO never saw."]
    md += [""] + [f"![{title}]({plots[k]})" for k, title in (("grpo", "GRPO reward"),
                                                             ("grpo_signal", "GRPO zero-signal")) if plots[k]]
    return r, {k: v for k, v in plots.items() if v}, md


def accuracy_section(evals, gsm8k):
    domains = list(dict.fromkeys(d for e in evals.values() for d in (e or {}).get("domains", {})))
    acc, majority, flexible = {}, {}, {}
    for d in domains:
        acc[d] = {t: (evals[t] or {}).get("domains", {}).get(d) for t in TAGS}
        src = next((s for s in acc[d].values() if s and "majority_baseline" in s), None)
        majority[d] = src and {k: src.get(k) for k in ("majority_baseline", "majority_answer", "majority_from")}
        flexible[d] = {t: s and {"strict": s.get("accuracy"), "flexible": s.get("flexible"),
                                 "gap": None if None in (s.get("flexible"), s.get("accuracy"))
                                 else s["flexible"] - s["accuracy"]}  # answers the model did not declare
                       for t, s in acc[d].items()}
    if not domains:
        return acc, majority, flexible, [NOT_RUN]
    md = ["Greedy, zero-shot, per domain; strict accuracy (the declared `####` / `\\boxed{}` answer) with its 95% "
          "Wilson interval, then flexible (any fallback answer); majority = always answering the most common gold.", "",
          "| domain | majority | base | SFT | GRPO |", "|---|---|---|---|---|"]
    for d in domains:
        cells = []
        for t in TAGS:
            s = acc[d][t]
            flex = f" · flex {pct(s.get('flexible'))}" if s and "flexible" in s else ""
            cells.append(fmt_acc(s) + flex)
        m = majority[d]
        mcell = "–" if not m else f"{pct(m['majority_baseline'])}" + (f" (`{m['majority_answer']}`)"
                                                                       if m.get("majority_answer") is not None else "")
        md.append(f"| {d} | {mcell} | " + " | ".join(cells) + " |")
    if gsm8k and gsm8k.get("accuracy") is not None:
        md += ["", f"GSM8K {gsm8k.get('shots_used_min', gsm8k.get('shots'))}-shot CoT on the GRPO model: "
                   f"{fmt_acc(gsm8k)}."]
    return acc, majority, flexible, md


def cell(recs):
    """n, correct, accuracy, Wilson ci95 of per-problem rows (strict correctness)."""
    k = sum(bool(r.get("correct")) for r in recs)
    return {"n": len(recs), "correct": k, "accuracy": k / len(recs), "ci95": list(wilson_interval(k, len(recs)))}


def paired(a, b, keys, a_name, b_name):
    """Exact McNemar on the keys both row sets hold: <a_name>_only = a right and b wrong, <b_name>_only the
    reverse; the problems both got right or both wrong say nothing about which is better."""
    both = [k for k in keys if k in a and k in b]
    if not both:
        return None
    a_only = sum(bool(a[k].get("correct")) and not b[k].get("correct") for k in both)
    b_only = sum(bool(b[k].get("correct")) and not a[k].get("correct") for k in both)
    return {"n": len(both), f"{a_name}_only": a_only, f"{b_name}_only": b_only, "p": mcnemar_exact(a_only, b_only)}


def summary_cell(ev, domain, topic, level):
    """The eval .json's numbers for a domain (topic None) or one of its topics; it has no levels."""
    s = ((ev or {}).get("domains", {}).get(domain) or {})
    if topic is not None or level is not None:
        s = (s.get("topics") or {}).get(topic) if level is None else None
    return {k: s.get(k) for k in ("n", "correct", "accuracy", "ci95")} if s else None


def topic_groups(keys, meta):
    """[(label, topic, level, keys)]: overall, each topic, and each (topic, level) of a topic whose levels vary
    (one level would only repeat the topic's row)."""
    groups = [("overall", None, None, keys)]
    topics = sorted({meta[k].get("topic") for k in keys if meta[k].get("topic") is not None}, key=order)
    levels = {meta[k].get("level") for k in keys if meta[k].get("level") is not None}
    for t in topics:
        tk = [k for k in keys if meta[k].get("topic") == t]
        groups.append((str(t), t, None, tk))
        tl = sorted({meta[k].get("level") for k in tk if meta[k].get("level") is not None}, key=order)
        if len(tl) > 1:
            groups += [(f"{t} {level_name(lv)}", t, lv, [k for k in tk if meta[k].get("level") == lv]) for lv in tl]
    if not topics and len(levels) > 1:
        for lv in sorted(levels, key=order):
            groups.append((level_name(lv), None, lv, [k for k in keys if meta[k].get("level") == lv]))
    return groups


def topics_section(evals, rows):
    """Per domain, rows of {label, topic, level, base, SFT, GRPO, sft_vs_base, grpo_vs_sft}. Cells come
    from the .jsonl rows; a checkpoint with only its .json contributes its per-topic numbers, unpaired."""
    domains = list(dict.fromkeys([d for e in evals.values() for d in (e or {}).get("domains", {})]
                                 + [d for r in rows.values() for d, _ in (r or {})]))
    out, md = {}, []
    for d in domains:
        meta = {}
        for t in TAGS:
            for k, r in (rows[t] or {}).items():
                if k[0] == d:
                    meta.setdefault(k, r)
        keys = sorted(meta, key=lambda k: order(k[1]))
        groups = topic_groups(keys, meta)
        if not keys:  # only summaries: their topics
            groups += [(str(tp), tp, None, []) for tp in sorted({tp for e in evals.values() for tp in
                       (((e or {}).get("domains", {}).get(d) or {}).get("topics") or {})}, key=order)]
        table = []
        for label, topic, level, gk in groups:
            row = {"label": label, "topic": topic, "level": level}
            for t in TAGS:
                recs = [rows[t][k] for k in gk if rows[t] and k in rows[t]]
                if recs:
                    row[t] = cell(recs)
                else:  # no per-problem rows: the summary's numbers where it has them
                    row[t] = summary_cell(evals[t], d, topic, level)
            row["sft_vs_base"] = paired(rows["base"] or {}, rows["SFT"] or {}, gk, "base", "sft")
            row["grpo_vs_sft"] = paired(rows["SFT"] or {}, rows["GRPO"] or {}, gk, "sft", "grpo")
            g = row["grpo_vs_sft"]
            if g:
                g["grpo_worse"] = g["p"] < ALPHA and g["grpo_only"] < g["sft_only"]
            table.append(row)
        out[d] = table
        md += [f"### {d}", "", "| topic | n | base | SFT | p (SFT vs base) | GRPO | p (GRPO vs SFT) |",
               "|---|---|---|---|---|---|---|"]
        for row in table:
            n = next((row[t]["n"] for t in TAGS if row[t]), None)
            sb, gs = row["sft_vs_base"], row["grpo_vs_sft"]
            worse = " **▼ worse**" if gs and gs["grpo_worse"] else ""
            label = f"**{row['label']}**" if row["label"] == "overall" else row["label"]
            md.append(f"| {label} | {n if n is not None else '–'} | {fmt_acc(row['base'], False)} "
                      f"| {fmt_acc(row['SFT'], False)} | {fmt_p(sb and sb['p'])} | {fmt_acc(row['GRPO'], False)} "
                      f"| {fmt_p(gs and gs['p'])}{worse} |")
        md.append("")
    if not domains:
        return out, [NOT_RUN]
    md = ["Strict accuracy [95% Wilson]; p: two-sided exact McNemar on the problems both checkpoints answered, "
          f"paired by (domain, index); **▼ worse**: GRPO significantly below SFT (p < {ALPHA}).", ""] + md
    return out, md


def trim(text, lines=4, width=160):
    """At most `lines` lines of `width` characters: the head, and the last line (where the answer is declared)."""
    ls = [x[:width] + ("…" if len(x) > width else "") for x in str(text or "").strip().splitlines()]
    if len(ls) > lines:
        ls = ls[:lines - 2] + ["…", ls[-1]]
    return "\n".join(ls).replace("```", "'''")  # a fence inside would end the sample's block


def pick_samples(keys, rows, k, rng):
    """k keys in a seeded order, each next pick preferring an outcome the picks lack: the last checkpoint's
    ✓/✗ first, then the pattern across checkpoints, then the topic."""
    order = list(keys)
    rng.shuffle(order)
    tags = [t for t in TAGS if rows[t]]

    def outcome(key):
        return tuple(bool(rows[t][key].get("correct")) if key in rows[t] else None for t in tags)
    picked, seen_last, seen_pat, seen_topic = [], set(), set(), set()
    for _ in range(min(k, len(order))):
        key = max((x for x in order if x not in picked),
                  key=lambda x: (outcome(x)[-1] not in seen_last, outcome(x) not in seen_pat,
                                 next(rows[t][x].get("topic") for t in tags if x in rows[t]) not in seen_topic))
        picked.append(key)
        seen_last.add(outcome(key)[-1])
        seen_pat.add(outcome(key))
        seen_topic.add(next(rows[t][key].get("topic") for t in tags if key in rows[t]))
    return picked


def samples_section(rows, k, seed):
    from mathlm.infer.tools import render_calls  # imports torch: only when there are samples to show
    domains = list(dict.fromkeys(d for t in TAGS for d, _ in (rows[t] or {})))
    out, md = {}, []
    for d in domains:
        sets = [s for s in ({key for key in rows[t] if key[0] == d} for t in TAGS if rows[t]) if s]
        common = set.intersection(*sets) or set.union(*sets)  # the same problems for every checkpoint
        keys = sorted(common, key=lambda x: order(x[1]))
        picks = pick_samples(keys, rows, k, random.Random(f"{seed}/{d}"))
        out[d] = []
        md += [f"### {d}", ""]
        for key in picks:
            first = next(rows[t][key] for t in TAGS if rows[t] and key in rows[t])
            s = {"index": key[1], "question": first.get("question"), "gold": first.get("gold"),
                 "topic": first.get("topic"), "level": first.get("level"), "answers": {}}
            for t in TAGS:
                r = (rows[t] or {}).get(key)
                # calls shown as the CLI and the demo show them, [calc 48/2 = 24], not as raw tool tokens
                s["answers"][t] = r and {"completion": trim(render_calls(r.get("completion") or "")),
                                         "extracted": r.get("extracted"),
                                         "correct": bool(r.get("correct")),
                                         "mark": "✓" if r.get("correct") else "✗"}
            out[d].append(s)
            tag = " ".join(str(x) for x in (s["topic"], s["level"] is not None and level_name(s["level"])) if x)
            md += ["```text", f"#{s['index']}{' · ' + tag if tag else ''} · gold: {s['gold']}",
                   "Q: " + trim(s["question"], lines=3, width=300)]
            for t, a in s["answers"].items():
                if a is None:
                    md.append(f"{t:<4} –  {NOT_RUN}")
                    continue
                comp = (a["completion"] or "(empty)").splitlines()
                md.append(f"{t:<4} {a['mark']}  {comp[0]}")
                md += [f"        {line}" for line in comp[1:]]
                md.append(f"        → extracted: {a['extracted']}")
            md += ["```", ""]
    if not domains:
        return out, [f"{NOT_RUN} (no eval_*.jsonl)"]
    return out, md


def try_section():
    """The checkpoints here and the commands that use them (the same default checkpoint rule as they)."""
    from mathlm.infer.inference import PIPELINE_CHECKPOINTS, default_checkpoint
    here = [(stage, n) for stage, n in PIPELINE_CHECKPOINTS if os.path.isfile(n)]
    if not here:
        return None, [f"{NOT_RUN} (no checkpoint*.pt here)"]
    path, why = default_checkpoint()
    upload = os.path.relpath(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                          "scripts", "upload_hf.py"))
    cmds = {"chat": "python -m mathlm.infer.inference --chat", "demo": "python -m mathlm.infer.demo",
            "export": f"python {upload} --out_dir mathlm-hf"}
    md = ["Checkpoints here: " + ", ".join(f"`{n}` ({s})" for s, n in here) + f". Without --checkpoint the "
          f"commands below use `{path}` ({why}). Run them from this folder:", "",
          f"- `{cmds['chat']}` — ask questions in the terminal; `--prompt \"d/dx x^5?\"` for one answer",
          f"- `{cmds['demo']}` — the same in the browser, with its accuracy on the page",
          f"- `{cmds['export']}` — a folder `transformers` loads with no custom code (`--repo_id` uploads it)"]
    return {"checkpoints": dict((s, n) for s, n in here), "default": path, "commands": cmds}, md


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


# -----------------------------------------------------------------------------

@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    check_range(cfg, "samples", lo=0)
    check_range(cfg, "seed", lo=0, hi=SEED_MAX)
    state = read("pipeline.json")
    state = state if isinstance(state, dict) else {}
    ckpts = {name: (lambda c: c if isinstance(c, dict) else None)(read(p)) for name, p in TRAINERS}
    evals = {t: (lambda e: e if isinstance(e, dict) else None)(read(p)) for t, p in EVALS}
    rows = {t: read_rows(p[:-len(".json")] + ".jsonl") for t, p in EVALS}
    gsm8k = read("eval_gsm8k.json")
    gsm8k = gsm8k if isinstance(gsm8k, dict) else None
    pre, sft = ckpts["pretrain"], ckpts["sft"]

    sft_val = {f"val {d}": c for d, c in domain_curves(sft and sft.get("history")).items()}
    plots = {"pretrain": plot(f"{cfg.out}_pretrain_loss.png", {"train": curve(pre and pre.get("history"), "loss"),
                                                               "val": curve(pre and pre.get("history"), "val_loss")},
                              "pretraining loss", "loss (nats/token, log scale)", logy=True),
             "sft": plot(f"{cfg.out}_sft_loss.png", {"train (answer tokens)": curve(sft and sft.get("history"), "loss"),
                                                     "val (mean of domains)" if sft_val else "val":
                                                     curve(sft and sft.get("history"), "val_loss"), **sft_val},
                         "SFT loss", "loss (nats/token, log scale)", logy=True)}
    model, md_model = model_section(pre, tokenizer_vocab())
    data, datasets, md_data = data_section(state)
    skipped, md_skipped = skipped_section(state)
    stages, thr, md_stages = stages_section(state, ckpts)
    hp, md_hp = hyperparameters_section(ckpts)
    pre_r, md_pre = loss_section(pre, "val loss", plots["pretrain"], "Pretraining")
    sft_r, md_sft = loss_section(sft, "val loss (answer tokens)", plots["sft"], "SFT")
    grpo_r, grpo_plots, md_grpo = grpo_section(ckpts["grpo"], cfg.out)
    acc, majority, flexible, md_acc = accuracy_section(evals, gsm8k)
    topics, md_topics = topics_section(evals, rows)
    samples, md_samples = samples_section(rows, cfg.samples, cfg.seed)
    hw = hardware()
    md_hw = [f"{hw.get('gpu', 'no GPU')}; {hw['cpu_count']} CPU cores ({hw['processor']}); "
             f"{hw.get('memory_gb', '?')} GB RAM; {hw['platform']}; Python {hw['python']}; torch {hw['torch']}."]
    plots.update(grpo_plots)
    try_it, md_try = try_section()

    rep = {"preset": state.get("preset", cfg.preset), "hardware": hw, "datasets": datasets, "skipped": skipped,
           "model": model, "data": data, "stages": stages, "throughput": thr, "hyperparameters": hp,
           "pretrain": pre_r, "sft": sft_r, "grpo": grpo_r, "accuracy": acc, "majority": majority,
           "strict_vs_flexible": flexible, "gsm8k_2shot": gsm8k, "topics": topics, "samples": samples,
           "try_it": try_it, "plots": {k: v for k, v in plots.items() if v}}
    bodies = dict(zip(SECTIONS, [md_model, md_data, md_skipped, md_stages, md_hp, md_pre, md_sft, md_grpo, md_acc,
                                 md_topics, md_samples, md_hw, md_try]))
    md = [f"# mathlm report card — preset `{rep['preset']}`", ""]
    for title in SECTIONS:
        body = list(bodies[title])
        while body and body[-1] == "":
            body.pop()
        md += [f"## {title}", "", *body, ""]
    atomic_write(f"{cfg.out}.md", "\n".join(md))
    atomic_write_json(f"{cfg.out}.json", rep)
    print(f"wrote {cfg.out}.md and {cfg.out}.json ({len(rep['plots'])} plots)"
          + (f" | try the model: {try_it['commands']['chat']}" if try_it else ""))
    return rep


if __name__ == "__main__":
    main()
