"""PRM training throughput: procsup's ``train_prm`` against TRL 1.13's ``PRMTrainer``, side by side in one run.

Same tiny model (llama token classifier, character tokenizer, one seeded initialisation deep-copied for
every run, classifier dropout off for both: TRL turns dropout off by default), same training
rows, same held-out rows, same separators, learning rate and schedule, batch size, steps and maximum
length. Both trainers see the very same token rows (checked: TRL's prompt is given procsup's prompt
separator and the tokenizer no BOS token, so ``PRMTrainer.tokenize_row`` and ``tokenize_many`` agree
token for token and label for label). TRL runs in its fastest configuration on a CPU: float32, no
gradient checkpointing (its PRMConfig defaults are bf16 and gradient checkpointing), no evaluation,
logging or checkpoints during training, no dataloader workers.

Arms: ``procsup`` (the default trainer: length-grouped batches, and the last block computed only at the
labelled boundaries, :mod:`procsup.models.positions`), ``procsup-dense`` (the same with
``sparse_last_block=False``: what length grouping alone gives) and ``trl``, in rotating order per repeat.

Timed: procsup's whole ``train_prm`` call (its tokenization and final checkpoint included) and TRL's
``trainer.train()``; TRL's tokenization (``datasets.map`` inside the ``PRMTrainer`` constructor) is
reported apart as its set-up time. Both trained models are then scored on the held-out rows by
``procsup.models.prm.score``, so step accuracy and AUROC are computed identically.

Data: addition traces (column by column, ``k:3+6+0=9,0>d``, one step per digit) with operands of 1 to
``--max-digits`` digits, each step's result corrupted with probability ``--corrupt`` and every step
labelled by the task's checker (``procsup.annotation.oracle.inject_corruptions``): a Math-Shepherd-like
stepwise set whose lengths vary, so that a random batch of it is 27% padding (real PRM sets pad more:
42-58% for ProcessBench and PRMBench rows under the same tokenizer and batch size).

Needs the optional extra: ``pip install -e '.[trl-bench]'``.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/prm_train_vs_trl.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see the Makefile
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import argparse
import copy
import datetime as dt
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, PrinterCallback

from procsup.annotation.oracle import inject_corruptions
from procsup.data.convert import to_stepwise
from procsup.data.io import write_json
from procsup.data.tokenize import StepFormat, tokenize_many
from procsup.data.trajectory import Trajectory
from procsup.evaluation.prm_metrics import step_accuracy, step_auroc
from procsup.models.factory import TinyModelConfig, char_tokenizer, tiny_hf_config
from procsup.models.prm import score
from procsup.objectives.prm import place_step_labels
from procsup.tasks.addition import AdditionTask
from procsup.trainers.prm import PRMConfig, train_prm

FMT = StepFormat(input_sep="\n", step_sep="\n")  # the one step format of both trainers (TRL: step_separator)


def make_data(n_train: int, n_eval: int, max_digits: int, rate: float,
              seed: int) -> tuple[list[Trajectory], list[Trajectory]]:
    """Disjoint train and held-out sets of oracle-labelled addition traces with corrupted steps."""
    task = AdditionTask()
    rng = random.Random(seed)
    problems = task.sample_range(seed, max_digits, n_train + n_eval)
    trajs = [inject_corruptions(task, p, task.expert(p), rng, rate) for p in problems]
    return trajs[:n_train], trajs[n_train:]


def stepwise_dataset(trajs: list[Trajectory]) -> Dataset:
    """TRL's stepwise format (prompt, completions, labels) of the same trajectories. TRL puts no separator
    between the prompt and the first step, so the prompt carries procsup's ``input_sep``."""
    records = [to_stepwise(t) for t in trajs]
    return Dataset.from_dict({
        "prompt": [r["prompt"] + FMT.input_sep for r in records],
        "completions": [r["completions"] for r in records],
        "labels": [r["labels"] for r in records],
    })


def initial_model(args, tok):
    config = tiny_hf_config(TinyModelConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads), tok)
    config.num_labels = 2
    config.classifier_dropout = 0.0  # the token-classification head's dropout defaults to 0.1; TRL turns it off
    torch.manual_seed(args.seed)
    return AutoModelForTokenClassification.from_config(config)  # float32


