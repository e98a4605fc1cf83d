#!/bin/bash
set -u
export PYTHONUNBUFFERED=1 SEQCL_CACHE_DIR=/tmp/seqcl-cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
mkdir -p ../shared/data && cp .gpu/Beauty.txt ../shared/data/Beauty.txt || exit 1
mkdir -p /tmp/r && cp -r .gpu/cfit4srec__s1.incomplete /tmp/r/
A=".gpu/anomaly.py"
timeout -s INT ${1:-100} python3 $A train --resume /tmp/r/cfit4srec__s1.incomplete --set train.device=cuda > $OUT/cfit_resume.txt 2>&1 &
timeout -s INT ${1:-100} python3 $A train --dataset ../shared/data/Beauty.txt --augmenter cfit4srec --seed 1 --device cuda --set run.dir=/tmp/r2 > $OUT/cfit_fresh.txt 2>&1 &
timeout -s INT ${1:-100} python3 $A train --dataset ../shared/data/Beauty.txt --augmenter elcrec --objective bce --set sasrec.layers=1 --seed 3 --device cuda --set run.dir=/tmp/r3 > $OUT/elcrec_fresh.txt 2>&1 &
wait
for f in $OUT/*.txt; do echo "=== $f"; grep -v "samples/s" $f | tail -n 45; done
