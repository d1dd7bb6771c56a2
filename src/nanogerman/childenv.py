"""Allow-listed environments for the processes the workflow starts (MaxText, its converter).

A child gets what it needs to run (the system's paths and locale, Python's and the
accelerator libraries' settings, proxies and certificates, Google Cloud credentials
for ``gs://`` checkpoints) and nothing else. Above all it gets no Hugging Face token:
MaxText copies ``HF_TOKEN`` into its ``hf_access_token`` setting and writes every
setting into its TensorBoard event files, which sit beside the checkpoints (a shared
``gs://`` bucket on TPU). Everything MaxText reads here is local (tokenizer folder,
dataset, model file), so it needs no Hub access at all.

MaxText also reads ``M_<SETTING>`` variables as overrides of its settings; they are
not passed either, so only the project's own arguments decide a run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# Exact names a child may inherit.
_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "TEMP",
        "TMP",
        "PYTHONPATH",
        "PYTHONHASHSEED",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "STORAGE_EMULATOR_HOST",
        "NANOGERMAN_GIT_COMMIT",
        # Google Cloud: where the credentials are (a file path, never the secret itself) and which project
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
        "CLOUDSDK_CONFIG",
        "CLOUDSDK_CORE_PROJECT",
        # Hugging Face: caches and offline switches only (no token, no endpoint: the children read local folders)
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_DATASETS_CACHE",
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_DISABLE_TELEMETRY",
    }
)
# Name prefixes a child may inherit: locale, JAX/XLA/TensorFlow/TPU/GPU runtime settings, the GCS helpers.
_PREFIXES = (
    "LC_",
    "JAX_",
    "XLA_",
    "TF_",
    "TPU_",
    "LIBTPU",
    "ALLOW_MULTIPLE_LIBTPU",
    "CUDA_",
    "NVIDIA_",
    "NCCL_",
    "MKL_",
    "GCSFS_",
    "TENSORSTORE_",
    "TQDM_",
)
# Never passed, whatever the lists above say: anything that looks like a secret.
_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY", re.IGNORECASE)


def allowed(name: str) -> bool:
    """Whether a variable of this name reaches a child."""
    if _SECRET.search(name):
        return False
    return name in _NAMES or name.startswith(_PREFIXES)


def child_env(base: Mapping[str, str] | None = None, **settings: str) -> dict[str, str]:
    """The allow-listed part of ``base`` (default: this process's environment), plus ``settings``."""
    source = os.environ if base is None else base
    env = {name: value for name, value in source.items() if allowed(name)}
    env.update(settings)
    return env