class CountingCollator(DataCollatorForTokenClassification):
    """TRL's default collator, counting the real and padding tokens of the batches it builds."""

    tokens = 0
    total = 0

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        self.tokens += int(batch["attention_mask"].sum())
        self.total += batch["attention_mask"].numel()
        return batch


def run_procsup(init, tok, train: list[Trajectory], args, out_dir: str, sparse: bool = True) -> dict:
    cfg = PRMConfig(
        output_dir=out_dir, learning_rate=args.lr, batch_size=args.batch, max_steps=args.steps,
        warmup_steps=args.warmup, seed=args.seed, group_by_length=True, log_steps=args.steps,  # one window: the whole run
        input_sep=FMT.input_sep, step_sep=FMT.step_sep, progress=False, sparse_last_block=sparse,
    )
    model = copy.deepcopy(init)
    t0 = time.perf_counter()
    result = train_prm(cfg, model=model, tokenizer=tok, trajectories=train)
    seconds = time.perf_counter() - t0
    # seconds: the whole call (tokenization, set-up, loop, final checkpoint); result.seconds: the loop alone
    return {"seconds": seconds, "loop_s": result.seconds, "setup_s": seconds - result.seconds,
            "end_to_end_s": seconds, "padding": result.final_metrics["padding"], "model": result.model}


def trl_trainer(init, tok, ds: Dataset, args, out_dir: str):
    """TRL's PRMTrainer in its fastest CPU configuration; the constructor tokenizes ``ds`` (datasets.map)."""
    from trl.experimental.prm import PRMConfig as TRLPRMConfig
    from trl.experimental.prm import PRMTrainer

    cfg = TRLPRMConfig(
        output_dir=out_dir, learning_rate=args.lr, per_device_train_batch_size=args.batch, max_steps=args.steps,
        warmup_steps=args.warmup, lr_scheduler_type="cosine", seed=args.seed, max_length=args.max_length,
        step_separator=FMT.step_sep, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
        eval_strategy="no", logging_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=False,
        train_sampling_strategy="group_by_length" if args.trl_group_by_length else "random",
    )
    trainer = PRMTrainer(model=copy.deepcopy(init), args=cfg, train_dataset=ds, processing_class=tok,
                         data_collator=CountingCollator(tok))
    trainer.remove_callback(PrinterCallback)  # logging off: not even the end-of-training summary line
    return trainer


def run_trl(init, tok, ds: Dataset, args, out_dir: str) -> dict:
    t0 = time.perf_counter()
    trainer = trl_trainer(init, tok, ds, args, out_dir)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    c = trainer.data_collator
    # seconds: trainer.train() (its dataloader and optimizer set-up and the loop); tokenization is in setup_s
    return {"seconds": seconds, "loop_s": seconds, "setup_s": setup, "end_to_end_s": setup + seconds,
            "padding": 1 - c.tokens / c.total, "model": trainer.model, "trainer": trainer}


def check_same_rows(trl_rows: Dataset, tok, trajs: list[Trajectory]) -> None:
    """TRL's tokenized rows (input_ids, labels with -100) equal procsup's: same input ids, each step's label
    on the same boundary token, -100 everywhere else."""
    rows = tokenize_many(trajs, tok, FMT, "steps")
    if len(trl_rows) != len(rows):
        raise AssertionError(f"TRL has {len(trl_rows)} rows, procsup {len(rows)}")
    for i, (row, traj) in enumerate(zip(rows, trajs)):
        trl_row = trl_rows[i]
        want = [-100] * len(row.input_ids)
        for pos, lab in place_step_labels(row, traj.labels):
            want[pos] = int(lab)
        if list(trl_row["input_ids"]) != list(row.input_ids) or list(trl_row["labels"]) != want:
            raise AssertionError(f"row {i}: TRL and procsup tokenize the trajectory differently")


def held_out_metrics(model, tok, held_out: list[Trajectory]) -> dict:
    probs = [p for ps in score(model, tok, held_out, FMT) for p in ps]
    labels = [bool(lab) for t in held_out for lab in t.labels]
    return {"step_accuracy": step_accuracy(probs, labels), "step_auroc": step_auroc(probs, labels)}


