"""Rerun the reliability probe's bad inputs and count how each one ends (issue 14).

    python scripts/reliability_probe.py                                  # every case
    python scripts/reliability_probe.py --only D5 --jobs 2               # the cases whose name matches D5
    python scripts/reliability_probe.py --run_dir /tmp/run               # reuse a finished smoke run
    python scripts/reliability_probe.py --list                           # the case names, nothing run

The cases are the reproducers of ../shared/notes/reliability-probe.md, sections D5-D14 (the note
counted 276 inputs, mostly summarised; here are the ones it names concretely, as commands). First
a smoke run is built once: `python -m mathlm.pipeline --preset smoke --data_source DIR --no-hub` in
<work>/run (DIR: ../shared/data/gsm8k when it exists, else the committed sample tests/data/gsm8k;
a rerun reuses it, the pipeline skips finished stages). Each case then gets a fresh copy of that
folder, runs its `setup` shell there, then its `command` under bash with a timeout, and is put in
one class:

    clean      as expected: a bad input ends with exit != 0, no Traceback, and a last line
               `error: ...` (argparse's usage block + `prog: error: ...` counts); a case that
               expects success (a skipped bad row, an orphan temp file removed) exits 0
    traceback  a Traceback anywhere in the output
    hang       still running at --timeout (then killed, with its children)
    silent     exit 0 where an error was expected, or a file named in `keep` changed, or the
               case's `check` shell failed: a bad value accepted or a wrong output
    other      any other end: killed by a signal, a non-zero exit whose last line is not `error:`,
               or a clean refusal where success was expected

It prints a table and the counts, and writes every case's result (class, exit code, seconds, the
last line, the files the run changed) to <work>/reliability_probe.json (--json). How long: the smoke
run takes ~3 minutes on 2 idle cores (16 on a loaded machine); a case takes 0.3-20 s, most of it the
torch import before a flag check refuses; all cases ~20 minutes with --jobs 1 on a loaded 2-core
machine (measured: 124 cases in 18.7 min). The read-only-folder cases need root (`unshare -m` and a
bind mount); without it their setup fails and they count as `other`.

Environment of a case: the working directory is the copy of the run, `python` is this interpreter,
PYTHONPATH is the repository, $REPO the repository and $GSM8K the dataset folder.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -----------------------------------------------------------------------------
# the stage commands the cases start from (run in a copy of the smoke run)

PRE = "python -m mathlm.train.pretrain --preset smoke --no-progress"
SFT = "python -m mathlm.train.sft --preset smoke --no-progress"
GRPO = "python -m mathlm.train.grpo --preset smoke --no-progress"
EVM = "python -m mathlm.eval.math --preset smoke"
EVG = "python -m mathlm.eval.gsm8k --preset smoke"
INF = "python -m mathlm.infer.inference --checkpoint checkpoint_mathlm.pt --prompt hi --max_new_tokens 8"
BP = "python -m mathlm.data.build_pretrain --preset smoke"
DL = "python -m mathlm.data.download_gsm8k --source $GSM8K"
TT = "python $REPO/scripts/train_tokenizer.py --preset smoke"
UP = "python $REPO/scripts/upload_hf.py"
GEN = "python -m mathlm.data.generate_calculus --preset smoke --text_only"
PIPE = "python -m mathlm.pipeline --preset smoke --data_source $GSM8K --no-hub"

# setup snippets: edit a checkpoint / file in place with a python one-liner
def _edit_ckpt(src, dst, code):
    return (f"python -c \"import torch; c = torch.load('{src}', weights_only=True); {code}; "
            f"torch.save(c, '{dst}')\"")


NAN_WEIGHTS = ("c['model'] = {k: v.float().fill_(float('nan')) if v.is_floating_point() else v "
               "for k, v in c['model'].items()}")
PICKLE = ("python -c \"import os, torch\nclass P:\n    def __reduce__(self):\n"
          "        return (os.system, ('touch marker',))\ntorch.save({'model': P(), 'model_config': {}}, 'evil.pt')\"")
NESTED = "python -c \"print('{\\\"question\\\": \\\"q\\\", \\\"answer\\\": ' + '['*100000 + ']'*100000 + '}')\""
RANDOM_SAME_SIZE = "head -c $(stat -c%s {f}) /dev/urandom > {f}.new && mv {f}.new {f}"
NO_ORPHAN = "! ls {f}.tmp.* >/dev/null 2>&1"
FINITE = ("python -c \"import sys, torch; c = torch.load('{f}', weights_only=True); "
          "sys.exit(any(not torch.isfinite(v).all() for v in c['model'].values() if v.is_floating_point()))\"")
# two writers of one output: A starts, B starts once A has printed a line (so A holds its lock); the
# case's outcome is B's; A is stopped afterwards. check: B's message names A's pid
TWO = ("{a} > a.log 2>&1 & A=$!; echo $A > a.pid; "
       "for i in $(seq 1500); do [ -s a.log ] && break; kill -0 $A 2>/dev/null || break; sleep 0.1; done; "
       "{b}; rc=$?; kill $A 2>/dev/null; wait $A 2>/dev/null; exit $rc")
NAMES_A = "grep -q \"$(cat a.pid)\" .probe_err"
# the command in a private mount namespace where the run folder is a read-only bind mount (cd again:
# the old cwd is the writable folder underneath)
RO = "unshare -m sh -c 'mount --bind . . && mount -o remount,ro,bind . && cd \"$PWD\" && exec bash -c \"$0\"' '{cmd}'"

# -----------------------------------------------------------------------------
# the cases: name (D<n>/<stage>/<what>), setup (shell, may be ""), command (shell), expect
# ("error": must be refused with one line; "ok": must succeed; "any": either, but no traceback),
# optional keep (files that must be byte-identical afterwards) and check (shell; must exit 0)

CASES = [
    # --- D5: non-finite and out-of-range numbers; a NaN run never replaces a good checkpoint
    dict(name="D5/pretrain/lr-inf-resume", setup="", command=f"{PRE} --resume --max_steps 40 --lr inf",
         expect="error", keep=["checkpoint.pt"]),
    dict(name="D5/pretrain/min_lr-nan-resume", setup="", command=f"{PRE} --resume --max_steps 40 --min_lr nan",
         expect="error", keep=["checkpoint.pt"]),
    dict(name="D5/pretrain/weight_decay-nan-resume", setup="",
         command=f"{PRE} --resume --max_steps 40 --weight_decay nan", expect="error", keep=["checkpoint.pt"]),
    dict(name="D5/pretrain/rope_theta--1-resume", setup="", command=f"{PRE} --resume --max_steps 40 --rope_theta -1",
         expect="error", keep=["checkpoint.pt"]),
    dict(name="D5/pretrain/diverge-lr-1e12-resume", setup="", command=f"{PRE} --resume --max_steps 40 --lr 1e12",
         expect="error", keep=["checkpoint.pt"]),
    # a finite --lr that diverges: either the run stops at the first non-finite loss, or it stays finite;
    # never a non-finite checkpoint
    dict(name="D5/pretrain/diverge-lr-1-no-clip-resume", setup="",
         command=f"{PRE} --resume --max_steps 40 --lr 1 --min_lr 1 --grad_clip 0 --warmup_steps 0", expect="any",
         check=FINITE.format(f="checkpoint.pt")),
    dict(name="D5/sft/diverge-lr-1-no-clip-resume", setup="",
         command=f"{SFT} --resume --max_steps 38 --lr 1 --min_lr 1 --grad_clip 0 --warmup_steps 0", expect="any",
         check=FINITE.format(f="checkpoint_mathlm.pt")),
    dict(name="D5/sft/nan-init-checkpoint", setup=_edit_ckpt("checkpoint.pt", "checkpoint.pt", NAN_WEIGHTS),
         command=f"{SFT} --max_steps 3", expect="error", keep=["checkpoint_mathlm.pt"]),
    dict(name="D5/sft/diverge-lr-1e12-resume", setup="", command=f"{SFT} --resume --max_steps 34 --lr 1e12",
         expect="error", keep=["checkpoint_mathlm.pt"]),
    dict(name="D5/grpo/clip_eps-nan", setup="", command=f"{GRPO} --max_steps 1 --clip_eps nan", expect="error",
         keep=["checkpoint_mathlm_grpo.pt"]),
    dict(name="D5/grpo/beta-nan", setup="", command=f"{GRPO} --max_steps 1 --beta nan", expect="error",
         keep=["checkpoint_mathlm_grpo.pt"]),
    dict(name="D5/pretrain/lr-nan", setup="", command=f"{PRE} --max_steps 3 --out x.pt --lr nan", expect="error"),
    dict(name="D5/pretrain/beta1-2", setup="", command=f"{PRE} --max_steps 3 --out x.pt --beta1 2", expect="error"),
    dict(name="D5/pretrain/seed--1", setup="", command=f"{PRE} --max_steps 3 --out x.pt --seed -1", expect="error"),
    dict(name="D5/pretrain/n_embd--64", setup="", command=f"{PRE} --max_steps 3 --out x.pt --n_embd -64",
         expect="error"),
    dict(name="D5/pretrain/mixture-weight-nan", setup="", command=f"{PRE} --max_steps 3 --out x.pt --mixture train.bin:nan",
         expect="error"),
    dict(name="D5/pretrain/mixture-weight-inf", setup="", command=f"{PRE} --max_steps 3 --out x.pt --mixture train.bin:inf",
         expect="error"),
    dict(name="D5/pretrain/device-tpu", setup="", command=f"{PRE} --max_steps 3 --out x.pt --device tpu",
         expect="error"),
    dict(name="D5/sft/epochs-nan", setup="", command=f"{SFT} --epochs nan --max_steps 0 --out x.pt", expect="error"),
    dict(name="D5/grpo/temperature-nan", setup="", command=f"{GRPO} --max_steps 1 --out x.pt --temperature nan",
         expect="error"),
    dict(name="D5/eval.math/temperature-nan", setup="",
         command=f"{EVM} --checkpoint checkpoint_mathlm.pt --n 4 --out ev --temperature nan", expect="error"),
    dict(name="D5/eval.gsm8k/temperature-nan", setup="",
         command=f"{EVG} --checkpoint checkpoint_mathlm.pt --n 4 --out ev --temperature nan", expect="error"),
    dict(name="D5/inference/temperature-nan", setup="", command=f"{INF} --temperature nan", expect="error"),
    dict(name="D5/eval.math/samples--1", setup="",
         command=f"{EVM} --checkpoint checkpoint_mathlm.pt --n 4 --out ev --samples -1", expect="error"),
    dict(name="D5/eval.gsm8k/samples--1", setup="",
         command=f"{EVG} --checkpoint checkpoint_mathlm.pt --n 4 --out ev --samples -1", expect="error"),
    dict(name="D5/build_pretrain/chunk_mb-nan", setup="", command=f"{BP} --input gsm8k.jsonl --out_dir bp --chunk_mb nan",
         expect="error"),
    dict(name="D5/build_pretrain/max_doc_mb-inf", setup="",
         command=f"{BP} --input gsm8k.jsonl --out_dir bp --max_doc_mb inf", expect="error"),
    dict(name="D5/build_pretrain/num_workers--1", setup="",
         command=f"{BP} --input gsm8k.jsonl --out_dir bp --num_workers -1", expect="error"),
    dict(name="D5/train_tokenizer/vocab_size--5", setup="", command=f"{TT} --input gsm8k.jsonl --out_dir tok --vocab_size -5",
         expect="error"),
    dict(name="D5/train_tokenizer/min_frequency--1", setup="",
         command=f"{TT} --input gsm8k.jsonl --out_dir tok --min_frequency -1", expect="error"),

    # --- D6: unusual checkpoint contents, in every loader
    *[dict(name=f"D6/{stage}/zero-byte-checkpoint", setup=": > c.pt", command=cmd, expect="error")
      for stage, cmd in [("inference", "python -m mathlm.infer.inference --checkpoint c.pt --prompt hi"),
                         ("sft", f"{SFT} --init_from c.pt --max_steps 1 --out x.pt"),
                         ("grpo", f"{GRPO} --init_from c.pt --max_steps 1 --out x.pt"),
                         ("eval.math", f"{EVM} --checkpoint c.pt --n 4 --out ev"),
                         ("eval.gsm8k", f"{EVG} --checkpoint c.pt --n 4 --out ev"),
                         ("upload_hf", f"{UP} --checkpoint c.pt --out_dir hf")]],
    dict(name="D6/pretrain/zero-byte-checkpoint-resume", setup=": > checkpoint.pt",
         command=f"{PRE} --resume --max_steps 31", expect="error"),
    dict(name="D6/pretrain/no-optimizer-resume", setup=_edit_ckpt("checkpoint.pt", "checkpoint.pt", "del c['optimizer']"),
         command=f"{PRE} --resume --max_steps 31", expect="error"),
    dict(name="D6/pretrain/no-rng-resume", setup=_edit_ckpt("checkpoint.pt", "checkpoint.pt", "del c['rng']"),
         command=f"{PRE} --resume --max_steps 31", expect="error"),
    dict(name="D6/sft/no-optimizer-resume",
         setup=_edit_ckpt("checkpoint_mathlm.pt", "checkpoint_mathlm.pt", "del c['optimizer']"),
         command=f"{SFT} --resume --max_steps 31", expect="error"),
    dict(name="D6/sft/no-rng-resume", setup=_edit_ckpt("checkpoint_mathlm.pt", "checkpoint_mathlm.pt", "del c['rng']"),
         command=f"{SFT} --resume --max_steps 31", expect="error"),
    *[dict(name=f"D6/{stage}/model_config-{what}", setup=_edit_ckpt("checkpoint_mathlm.pt", "bad.pt", code),
           command=cmd, expect="error")
      for what, code in [("n_layer-3", "c['model_config']['n_layer'] = 3"),
                         ("unknown-key", "c['model_config']['foo'] = 1")]
      for stage, cmd in [("eval.math", f"{EVM} --checkpoint bad.pt --n 4 --out ev"),
                         ("eval.gsm8k", f"{EVG} --checkpoint bad.pt --n 4 --out ev"),
                         ("sft", f"{SFT} --init_from bad.pt --max_steps 1 --out x.pt"),
                         ("grpo", f"{GRPO} --init_from bad.pt --max_steps 1 --out x.pt"),
                         ("inference", "python -m mathlm.infer.inference --checkpoint bad.pt --prompt hi"),
                         ("upload_hf", f"{UP} --checkpoint bad.pt --out_dir hf")]],
    # a pickle payload is refused by weights_only, and the message says what was refused (D6e)
    *[dict(name=f"D6/{stage}/pickle-payload", setup=setup + PICKLE, command=cmd, expect="error",
           check="[ ! -e marker ] && grep -qi 'system' .probe_err")
      for stage, setup, cmd in [("inference", "", "python -m mathlm.infer.inference --checkpoint evil.pt --prompt hi"),
                                ("eval.math", "", f"{EVM} --checkpoint evil.pt --n 4 --out ev"),
                                ("sft", "", f"{SFT} --init_from evil.pt --max_steps 1 --out x.pt"),
                                ("upload_hf", "", f"{UP} --checkpoint evil.pt --out_dir hf"),
                                ("pretrain-resume", "rm checkpoint.pt && ", f"{PRE} --resume --out evil.pt --max_steps 31")]],

    # --- D7: corrupt data files
    dict(name="D7/pretrain/meta-missing-keys", setup="echo '{\"format\": \"mathlm-tokens-v1\"}' > train.meta.json",
         command=f"{PRE} --max_steps 3 --out x.pt", expect="error"),
    dict(name="D7/pretrain/meta-is-a-list", setup="echo '[]' > train.meta.json",
         command=f"{PRE} --max_steps 3 --out x.pt", expect="error"),
    dict(name="D7/pretrain/meta-bad-dtype",
         setup="python -c \"import json; m = json.load(open('train.meta.json')); m['dtype'] = 'float128x'; "
               "json.dump(m, open('train.meta.json', 'w'))\"",
         command=f"{PRE} --max_steps 3 --out x.pt", expect="error"),
    dict(name="D7/pretrain/bin-random-ids", setup=RANDOM_SAME_SIZE.format(f="train.bin"),
         command=f"{PRE} --max_steps 3 --out x.pt", expect="error", check="[ ! -e x.pt ]"),
    dict(name="D7/sft/meta-missing-keys", setup="echo '{\"format\": \"mathlm-tokens-v1\"}' > gsm8k.meta.json",
         command=f"{SFT} --max_steps 1 --out x.pt", expect="error"),
    dict(name="D7/sft/idx-truncated", setup="head -c 100 gsm8k.idx.npy > t && mv t gsm8k.idx.npy",
         command=f"{SFT} --max_steps 1 --out x.pt", expect="error"),
    dict(name="D7/sft/idx-empty", setup=": > gsm8k.idx.npy", command=f"{SFT} --max_steps 1 --out x.pt", expect="error"),
    dict(name="D7/sft/idx-random-bytes", setup=RANDOM_SAME_SIZE.format(f="gsm8k.idx.npy"),
         command=f"{SFT} --max_steps 1 --out x.pt", expect="error"),
    dict(name="D7/sft/idx-object-array",
         setup="python -c \"import numpy as np; np.save('gsm8k.idx.npy', np.array([{'a': 1}], dtype=object), "
               "allow_pickle=True)\" && mv gsm8k.idx.npy.npy gsm8k.idx.npy 2>/dev/null; true",
         command=f"{SFT} --max_steps 1 --out x.pt", expect="error"),
    dict(name="D7/sft/idx-negative-offset",
         setup="python -c \"import numpy as np; a = np.load('gsm8k.idx.npy'); a[1, 0] = -5; "
               "np.save('gsm8k.idx.npy', a)\"",
         command=f"{SFT} --max_steps 1 --out x.pt", expect="error"),

    # --- D8: jsonl holes; a bad training row is skipped with a warning, a bad test row likewise or refused
    dict(name="D8/grpo/nested-json-row", setup=f"{NESTED} >> gsm8k.jsonl",
         command=f"{GRPO} --max_steps 1 --out x.pt", expect="any"),
    dict(name="D8/download_gsm8k/nested-json-row",
         setup=f"mkdir -p src/gsm8k && cp $GSM8K/*.jsonl src/gsm8k/ && {NESTED} >> src/gsm8k/train.jsonl",
         command="python -m mathlm.data.download_gsm8k --source src/gsm8k --out_dir dl --text_only", expect="any"),
    dict(name="D8/build_pretrain/nested-json-row", setup=f"{NESTED} >> gsm8k.jsonl",
         command=f"{BP} --input gsm8k.jsonl --out_dir bp", expect="any"),
    dict(name="D8/eval.gsm8k/nested-json-row", setup=f"{NESTED} >> gsm8k_test.jsonl",
         command=f"{EVG} --checkpoint checkpoint_mathlm.pt --n 4 --out ev", expect="any"),
    dict(name="D8/eval.math/non-utf8-row", setup="printf '\\xff\\xfe x\\n' >> gsm8k_test.jsonl",
         command=f"{EVM} --checkpoint checkpoint_mathlm.pt --n 4 --out ev", expect="any"),
    dict(name="D8/eval.gsm8k/non-utf8-row", setup="printf '\\xff\\xfe x\\n' >> gsm8k_test.jsonl",
         command=f"{EVG} --checkpoint checkpoint_mathlm.pt --n 4 --out ev", expect="any"),
    dict(name="D8/train_tokenizer/non-utf8-row", setup="cp gsm8k.jsonl x.jsonl && printf '\\xff\\xfe x\\n' >> x.jsonl",
         command=f"{TT} --input x.jsonl --out_dir tok", expect="any"),
    dict(name="D8/eval.math/question-is-a-number", setup="echo '{\"question\": 5, \"answer\": \"#### 5\"}' >> gsm8k_test.jsonl",
         command=f"{EVM} --checkpoint checkpoint_mathlm.pt --n 4 --out ev", expect="any"),
    dict(name="D8/eval.gsm8k/question-is-a-number",
         setup="echo '{\"question\": 5, \"answer\": \"#### 5\"}' >> gsm8k_test.jsonl",
         command=f"{EVG} --checkpoint checkpoint_mathlm.pt --n 4 --out ev", expect="any"),

    # --- D9: outputs that cannot be written (/proc/x cannot be made, even by root); a full disk is
    # a file-size limit (ulimit -f, SIGXFSZ ignored: writes fail with EFBIG)
    dict(name="D9/pretrain/out-unwritable", setup="", command=f"{PRE} --max_steps 3 --out /proc/x/x.pt", expect="error"),
    dict(name="D9/sft/out-unwritable", setup="", command=f"{SFT} --max_steps 1 --out /proc/x/x.pt", expect="error"),
    dict(name="D9/grpo/out-unwritable", setup="", command=f"{GRPO} --max_steps 1 --out /proc/x/x.pt", expect="error"),
    dict(name="D9/eval.math/out-unwritable", setup="",
         command=f"{EVM} --checkpoint checkpoint_mathlm.pt --n 4 --out /proc/x/ev", expect="error"),
    dict(name="D9/eval.gsm8k/out-unwritable", setup="",
         command=f"{EVG} --checkpoint checkpoint_mathlm.pt --n 4 --out /proc/x/ev", expect="error"),
    dict(name="D9/build_pretrain/out_dir-unwritable", setup="", command=f"{BP} --input gsm8k.jsonl --out_dir /proc/x",
         expect="error"),
    dict(name="D9/download_gsm8k/out_dir-unwritable", setup="", command=f"{DL} --out_dir /proc/x --text_only",
         expect="error"),
    dict(name="D9/upload_hf/out_dir-unwritable", setup="",
         command=f"{UP} --checkpoint checkpoint_mathlm_grpo.pt --out_dir /proc/x", expect="error"),
    dict(name="D9/train_tokenizer/out_dir-unwritable", setup="", command=f"{TT} --input gsm8k.jsonl --out_dir /proc/x",
         expect="error"),
    dict(name="D9/generate_calculus/out_dir-unwritable", setup="", command=f"{GEN} --out_dir /proc/x", expect="error"),
    dict(name="D9/report/out-unwritable", setup="", command="python -m mathlm.report --preset smoke --out /proc/x/report",
         expect="error"),
    dict(name="D9/pretrain/disk-full-resume", setup="",
         command=f"trap '' XFSZ; ulimit -f 500; {PRE} --resume --max_steps 31", expect="error",
         keep=["checkpoint.pt"], check=NO_ORPHAN.format(f="checkpoint.pt")),
    dict(name="D9/sft/disk-full", setup="", command=f"trap '' XFSZ; ulimit -f 500; {SFT} --max_steps 1 --out x.pt",
         expect="error", check=NO_ORPHAN.format(f="x.pt")),
    dict(name="D9/build_pretrain/disk-full", setup="",
         command=f"trap '' XFSZ; ulimit -f 100; {BP} --input gsm8k.jsonl --out_dir bp", expect="error"),
    dict(name="D9/download_gsm8k/disk-full", setup="",
         command=f"trap '' XFSZ; ulimit -f 100; {DL} --out_dir dl --text_only", expect="error"),

    # a read-only run folder (a read-only bind mount in a private mount namespace: needs root; root
    # ignores permission bits, not a read-only mount): every writer refuses in one line, inference works
    *[dict(name=f"D9/{stage}/read-only-folder", setup="unshare -m true", command=RO.format(cmd=cmd),
           expect="ok" if stage == "inference" else "error")
      for stage, cmd in [("pretrain", f"{PRE} --resume --max_steps 31"),
                         ("sft", f"{SFT} --resume --max_steps 31"),
                         ("grpo", f"{GRPO} --resume --max_steps 5"),
                         ("eval.math", f"{EVM} --checkpoint checkpoint_mathlm.pt --n 4 --out ev"),
                         ("eval.gsm8k", f"{EVG} --checkpoint checkpoint_mathlm.pt --n 4 --out ev"),
                         ("build_pretrain", f"{BP} --input gsm8k.jsonl"),
                         ("download_gsm8k", f"{DL} --out_dir . --text_only"),
                         ("generate_calculus", f"{GEN} --out_dir ."),
                         ("train_tokenizer", f"{TT} --input gsm8k.jsonl --out_dir math_tokenizer"),
                         ("upload_hf", f"{UP} --checkpoint checkpoint_mathlm_grpo.pt --out_dir hf"),
                         ("pipeline", f"{PIPE} --force --from report --until report"),
                         ("report", "python -m mathlm.report --preset smoke"),
                         ("inference", INF)]],

    # --- D10: bad values once accepted in silence
    dict(name="D10/pretrain/n_layer-0", setup="", command=f"{PRE} --max_steps 3 --out x.pt --n_layer 0", expect="error"),
    dict(name="D10/pretrain/warmup_steps--10", setup="", command=f"{PRE} --max_steps 3 --out x.pt --warmup_steps -10",
         expect="error"),
    dict(name="D10/pretrain/grad_clip-nan", setup="", command=f"{PRE} --max_steps 3 --out x.pt --grad_clip nan",
         expect="error"),
    dict(name="D10/pretrain/block_size-100000", setup="", command=f"{PRE} --max_steps 3 --out x.pt --block_size 100000",
         expect="error"),
    dict(name="D10/download_gsm8k/max_examples--1", setup="", command=f"{DL} --out_dir dl --text_only --max_examples -1",
         expect="error"),
    dict(name="D10/eval.math/n--1", setup="", command=f"{EVM} --checkpoint checkpoint_mathlm.pt --out ev --n -1",
         expect="error"),
    dict(name="D10/eval.gsm8k/n--1", setup="", command=f"{EVG} --checkpoint checkpoint_mathlm.pt --out ev --n -1",
         expect="error"),
    dict(name="D10/eval.math/max_new_tokens--1", setup="",
         command=f"{EVM} --checkpoint checkpoint_mathlm.pt --n 4 --out ev --max_new_tokens -1", expect="error"),
    dict(name="D10/eval.gsm8k/max_new_tokens--1", setup="",
         command=f"{EVG} --checkpoint checkpoint_mathlm.pt --n 4 --out ev --max_new_tokens -1", expect="error"),
    dict(name="D10/train_tokenizer/empty-input", setup=": > empty.txt", command=f"{TT} --input empty.txt --out_dir tok",
         expect="error"),
    dict(name="D10/train_tokenizer/vocab_size-0", setup="", command=f"{TT} --input gsm8k.jsonl --out_dir tok --vocab_size 0",
         expect="error"),
    dict(name="D10/train_tokenizer/vocab_size-10", setup="",
         command=f"{TT} --input gsm8k.jsonl --out_dir tok --vocab_size 10", expect="error"),
    dict(name="D10/train_tokenizer/max_mb--1", setup="", command=f"{TT} --input gsm8k.jsonl --out_dir tok --max_mb -1",
         expect="error"),
    dict(name="D10/inference/temperature--1", setup="", command=f"{INF} --temperature -1", expect="error"),
    dict(name="D10/inference/top_k--5", setup="", command=f"{INF} --top_k -5", expect="error"),
    dict(name="D10/inference/top_p-nan", setup="", command=f"{INF} --top_p nan", expect="error"),
    dict(name="D10/inference/max_new_tokens--1", setup="",
         command="python -m mathlm.infer.inference --checkpoint checkpoint_mathlm.pt --prompt hi --max_new_tokens -1",
         expect="error"),
    dict(name="D10/grpo/top_p-0", setup="", command=f"{GRPO} --max_steps 1 --out x.pt --top_p 0", expect="error"),
    dict(name="D10/grpo/top_k--1", setup="", command=f"{GRPO} --max_steps 1 --out x.pt --top_k -1", expect="error"),
    dict(name="D10/grpo/temperature-inf", setup="", command=f"{GRPO} --max_steps 1 --out x.pt --temperature inf",
         expect="error"),

    # --- D11: --resume from another stage's checkpoint
    dict(name="D11/pretrain/resume-from-grpo", setup="cp checkpoint_mathlm_grpo.pt checkpoint.pt",
         command=f"{PRE} --resume --max_steps 40", expect="error", keep=["checkpoint.pt"]),
    dict(name="D11/sft/resume-from-grpo", setup="cp checkpoint_mathlm_grpo.pt checkpoint_mathlm.pt",
         command=f"{SFT} --resume --max_steps 34", expect="error", keep=["checkpoint_mathlm.pt"]),
    dict(name="D11/grpo/resume-from-pretrain", setup="cp checkpoint.pt checkpoint_mathlm_grpo.pt",
         command=f"{GRPO} --resume --max_steps 6", expect="error", keep=["checkpoint_mathlm_grpo.pt"]),

    # --- D12: a pipeline.json of the wrong shape (refused, or treated as no state: no traceback)
    dict(name="D12/pipeline/state-is-a-list", setup="echo '[1]' > pipeline.json",
         command=f"{PIPE} --from report --until report", expect="any"),
    dict(name="D12/pipeline/stages-is-a-number", setup="echo '{\"stages\": 5}' > pipeline.json",
         command=f"{PIPE} --from report --until report", expect="any"),
    dict(name="D12/pipeline/seconds-is-a-string",
         setup="python -c \"import json; s = json.load(open('pipeline.json')); "
               "[v.__setitem__('seconds', 'x') for v in s['stages'].values()]; json.dump(s, open('pipeline.json', 'w'))\"",
         command=f"{PIPE} --from report --until report", expect="any"),

    # --- D13: what a SIGKILL leaves: orphan temp files go, a lagging .json is rebuilt
    *[dict(name=f"D13/{stage}/orphan-temp-files",
           setup=f"head -c 1000 /dev/urandom > {out}.tmp.4000000 && echo '{{}}' > {json_}.tmp.4000001",
           command=cmd, expect="ok",
           check=NO_ORPHAN.format(f=out) + " && " + NO_ORPHAN.format(f=json_))
      for stage, out, json_, cmd in [
          ("pretrain", "checkpoint.pt", "checkpoint.json", f"{PRE} --resume --max_steps 30"),
          ("sft", "checkpoint_mathlm.pt", "checkpoint_mathlm.json", f"{SFT} --resume --max_steps 30"),
          ("grpo", "checkpoint_mathlm_grpo.pt", "checkpoint_mathlm_grpo.json", f"{GRPO} --resume --max_steps 4")]],
    dict(name="D13/build_pretrain/orphan-temp-files", setup="head -c 1000 /dev/urandom > train.bin.tmp.4000000",
         command=f"{BP} --input calculus.jsonl gsm8k.jsonl ml_math.jsonl", expect="ok",
         check=NO_ORPHAN.format(f="train.bin")),
    dict(name="D13/pretrain/summary-lags-checkpoint",
         setup="python -c \"import json; s = json.load(open('checkpoint.json')); s['step'] = 0; "
               "json.dump(s, open('checkpoint.json', 'w'))\"",
         command=f"{PRE} --resume --max_steps 30", expect="ok",
         check="python -c \"import json, sys, torch; sys.exit(json.load(open('checkpoint.json'))['step'] != "
               "torch.load('checkpoint.pt', weights_only=True)['step'])\""),

    # --- D14: two writers of one output: the second stops at once naming the first's pid
    dict(name="D14/pretrain/two-runs-one-out", setup="",
         command=TWO.format(a=f"{PRE} --out same.pt --max_steps 120", b=f"{PRE} --out same.pt --max_steps 60 --seed 2"),
         expect="error", check=NAMES_A),
    dict(name="D14/build_pretrain/two-runs-one-dir",
         setup="for i in 1 2 3; do cat gsm8k.jsonl calculus.jsonl; done > big.jsonl",
         command=TWO.format(a=f"{BP} --input big.jsonl --out_dir bp", b=f"{BP} --input gsm8k.jsonl --out_dir bp"),
         expect="error", check=NAMES_A),
    dict(name="D14/pipeline/two-pipelines-one-dir", setup="",
         command=TWO.format(a=f"{PIPE} --force --from eval --until eval", b=f"{PIPE} --force --from report --until report"),
         expect="error", check=NAMES_A),
]

CLASSES = ["clean", "traceback", "hang", "silent", "other"]


# -----------------------------------------------------------------------------
# running and classifying one command

def last_line(text):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def is_error_line(line):
    """`error: ...` (a stage's one line) or `prog: error: ...` (argparse, after its usage block)."""
    return line.startswith("error:") or re.match(r"^\S+( \S+)*: error: ", line) is not None


def classify(rc, out, err, timed_out, expect="error"):
    """One of CLASSES for a finished command (see the module docstring)."""
    if timed_out:
        return "hang"
    if "Traceback (most recent call last)" in out + err:
        return "traceback"
    one_line = rc is not None and rc > 0 and is_error_line(last_line(err) or last_line(out))
    if expect == "error":
        return "silent" if rc == 0 else ("clean" if one_line else "other")
    if expect == "ok":
        return "clean" if rc == 0 else "other"
    return "clean" if rc == 0 or one_line else "other"  # "any"


def run_command(command, cwd, timeout, env=None):
    """bash -c `command` in `cwd`; on timeout the whole process group is killed.
    Returns (rc, stdout, stderr, timed_out, seconds)."""
    t0 = time.time()
    p = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        timed_out = True
    return p.returncode, out, err, timed_out, time.time() - t0


def cause(result):
    """A one-line reason for a case that did not end clean."""
    c, err, out = result["class"], result["stderr"], result["stdout"]
    if c == "hang":
        return f"still running after {result['seconds']:.0f} s"
    if c == "traceback":
        tb = (err if "Traceback (most recent" in err else out).split("Traceback (most recent call last)")[-1]
        return last_line(tb)[:160]
    if c == "silent":
        if result["keep_changed"]:
            return f"changed {', '.join(result['keep_changed'])}"
        if result["check_failed"]:
            return "check failed: " + result["check"][:120]
        return "exit 0: accepted"
    if c == "other":
        rc = result["rc"]
        why = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit {rc}"
        return f"{why}: {(last_line(err) or last_line(out))[:140]}"
    return (last_line(err) or last_line(out))[:160]


def snapshot(folder):
    """{relative path: sha256} of every file under `folder` (the probe's own .probe_* and locks left out)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            if f.startswith(".probe_") or f.endswith(".lock"):
                continue
            p = os.path.join(root, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[os.path.relpath(p, folder)] = h.hexdigest()
    return out


def run_case(case, run_dir, work, timeout, env=None, keep_dir=False):
    """Copy `run_dir`, run the case's setup and command there, classify. Returns a result dict."""
    base = tempfile.mkdtemp(prefix=re.sub(r"\W+", "_", case["name"]) + "_", dir=work)
    d = os.path.join(base, "run")
    shutil.copytree(run_dir, d, symlinks=True, ignore=shutil.ignore_patterns("*.lock"))
    result = {"name": case["name"], "expect": case.get("expect", "error"), "command": case["command"],
              "setup": case.get("setup", ""), "check": case.get("check", ""), "dir": d if keep_dir else None}
    try:
        if case.get("setup"):
            rc, out, err, timed_out, _ = run_command(case["setup"], d, timeout, env)
            if rc != 0 or timed_out:
                result.update({"class": "other", "rc": rc, "stdout": out, "stderr": err, "seconds": 0.0,
                               "timed_out": timed_out, "keep_changed": [], "check_failed": False, "changed": []})
                result["cause"] = f"setup failed (exit {rc}): {last_line(err)[:120]}"
                return result
        before = snapshot(d)
        rc, out, err, timed_out, seconds = run_command(case["command"], d, timeout, env)
        after = snapshot(d)
        with open(os.path.join(d, ".probe_out"), "w") as f:
            f.write(out)
        with open(os.path.join(d, ".probe_err"), "w") as f:
            f.write(err)
        keep_changed = [k for k in case.get("keep", []) if before.get(k) != after.get(k)]
        check_failed = False
        if case.get("check") and not timed_out:
            check_failed = run_command(case["check"], d, timeout, env)[0] != 0
        cls = classify(rc, out, err, timed_out, result["expect"])
        if cls == "clean" and (keep_changed or check_failed):
            cls = "silent"
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        result.update({"class": cls, "rc": rc, "stdout": out, "stderr": err, "seconds": round(seconds, 1),
                       "timed_out": timed_out, "keep_changed": keep_changed, "check_failed": check_failed,
                       "changed": changed})
        result["cause"] = cause(result)
        return result
    finally:
        if not keep_dir:
            shutil.rmtree(base, ignore_errors=True)


# -----------------------------------------------------------------------------
# the smoke run every case copies

def default_data_source():
    shared = os.path.join(os.path.dirname(REPO), "shared", "data", "gsm8k")
    return shared if os.path.isdir(shared) else os.path.join(REPO, "tests", "data", "gsm8k")


def build_run(run_dir, data_source, env):
    """The finished smoke run the cases copy (the pipeline skips what is already done)."""
    os.makedirs(run_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "mathlm.pipeline", "--preset", "smoke", "--data_source", data_source, "--no-hub"]
    print(f"building the smoke run in {run_dir}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, cwd=run_dir, env=env, capture_output=True, text=True)
    if p.returncode != 0 or not os.path.exists(os.path.join(run_dir, "checkpoint_mathlm_grpo.pt")):
        raise SystemExit(f"error: the smoke run failed (exit {p.returncode}): {last_line(p.stderr or p.stdout)}")
    print(f"smoke run ready ({time.time() - t0:.0f} s)", flush=True)


def case_env(data_source):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", REPO=REPO, GSM8K=os.path.abspath(data_source),
               PYTHONDONTWRITEBYTECODE="1", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env.pop("RANK", None)  # never a torchrun rank by accident
    return env


# -----------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--only", default="", help="a regex: run the cases whose name matches it")
    ap.add_argument("--jobs", type=int, default=1, help="cases run at once")
    ap.add_argument("--timeout", type=float, default=150, help="seconds before a case counts as a hang")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "mathlm_reliability_probe"),
                    help="where the smoke run and the case copies go")
    ap.add_argument("--run_dir", default="", help="a finished smoke run to copy (default: build one in --work/run)")
    ap.add_argument("--data_source", default=default_data_source(), help="the gsm8k folder for the smoke run")
    ap.add_argument("--json", default="", help="results file (default: --work/reliability_probe.json)")
    ap.add_argument("--keep_dirs", action="store_true", help="keep each case's folder (for debugging)")
    ap.add_argument("--list", action="store_true", help="print the case names and stop")
    args = ap.parse_args(argv)
    if args.jobs < 1 or not args.timeout > 0:
        ap.error("--jobs must be >= 1 and --timeout > 0")
    try:
        pattern = re.compile(args.only)
    except re.error as e:
        ap.error(f"--only {args.only!r} is not a regex: {e}")
    cases = [c for c in CASES if pattern.search(c["name"])]
    if args.list:
        print("\n".join(c["name"] for c in cases))
        return None
    if not cases:
        raise SystemExit(f"error: no case matches --only {args.only!r} (see --list)")

    os.makedirs(args.work, exist_ok=True)
    env = case_env(args.data_source)
    run_dir = args.run_dir or os.path.join(args.work, "run")
    if not args.run_dir:
        build_run(run_dir, args.data_source, env)
    elif not os.path.exists(os.path.join(run_dir, "checkpoint_mathlm_grpo.pt")):
        raise SystemExit(f"error: {run_dir} is not a finished smoke run (no checkpoint_mathlm_grpo.pt)")

    print(f"{len(cases)} cases, {args.jobs} at a time, timeout {args.timeout:.0f} s", flush=True)
    t0 = time.time()
    results = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_case, c, run_dir, args.work, args.timeout, env, args.keep_dirs): c for c in cases}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            results.append(r)
            print(f"[{len(results):3d}/{len(cases)}] {r['class']:9s} {r['seconds']:6.1f}s  {r['name']}", flush=True)
    order = {c["name"]: i for i, c in enumerate(CASES)}
    results.sort(key=lambda r: order[r["name"]])

    width = max(len(r["name"]) for r in results)
    print(f"\n{'case':{width}s}  {'class':9s}  {'exit':>4s}  {'s':>6s}  cause / last line")
    for r in results:
        rc = "-" if r["rc"] is None else str(r["rc"])
        print(f"{r['name']:{width}s}  {r['class']:9s}  {rc:>4s}  {r['seconds']:6.1f}  {r['cause']}")
    counts = {c: sum(r["class"] == c for r in results) for c in CLASSES}
    print(f"\n{len(results)} cases in {(time.time() - t0) / 60:.1f} min: "
          + " · ".join(f"{n} {c}" for c, n in counts.items()))
    path = args.json or os.path.join(args.work, "reliability_probe.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"counts": counts, "cases": [{k: v for k, v in r.items() if k not in ("stdout", "stderr")}
                                              | {"stderr_tail": r["stderr"][-2000:]} for r in results]}, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
