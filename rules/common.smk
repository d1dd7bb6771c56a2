# Validates the config before any job runs and defines the helpers the stage rules share.
import sys
from pathlib import Path

from snakemake.utils import min_version

from nanogerman.config import (
    ConfigError,
    all_shards,
    shard_name,
    shard_set,
    tokenizer_entry,
    validate_config,
)
from nanogerman.preemption import planning_warnings

min_version("9.0")

try:
    _validated = validate_config(config)
except ConfigError as error:
    sys.stderr.write(f"{error}\n")
    sys.exit(1)
config.clear()
config.update(_validated)
# Spot runs that would replay data after a preemption (one line) or lose more than training.tpu.max_lost_minutes (one line per run).
for _warning in planning_warnings(config):
    sys.stderr.write(f"warning: {_warning}\n")

RESULTS = config["results_dir"].rstrip("/")


wildcard_constraints:
    shard=r"shard_\d{5}",
    tokenizer=r"[a-z0-9][a-z0-9_.-]*",


def shards_of(set_name):
    """Workflow names (shard_00000, …) of the shards in a corpus shard set."""
    return [shard_name(index) for index in shard_set(config, set_name)]


def _without(section, *keys):
    """A config section as a rule's param, less the keys its job does not read (so changing them reruns nothing)."""
    return {key: value for key, value in section.items() if key not in keys}
