# Export stage: one job per exported run converts its checkpoint (the final one, or
# export.checkpoint_step.<run>) with MaxText's own converter into a Hugging Face
# LlamaForCausalLM folder results/hf/<run>/, checked by comparing logits with MaxText's
# (logits_check.json in the folder). export.publish.<run> uploads a folder to a Hub repo.

from nanogerman.evaluation_config import exported_runs as _exported_runs


def export_runs():
    return _exported_runs(config)


def export_dir(run):
    """results/hf/<run>/: config.json, model.safetensors, tokenizer files, generation_config.json, logits_check.json."""
    return f"{RESULTS}/hf/{run}"


def publish_receipt(run):
    return f"{RESULTS}/hf/{run}.published.json"


def export_outputs():
    return [export_dir(run) for run in export_runs()] + [
        publish_receipt(run) for run in config["export"]["publish"]
    ]


rule export_hf:
    input:
        manifest=lambda wildcards: train_manifest(wildcards.run),
        tokenizer=lambda wildcards: tokenizer_dir(train_plan(wildcards.run).tokenizer),
    output:
        folder=directory(f"{RESULTS}/hf/{{run}}"),
    log:
        f"{RESULTS}/logs/export/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/export/{{run}}.tsv"
    threads: 1  # one process: MaxText's converter, then its forward pass (nanogerman.maxtext_export)
    params:
        step=lambda wildcards: config["export"]["checkpoint_step"].get(wildcards.run),
        tolerance=config["export"]["tolerance"],
        check_length=config["export"]["check_length"],
    script:
        "../scripts/export_run.py"


rule export_publish:
    input:
        folder=f"{RESULTS}/hf/{{run}}",
    output:
        receipt=f"{RESULTS}/hf/{{run}}.published.json",
    log:
        f"{RESULTS}/logs/export/{{run}}_publish.log",
    benchmark:
        f"{RESULTS}/benchmarks/export/{{run}}_publish.tsv"
    resources:
        downloads=1,
    params:
        repo_id=lambda wildcards: config["export"]["publish"][wildcards.run],
        private=config["export"]["private"],
    script:
        "../scripts/publish_export.py"
