"""Best-of-N and step-level beam search with a PRM, through the Python API.

A policy and a PRM saved by procsup (each carries its step format in procsup.json, so nothing here names a
separator), e.g. from:

    procsup init-model tiny && procsup make-data addition --size 1-3 --count 2000 -o data.jsonl
    procsup train --model tiny --train_file data.jsonl --output_dir runs/policy --max_steps 300
    procsup make-data addition --labels corrupt --size 1-3 --count 2000 -o labelled.jsonl
    procsup train-prm --model tiny --train_file labelled.jsonl --output_dir runs/prm --max_steps 300
    python examples/search.py runs/policy/checkpoint-300 runs/prm/checkpoint-300 --size 3 --count 50

Both searches count policy samples (generated steps), so the table compares them at their real cost.
"""

from __future__ import annotations

import argparse
import json

from procsup.rollout import load_policy
from procsup.scorers import load_prm_scorer
from procsup.search import beam_search, best_of_n
from procsup.tasks.addition import AdditionTask
from procsup.tasks.grid import GridTask
from procsup.tasks.logic import LogicTask
from procsup.tasks.word_problems import WordProblemTask

TASKS = {"addition": AdditionTask, "grid": GridTask, "logic": LogicTask, "word_problems": WordProblemTask}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("policy", help="a policy checkpoint (procsup train)")
    p.add_argument("prm", help="a PRM checkpoint (procsup train-prm) trained on the policy's kind of steps")
    p.add_argument("--task", default="addition", choices=sorted(TASKS))
    p.add_argument("--size", type=int, default=3)
    p.add_argument("--count", type=int, default=50, help="test problems")
    p.add_argument("--n", type=int, default=8, help="best-of-N samples per problem")
    p.add_argument("--beam-width", type=int, default=2)
    p.add_argument("--expand", type=int, default=4, help="samples per beam and round")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--how", default="min", choices=["min", "last", "product", "mean"], help="step-score aggregation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", default=None, help="state-mode policies: the PRM's view, trace or step")
    args = p.parse_args(argv)

    task = TASKS[args.task]()
    problems = task.sample(10_000 + args.seed, args.size, args.count)
    policy = load_policy(args.policy, task, temperature=args.temperature)
    greedy = load_policy(args.policy, task)
    scorer = load_prm_scorer(args.prm, args.layout)

    bon = best_of_n(policy, scorer, problems, args.n, how=args.how, seed=args.seed)
    beams = beam_search(policy, scorer, problems, beam_width=args.beam_width, expand=args.expand, how=args.how,
                        seed=args.seed)
    first = best_of_n(greedy, scorer, problems, 1, how=args.how, seed=args.seed)

    def row(name: str, results) -> dict:
        return {"method": name, "accuracy": sum(bool(r.chosen.meta["correct"]) for r in results) / len(results),
                "samples_per_problem": sum(r.samples for r in results) / len(results)}

    rows = [row("greedy", first.results), row(f"best-of-{args.n} ({args.how})", bon.results),
            row(f"beam {args.beam_width}x{args.expand} ({args.how})", beams),
            {"method": "majority vote", "accuracy": bon.majority_vote(), "samples_per_problem": None}]
    print(f"{args.task}, size {args.size}, {args.count} problems")
    print(f"{'method':<28}{'accuracy':>10}{'samples/problem':>18}")
    for r in rows:
        samples = "" if r["samples_per_problem"] is None else f"{r['samples_per_problem']:.1f}"
        print(f"{r['method']:<28}{r['accuracy']:>10.3f}{samples:>18}")
    out = {"args": vars(args), "rows": rows}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
