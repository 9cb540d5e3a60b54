#!/usr/bin/env python3
"""`make bench`: our training step and the peers' in one interleaved run.

Each round runs every case once, in the same order: emotionet (f32, and bf16
with --bf16), then Keras (oneDNN), Keras with jit_compile, and JAX, for each
model. Alternating like this spreads a burst of load on a
shared machine over every runner instead of one, and the ratios are taken
within a round (same minutes, same load) before their median is reported.
A peer whose framework is not installed in the peers' Python is reported as
skipped. Standard library only: it runs under any python3.

    bench/interleave.py --emotionet target/release/emotionet --python .venv-bench/bin/python
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd, env=None):
    """Runs cmd; returns its JSON lines (dicts) and an error text or None."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return lines, f"exit {p.returncode}: {tail}"
    return lines, None


def has_module(python, module):
    if not python or not os.path.exists(python):
        return False
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emotionet", default="target/release/emotionet")
    ap.add_argument("--python", default=".venv-bench/bin/python", help="the Python with jax and tensorflow (the peers)")
    ap.add_argument("--models", default="face,emotion")
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="also time emotionet in bf16 mixed precision")
    ap.add_argument("--json-out", metavar="FILE", help="append every measurement as a JSON line to this file")
    args = ap.parse_args()

    machine = None
    peaks = []
    have = {"keras": has_module(args.python, "tensorflow"), "jax": has_module(args.python, "jax")}
    runners = [("emotionet", "f32")] + ([("emotionet", "bf16")] if args.bf16 else []) + [("keras", ""), ("keras-xla", ""), ("jax", "")]
    results = {}  # (model, runner) -> [images/s per round]
    skipped = {}
    for rnd in range(args.rounds):
        for model in args.models.split(","):
            for name, prec in runners:
                key = (model, name + (f" {prec}" if prec else ""))
                peer = name.split("-")[0]
                if name != "emotionet" and not have[peer]:
                    skipped[key] = f"{peer} is not installed in {args.python} (make bench-peers)"
                    continue
                if name == "emotionet":
                    peak = 2048 if model == args.models.split(",")[0] and prec == "f32" else 0
                    cmd = [args.emotionet, "bench", "--model", model, "--size", str(args.size), "--batch", str(args.batch), "--devices", "1",
                           "--steps", str(args.steps), "--precision", prec, "--peak-size", str(peak), "--json"]
                else:
                    script = os.path.join(HERE, "peers", f"peer_{peer}.py")
                    cmd = [args.python, script, model, str(args.size), str(args.batch), str(args.steps)] + (["xla"] if name == "keras-xla" else [])
                print(f"round {rnd + 1}/{args.rounds}: {model} {key[1]}", file=sys.stderr, flush=True)
                lines, err = run_json(cmd)
                if err:
                    skipped[key] = err
                    continue
                for line in lines:
                    if "matmul_peak" in line:
                        machine = line["machine"]
                        peaks.append(line["matmul_peak"]["gflops_per_s"])
                measured = [l for l in lines if "images_per_s" in l]
                if not measured:
                    skipped[key] = "printed no result"
                    continue
                ips = measured[-1]["images_per_s"]
                results.setdefault(key, [None] * args.rounds)[rnd] = ips
                if args.json_out:
                    with open(args.json_out, "a") as f:
                        f.write(json.dumps({"round": rnd, "model": model, "runner": key[1], "images_per_s": ips, "raw": measured[-1]}) + "\n")

    print()
    if machine:
        feats = " ".join(machine["features"]) or "none of AVX2/AVX-512/AMX"
        print(f"machine: {machine['cpu']}, {machine['cores']} cores, {feats}")
    if peaks:
        print(f"matmul peak (2048^2 f32, ours): {min(peaks):.1f}-{max(peaks):.1f} GFLOP/s over {len(peaks)} rounds")
    print(f"{args.size}x{args.size}, batch {args.batch}, {args.steps} timed steps a run, {args.rounds} interleaved rounds; images/s median (min-max)\n")
    print(f"{'model':<8} {'runner':<15} {'images/s':>22} {'emotionet f32 / runner':>26}")
    for model in args.models.split(","):
        ours = results.get((model, "emotionet f32"), [])
        for (m, runner), vals in results.items():
            if m != model:
                continue
            got = [v for v in vals if v is not None]
            cell = f"{statistics.median(got):.1f} ({min(got):.1f}-{max(got):.1f})"
            ratios = [o / v for o, v in zip(ours, vals) if o is not None and v is not None]
            ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})" if ratios and runner != "emotionet f32" else "-"
            print(f"{model:<8} {runner:<15} {cell:>22} {ratio:>26}")
        for (m, runner), why in skipped.items():
            if m == model and (m, runner) not in results:
                print(f"{model:<8} {runner:<15} {'skipped':>22}   {why}")


if __name__ == "__main__":
    main()
