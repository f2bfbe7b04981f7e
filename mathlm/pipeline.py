"""Every stage in order, each as its own `python -m` step, in the working directory.

    python -m mathlm.pipeline --preset tiny                        # 2 CPU cores, ≤ 30 minutes
    python -m mathlm.pipeline --preset smoke                       # ≤ 3 minutes: does it all run?
    python -m mathlm.pipeline                                      # the 40M GPU recipe
    python -m mathlm.pipeline --preset tiny --data_source ../shared/data/gsm8k
    python -m mathlm.pipeline --from sft --until eval              # a part of it
    python -m mathlm.pipeline --preset tiny --seed 1               # the same recipe, other data and init

Stages: data_text (synthetic generators, with the calculus prose corpus; GSM8K / MATH / NuminaMath /
OpenR1 from --data_source folders or the hub; text only) → tokenizer → data_bin (tokenize_qa: the
same jsonl, tokenized once) → pretrain_data (train.bin/val.bin from openwebmath.txt, else from the
*_corpus.txt prose, else from the Q/A text) → pretrain → sft → grpo →
eval (base, SFT and GRPO on every domain; GSM8K 2-shot on the GRPO model) → report.

Outputs, under the names the stages use: math_tokenizer/, <name>.jsonl, <name>_test.jsonl,
<name>.bin, train.bin, val.bin, checkpoint.pt, checkpoint_mathlm.pt,
checkpoint_mathlm_grpo.pt, eval_*.json(l), report.md, report.json, report_*.png, and
pipeline.json: the state that makes reruns cheap. A stage is skipped when it finished before
with the same command and the same input files (size and mtime) and its outputs exist. A
stage that was interrupted is run again; the trainers get --resume, so a killed pretraining
continues from its last checkpoint instead of starting over.

A --data_source folder holds one dataset in its hub schema (train.jsonl/test.jsonl or
parquet) and is named after it: gsm8k, math (or hendrycks_math, competition_math), numina
(NuminaMath-CoT), openr1 (OpenR1-Math-220k). Datasets without a folder come from the hub when
it is reachable, else they are named and skipped.
"""
import glob
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from mathlm.common import (SEED_MAX, atomic_write_json, check_device, check_range, cli, die, hold_lock, parse_config,
                           sha256_file)

STAGES = ["data_text", "tokenizer", "data_bin", "pretrain_data", "pretrain", "sft", "grpo", "eval", "report"]
DATASETS = {  # name → (downloader module, folder names that mean it)
    "gsm8k": ("mathlm.data.download_gsm8k", ("gsm8k",)),
    "math": ("mathlm.data.download_math", ("math", "hendrycks_math", "competition_math", "hendrycks-math")),
    "numina": ("mathlm.data.download_numina", ("numina", "numinamath", "numinamath-cot", "numinamath_cot")),
    "openr1": ("mathlm.data.download_openr1", ("openr1", "openr1-math-220k", "openr1_math", "open-r1")),
}
GENERATORS = {"calculus": "mathlm.data.generate_calculus", "ml_math": "mathlm.data.generate_ml_math",
              "word_problems": "mathlm.data.generate_word_problems"}
STATE = "pipeline.json"


@dataclass
class Config:
    preset: str = "default"                              # default (40M GPU recipe) | tiny | smoke
    data_source: list[str] = field(default_factory=list)  # dataset folders, e.g. ../shared/data/gsm8k
    hub: bool = True                                     # try the hub for datasets without a folder
    from_stage: str = "data_text"                        # also --from
    until: str = "report"                                # last stage to run; the stages, in order: data_text tokenizer
                                                         # data_bin pretrain_data pretrain sft grpo eval report
    force: bool = False                                  # rerun stages even when up to date
    device: str = "auto"                                 # auto|cuda|mps|cpu, passed to the trainers and evals
    seed: int = -1                                       # ≥ 0: passed as --seed to the generators and trainers
                                                         # (another run of the same recipe); -1 = their defaults