def summarize(runs: dict[str, list[dict]], args) -> dict:
    """Medians over repeats; samples/s three ways (see the module docstring); ratios as medians of the
    per-repeat ratios (each repeat ran both trainers back to back)."""
    n = args.batch * args.steps
    out = {}
    for name, rs in runs.items():
        out[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        for key, timer in (("samples_per_s", "seconds"), ("loop_samples_per_s", "loop_s"),
                           ("end_to_end_samples_per_s", "end_to_end_s")):
            out[name][key] = statistics.median(n / r[timer] for r in rs)
    for key, timer in (("speedup", "seconds"), ("loop_speedup", "loop_s"), ("end_to_end_speedup", "end_to_end_s")):
        out[key] = statistics.median(b[timer] / a[timer] for a, b in zip(runs["procsup"], runs["trl"]))
        if runs.get("procsup-dense"):
            out[f"dense_{key}"] = statistics.median(b[timer] / a[timer] for a, b in zip(runs["procsup-dense"], runs["trl"]))
    return out


def over_seeds(summaries: dict[int, dict], arms: list[str]) -> dict:
    """Across training seeds: each metric of each arm, and each ratio, as the mean and the sample std of the
    per-seed medians (``{"mean", "sample_std", "per_seed"}``)."""

    def stat(values: list[float]) -> dict:
        return {"mean": statistics.fmean(values), "sample_std": statistics.stdev(values), "per_seed": values}

    first = next(iter(summaries.values()))
    out: dict = {name: {k: stat([s[name][k] for s in summaries.values()]) for k in first[name]} for name in arms}
    for key in first:
        if key not in arms:
            out[key] = stat([s[key] for s in summaries.values()])
    return out


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The data, model and optimisation options (shared with ``prm_trl_grouped_probe.py``)."""
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--eval-size", type=int, default=500)
    p.add_argument("--max-digits", type=int, default=8, help="operand lengths uniform in [1, max]: 1 to max steps")
    p.add_argument("--corrupt", type=float, default=0.3, help="probability that a step's result is corrupted")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-length", type=int, default=1024, help="TRL's truncation length; no row reaches it (checked)")
    p.add_argument("--seed", type=int, default=0, help="data seed (the traces); with --seeds, also the one training seed")


def provenance(args, argv) -> dict:
    """Date, command and machine of a results JSON (shared with ``prm_trl_grouped_probe.py``)."""
    import transformers
    import trl

    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "load_average_1_5_15": os.getloadavg(),
                    "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    add_run_args(p)
    p.add_argument("--seeds", default=None,
                   help="training seeds, e.g. 0,1,2 (model initialisation and data order; the data stay those of --seed): "
                        "every seed runs --repeats interleaved repeats; ratios, accuracy and AUROC are then reported as "
                        "mean and sample std over seeds of the per-seed medians")
    p.add_argument("--trl-group-by-length", action="store_true",
                   help="TRL with transformers' LengthGroupedSampler (train_sampling_strategy) instead of its default sampler; "
                        "at lr 3e-3 some data orders blow up (benchmarks/results/prm_trl_grouped_probe.md)")
    p.add_argument("--no-dense", action="store_true", help="leave out the procsup-dense arm (sparse_last_block=False)")
    p.add_argument("--out", default="benchmarks/results/prm_train_vs_trl.json")
    args = p.parse_args(argv)
    import datasets
    import transformers
    import trl  # noqa: F401  (the optional extra: fail here, before any work)

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    torch.set_num_threads(args.threads)
    tok = char_tokenizer()
    tok_trl = copy.deepcopy(tok)
    tok_trl.bos_token = None  # procsup's rows have no BOS; TRL prepends one when the tokenizer has it
    train, held_out = make_data(args.train_size, args.eval_size, args.max_digits, args.corrupt, args.seed)
    lengths = [len(r.input_ids) for r in tokenize_many(train, tok, FMT, "steps")]
    if max(lengths) > args.max_length:
        raise ValueError(f"a training row has {max(lengths)} tokens > --max-length {args.max_length}")
    ds = stepwise_dataset(train)
    arms = ["procsup", "trl"] if args.no_dense else ["procsup", "procsup-dense", "trl"]
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    per_seed: dict[int, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            runs = per_seed[seed] = {name: [] for name in arms}
            seed_args = argparse.Namespace(**{**vars(args), "seed": seed})  # training seed; the data are fixed above
            init = initial_model(seed_args, tok)
            for r in range(args.repeats):
                for name in arms[r % len(arms):] + arms[: r % len(arms)]:  # rotate the order against drift
                    out_dir = f"{tmp}/{seed}-{name}-{r}"
                    if name.startswith("procsup"):
                        run = run_procsup(init, tok, train, seed_args, out_dir, sparse=name == "procsup")
                    else:
                        run = run_trl(init, tok_trl, ds, seed_args, out_dir)
                    if name == "trl" and not runs["trl"]:
                        check_same_rows(run["trainer"].train_dataset, tok, train)
                    run.pop("trainer", None)
                    run.update(held_out_metrics(run.pop("model"), tok, held_out))
                    run["load_average_1"] = os.getloadavg()[0]
                    runs[name].append(run)
                    print(f"seed {seed} repeat {r} {name:13s}: {args.batch * args.steps / run['seconds']:6.1f} samples/s "
                          f"({run['seconds']:.1f} s), padding {run['padding']:.3f}, held-out step accuracy "
                          f"{run['step_accuracy']:.4f}, AUROC {run['step_auroc']:.4f}, load {run['load_average_1']:.2f}",
                          flush=True)
    summaries = {seed: summarize(runs, args) for seed, runs in per_seed.items()}
    summary = summaries[seeds[0]] if len(seeds) == 1 else over_seeds(summaries, arms)
    labels = [bool(lab) for t in held_out for lab in t.labels]
    result = {
        **provenance(args, argv),
        "setup": vars(args),
        "data": {"train_rows": len(train), "held_out_rows": len(held_out), "held_out_steps": len(labels),
                 "held_out_correct_share": sum(labels) / len(labels), "mean_row_tokens": statistics.mean(lengths),
                 "max_row_tokens": max(lengths), "same_token_rows": True},
        "timed": {"procsup": "the whole train_prm call: tokenization, set-up, training loop, final checkpoint",
                  "trl": "trainer.train(); TRL's tokenization (datasets.map in the PRMTrainer constructor) is setup_s, "
                         "not timed"},
        **summary,
        **({"per_seed": {str(k): v for k, v in summaries.items()}} if len(seeds) > 1 else {}),
        "runs": per_seed[seeds[0]] if len(seeds) == 1 else {str(k): v for k, v in per_seed.items()},
    }
    print_table(result, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    return result


def _show(value, spec: str) -> str:
    """A metric as printed: a number, or with several training seeds ``mean±sample std``."""
    if isinstance(value, dict):
        return f"{format(value['mean'], spec)}±{format(value['sample_std'], spec)}"
    return format(value, spec)


def print_table(result: dict, args) -> None:
    seeds = f", training seeds {args.seeds} (mean±sample std of per-seed medians)" if args.seeds else ""
    print(f"\nPRM training, {args.train_size} addition traces (1-{args.max_digits} steps), llama {args.hidden}x{args.layers}, "
          f"batch {args.batch}, {args.steps} steps, {args.threads} threads, OMP_WAIT_POLICY="
          f"{result['machine']['OMP_WAIT_POLICY']}, medians of {args.repeats} interleaved repeats{seeds}")
    print("| trainer | samples/s (timed) | loop samples/s | end-to-end samples/s | set-up s | padding | "
          "held-out step accuracy | step AUROC |\n|---|---|---|---|---|---|---|---|")
    trl_label = "TRL 1.13 PRMTrainer (fp32, no GC" + (", length-grouped)" if args.trl_group_by_length else ")")
    labels = {"procsup": "procsup train_prm (length-grouped, sparse last block)",
              "procsup-dense": "procsup train_prm (length-grouped, full last block)", "trl": trl_label}
    for name, label in labels.items():
        if name not in result:
            continue
        m = result[name]
        cells = [_show(m[k], spec) for k, spec in (("samples_per_s", ".1f"), ("loop_samples_per_s", ".1f"),
                                                   ("end_to_end_samples_per_s", ".1f"), ("setup_s", ".1f"),
                                                   ("padding", ".3f"), ("step_accuracy", ".4f"), ("step_auroc", ".4f"))]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"procsup / TRL samples/s: {_show(result['speedup'], '.2f')}x timed, {_show(result['loop_speedup'], '.2f')}x "
          f"loop only, {_show(result['end_to_end_speedup'], '.2f')}x end to end (medians of per-repeat ratios); held-out "
          f"correct share {result['data']['held_out_correct_share']:.4f}")
    if "dense_speedup" in result:
        print(f"procsup-dense / TRL: {_show(result['dense_speedup'], '.2f')}x timed, "
              f"{_show(result['dense_loop_speedup'], '.2f')}x loop only")

if __name__ == "__main__":
    main()
