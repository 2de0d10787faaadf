#!/bin/sh
# Snakemake (--sdm conda) runs this once in the per-rule environment right after building it
# from audiosetflow.yaml. It runs a copy in .snakemake/conda/, from the run's working
# directory, so the project is not found from either: the Snakefile exports its own folder as
# AUDIOSETFLOW_PROJECT. The package is installed editable, without dependencies (the env file
# has them), so the rules run the project's code as it is, like the environment Snakemake
# itself runs in.
set -eu
project="${AUDIOSETFLOW_PROJECT:-}"
if [ -z "$project" ] || [ ! -f "$project/pyproject.toml" ] || [ ! -d "$project/src/audiosetflow" ]; then
    echo "audiosetflow post-deploy: AUDIOSETFLOW_PROJECT='$project' is not the audiosetflow project (run snakemake with the project's Snakefile, which sets it)" >&2
    exit 1
fi
python -m pip install --no-deps --no-build-isolation --disable-pip-version-check -e "$project"
