"""Best-of-N on GSM8K with SmolLM2-135M-Instruct as the policy and the SmolLM2 real-data PRM as the verifier
(issue 19, item 5), and the choice of that PRM among the three recorded runs without ProcessBench's test half.

``select-prm``: the three PRM runs of ``benchmarks/real_model_prm.py`` were all judged on the same test half of
ProcessBench gsm8k. Here each is judged on the *calibration* half alone (its F1 at the threshold tuned on that
half; the seeded split of ``procsup evaluate-prm``, recomputed from the scored files the runs kept), the best
one is chosen, and its test-half F1 is THE number; the others are kept as "not selected".

``generate``: the policy is the untrained Instruct model prompted with two GSM8K training solutions (plain text,
not its chat template: procsup's step format has no chat template, see docs/real_model.md), one step per line,
answer after ``The answer is``. Problems: GSM8K problems whose reference solution has two calculation lines and
whose question has at most 300 characters (``--val`` from train.jsonl, ``--test`` from test.jsonl, drawn with a
fixed seed; the easy end of GSM8K, because a 135M model solves almost nothing else). ``procsup.rollout.complete``
samples ``--n`` solutions per problem (temperature ``--temperature``, at most ``--max-new-tokens`` tokens), in
units of ``--chunk`` problems, each unit seeded from (sampling seed, unit) and cached on disk
(``procsup.bench.cache``): a killed worker resumes at the next unfinished unit, and ``--worker k/K`` splits the
units between processes. Each unit is then scored by the PRM in one pass per candidate (its steps, then its
answer line as the last step; the PRM reads them with its own saved separators), cached separately, so the
scoring can be redone without regenerating.

``report``: the aggregation of the PRM's step scores (min, last, mean) is chosen by best-of-N (N = max) on the
validation problems, averaged over seeds; then on the test problems, for each N (the first N of each problem's
candidates, sampled independently): one sample, a random pick among N (its exact expectation), majority vote,
PRM best-of-N (among candidates with an answer, the ones the vote counts), PRM-weighted vote, pass@N; mean and
sample std over the sampling seeds.

    make real-model
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_model_bon.py select-prm --out <new json name>
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_model_bon.py generate --prm <dir> --worker 0/2   # and 1/2
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_model_bon.py report --prm <dir> --out <new json name>
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: OpenMP reads it once

import argparse
import datetime as dt
import json
import random
import re
import shlex
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch

from procsup.annotation.answer_task import AnswerTask
from procsup.bench.cache import cached_run
from procsup.bench.report import pct, quiet_transformers, render, stat
from procsup.data.converters import read_gsm8k
from procsup.data.io import read_jsonl
from procsup.data.tokenize import StepFormat
from procsup.data.trajectory import Step, Trajectory
from procsup.evaluation import prm_metrics as pm
from procsup.evaluation.prm_report import first_error_of, processbench_section
from procsup.rollout.complete import complete, start

DATA = Path("/work/shared/data")
OUT = Path(__file__).parent / "results" / "real"
PRM_RUNS = {  # the recorded runs of benchmarks/real_model_prm.py: result JSON -> the work folder it scored into
    "real_model_prm_prmbench_gsm8k.json": "runs/real-model-prm",
    "real_model_prm_processbench-math_gsm8k.json": "runs/real-model-prm-math",
    "real_model_prm_processbench-math-800_gsm8k.json": "runs/real-model-prm-math800",
}
POLICY_FMT = StepFormat(input_sep="\n", step_sep="\n", answer_prefix="The answer is ")
AGGREGATIONS = ("min", "last", "mean")  # the order breaks ties on validation
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["select-prm", "generate", "report"])
    p.add_argument("--model", default=".cache/smollm2", help="the policy")
    p.add_argument("--prm", default=None, help="generate/report: the PRM folder scoring the candidates")
    p.add_argument("--work", default="runs/real-model-bon", help="cached units (generations, scores)")
    p.add_argument("--val", type=int, default=20, help="validation problems (GSM8K train)")
    p.add_argument("--test", type=int, default=40, help="test problems (GSM8K test)")
    p.add_argument("--n", type=int, default=8, help="candidates per problem and seed (the largest N)")
    p.add_argument("--ns", default="1,4,8", help="report: the Ns of the table (first N candidates)")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--chunk", type=int, default=8, help="problems per unit (one generate call of chunk x n rows)")
    p.add_argument("--worker", default="0/1", help="generate: k/K, this process takes every K-th unit from k")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="select-prm/report: a new file name under " + str(OUT))
    return p.parse_args(argv)


# --- item 2: choosing the real-data PRM without the test half ---------------------------------------------------
def select_prm(args) -> dict:
    """Each recorded PRM run's calibration-half F1 (threshold tuned on that half), its test-half F1 recomputed from
    its scored file (must equal the recorded one), and the run with the best calibration F1."""
    runs = {}
    for name, work in PRM_RUNS.items():
        recorded = json.loads((OUT / name).read_text())
        section = recorded["processbench"]["processbench"]
        trajs = read_jsonl(Path(work) / "scored-gsm8k.jsonl")
        known = [(t.meta["step_scores"], first_error_of(t)) for t in trajs if first_error_of(t) is not None]
        scores, first_errors = [s for s, _ in known], [fe for _, fe in known]
        order = list(range(len(known)))
        random.Random(section["seed"]).shuffle(order)  # the seeded halves of prm_report.processbench_section
        calib, test = order[: len(order) // 2], order[len(order) // 2 :]
        on_calib = processbench_section(scores, first_errors, threshold=None, seed=section["seed"], draws=100,
                                        split=(calib, calib))
        on_test = processbench_section(scores, first_errors, threshold=None, seed=section["seed"], draws=100,
                                       split=(calib, test))
        if abs(on_test["prm"]["f1"] - section["prm"]["f1"]) > 1e-9:
            raise ValueError(f"{name}: recomputed test F1 {on_test['prm']['f1']} != recorded {section['prm']['f1']}")
        runs[name] = {"prm_dir": str(Path(work) / "prm"), "depth": recorded["depth"],
                      "train_source": recorded["settings"].get("source", "prmbench"),  # run 1 predates --source
                      "train_solutions": recorded["train_solutions"],
                      "calibration": {"n": len(calib), "threshold": on_calib["threshold"], "prm": on_calib["prm"],
                                      "random_scores_f1": on_calib["random_scores"]["f1"]},
                      "test": {"n": len(test), "threshold": on_test["threshold"], "prm": on_test["prm"],
                               "random_scores_f1": on_test["random_scores"]["f1"]}}
    chosen = max(runs, key=lambda k: runs[k]["calibration"]["prm"]["f1"])  # ties: the first run listed
    for k, r in runs.items():
        r["selected"] = k == chosen
        print(f"{k}: calibration F1 {r['calibration']['prm']['f1']:.3f}, test F1 {r['test']['prm']['f1']:.3f}"
              + ("  <- selected" if k == chosen else ""))
    return {"criterion": "ProcessBench gsm8k first-error F1 on the calibration half at the threshold tuned on that "
                         "half (the test half unused)", "selected": chosen, "runs": runs}


# --- item 5: best-of-N -------------------------------------------------------------------------------------
def number(text: str | None) -> str | None:
    """The last number in an answer line, canonical (commas dropped, 18.0 -> 18, 0.50 -> 1/2), or None."""
    found = _NUMBER.findall(text or "")
    if not found:
        return None
    value = Fraction(found[-1].replace(",", "").rstrip("."))
    return str(value.numerator) if value.denominator == 1 else str(value)


class GSM8KTask(AnswerTask):
    """:class:`AnswerTask` whose answers are compared as numbers (``The answer is $1,080.`` equals 1080)."""

    def check_answer(self, problem: str, answer: str | None) -> bool:
        return number(answer) is not None and number(answer) == number(self._by_input[problem].target)


def problems(args) -> tuple[str, dict[str, list[Trajectory]]]:
    """The few-shot block and the validation and test problems (two-step GSM8K problems, question <= 300 chars)."""
    train = read_gsm8k(DATA / "gsm8k" / "train.jsonl")
    test = read_gsm8k(DATA / "gsm8k" / "test.jsonl")

    def easy(ts):
        return [t for t in ts if len(t.steps) == 2 and len(t.input) <= 300]

    pool = easy(train)
    shots = pool[:2]
    prompt = "".join(f"Question: {t.input}\n" + "".join(s.action.strip() + "\n" for s in t.steps)
                     + f"{POLICY_FMT.answer_prefix}{t.target}.\n\n" for t in shots)
    val = random.Random(1).sample(pool[2:], args.val)
    tst = random.Random(2).sample(easy(test), args.test)
    return prompt, {"val": val, "test": tst}


def units(args) -> list[tuple[int, str, int]]:
    """(seed, split, chunk index) of every unit, seeds in order (a worker finishes seed 0 first)."""
    out = []
    for seed in range(args.seeds):
        for split, count in (("val", args.val), ("test", args.test)):
            out += [(seed, split, c) for c in range((count + args.chunk - 1) // args.chunk)]
    return out


def settings(args) -> dict:
    return {k: getattr(args, k) for k in ("model", "val", "test", "n", "temperature", "max_new_tokens", "chunk")}


def generate_unit(args, policy_parts, seed: int, split: str, chunk: int) -> dict:
    key = {"seed": seed, "split": split, "chunk": chunk, **settings(args)}

    def run(run_dir: Path) -> dict:
        prompt, sets = problems(args)
        probs = sets[split][chunk * args.chunk : (chunk + 1) * args.chunk]
        policy = policy_parts()
        prefixed = [Trajectory(prompt + "Question: " + t.input, t.target, t.steps, {}) for t in probs]
        policy.task = GSM8KTask(prefixed)
        t0 = time.perf_counter()
        rows = complete(policy, start(policy.task, [t.input for t in prefixed]), n=args.n, until="answer",
                        seed=1000 * seed + chunk + (0 if split == "val" else 500))
        seconds = time.perf_counter() - t0
        return {"seconds_generate": seconds, "problems": [
            {"question": p.input, "gold": p.target, "candidates": [
                {"steps": [s.action for s in c.steps], "answer": c.meta["answer"], "number": number(c.meta["answer"]),
                 "correct": c.meta["correct"], "tokens": c.meta["tokens"]} for c in row]}
            for p, row in zip(probs, rows)]}

    return cached_run(Path(args.work) / f"gen-{split}-seed{seed}-chunk{chunk}", key, run)


def scoring_steps(cand: dict) -> list[str]:
    """What the PRM reads of a candidate: its non-blank steps, then its answer line if it wrote one."""
    steps = [s for s in cand["steps"] if s.strip()]
    return steps + ([POLICY_FMT.answer_prefix + cand["answer"]] if cand["answer"] is not None else [])


def score_unit(args, scorer_parts, seed: int, split: str, chunk: int) -> dict:
    gen = generate_unit(args, None, seed, split, chunk)
    key = {"seed": seed, "split": split, "chunk": chunk, "prm": args.prm, **settings(args)}

    def run(run_dir: Path) -> dict:
        scorer = scorer_parts()
        cands = [(p, c) for p in gen["problems"] for c in p["candidates"]]
        trajs = [Trajectory(p["question"], c["answer"] or "", tuple(Step(s) for s in scoring_steps(c)))
                 for p, c in cands if scoring_steps(c)]
        t0 = time.perf_counter()
        scored = iter(scorer(trajs))
        # a candidate with nothing to read (blank output, no answer) gets the lowest score a probability can have
        flat = [next(scored) if scoring_steps(c) else [0.0] for _, c in cands]
        per = len(gen["problems"][0]["candidates"])
        return {"seconds_score": time.perf_counter() - t0,
                "step_scores": [flat[i : i + per] for i in range(0, len(flat), per)]}

    return cached_run(Path(args.work) / f"score-{split}-seed{seed}-chunk{chunk}", key, run)


def run_worker(args) -> None:
    if args.prm is None:
        raise SystemExit("generate needs --prm (the folder of the PRM chosen by select-prm)")
    k, _, total = args.worker.partition("/")
    k, total = int(k), int(total)
    cache: dict = {}

    def policy_parts():
        from procsup.models.factory import load_model
        from procsup.rollout.policy import LMPolicy

        if "policy" not in cache:
            model, tok, _ = load_model(args.model)
            cache["policy"] = LMPolicy(model, tok, None, POLICY_FMT, temperature=args.temperature,
                                       batch_size=args.chunk * args.n, max_new_tokens=args.max_new_tokens)
        return cache["policy"]

    def scorer_parts():
        from procsup.scorers import load_prm_scorer

        if "scorer" not in cache:
            cache["scorer"] = load_prm_scorer(args.prm, batch_size=16)
        return cache["scorer"]

    for i, (seed, split, chunk) in enumerate(units(args)):
        if i % total != k:
            continue
        t0 = time.perf_counter()
        gen = generate_unit(args, policy_parts, seed, split, chunk)
        sc = score_unit(args, scorer_parts, seed, split, chunk)
        right = sum(c["correct"] for p in gen["problems"] for c in p["candidates"])
        print(f"seed {seed} {split} chunk {chunk}: {right} right of {sum(len(p['candidates']) for p in gen['problems'])}"
              f" (generate {gen['seconds_generate']:.0f}s, score {sc['seconds_score']:.0f}s, "
              f"{'cached' if gen.get('cached') else 'new'}; {time.perf_counter() - t0:.0f}s)", flush=True)


def split_table(args, split: str, seed: int) -> tuple[list, list, list]:
    """Step scores, correctness and canonical answers of every candidate of a split, problem by problem."""
    scores, correct, answers = [], [], []
    for s, sp, chunk in units(args):
        if (s, sp) != (seed, split):
            continue
        gen = json.loads((Path(args.work) / f"gen-{split}-seed{seed}-chunk{chunk}" / "eval.json").read_text())
        sc = json.loads((Path(args.work) / f"score-{split}-seed{seed}-chunk{chunk}" / "eval.json").read_text())
        if sc["key"]["prm"] != args.prm:
            raise ValueError(f"score-{split}-seed{seed}-chunk{chunk} was scored by {sc['key']['prm']}, not {args.prm}")
        for p, ss in zip(gen["problems"], sc["step_scores"]):
            scores.append(ss)
            correct.append([c["correct"] for c in p["candidates"]])
            answers.append([c["number"] for c in p["candidates"]])
    return scores, correct, answers


def metrics(scores, correct, answers, n: int, how: str) -> dict:
    curve = pm.best_of_n_curve(scores, correct, how, candidates_answers=answers, ns=[n])[n]
    return {"one_sample": statistics.fmean(c[0] for c in correct),
            "random_pick": statistics.fmean(sum(c[:n]) / n for c in correct),
            "majority_vote": curve["majority_vote"], "prm_best_of_n": curve["best_of_n_finished"],
            "prm_weighted_vote": curve["weighted_majority_vote"], "pass_at_n": curve["oracle"],
            "prm_best_of_n_all_candidates": curve["best_of_n"]}


def ranking(scores, correct, how: str) -> dict:
    """How the PRM's solution scores (aggregated by ``how``) rank one problem's right candidates above its wrong
    ones: the within-problem AUROC over the problems with both, and the mean score of right and wrong ones."""
    solution = [[pm.aggregate(s, how) for s in cands] for cands in scores]
    auroc, problems = pm.within_problem_auroc(solution, correct)
    flat = [(v, c) for vs, cs in zip(solution, correct) for v, c in zip(vs, cs)]
    right = [v for v, c in flat if c]
    return {"within_problem_auroc": auroc, "problems_with_both": problems, "right_candidates": len(right),
            "mean_score_right": statistics.fmean(right) if right else None,
            "mean_score_wrong": statistics.fmean(v for v, c in flat if not c)}


def report(args) -> None:
    if args.prm is None:
        raise SystemExit("report needs --prm")
    path = result_path(args.out)
    ns = [int(x) for x in args.ns.split(",")]
    val = {how: [metrics(*split_table(args, "val", s), args.n, how)["prm_best_of_n"] for s in range(args.seeds)]
           for how in AGGREGATIONS}
    how = max(AGGREGATIONS, key=lambda h: statistics.fmean(val[h]))  # max keeps the first of ties
    per_seed = {n: [metrics(*split_table(args, "test", s), n, how) for s in range(args.seeds)] for n in ns}
    table = {n: {k: stat([m[k] for m in per_seed[n]]) for k in per_seed[n][0]} for n in ns}
    ranks = [ranking(*split_table(args, "test", s)[:2], how) for s in range(args.seeds)]
    gens = [json.loads(p.read_text()) for p in sorted(Path(args.work).glob("gen-*/eval.json"))]
    scs = [json.loads(p.read_text()) for p in sorted(Path(args.work).glob("score-*/eval.json"))]
    tokens = [c["tokens"] for g in gens for p in g["problems"] for c in p["candidates"]]
    answered = [c["answer"] is not None for g in gens for p in g["problems"] for c in p["candidates"]]
    rows = [["row"] + [f"N={n}" for n in ns]]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    reference = [len(tok("".join(s.action.strip() + "\n" for s in t.steps) + f"{POLICY_FMT.answer_prefix}{t.target}.",
                         add_special_tokens=False)["input_ids"]) for t in problems(args)[1]["test"]]

    names = {"one_sample": "one sample", "random_pick": "random pick among N", "majority_vote": "majority vote",
             "prm_best_of_n": f"PRM best-of-N ({how})", "prm_weighted_vote": f"PRM-weighted vote ({how})",
             "pass_at_n": "pass@N (oracle)"}
    for k, label in names.items():
        rows.append([label] + [pct(table[n][k]) for n in ns])
    md = render(rows, markdown=True)
    out = {"settings": settings(args), "prm": args.prm, "seeds": args.seeds, "ns": ns,
           "validation_best_of_n_by_aggregation": {h: stat(v) for h, v in val.items()}, "aggregation": how,
           "test": {str(n): table[n] for n in ns}, "test_per_seed": {str(n): per_seed[n] for n in ns},
           "test_ranking_per_seed": ranks,
           "candidates": len(tokens), "answered_share": statistics.fmean(answered),
           "mean_generated_tokens": statistics.fmean(tokens),
           "test_reference_solution_tokens": {"mean": statistics.fmean(reference), "max": max(reference)},
           "candidates_at_token_limit": statistics.fmean(t >= args.max_new_tokens for t in tokens),
           "seconds": {"generate": sum(g["seconds_generate"] for g in gens), "score": sum(s["seconds_score"] for s in scs),
                       "units_total": sum(g["seconds"] for g in gens) + sum(s["seconds"] for s in scs)},
           "table_md": md,
           "record": {"command": " ".join(shlex.quote(a) for a in sys.argv), "date": dt.datetime.now(dt.timezone.utc).isoformat(),
                      "threads": args.threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "note": "percent in table_md; fractions elsewhere; mean ± sample std over sampling seeds (n - 1)"}}
    path.write_text(json.dumps(out, indent=1))
    print(f"aggregation chosen on validation: {how} ({ {h: round(statistics.fmean(v), 3) for h, v in val.items()} })")
    print(md)
    print(f"wrote {path}")


def result_path(name: str | None) -> Path:
    """``OUT/name``, refused when it exists: results are never overwritten."""
    if name is None:
        raise SystemExit("give --out: a new file name under " + str(OUT))
    path = OUT / name
    if path.exists():
        raise FileExistsError(f"{path} exists; results are never overwritten: give --out a new name")
    return path


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_transformers(False)
    if args.command == "select-prm":
        path = result_path(args.out)
        t0 = time.perf_counter()
        result = select_prm(args)
        result["record"] = {"command": " ".join(shlex.quote(a) for a in sys.argv),
                            "date": dt.datetime.now(dt.timezone.utc).isoformat(), "seconds": time.perf_counter() - t0}
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}")
    elif args.command == "generate":
        t0 = time.perf_counter()
        run_worker(args)
        print(f"worker {args.worker}: wall {time.perf_counter() - t0:.0f}s", flush=True)
    else:
        report(args)


if __name__ == "__main__":
    main()