# per-preset stage arguments; "default" is each stage's own defaults (the GPU recipe)
RECIPES = {
    "smoke": {"calculus": ["--preset", "smoke"], "ml_math": ["--preset", "smoke"],
              "word_problems": ["--preset", "smoke"], "gsm8k": ["--max_examples", "2000"], "vocab": ["--preset", "smoke"],
              "train": ["--preset", "smoke"], "eval": ["--preset", "smoke"]},
    "tiny": {"calculus": ["--preset", "tiny"], "ml_math": ["--preset", "tiny"], "word_problems": ["--preset", "tiny"],
             "gsm8k": [],
             "vocab": ["--preset", "tiny"], "train": ["--preset", "tiny"], "eval": ["--preset", "tiny"]},
    "default": {"calculus": [], "ml_math": [], "word_problems": [], "gsm8k": [], "vocab": [], "train": [],
                "eval": []},
}


def hub_reachable(timeout=3.0):
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def dataset_sources(cfg, skipped=None):
    """{name: folder or None (hub)} for the datasets this run will use; prints what is skipped
    and records {name: why} in `skipped`."""
    out = {}
    for src in cfg.data_source:
        if not os.path.isdir(src):
            die(f"--data_source {src} is not a folder")
        base = os.path.basename(os.path.normpath(src)).lower()
        name = next((n for n, (_, keys) in DATASETS.items() if base in keys), None)
        if name is None:
            die(f"--data_source {src}: cannot tell which dataset it is from its name; name the folder "
                f"one of {', '.join(DATASETS)}")
        out[name] = os.path.abspath(src)
    missing = [n for n in DATASETS if n not in out]
    if missing:
        if cfg.hub and hub_reachable():
            out.update({n: None for n in missing})
        else:
            why = "--no-hub" if not cfg.hub else "the hub is unreachable"
            print(f"datasets skipped ({why}): {', '.join(missing)} — pass --data_source DIR to use local copies")
            if skipped is not None:
                skipped.update({n: f"no --data_source folder and {why}" for n in missing})
    return out


def stage_commands(stage, cfg, sources):
    """[(argv, inputs, outputs)] for one stage. Inputs decide whether a stage is up to date."""
    r = RECIPES[cfg.preset]
    py = [sys.executable, "-m"]
    dev = ["--device", cfg.device]
    seed = ["--seed", str(cfg.seed)] if cfg.seed >= 0 else []  # the evals keep theirs: the same problems
    if stage == "data_text":
        cmds = []
        # the real test splits first, so every later dataset is decontaminated against them
        for name, folder in sources.items():
            extra = (["--source", folder] if folder else []) + (r["gsm8k"] if name == "gsm8k" else [])
            cmds.append((py + [DATASETS[name][0], *extra, "--text_only"], [], [f"{name}.jsonl"]))
        for name, mod in GENERATORS.items():
            cmds.append((py + [mod, *r[name], *seed, "--text_only"], [], [f"{name}.jsonl", f"{name}_test.jsonl"]))
        return cmds
    if stage == "data_bin":
        # tokenize what data_text wrote: each dataset is made once
        names = [n for n in [*sources, *GENERATORS] if os.path.exists(f"{n}.jsonl")]
        return [(py + ["mathlm.data.tokenize_qa", *names],
                 ["math_tokenizer/tokenizer.json"] + [f"{n}.jsonl" for n in names], [f"{n}.bin" for n in names])]
    if stage == "tokenizer":
        ins = pretrain_text() + (train_jsonl() if not os.path.exists("openwebmath.txt") else [])
        return [([sys.executable, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                               "scripts", "train_tokenizer.py"), *r["vocab"], "--input", *ins],
                 ins, ["math_tokenizer/tokenizer.json"])]
    if stage == "pretrain_data":
        ins = pretrain_text()
        return [(py + ["mathlm.data.build_pretrain", "--input", *ins], ins + ["math_tokenizer/tokenizer.json"],
                 ["train.bin", "val.bin"])]
    bins = sorted(glob.glob("*.bin"))
    if stage == "pretrain":
        return [(py + ["mathlm.train.pretrain", *r["train"], *dev, *seed, "--resume"], bins, ["checkpoint.pt"])]
    if stage == "sft":
        return [(py + ["mathlm.train.sft", *r["train"], *dev, *seed, "--resume"], bins + ["checkpoint.pt"],
                 ["checkpoint_mathlm.pt"])]
    if stage == "grpo":
        return [(py + ["mathlm.train.grpo", *r["train"], *dev, *seed, "--resume"],
                 ["checkpoint_mathlm.pt"] + sorted(glob.glob("*_rl.jsonl")),
                 ["checkpoint_mathlm_grpo.pt"])]
    if stage == "eval":
        tests = sorted(glob.glob("*_test.jsonl"))
        cmds = []
        for tag, ck in (("base", "checkpoint.pt"), ("sft", "checkpoint_mathlm.pt"), ("grpo", "checkpoint_mathlm_grpo.pt")):
            cmds.append((py + ["mathlm.eval.math", *r["eval"], *dev, "--checkpoint", ck, "--out", f"eval_{tag}"],
                         [ck] + tests, [f"eval_{tag}.json"]))
        if os.path.exists("gsm8k_test.jsonl"):
            cmds.append((py + ["mathlm.eval.gsm8k", *r["eval"], *dev, "--checkpoint", "checkpoint_mathlm_grpo.pt",
                               "--out", "eval_gsm8k"], ["checkpoint_mathlm_grpo.pt", "gsm8k_test.jsonl"],
                         ["eval_gsm8k.json"]))
        return cmds
    if stage == "report":
        ins = [p for p in ("checkpoint.json", "checkpoint_mathlm.json", "checkpoint_mathlm_grpo.json")
               if os.path.exists(p)] + sorted(glob.glob("eval_*.json"))
        return [(py + ["mathlm.report", "--preset", cfg.preset], ins, ["report.md", "report.json"])]
    raise ValueError(stage)


