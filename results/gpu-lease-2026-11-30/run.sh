#!/bin/bash
# One GPU lease: continue CFIT4SRec seed 1 on the GPU, train table2 seeds 2-3 of the fast methods and the
# ablation's seeds 2-3 beside it, stop all at a deadline (SIGTERM: each run saves its last epoch), pack
# what comes back. Usage: bash .gpu/run.sh DEVICE TRAIN_SECONDS  (OUT must be set)
set -u
DEV=${1:-cuda}; TRAIN_S=${2:-490}
T0=$(date +%s)
export PYTHONUNBUFFERED=1 SEQCL_CACHE_DIR=/tmp/seqcl-cache
G=${G:-/tmp/g}
stamp() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
stamp "start on $(hostname); nproc $(nproc)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
if [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || { stamp "wheel install failed"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || { stamp "pip -e failed"; exit 1; }
  mkdir -p ../shared/data && cp .gpu/Beauty.txt ../shared/data/Beauty.txt || { stamp "data copy failed"; exit 1; }
  mkdir -p results/table2-beauty/runs && cp -r .gpu/cfit4srec__s1.incomplete results/table2-beauty/runs/
fi
python3 -c "import torch, seqcl, optuna; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'optuna', optuna.__version__)"
stamp "setup done"

(python3 -m pytest -q -p no:cacheprovider tests/test_resume.py -k "device or cuda" -rs > $OUT/pytest.txt 2>&1; echo "rc $?" >> $OUT/pytest.txt) &

CFIT=results/table2-beauty/runs/cfit4srec__s1.incomplete
setsid seqcl train --resume $CFIT --set train.device=$DEV --set train.threads=2 > $OUT/cfit.log 2>&1 &
P1=$!
setsid seqcl study run examples/studies/table2-beauty.yaml --seeds 2,3 \
  --variants sasrec,bert4rec,cl4srec,duorec,aclsrec,mclrec,elcrec --runs-dir $G --workers 14 --no-report \
  --set train.device=$DEV --set train.threads=1 > $G.t2.log 2>&1 &
P2=$!
setsid seqcl study run examples/studies/aclsrec-ablation.yaml --seeds 2 --runs-dir $G --workers 4 --no-report \
  --set train.device=$DEV --set train.threads=1 > $G.abl.log 2>&1 &
P3=$!
stamp "started cfit $P1, table2 $P2, ablation $P3"

while [ $(( $(date +%s) - T0 )) -lt $TRAIN_S ]; do
  sleep 20
  alive=0; for p in $P1 $P2 $P3; do kill -0 $p 2>/dev/null && alive=$((alive + 1)); done
  done2=$(ls -d $G/table2-beauty/runs/*__s[23] 2>/dev/null | wc -l)
  done3=$(ls -d $G/aclsrec-ablation/runs/*__s[23] 2>/dev/null | wc -l)
  stamp "alive $alive | cfit epochs $(cat $CFIT/metrics.jsonl results/table2-beauty/runs/cfit4srec__s1/metrics.jsonl 2>/dev/null | wc -l) | table2 finished $done2 | ablation finished $done3 | $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)"
  [ $alive -eq 0 ] && break
done
stamp "deadline: SIGTERM"
for p in $P1 $P2 $P3; do kill -TERM -- -$p 2>/dev/null; done
for i in $(seq 1 45); do
  alive=0; for p in $P1 $P2 $P3; do kill -0 $p 2>/dev/null && alive=1; done
  [ $alive -eq 0 ] && break; sleep 1
done
for p in $P1 $P2 $P3; do kill -KILL -- -$p 2>/dev/null; done
wait 2>/dev/null
stamp "stopped; packing"

cd results/table2-beauty/runs
D=$(ls -d cfit4srec__s1* | head -1)
[ -f $D/last.pt ] && cp $D/last.pt $OUT/cfit_last.pt
[ -f $D/best.pt ] && cp $D/best.pt $OUT/cfit_best.pt
tar czf $OUT/cfit_rest.tgz --exclude=last.pt --exclude=best.pt $D
cd - >/dev/null
cp $G.t2.log $OUT/t2.log; cp $G.abl.log $OUT/abl.log
(cd $G && tar czf $OUT/gpu_studies.tgz --exclude=last.pt --exclude=best.pt --exclude='*.incomplete' --exclude='*.copying' \
   --exclude=study.db --exclude=study.db.lock */runs */logs)
ls -la $OUT
tail -n 5 $OUT/cfit.log
stamp "done"
