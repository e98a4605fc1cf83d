#!/bin/bash
# The next GPU lease, prepared: (1) 60 s of fresh CFIT4SRec and ELCRec under anomaly hooks, to see
# whether the attention fix ends their NaNs; (2) CFIT4SRec seed 1 resumed on the GPU alone until
# the deadline; its folder comes back (last.pt, best.pt, the rest as a tarball) to continue on CPU.
# Set-up as for run.sh (README.md here): .gpu/ holds Beauty.txt, anomaly.py and a copy of
# results/table2-beauty/runs/cfit4srec__s1.incomplete (best.pt included); .whl/ is not needed.
# Usage: bash .gpu/next.sh TRAIN_SECONDS  (OUT set by the device tool)
set -u
TRAIN_S=${1:-480}
T0=$(date +%s)
export PYTHONUNBUFFERED=1 SEQCL_CACHE_DIR=/tmp/seqcl-cache
stamp() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || { stamp "pip -e failed"; exit 1; }
mkdir -p ../shared/data && cp .gpu/Beauty.txt ../shared/data/Beauty.txt || exit 1
mkdir -p results/table2-beauty/runs && cp -r .gpu/cfit4srec__s1.incomplete results/table2-beauty/runs/
A=.gpu/anomaly.py
timeout -s INT 60 python3 $A train --dataset ../shared/data/Beauty.txt --augmenter cfit4srec --seed 1 --device cuda \
  --set run.dir=/tmp/d1 > $OUT/diag-cfit_fresh.txt 2>&1 &
timeout -s INT 60 python3 $A train --dataset ../shared/data/Beauty.txt --augmenter elcrec --objective bce \
  --set sasrec.layers=1 --seed 3 --device cuda --set run.dir=/tmp/d2 > $OUT/diag-elcrec_fresh.txt 2>&1 &
wait
for f in $OUT/diag-*.txt; do echo "== $f"; tr '\r' '\n' < $f | grep -v "samples/s" | tail -n 6; done
stamp "diagnosis done"
CFIT=results/table2-beauty/runs/cfit4srec__s1.incomplete
setsid seqcl train --resume $CFIT --device cuda --set train.threads=4 > $OUT/cfit.log 2>&1 &
P=$!
while kill -0 $P 2>/dev/null && [ $(( $(date +%s) - T0 )) -lt $TRAIN_S ]; do sleep 10; done
kill -TERM -- -$P 2>/dev/null; for i in $(seq 1 30); do kill -0 $P 2>/dev/null || break; sleep 1; done
stamp "cfit stopped: $(grep -c valid $OUT/cfit.log) epochs here"
cd results/table2-beauty/runs && D=$(ls -d cfit4srec__s1* | head -1)
[ -f $D/last.pt ] && cp $D/last.pt $OUT/cfit_last.pt
[ -f $D/best.pt ] && cp $D/best.pt $OUT/cfit_best.pt
tar czf $OUT/cfit_rest.tgz --exclude=last.pt --exclude=best.pt $D
tr '\r' '\n' < $OUT/cfit.log | grep -v "samples/s" | tail -n 8
stamp done