def pretrain_text():
    """What pretraining reads: openwebmath.txt when it is here, else the generators' prose corpora
    (worked examples, rules: text of its own kind, not the Q/A pairs SFT uses), else the Q/A text."""
    if os.path.exists("openwebmath.txt"):
        return ["openwebmath.txt"]
    return sorted(glob.glob("*_corpus.txt")) or train_jsonl()


def train_jsonl():
    return sorted(p for p in glob.glob("*.jsonl")
                  if not p.endswith(("_test.jsonl", "_rl.jsonl")) and not p.startswith("eval_"))


def resolved_config(argv):
    """The config a stage will run with — defaults ← preset ← flags, resolved the way the stage
    resolves it — as plain data, or None for a stage without a Config. It is what makes a changed
    preset (or a changed default) rerun the stages it changes, though the command line is the same."""
    import contextlib
    import importlib
    import importlib.util
    from mathlm.common import config_dict
    try:
        if argv[1] == "-m":
            mod, args = importlib.import_module(argv[2]), argv[3:]
        else:
            spec = importlib.util.spec_from_file_location("_stage", argv[1])
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            args = argv[2:]
        if not hasattr(mod, "Config"):
            return None
        with contextlib.redirect_stdout(None), contextlib.redirect_stderr(None):
            return config_dict(parse_config(mod.Config, getattr(mod, "PRESETS", None), args))
    except (Exception, SystemExit):   # a stage with positional arguments: its command line says it all
        return None


def fingerprint(argv, inputs):
    """The command (minus the interpreter path), the stage's resolved config and the content of each
    input file. Content, not mtime: data_bin rewrites the same jsonl the tokenizer read, byte for
    byte, and that must not make the tokenizer stale."""
    h = hashlib.sha256(json.dumps([argv[1:], resolved_config(argv)], default=str).encode())
    for p in inputs:
        h.update(f"{p}:{sha256_file(p) if os.path.exists(p) else 'missing'}".encode())
    return h.hexdigest()[:16]


def state_problem(state):
    """What makes `state` not a pipeline.json this module wrote (None when nothing does)."""
    if not isinstance(state, dict):
        return f"a JSON {type(state).__name__}, not an object"
    kinds = {"stages": dict, "preset": str, "datasets": dict, "skipped": dict}
    for k, t in kinds.items():
        if state.get(k) is not None and not isinstance(state[k], t):
            return f"{k!r} is {state[k]!r}, not a {t.__name__}"
    fields = {"status": str, "fingerprint": str, "cmd": list, "seconds": (int, float)}
    for key, rec in state.get("stages", {}).items():
        if not isinstance(rec, dict):
            return f"stage {key!r} is {rec!r}, not an object"
        for k, t in fields.items():
            if k in rec and (not isinstance(rec[k], t) or isinstance(rec[k], bool)):
                return f"stage {key!r} has {k} {rec[k]!r}"
    return None


