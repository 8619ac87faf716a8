# make bench: the full benchmark (about 5 minutes); writes bench/results/report.md and latency.png.
# wrk comes from Debian's packages; the rest from PyPI, into the project's .venv (as the README's
# two commands make it), so it works on an externally managed python3 too.
# make bench-cluster CORES=N: walletd on one Redis against walletd on a local 3-node Redis Cluster
# (one instance, then several), every process pinned within the first N cores (default: all);
# writes bench/results/cluster.md (python3 -m bench.cluster --help).
.PHONY: bench bench-smoke bench-cluster
CORES ?= $(shell nproc)
PY := .venv/bin/python

$(PY):
	python3 -m venv .venv

bench: $(PY)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m pip install -q -e '.[embedded,bench]'
	$(PY) -m bench.run

bench-smoke: $(PY)
	$(PY) -m pip install -q -e '.[embedded,bench]'
	$(PY) -m bench.run --smoke

bench-cluster: $(PY)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m pip install -q -e '.[embedded,bench]'
	$(PY) -m bench.cluster --cores $(CORES)
