# Is a difference real? For each pair of evaluated runs that differ in exactly one setting (tokenizer or
# learning rate), the per-task difference with a paired bootstrap interval and McNemar's test over the same
# items (lm-eval's per-item scores in results/eval/<model>/lm_eval.json): results/eval/comparisons.md, .csv.

from nanogerman.significance import comparison_pairs as _comparison_pairs


def comparison_pairs():
    evaluated = set(eval_models())
    training = config.get("training") or {}
    runs = [
        {**(training.get("defaults") or {}), **entry}
        for entry in training.get("runs") or []
        if entry["name"] in evaluated
    ]
    return _comparison_pairs(runs)


def comparison_outputs():
    if not comparison_pairs() or not all(
        f"{EVAL}/{model}/lm_eval.json" in eval_files(model) for model in eval_models()
    ):
        return []
    return [f"{EVAL}/comparisons.md", f"{EVAL}/comparisons.csv"]


rule eval_comparisons:
    input:
        results=lambda wildcards: sorted(
            {
                f"{EVAL}/{name}/lm_eval.json"
                for pair in comparison_pairs()
                for name in pair
            }
        ),
    output:
        markdown=f"{EVAL}/comparisons.md",
        csv=f"{EVAL}/comparisons.csv",
    log:
        f"{RESULTS}/logs/eval/comparisons.log",
    localrule: True
    params:
        pairs=lambda wildcards: comparison_pairs(),
        results=lambda wildcards: {
            name: f"{EVAL}/{name}/lm_eval.json"
            for pair in comparison_pairs()
            for name in pair
        },
        seed=lambda wildcards: config["evaluation"]["seed"],
    script:
        "../scripts/compare_models.py"