def load_state():
    """pipeline.json ({"stages": {}} when there is none). A file that is not valid JSON or not of the
    shape this module writes (hand-edited, another tool's) stops the pipeline in one line: guessing
    which stages are done could skip one that is not."""
    if not os.path.exists(STATE):
        return {"stages": {}}
    try:
        with open(STATE, "rb") as f:
            state = json.loads(f.read())
    except (ValueError, RecursionError) as e:  # ValueError: not JSON, or not UTF-8
        problem = f"not JSON: {str(e)[:80] or type(e).__name__}"
    else:
        problem = state_problem(state)
    if problem:
        die(f"{STATE} is not a pipeline state ({problem}) — delete it to rerun every stage "
            "(trainers resume from their checkpoints)")
    state.setdefault("stages", {})
    return state


def _die_with_parent():
    """Linux: the child gets SIGKILL when the pipeline dies, so a killed run leaves no orphan trainer."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_step(key, argv, inputs, outputs, state, cfg):
    fp = fingerprint(argv, inputs)
    rec = state["stages"].get(key, {})
    if (not cfg.force and rec.get("status") == "done" and rec.get("fingerprint") == fp
            and all(os.path.exists(o) for o in outputs)):
        print(f"[pipeline] skip {key}: up to date")
        return
    if rec.get("status") == "running" and rec.get("fingerprint") != fp:
        # an interrupted run of a different command: its partial outputs must not be resumed
        for o in outputs:
            if os.path.isfile(o):
                os.remove(o)
    print(f"[pipeline] run  {key}: {' '.join(argv[1:] if argv[1] == '-m' else argv)}", flush=True)
    state["stages"][key] = {"status": "running", "fingerprint": fp, "cmd": argv[1:],
                            "seconds": rec.get("seconds", 0.0)}
    atomic_write_json(STATE, state)
    t0 = time.time()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run(argv, env=env, preexec_fn=_die_with_parent if os.name == "posix" else None)
    dt = time.time() - t0
    state["stages"][key]["seconds"] += dt  # time across interrupted attempts adds up
    if p.returncode != 0:
        atomic_write_json(STATE, state)
        die(f"stage {key} failed (exit {p.returncode}); fix the error above and rerun — finished stages are kept")
    missing = [o for o in outputs if not os.path.exists(o)]
    if missing:
        die(f"stage {key} finished but did not write {', '.join(missing)}")
    # the fingerprint of the inputs as they are now (a stage may rewrite an input, e.g. a test split)
    state["stages"][key].update(status="done", fingerprint=fingerprint(argv, inputs))
    atomic_write_json(STATE, state)
    print(f"[pipeline] done {key} in {dt:.1f}s")


@cli
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = ["--from_stage" if a == "--from" else a for a in argv]
    cfg = parse_config(Config, None, argv)
    check_range(cfg, "seed", lo=0, hi=SEED_MAX, also=(-1,))
    check_device(cfg)
    if cfg.preset not in RECIPES:
        die(f"unknown --preset {cfg.preset}; choose one of {', '.join(RECIPES)}")
    for s in (cfg.from_stage, cfg.until):
        if s not in STAGES:
            die(f"unknown stage {s}; stages: {', '.join(STAGES)}")
    lo, hi = STAGES.index(cfg.from_stage), STAGES.index(cfg.until)
    # one pipeline per folder: a second one stops here naming this one's pid (each stage also locks its
    # own outputs, but two pipelines would still race on pipeline.json and rerun each other's stages)
    with hold_lock(STATE, hint="run the other pipeline in another folder"):
        return run(cfg, lo, hi)


def run(cfg, lo, hi):
    state = load_state()
    if state.get("preset") not in (None, cfg.preset):
        print(f"[pipeline] preset changed {state['preset']} → {cfg.preset}: stages rerun where their commands differ")
    state["preset"] = cfg.preset
    skipped = {}
    sources = dataset_sources(cfg, skipped) if lo <= STAGES.index("data_bin") else {}
    if lo <= STAGES.index("data_bin"):
        state["datasets"] = {k: v or "hub" for k, v in sources.items()}
        state["skipped"] = skipped
    t0 = time.time()
    for stage in STAGES[lo:hi + 1]:
        cmds = stage_commands(stage, cfg, sources)
        for i, (cmd, ins, outs) in enumerate(cmds):
            key = stage if len(cmds) == 1 else f"{stage}/{outs[0].split('.')[0]}"
            run_step(key, cmd, ins, outs, state, cfg)
    print(f"[pipeline] finished {cfg.from_stage} → {cfg.until} in {time.time() - t0:.1f}s"
          + (" | see report.md" if hi == len(STAGES) - 1 else ""))


if __name__ == "__main__":
    main()
