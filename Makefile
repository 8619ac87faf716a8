# make bench: the full benchmark (about 4 minutes); writes bench/results/report.md and latency.png.
# wrk comes from Debian's packages; the rest from PyPI.
.PHONY: bench bench-smoke

bench:
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	python3 -m pip install -q -e '.[bench]'
	python3 -m bench.run

bench-smoke:
	python3 -m pip install -q -e '.[bench]'
	python3 -m bench.run --smoke
