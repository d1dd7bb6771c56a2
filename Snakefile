# The German nano-LM pretraining workflow. See README.md; config keys in config/README.md.
#   snakemake --cores all                                  # embedded default config (offline, tiny, CPU)
#   snakemake --cores all --configfile config/nano-german.yaml
#   snakemake -n                                           # show the plan

# The embedded default is used only when no config file is named on the command line: a
# --configfile replaces it instead of being merged over it, so the default's keys never leak
# into another config. --config key=value and a profile's config: entries apply on top of
# whichever file is used.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/corpus.smk"
include: "rules/tokenizers.smk"
include: "rules/tokenizer_eval.smk"
include: "rules/dataset.smk"
include: "rules/train.smk"
include: "rules/export.smk"
include: "rules/evaluate.smk"
include: "rules/contamination.smk"
include: "rules/significance.smk"
include: "rules/report.smk"
include: "rules/checkpoints.smk"


rule all:
    default_target: True
    input:
        corpus_outputs(),
        tokenizer_outputs(),
        tokenizer_eval_outputs(),
        dataset_outputs(),
        train_outputs(),
        export_outputs(),
        eval_outputs(),
        contamination_outputs(),
        comparison_outputs(),
        checkpoint_outputs(),
        report_outputs(),
