"""Training throughput (tokens/s, MFU) and the training rule's overhead over a bare MaxText call.

    .venv/bin/python benchmarks/train.py                      # CPU: tiny model, plus the rule's overhead
    .venv/bin/python benchmarks/train.py --model nano         # nano-german-slm at context 2,048 (a GPU or TPU host)
    .venv/bin/python benchmarks/train.py --model nano --peak-tflops 989 --no-overhead

1. Throughput: MaxText trains the model on synthetic data for ``--steps`` steps
   (``nano``: config/models/nano-german-slm.yml, vocab 65,536, context 2,048;
   ``tiny``: the embedded default's model, vocab 2,048, context 128). Printed: tokens/s
   over the steps after compilation, MaxText's own TFLOP/s per device, and MFU = that
   over the device's peak (from a table of bf16 dense peaks, or ``--peak-tflops``;
   none for CPUs).
2. Overhead (default on; ``--no-overhead`` skips it): the default config's tiny run
   (sample_neox) through ``snakemake`` (rule train_run, smoke job off; tokenizer and
   dataset built beforehand, not timed) against ``python -m maxtext…train`` with the
   same arguments (from train.json; fresh run_name and output folder). Printed: both
   wall times, the difference and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nanogerman.manifests import read_train_manifest
from nanogerman.maxtext_values import format_value
from nanogerman.metrics import dedupe_steps, parse_step_line, summarize_metrics
from nanogerman.training import TRAIN_MODULE, local_env

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MODELS = {
    "nano": {
        "model": "config/models/nano-german-slm.yml",
        "vocab_size": 65536,
        "max_target_length": 2048,
        "per_device_batch_size": 1,
    },
    "tiny": {
        "model": "config/models/nano-german-tiny.yml",
        "vocab_size": 2048,
        "max_target_length": 128,
        "per_device_batch_size": 8,
    },
}
# bf16 dense peak TFLOP/s per JAX device
PEAK_TFLOPS = {
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "L4": 121.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,
    "TPU v5p": 459.0,
    "TPU v6 lite": 918.0,
    "TPU v6e": 918.0,
}


def devices() -> tuple[str, str, int]:
    """(platform, device kind, count) as JAX sees them, in a child process (keeps JAX out of this one)."""
    code = "import jax; d = jax.devices(); print(d[0].platform, len(d), d[0].device_kind, sep='|')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)).stdout.strip()
    platform, count, kind = (out.splitlines()[-1].split("|") + ["cpu", "1", "cpu"])[:3] if out else ("cpu", "1", "cpu")
    return platform, kind, int(count)


def peak_for(kind: str) -> float | None:
    for name, peak in PEAK_TFLOPS.items():
        if name.lower() in kind.lower():
            return peak
    return None


def run_maxtext(args: list[str], env: dict) -> tuple[float, list[str]]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", TRAIN_MODULE, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    lines = (result.stdout + result.stderr).splitlines()
    if result.returncode != 0:
        sys.exit("MaxText failed:\n" + "\n".join(lines[-30:]))
    return seconds, lines


def throughput(model: str, steps: int, peak: float | None, platform: str, kind: str, count: int, scratch: Path) -> None:
    spec = MODELS[model]
    hardware = "cpu" if platform == "cpu" else ("gpu" if platform in ("gpu", "cuda", "rocm") else "tpu")
    pairs = {
        "run_name": f"bench-{model}",
        "base_output_directory": str(scratch / "throughput"),
        "dataset_type": "synthetic",
        "steps": steps,
        "enable_checkpointing": False,
        "vocab_size": spec["vocab_size"],
        "max_target_length": spec["max_target_length"],
        "per_device_batch_size": spec["per_device_batch_size"],
        "dtype": "float32" if hardware == "cpu" else "bfloat16",
    }
    if hardware != "tpu":
        pairs.update(hardware=hardware, skip_jax_distributed_system=True)
    args = [str(REPO / spec["model"]), *(f"{key}={format_value(value)}" for key, value in pairs.items())]
    seconds, lines = run_maxtext(args, local_env(hardware))
    records = dedupe_steps(filter(None, map(parse_step_line, lines)))
    tflops = [float(line.split("TFLOP/s/device: ")[1].split(",")[0]) for line in lines if "TFLOP/s/device: " in line][2:]
    summary = summarize_metrics(records, spec["per_device_batch_size"] * count * spec["max_target_length"])
    tflops_per_device = sorted(tflops)[len(tflops) // 2] if tflops else float("nan")
    print(
        f"model {model} ({spec['model']}), context {spec['max_target_length']}, {count} x {kind} ({platform}), "
        f"{spec['per_device_batch_size']} sequences per device, {steps} steps in {seconds:.1f} s wall"
    )
    print(
        f"  tokens/s (after compilation): {summary['tokens_per_second']:.0f}  ({summary['tokens_per_second'] / count:.0f} per device)"
    )
    print(f"  TFLOP/s per device (MaxText's count, median): {tflops_per_device:.3f}")
    if peak:
        print(f"  MFU: {100 * tflops_per_device / peak:.1f} % of {peak:.0f} TFLOP/s")
    else:
        print("  MFU: n/a (no peak known for this device; pass --peak-tflops)")


def overhead(repeats: int, scratch: Path) -> None:
    workdir = scratch / "workflow"
    workdir.mkdir()
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["corpus"]["location"] = str(REPO / "resources" / "german_sample")
    config["tokenizers"] = [entry for entry in config["tokenizers"] if entry["name"] == "sample_neox"]
    config.pop("tokenizer_eval", None)
    config["training"]["smoke"] = {"enabled": False}
    config["training"]["runs"] = [{"name": "bench", "tokenizer": "sample_neox"}]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    base = [
        str(VENV_BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(workdir / "config.yaml"),
    ]
    target = "results/train/bench/train.json"
    subprocess.run(
        [*base[:1], "results/dataset/dataset.json", "results/tokenizers/sample_neox", *base[1:]],
        env=env,
        check=True,
        capture_output=True,
    )
    rule_times, bare_times, rule_tps, bare_tps = [], [], [], []
    for attempt in range(repeats):
        for path in (workdir / "results" / "train", workdir / "results" / "checkpoints"):
            subprocess.run(["rm", "-rf", str(path)], check=True)
        started = time.perf_counter()
        subprocess.run([base[0], target, *base[1:]], env=env, check=True, capture_output=True)
        rule_times.append(time.perf_counter() - started)
        manifest = read_train_manifest(workdir / target)
        rule_tps.append(manifest["tokens_per_second"])
        args = [
            arg
            for arg in manifest["maxtext_args"]
            if not arg.startswith(("run_name=", "base_output_directory=", "metrics_file="))
        ]
        args += [f"run_name=bare-{attempt}", f"base_output_directory={scratch / 'bare'}"]
        seconds, lines = run_maxtext(args, local_env("cpu"))
        bare_times.append(seconds)
        bare_tps.append(summarize_metrics(dedupe_steps(filter(None, map(parse_step_line, lines))), 1)["tokens_per_second"])
    rule, bare = min(rule_times), min(bare_times)
    steps = manifest["steps"]
    print(f"tiny run ({steps} steps, sample_neox, context {manifest['max_target_length']}), best of {repeats}:")
    print(f"  snakemake train_run job: {rule:.1f} s wall, {max(rule_tps):.0f} tokens/s")
    print(f"  bare MaxText, same args: {bare:.1f} s wall, {max(bare_tps):.0f} tokens/s")
    print(
        f"  rule overhead: {rule - bare:+.1f} s ({100 * (rule - bare) / bare:+.1f} %; snakemake start, config check, "
        "job script, manifest and metrics writing)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), help="default: nano on a GPU/TPU, tiny on CPU")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 20 for nano, 40 for tiny)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s of one device, for MFU")
    parser.add_argument("--no-overhead", action="store_true", help="skip the rule-versus-bare comparison")
    parser.add_argument("--repeats", type=int, default=1, help="repeats of the overhead comparison (best is kept)")
    args = parser.parse_args()
    platform, kind, count = devices()
    model = args.model or ("tiny" if platform == "cpu" else "nano")
    steps = args.steps or (20 if model == "nano" else 40)
    peak = args.peak_tflops or peak_for(kind)
    with tempfile.TemporaryDirectory() as scratch:
        throughput(model, steps, peak, platform, kind, count, Path(scratch))
        if not args.no_overhead:
            overhead(args.repeats, Path(scratch))


if __name__ == "__main__":
    main()
