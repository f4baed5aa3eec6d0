"""Re-run the bad-input corpus cases of tests/test_bad_inputs.py (plus inputs that must be accepted) against
one source tree and count the verdicts, as issue 15's corpus table does. Run by hand (not collected by pytest):

    OMP_NUM_THREADS=1 .venv/bin/python tests/bad_input_corpus_run.py --src src --json after.json
    OMP_NUM_THREADS=1 .venv/bin/python tests/bad_input_corpus_run.py --src /tmp/before/src --json before.json

Each case runs in this process through ``shiftvdm.cli.main`` with a 60 s alarm (a hang is reported as such);
an exception escaping ``main`` is what a user sees as a traceback. The cases of issue 26 (ids I-, R-, P-, E-:
damaged weights, meaningless settings, paths, eval edges) run with the rest; an accepted case that must print a
warning or note is "accepted without its warning" when it does not.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import io
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

GOOD_CASES = ["G-check-good", "G-eval-good", "G-sft-good", "G-generate-good", "G-generate-rerun-keeps",
              "G-sample-good"]  # (M-check-csv-bom, also to be accepted, is in CASES)


class Hang(Exception):
    pass


def good_case(cid: str, w: dict, tmp: Path, Case):
    ds, toy = str(w["ds"]), str(w["toy"])
    gen = ["generate", "--model", toy, "--data", ds, "--per-clip", "1", "--no-progress", "--format", "npy",
           "--out", str(tmp / "gen")]
    if cid == "G-check-good":
        return Case(cid, ["data", "check", ds], 0, [])
    if cid == "G-eval-good":
        return Case(cid, ["eval", ds, "--metrics", "flicker", "--json", str(tmp / "m.json")], 0, [])
    if cid == "G-sft-good":
        return Case(cid, SFT(w["ds"], tmp / "run"), 0, [])
    if cid == "G-generate-good":
        return Case(cid, gen, 0, [])
    if cid == "G-generate-rerun-keeps":
        return Case(cid, gen, 0, [], keep=[str(tmp / "gen" / "clips")])
    if cid == "G-sample-good":
        return Case(cid, ["sample", "--model", str(w["svd"]), "--image", str(w["img"]), "--steps", "1", "--out",
                          str(tmp / "o.npy")], 0, [])
    return None


def verdict(case, rc, text, exc, hung, left, damaged) -> str:
    if hung:
        return "hang"
    if exc is not None:
        return "traceback"
    if case.rc == 0:
        if rc != 0 or damaged:
            return "wrong refusal"
        # an accepted input that must still say something (issue 26: a warning, a note naming the clips)
        return "correct accept" if all(n in text for n in case.names) else "accepted without its warning"
    if damaged:
        return "damaged earlier output"
    if rc == 0:
        return "silent acceptance"
    if left:
        return "clear error + partial output"
    if case.names and case.names[0] not in text:
        return "unclear message"
    return "clear error"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", required=True, help="the source tree to test (its src/ folder)")
    parser.add_argument("--json", required=True, help="write per-case results here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.src).resolve()))
    import torch

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("corpus_cases", Path(__file__).with_name("test_bad_inputs.py"))
    cases_mod = importlib.util.module_from_spec(spec)
    sys.modules["corpus_cases"] = cases_mod  # dataclasses look their module up
    spec.loader.exec_module(cases_mod)
    global SFT
    SFT = cases_mod.sft_args
    import shiftvdm
    from shiftvdm.cli import main as cli

    print(f"testing {shiftvdm.__file__}", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        world = cases_mod.make_world(Path(tmpdir) / "world")
        try:
            for i, cid in enumerate(cases_mod.CASES + GOOD_CASES):
                tmp = Path(tmpdir) / f"case{i}"
                tmp.mkdir()
                if "readonly" in cid and world["ro"] is None:
                    continue
                case = good_case(cid, world, tmp, cases_mod.Case) or cases_mod.build_case(cid, world, tmp)
                if cid == "G-generate-rerun-keeps":  # a first run, then the rerun must keep its clips
                    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                        cli(case.argv)
                before = {p: cases_mod.tree_digest(Path(p)) for p in case.keep}
                out, err = io.StringIO(), io.StringIO()
                exc, hung, rc = None, False, None
                signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(Hang()))
                signal.alarm(60)
                t0 = time.perf_counter()
                try:
                    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                        rc = cli(case.argv)
                except SystemExit as e:
                    rc = int(e.code or 0)
                except Hang:
                    hung = True
                except Exception as e:  # what the user would see as a traceback
                    exc = "".join(traceback.format_exception_only(type(e), e)).strip()
                finally:
                    signal.alarm(0)
                text = err.getvalue() + out.getvalue()
                left = [p for p in case.absent if os.path.lexists(p)]
                damaged = [p for p in case.keep if cases_mod.tree_digest(Path(p)) != before[p]]
                v = verdict(case, rc, text, exc, hung, left, damaged)
                first = (exc or text.strip().splitlines()[0] if (exc or text.strip()) else "")[:160]
                results.append({"id": cid, "rc": rc, "verdict": v, "first_line": first, "left_behind": left,
                                "damaged": damaged, "seconds": round(time.perf_counter() - t0, 2)})
                print(f"{cid:40s} {str(rc):5s} {v:30s} {first[:90]}", file=sys.stderr)
        finally:
            cases_mod.release_world(world)
    counts = collections.Counter(r["verdict"] for r in results)
    Path(args.json).write_text(json.dumps({"counts": counts, "cases": results}, indent=2))
    print(json.dumps(dict(sorted(counts.items())), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
